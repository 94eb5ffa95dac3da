"""Hardware figures the performance model needs, measured where the runtime runs.

    python -m runtime.microbench membw [--device auto] [--out membw.json]
    <launcher> python -m runtime.microbench comm [--out comm.json]

`membw`: this device's memory bandwidth, reading (a reduction) and copying (read + write) a buffer far larger
than any cache. `comm`: all-reduce over every rank and send/recv between ranks 0 and 1, timed over message
sizes, per implementation (the process group's backend; DeepSpeed's shared-memory all-reduce when the ranks
share one CPU host), fitted to t(m) = a + b m and reported as alpha (latency, s) and beta (bandwidth, bytes/s)
in the terms of the performance model: AR(m, N) = 2(N-1) alpha + 2(N-1)/N m / beta, P2P(m) = alpha + m / beta.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist

from runtime.atomic import atomic_write_text
from runtime.contract import LinkFit
from runtime.device import pick_device
from runtime.launch import detect_launch, join_world
from runtime.schema import InputError
from runtime.topology import Topology

SIZES = [4 * 4**k for k in range(12)]  # 4 B .. 16 MiB


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "xpu":
        torch.xpu.synchronize(device)


def best_seconds(op: Callable[[], object], device: torch.device, repeats: int, inner: int = 1) -> float:
    """Fastest of `repeats` timings of `inner` back-to-back calls, per call (after one warm-up)."""
    op()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            op()
        synchronize(device)
        times.append((time.perf_counter() - start) / inner)
    return min(times)


def memory_bandwidth(device: torch.device, megabytes: int = 512, repeats: int = 5) -> dict[str, float | str]:
    """Read, copy and matrix-vector bandwidth in bytes/s; `bandwidth_Bps` (the better of read and copy) is the
    roofline's B_mem."""
    elements = megabytes * 2**20 // 4
    source = torch.ones(elements, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    nbytes = source.numel() * source.element_size()
    read = nbytes / best_seconds(source.sum, device, repeats)
    copy = 2 * nbytes / best_seconds(lambda: target.copy_(source), device, repeats)
    # a decoder at batch 1 is matrix-vector products: what the BLAS reaches is the practical ceiling
    matrix, vector = source.view(-1, 4096), torch.ones(4096, device=device)
    gemv = nbytes / best_seconds(lambda: torch.mv(matrix, vector), device, repeats)
    return {
        "device": str(device),
        "buffer_bytes": nbytes,
        "threads": torch.get_num_threads(),
        "read_Bps": read,
        "copy_Bps": copy,
        "gemv_Bps": gemv,
        "bandwidth_Bps": max(read, copy),
    }


def dequantize_rates(
    model: torch.nn.Module, dtype: torch.dtype, device: torch.device, repeats: int = 3
) -> tuple[float | None, float | None]:
    """Weights per second the model's WeightOnlyLinear layers dequantize at, each to `dtype` as its forward does
    on every call (the performance model's cost of a pass at int8/int4): with the threads torch has, and on a
    CPU with one (ranks sharing a host each get fewer); (None, None) without such layers."""
    from runtime.quantize import WeightOnlyLinear

    layers = [m for m in model.modules() if isinstance(m, WeightOnlyLinear)]
    if not layers:
        return None, None
    weights = sum(layer.out_features * layer.in_features for layer in layers)

    def dequantize_all() -> None:
        for layer in layers:
            layer.dequantize(dtype)

    with torch.inference_mode():
        every = weights / best_seconds(dequantize_all, device, repeats)
        if device.type != "cpu":
            return every, None
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return every, weights / best_seconds(dequantize_all, device, repeats)
        finally:
            torch.set_num_threads(threads)


def fit(sizes: list[int], seconds: list[float]) -> tuple[float, float]:
    """t = a + b m by least squares on relative error, so small messages weigh as much as large ones."""
    weights = torch.tensor([1 / t for t in seconds], dtype=torch.float64)
    design = torch.stack([weights, torch.tensor(sizes, dtype=torch.float64) * weights], dim=1)
    a, b = torch.linalg.lstsq(design, torch.ones(len(sizes), dtype=torch.float64)).solution.tolist()
    return max(a, 0.0), max(b, 1e-30)


def alpha_beta(op: str, world: int, a: float, b: float) -> tuple[float, float]:
    """The model's alpha and beta from a fitted line: an all-reduce moves 2(N-1) steps of m/N bytes each."""
    if op == "all_reduce":
        return a / (2 * (world - 1)), 2 * (world - 1) / world / b
    return a, 1 / b


# name, op, call, messages per call, ranks in the op, seconds of the call spent on purpose not communicating
Impl = tuple[str, str, Callable[[torch.Tensor], object], int, int, float]


def time_ops(device: torch.device, impls: list[Impl], sizes: list[int] = SIZES, repeats: int = 3) -> list[dict]:
    """Per implementation and size, the slowest rank's time per message (every rank times the same loop)."""
    results = []
    for name, op, call, messages, ranks, pause_s in impls:
        seconds = []
        for size in sizes:
            buffer = torch.ones(size // 4, dtype=torch.float32, device=device)
            inner = 50 if size <= 2**16 else 10
            dist.barrier()
            per_call = best_seconds(functools.partial(call, buffer), device, repeats, inner)
            mine = torch.tensor([max(per_call - pause_s, 0.0) / messages], device=device)  # NCCL wants it there
            dist.all_reduce(mine, op=dist.ReduceOp.MAX)
            seconds.append(mine.item())
        alpha, beta = alpha_beta(op, ranks, *fit(sizes, seconds))
        results.append(
            {
                "op": op,
                "impl": name,
                "ranks": ranks,
                "sizes": sizes,
                "seconds": seconds,
                "alpha_s": alpha,
                "beta_Bps": beta,
            }
        )
    return results


def spin(seconds: float) -> None:
    """Keep the CPU busy, as a stage computing between two messages does."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def ping_pong(rank: int, first: int, second: int, pause_s: float = 0.0) -> Callable[[torch.Tensor], None]:
    """A round trip between ranks `first` and `second`: two P2P messages; other ranks idle. With a pause, each
    side works that long after a message arrives, so the other waits cold, as a pipeline's stages do."""

    def call(buffer: torch.Tensor) -> None:
        if rank == first:
            dist.send(buffer, second)
            dist.recv(buffer, second)
            spin(pause_s)
        elif rank == second:
            dist.recv(buffer, first)
            spin(pause_s)
            dist.send(buffer, first)

    return call


CALIBRATION_SIZES = [4 * 16**k for k in range(6)]  # 4 B .. 4 MiB
STAGE_PAUSE_S = 1e-3  # between a pipeline's messages a stage computes: long enough for its peer to fall asleep


def calibrate_links(
    topo: Topology,
    hostname: str,
    device: torch.device,
    all_reduce: tuple[str, Callable[[torch.Tensor], object]] | None,
    backend: str,
) -> list[LinkFit]:
    """A strategy's own links, timed by its ranks just before decoding: the TP all-reduce it will use (every TP
    group at once, as in decoding) and send/recv across the first stage boundary (every TP slice at once)."""
    hosts: list[str | None] = [None] * topo.world_size
    dist.all_gather_object(hosts, hostname)
    impls: list[Impl] = []
    on_one_host: dict[str, bool] = {}
    if all_reduce is not None and topo.tp_size > 1:
        name, call = all_reduce
        impls.append((name, "all_reduce", call, 1, topo.tp_size, 0.0))
        on_one_host[name] = all(len({hosts[r] for r in group}) == 1 for group in topo.all_tp_groups())
    if topo.pp_size > 1:
        name = f"{backend}_send_recv"
        pairs = [
            (topo.rank_of(t, 0, d), topo.rank_of(t, 1, d)) for t in range(topo.tp_size) for d in range(topo.dp_size)
        ]
        mine = next(((a, b) for a, b in pairs if topo.rank in (a, b)), (-1, -1))
        impls.append((name, "send_recv", ping_pong(topo.rank, *mine, STAGE_PAUSE_S), 2, 2, 2 * STAGE_PAUSE_S))
        on_one_host[name] = all(hosts[a] == hosts[b] for a, b in pairs)
    buffers = torch.device("cpu") if backend == "gloo" else device
    fits = time_ops(buffers, impls, CALIBRATION_SIZES, repeats=2)
    return [LinkFit(f["op"], f["impl"], f["ranks"], on_one_host[f["impl"]], f["alpha_s"], f["beta_Bps"]) for f in fits]


def _peer_lost(reason: str) -> None:
    print(f"microbench: {reason}", file=sys.stderr)
    os._exit(1)


def communication(rendezvous_timeout_s: float) -> dict:
    """Every rank runs this; rank 0 gets the figures."""
    info = detect_launch()
    if info.world_size < 2:
        raise InputError("comm needs at least 2 ranks: start it with torchrun, srun or the deepspeed launcher")
    device = pick_device("auto", info.local_rank)
    world = join_world(info, device.type, rendezvous_timeout_s, 600.0, on_peer_failure=_peer_lost)
    n = info.world_size
    impls: list[Impl] = [(f"{world.backend}_all_reduce", "all_reduce", dist.all_reduce, 1, n, 0.0)]
    if device.type == "cpu":
        import deepspeed.comm as ds

        from runtime.tensor_parallel import init_deepspeed_comm

        everyone = Topology(info.world_size, 1, 1, info.rank)  # the world as one TP group, as AutoTP would see it
        if init_deepspeed_comm(everyone, info, device.type):
            impls.append(("shm_all_reduce", "all_reduce", ds.inference_all_reduce, 1, n, 0.0))
    impls.append((f"{world.backend}_send_recv", "send_recv", ping_pong(info.rank, 0, 1), 2, 2, 0.0))
    results = time_ops(device, impls)
    hosts = [None] * info.world_size
    dist.all_gather_object(hosts, info.hostname)
    world.finish()
    return {
        "world_size": info.world_size,
        "hosts": hosts,
        "intra_node": len(set(hosts)) == 1,
        "device": device.type,
        "backend": world.backend,
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.microbench", description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["membw", "comm"])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "xpu"])
    parser.add_argument("--megabytes", type=int, default=512, help="membw buffer size")
    parser.add_argument("--out", type=Path, help="write the figures here as JSON (rank 0); default: stdout")
    parser.add_argument("--rendezvous-timeout", type=float, default=60.0)
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)  # the deepspeed launcher's
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        if args.what == "membw":
            figures = memory_bandwidth(pick_device(args.device, 0), args.megabytes)
        else:
            figures = communication(args.rendezvous_timeout)
    except InputError as err:
        print(f"microbench: {err}", file=sys.stderr)
        return 2
    if detect_launch().rank == 0:
        text = json.dumps(figures, indent=2)
        if args.out:
            atomic_write_text(args.out, text + "\n")
        else:
            print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

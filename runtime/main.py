"""`python -m runtime --config exp_config.json`: one rank of a strategy's run.

Launched by srun (one task per GPU), the deepspeed launcher, torchrun, or directly (one process). Every rank
loads its stage (and TP slice) of the model, works through its replica's share of the prompt table, and writes
progress lines as it goes; result-owning ranks write shard rows; every rank writes its metrics at the end.
Exit codes: 0 done, 1 failed (a peer included), 2 bad input.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.contract import RUNTIME_BUILD_VAR, ExperimentConfig, Percentiles, RankMetrics, ShardRow, TimeSplit
from runtime.device import device_name, host_cpus, peak_memory_bytes, pick_device
from runtime.launch import LaunchError, LaunchInfo, World, detect_launch, join_world
from runtime.outputs import RankOutputs
from runtime.schema import InputError
from runtime.topology import Topology, stage_layers

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig

    from runtime.checkpoint import Stage

log = logging.getLogger("runtime")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runtime", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="exp_config.json written by the control node")
    parser.add_argument("--dry-run", action="store_true", help="print the detected launch and topology, then exit")
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)  # the deepspeed launcher's
    parser.add_argument("--rendezvous-timeout", type=float, default=60.0, help="seconds to reach rank 0")
    parser.add_argument("--comm-timeout", type=float, default=600.0, help="seconds any collective may wait")
    bench = parser.add_argument_group("benchmark mode (random weights of a real model's shape, no checkpoint)")
    bench.add_argument("--init", choices=["checkpoint", "random"], default="checkpoint")
    bench.add_argument("--shape", help="named shape for --init random, e.g. llama-3.1-8b")
    bench.add_argument("--prompt-tokens", type=int, default=128, help="synthetic prompt length (random mode)")
    bench.add_argument("--prompts", type=int, default=0, help="synthetic prompts (random mode; default: one batch)")
    parser.add_argument(
        "--skip-calibration",
        action="store_true",
        help="do not time the links before decoding (nor, on a single rank, the memory bandwidth after)",
    )
    return parser


def percentiles(values: list[float]) -> Percentiles | None:
    if not values:
        return None
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return Percentiles(p50=at(0.5), p95=at(0.95), p99=at(0.99), mean=statistics.fmean(ordered))


@dataclass
class Work:
    """What this replica decodes: token ids per prompt, and how to write them back."""

    ids: list[list[int]]
    prompt_ids: list[int]
    variants: list[str]
    decode: Callable[[list[int]], str]
    eos_ids: set[int]
    pad_id: int


def checkpoint_work(cfg: ExperimentConfig, topo: Topology) -> Work:
    from transformers import AutoTokenizer, GenerationConfig

    from runtime.prompts import read_prompt_table, replica_share

    share = replica_share(read_prompt_table(cfg.prompt_df_path), topo.dp_rank, topo.dp_size)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model_path)
    eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    try:
        generation_eos = GenerationConfig.from_pretrained(cfg.model_path).eos_token_id
        eos |= set(generation_eos if isinstance(generation_eos, list) else [generation_eos]) - {None}
    except OSError:
        pass  # no generation_config.json: the tokenizer's EOS is all there is
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos, default=0)
    return Work(
        [tokenizer(p.text)["input_ids"] for p in share],
        [p.prompt_id for p in share],
        [p.variant for p in share],
        lambda tokens: tokenizer.decode(tokens, skip_special_tokens=True),
        eos,
        pad,
    )


def random_work(cfg: ExperimentConfig, topo: Topology, vocab: int, prompt_tokens: int, count: int) -> Work:
    """Synthetic prompts for benchmark mode: no EOS, so every row decodes exactly max_new_tokens."""
    import torch

    generator = torch.Generator().manual_seed(cfg.seed)
    ids = torch.randint(0, vocab, (count, prompt_tokens), generator=generator).tolist()
    share = list(range(count))[topo.dp_rank :: topo.dp_size]
    return Work([ids[i] for i in share], share, ["synthetic"] * len(share), lambda _tokens: "", set(), 0)


class Rank:
    """One rank's run, from launch to metrics."""

    def __init__(
        self, args: argparse.Namespace, info: LaunchInfo, cfg: ExperimentConfig, model_config: PretrainedConfig
    ) -> None:
        self.args, self.info, self.cfg, self.model_config = args, info, cfg, model_config
        self.topo = Topology(cfg.tp_size, cfg.pp_size, cfg.dp_size, info.rank)
        self.world: World | None = None
        self.tp_group = None
        self.tp_all_reduce: tuple[str, Callable] | None = None  # what AutoTP's layers all-reduce with, named
        self.outputs = RankOutputs(cfg, info.rank, self.topo.owns_results, rows_expected=0)

    def fail(self, message: str, code: int) -> int:
        log.error("%s", message)
        self.outputs.progress("failed", message)
        if self.world is not None:
            self.world.watch.record_failure(message)
        return code

    def on_peer_failure(self, reason: str) -> None:
        """Called by the peer watch: stop now, naming the peer, instead of waiting on it forever."""
        log.error("stopping: %s", reason)
        self.outputs.progress("failed", reason)
        logging.shutdown()
        os._exit(1)

    def run(self) -> int:
        import torch

        cfg, topo, info = self.cfg, self.topo, self.info
        started = datetime.now(UTC)
        self.outputs.progress("starting")
        device = pick_device(cfg.device, info.local_rank)
        from runtime.microbench import calibrate_links, memory_bandwidth

        if device.type == "cpu":  # the CPUs this process may use (a Slurm cpuset can give fewer than the host has)
            torch.set_num_threads(max(1, host_cpus() // info.local_world_size))
        if info.world_size > 1:
            self.world = join_world(
                info, device.type, self.args.rendezvous_timeout, self.args.comm_timeout, self.on_peer_failure
            )
        backend = self.world.backend if self.world else "none"
        log.info("%s; %s; device %s, backend %s", info.describe(), topo.describe(), device, backend)

        self.outputs.progress("loading")
        load_start = time.perf_counter()
        stage = self.load_stage(device)
        if self.args.init == "random":
            count = self.args.prompts or cfg.batch_size * cfg.dp_size
            work = random_work(cfg, topo, self.model_config.vocab_size, self.args.prompt_tokens, count)
        else:
            work = checkpoint_work(cfg, topo)
        self.outputs.rows_expected = len(work.ids) if topo.owns_results else 0
        load_s = time.perf_counter() - load_start

        from runtime.checkpoint import PRECISIONS
        from runtime.energy import energy_meter
        from runtime.generate import DecodeSettings, Generator, Links, Timers
        from runtime.profiling import StepProfiler

        link_fits = []
        if self.world is not None and not self.args.skip_calibration:
            link_fits = calibrate_links(topo, info.hostname, device, self.tp_all_reduce, backend)
        profiled = cfg.profiling_enabled and "torch" in cfg.profilers
        timers = Timers(enabled=device.type == "cpu", marked=profiled)
        if self.tp_group is not None:
            from runtime.tensor_parallel import time_allreduce

            time_allreduce(timers)
        links = Links(topo, device, backend, timers)
        micro = cfg.micro_batches_in_flight if cfg.pp_size > 1 else 1
        profiler = StepProfiler(cfg, info.rank, info.hostname, device, links.drain) if profiled else None
        settings = DecodeSettings(
            device, PRECISIONS[cfg.precision], work.eos_ids, work.pad_id, cfg.max_new_tokens, micro
        )
        generator = Generator(stage, topo, links, settings, profiler.step if profiler else None)
        meter = energy_meter(device.type, info.local_rank, device.index or 0)
        if meter:
            meter.start()
        self.outputs.progress("running")
        latencies, ttfts = [], []
        loop_start = time.perf_counter()
        for first in range(0, len(work.ids), cfg.batch_size):
            batch = slice(first, first + cfg.batch_size)
            results = generator.run(work.ids[batch])
            if topo.owns_results:
                rows = [
                    ShardRow(
                        prompt_id=pid,
                        variant=variant,
                        strategy_id=cfg.strategy_id,
                        rank=info.rank,
                        completion=work.decode(r.tokens),
                        token_ids=r.tokens,
                        latency_ms=r.latency_s * 1e3,
                        ttft_ms=r.ttft_s * 1e3,
                        tokens_generated=len(r.tokens),
                        prompt_tokens=len(ids),
                        batch_index=first // cfg.batch_size,
                        finish_reason=r.finish_reason,
                        gpu_id=device.index if device.type != "cpu" else None,
                    )
                    for pid, variant, ids, r in zip(
                        work.prompt_ids[batch], work.variants[batch], work.ids[batch], results, strict=True
                    )
                ]
                self.outputs.write_rows(rows)
                latencies += [r.latency_ms for r in rows]
                ttfts += [r.ttft_ms for r in rows]
            self.outputs.progress("running")
        wall = time.perf_counter() - loop_start
        if profiler:
            profiler.finish()
        peak_memory = peak_memory_bytes(device)
        held_bytes = sum(p.numel() * p.element_size() for p in stage.model.parameters())
        bandwidth = None
        if info.world_size == 1 and not self.args.skip_calibration:  # the reference: eta is fitted against it
            # after the run and with the model let go, so the probe's buffers inflate no peak reported here
            del generator, stage
            if device.type == "cuda":
                torch.cuda.empty_cache()
            bandwidth = memory_bandwidth(device, megabytes=64 if device.type == "cpu" else 1024, repeats=3)
        split = None
        if timers.enabled:
            split = TimeSplit(
                compute_s=max(wall - timers.comm_s - timers.idle_s, 0.0), comm_s=timers.comm_s, idle_s=timers.idle_s
            )
        self.outputs.write_metrics(
            RankMetrics(
                strategy_id=cfg.strategy_id,
                run_id=cfg.run_id,
                rank=info.rank,
                world_size=info.world_size,
                tp_rank=topo.tp_rank,
                pp_rank=topo.pp_rank,
                dp_rank=topo.dp_rank,
                hostname=info.hostname,
                device=str(device),
                backend=backend,
                precision=cfg.precision,
                prompts=len(work.ids),
                tokens_generated=self.outputs.tokens,
                wall_time_s=wall,
                tokens_per_s=self.outputs.tokens / wall,
                started_at=started.isoformat(),
                finished_at=datetime.now(UTC).isoformat(),
                latency_ms=percentiles(latencies),
                ttft_ms=percentiles(ttfts),
                load_s=load_s,
                weight_bytes=held_bytes,
                peak_memory_bytes=peak_memory,
                time_split=split,
                energy_j=meter.joules() if meter else None,
                energy_source=meter.source if meter else None,
                device_name=device_name(device),
                host_cpus=host_cpus(),
                memory_bandwidth_Bps=bandwidth["bandwidth_Bps"] if bandwidth else None,
                links=tuple(link_fits),
                runtime_build=os.environ.get(RUNTIME_BUILD_VAR),
            )
        )
        self.outputs.progress("done")
        if self.world is not None:
            self.world.finish()
        return 0

    def load_stage(self, device: torch.device) -> Stage:
        """This rank's stage of the model, sliced for TP, in the run's precision, on its device."""
        from runtime.checkpoint import PRECISIONS, load_stage, random_stage

        cfg, topo, model_config = self.cfg, self.topo, self.model_config
        dtype = PRECISIONS[cfg.precision]
        layers = stage_layers(model_config.num_hidden_layers, cfg.pp_size, topo.pp_rank)
        roles = (layers, topo.is_first_stage, topo.is_last_stage)
        if self.args.init == "random":
            # TP slices on the host; without TP the weights are made where they run
            where = "cpu" if cfg.tp_size > 1 else str(device)
            stage = random_stage(model_config, *roles, dtype=dtype, device=where, seed=cfg.seed)
        else:
            stage, _ = load_stage(cfg.model_path, model_config, *roles)
        if cfg.tp_size > 1:
            from runtime.tensor_parallel import init_deepspeed_comm, shard_stage, tp_groups

            self.tp_group = tp_groups(topo)
            shm = init_deepspeed_comm(topo, self.info, device.type)
            log.info("TP group %s, all-reduce via %s", topo.tp_group, "shared memory" if shm else "process group")
            import deepspeed.comm
            import torch.distributed as dist

            name = "shm_all_reduce" if shm else f"{dist.get_backend()}_all_reduce"
            self.tp_all_reduce = (name, functools.partial(deepspeed.comm.inference_all_reduce, group=self.tp_group))
            stage = shard_stage(stage, self.tp_group, cfg.tp_size, dtype)
        stage.model = stage.model.to(device=device, dtype=dtype)
        return stage


def model_config_of(args: argparse.Namespace, cfg: ExperimentConfig) -> PretrainedConfig:
    """The model's config (a named shape in random mode), checked against the run's parallel sizes."""
    from runtime.checkpoint import check_divisible, load_config
    from runtime.shapes import shape_config

    model = shape_config(args.shape) if args.init == "random" else load_config(cfg.model_path)
    check_divisible(model, cfg.tp_size, cfg.pp_size)
    return model


def dry_run(info: LaunchInfo, cfg: ExperimentConfig, model: PretrainedConfig) -> int:
    """Print what this process would be, without joining anyone or loading any weights."""
    topo = Topology(cfg.tp_size, cfg.pp_size, cfg.dp_size, info.rank)
    layers = stage_layers(model.num_hidden_layers, cfg.pp_size, topo.pp_rank)
    print(info.describe())
    print(
        f"{topo.describe()}: tp group {topo.tp_group}, pipeline {topo.pp_group}, replicas {topo.dp_group}, "
        f"owns results: {topo.owns_results}"
    )
    print(f"stage {topo.pp_rank}: layers {layers.start}-{layers.stop - 1} of {model.num_hidden_layers}")
    return 0


def load_run_config(args: argparse.Namespace) -> ExperimentConfig:
    if args.config is None:
        raise InputError("--config exp_config.json is required")
    if args.init == "random" and not args.shape:
        raise InputError("--init random needs --shape (e.g. llama-3.1-8b)")
    return ExperimentConfig.load(args.config)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    info = detect_launch()
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format=f"%(asctime)s [rank {info.rank}] %(levelname)s %(message)s"
    )
    try:
        cfg = load_run_config(args)
        if cfg.world_size != info.world_size:
            raise LaunchError(
                f"{args.config}: world_size {cfg.world_size} (tp*pp*dp) but {info.launcher} started "
                f"{info.world_size} process(es)"
            )
        model = model_config_of(args, cfg)  # before joining: bad sizes fail on every rank at once, peers or not
    except InputError as err:
        log.error("%s", err)
        return 2
    if args.dry_run:
        return dry_run(info, cfg, model)
    rank = Rank(args, info, cfg, model)
    try:
        return rank.run()
    except InputError as err:
        return rank.fail(str(err), 2)
    except Exception as err:
        if rank.world is not None and _looks_like_peer_loss(err):
            # a peer vanished under a collective: give the watch a moment to name it before we speak
            time.sleep(rank.world.watch.stale_s + 2 * rank.world.watch.interval_s)
        traceback.print_exc()
        return rank.fail(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}", 1)
    finally:
        rank.outputs.close()


def _looks_like_peer_loss(err: Exception) -> bool:
    import torch.distributed as dist

    text = str(err).lower()
    return isinstance(err, dist.DistError) or "connection" in text or "gloo" in text or "peer" in text


if __name__ == "__main__":
    sys.exit(main())

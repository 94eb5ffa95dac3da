"""One rank's run, from launch to metrics, in named steps.

`Rank.run`: set up (device and threads, the world joined, this rank's stage and share of the prompts loaded),
time the links, build the generator (with the profiler when asked), warm up untimed on the first batch's shapes,
decode the share in batches `repeats` times (result-owning ranks write the first pass's shard rows as each batch
ends and check every later pass's tokens against them), measure what the rank held, write its metrics, finish.

Torch and the modules that import it are imported inside the steps: `runtime.main` imports this module and
stays quick to import for `--help` and `--dry-run`.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from runtime.contract import (
    RUNTIME_BUILD_VAR,
    ExperimentConfig,
    LinkFit,
    Percentiles,
    RankMetrics,
    RepeatFigures,
    ShardRow,
    TimeSplit,
    first_divergence,
)
from runtime.device import compute_dtype, device_name, host_cpus, peak_memory_bytes, pick_device
from runtime.energy import EnergyMeter, energy_fields, energy_meter
from runtime.launch import LaunchInfo, World, join_world
from runtime.outputs import RankOutputs
from runtime.topology import Topology, stage_layers

if TYPE_CHECKING:
    import torch
    from torch.distributed import ProcessGroup
    from transformers import PretrainedConfig

    from runtime.checkpoint import Stage
    from runtime.generate import Generator, RowResult, Timers
    from runtime.profiling import StepProfiler

log = logging.getLogger("runtime")
COMPILED_DEVICES = ("cuda", "xpu")  # where the one-token step is compiled (runtime.decoder.compiled_step: not a CPU)


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
    """This replica's share of the prompt table, tokenized and ordered by length (ties in table order), so each
    batch holds prompts of like lengths and padding stays small; every strategy batches them alike."""
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
    ids = [tokenizer(p.text)["input_ids"] for p in share]
    order = sorted(range(len(share)), key=lambda i: len(ids[i]))  # batches of like lengths: little padding
    return Work(
        [ids[i] for i in order],
        [share[i].prompt_id for i in order],
        [share[i].variant for i in order],
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


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


@dataclass
class Decoded:
    """What the timed passes measured: each pass's figures, the first pass's rows (the shard's: their latencies,
    and their tokens, which every later pass must reproduce), and the first row of a later pass that did not."""

    repeats: list[RepeatFigures] = field(default_factory=list)
    rows: list[ShardRow] = field(default_factory=list)
    mismatch: str | None = None

    @property
    def median_pass(self) -> RepeatFigures:
        """The pass of median wall time (the lower middle of an even count)."""
        ordered = sorted(self.repeats, key=lambda figures: figures.wall_s)
        return ordered[(len(ordered) - 1) // 2]


@dataclass
class Footprint:
    """What the rank held, and (a single rank that calibrates) the memory bandwidth it then measured and, for
    int8/int4, the rate it dequantizes its weights at."""

    peak_memory_bytes: int
    weight_bytes: int
    memory_bandwidth_Bps: float | None
    dequant_weights_per_s: float | None = None
    dequant_one_cpu_weights_per_s: float | None = None
    decode_dequantizes: bool | None = None


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
        # set by the steps of run(), in order
        self.started: datetime
        self.device: torch.device
        self.dtype: torch.dtype  # activations and unquantized weights
        self.quant_group_size: int | None = None  # weight-only int8/int4: the group size its scales cover
        self.stage: Stage | None = None
        self.work: Work
        self.load_s = 0.0
        self.timers: Timers
        self.profiler: StepProfiler | None = None
        self.generator: Generator | None = None

    @property
    def backend(self) -> str:
        return self.world.backend if self.world else "none"

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
        self.started = datetime.now(UTC)
        self.setup()
        link_fits = self.calibrate()
        self.generator = self.make_generator()
        with self.timed_allreduce():
            warmup_s = self.warm_up()
            meter = self.start_meter()
            decoded = self.decode()
        energy = energy_fields(meter, self.cfg.repeats)  # stopped with the decode: the probes after it not counted
        if self.profiler:
            self.profiler.finish()
        footprint = self.footprint()
        self.outputs.write_metrics(self.metrics(decoded, warmup_s, footprint, link_fits, energy))
        self.finish()
        return 0

    def setup(self) -> None:
        """The device and its threads, the world joined, then this rank's stage and share of the prompts."""
        self.outputs.progress("starting")
        self.device = self.choose_device()
        self.dtype = compute_dtype(self.cfg.precision, self.device)
        if self.info.world_size > 1:
            self.world = join_world(
                self.info, self.device.type, self.args.rendezvous_timeout, self.args.comm_timeout, self.on_peer_failure
            )
        log.info("%s; %s; device %s, backend %s", self.info.describe(), self.topo.describe(), self.device, self.backend)
        self.outputs.progress("loading")
        load_start = time.perf_counter()
        self.stage = self.load_stage(self.device)
        self.work = self.load_work()
        self.outputs.rows_expected = len(self.work.ids) if self.topo.owns_results else 0
        self.load_s = time.perf_counter() - load_start

    def choose_device(self) -> torch.device:
        import torch

        device = pick_device(self.cfg.device, self.info.local_rank)
        if device.type == "cpu":  # the CPUs this process may use (a Slurm cpuset can give fewer than the host has)
            torch.set_num_threads(max(1, host_cpus() // self.info.local_world_size))
        return device

    def load_stage(self, device: torch.device) -> Stage:
        """This rank's stage of the model, sliced for TP, its linears quantized when the precision is int8/int4
        (from the checkpoint's views or this rank's slices, before any cast), in the compute dtype, on its device.
        A checkpoint published quantized (config.json's quantization_config) keeps its weights as stored and is
        sliced here; a dense one is sliced by AutoTP."""
        from runtime.checkpoint import load_stage, random_stage
        from runtime.cpu_linear import can_use, use_gemv
        from runtime.prequantized import TensorParallel, check_stored_bits, is_prequantized, load_prequantized_stage
        from runtime.quantize import QUANTIZED_PRECISIONS

        cfg, topo, model_config = self.cfg, self.topo, self.model_config
        layers = stage_layers(model_config.num_hidden_layers, cfg.pp_size, topo.pp_rank)
        roles = (layers, topo.is_first_stage, topo.is_last_stage)
        if self.args.init != "random" and is_prequantized(model_config):
            check_stored_bits(cfg.precision, model_config, f"{cfg.model_path}/config.json")
            group = self.join_tp_group(device) if cfg.tp_size > 1 else None
            tp = TensorParallel(topo.tp_rank, cfg.tp_size, group)
            stage, _ = load_prequantized_stage(cfg.model_path, model_config, *roles, tp)
            dense = False  # its dense LM head already carries its TP hooks: it stays as loaded
        else:
            quantized = cfg.precision in QUANTIZED_PRECISIONS
            dense = not quantized
            if self.args.init == "random":
                # TP slices on the host; without TP the weights are made where they run
                where = "cpu" if cfg.tp_size > 1 else str(device)
                stage = random_stage(model_config, *roles, dtype=self.dtype, device=where, seed=cfg.seed)
            else:
                stage, _ = load_stage(cfg.model_path, model_config, *roles)
            if cfg.tp_size > 1:
                stage = self.shard(stage, device, None if quantized else self.dtype)
            if quantized:
                stage.model = self.quantize(stage.model, device)
        stage.model = stage.model.to(device=device, dtype=self.dtype)
        if cfg.fast_decode and dense and can_use(device, self.dtype):
            stage.model = use_gemv(stage.model, self.tp_group)
        return stage

    def quantize(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The stage's linears as weight-only int8/int4 groups, each layer from what this rank holds of it."""
        import torch

        from runtime.quantize_stage import quant_group_size, quantize_stage

        cfg = self.cfg
        group = quant_group_size(self.model_config, cfg.precision, cfg.tp_size, cfg.quant_group_size)
        no_bf16 = " (the device has no bf16)" if device.type != "cpu" and self.dtype == torch.float16 else ""
        log.info("weights %s in groups of %d, activations %s%s", cfg.precision, group, self.dtype, no_bf16)
        self.quant_group_size = group
        return quantize_stage(model, cfg.precision, group, self.dtype, device, self.tp_group)

    def join_tp_group(self, device: torch.device) -> ProcessGroup:
        """This rank's TP group, DeepSpeed's comm layer over it, and the all-reduce its layers will use, named."""
        from runtime.tensor_parallel import init_deepspeed_comm, tp_groups

        self.tp_group = tp_groups(self.topo)
        shm = init_deepspeed_comm(self.topo, self.info, device.type)
        log.info("TP group %s, all-reduce via %s", self.topo.tp_group, "shared memory" if shm else "process group")
        import deepspeed.comm
        import torch.distributed as dist

        name = "shm_all_reduce" if shm else f"{dist.get_backend()}_all_reduce"
        self.tp_all_reduce = (name, functools.partial(deepspeed.comm.inference_all_reduce, group=self.tp_group))
        return self.tp_group

    def shard(self, stage: Stage, device: torch.device, dtype: torch.dtype | None) -> Stage:
        """The stage sliced across this rank's TP group by AutoTP (cast to `dtype`; None: kept as stored, to be
        quantized)."""
        from runtime.tensor_parallel import shard_stage

        return shard_stage(stage, self.join_tp_group(device), self.cfg.tp_size, dtype)

    def load_work(self) -> Work:
        """This replica's share of the prompt table, or synthetic prompts in benchmark mode."""
        if self.args.init == "random":
            count = self.args.prompts or self.cfg.batch_size * self.cfg.dp_size
            return random_work(self.cfg, self.topo, self.model_config.vocab_size, self.args.prompt_tokens, count)
        return checkpoint_work(self.cfg, self.topo)

    def calibrate(self) -> list[LinkFit]:
        """This strategy's own links, timed just before decoding (when there are peers and it is not skipped)."""
        from runtime.microbench import calibrate_links

        if self.world is None or self.args.skip_calibration:
            return []
        fits = calibrate_links(self.topo, self.info.hostname, self.device, self.tp_all_reduce, self.backend)
        across = self.world.interface
        return [fit if fit.intra_node else replace(fit, interface=across) for fit in fits]

    def make_generator(self) -> Generator:
        """The generator over this rank's stage, its timers, and the step profiler when the run is profiled."""
        from runtime.generate import DecodeSettings, Generator, Links, Timers
        from runtime.profiling import StepProfiler

        cfg, info, device = self.cfg, self.info, self.device
        profiled = cfg.profiling_enabled and "torch" in cfg.profilers
        self.timers = Timers(enabled=device.type == "cpu", marked=profiled)
        links = Links(self.topo, device, self.backend, self.timers)
        self.profiler = StepProfiler(cfg, info.rank, info.hostname, device, links.drain) if profiled else None
        settings = DecodeSettings(
            device=device,
            dtype=self.dtype,
            eos_ids=self.work.eos_ids,
            pad_id=self.work.pad_id,
            max_new_tokens=cfg.max_new_tokens,
            micro_batches=cfg.micro_batches_in_flight if cfg.pp_size > 1 else 1,
            static_cache=cfg.fast_decode,
            compile_backend="inductor" if cfg.fast_decode and device.type in COMPILED_DEVICES else None,
        )
        assert self.stage is not None
        return Generator(self.stage, self.topo, links, settings, self.profiler.step if self.profiler else None)

    def start_meter(self) -> EnergyMeter | str | None:
        """This rank's energy counter started, or why it has none (None: local rank 0 reads this host's)."""
        meter = energy_meter(self.device.type, self.info.local_rank, self.device.index or 0)
        if isinstance(meter, EnergyMeter):
            meter.start()
        elif meter:
            log.info("%s", meter)
        return meter

    def timed_allreduce(self) -> AbstractContextManager[object]:
        """With TP, the all-reduce of AutoTP's layers counted as communication (and marked, profiled) while
        inside; nothing otherwise."""
        if self.tp_group is None:
            return nullcontext()
        from runtime.tensor_parallel import timed_allreduce

        return timed_allreduce(self.timers)

    def warm_up(self) -> float:
        """The first batch's shapes, `warmup_batches` times, before any clock that counts (first-use costs: kernel
        compilation, allocator growth, lazy initialisation); tokens discarded, link timers restarted. Its wall
        time, so the cost is reported rather than hidden in the first measured batch."""
        generator, batch = self.generator, self.work.ids[: self.cfg.batch_size]
        assert generator is not None
        if not self.cfg.warmup_batches or not batch:
            return 0.0
        self.outputs.progress("warmup")
        start = time.perf_counter()
        for _ in range(self.cfg.warmup_batches):
            generator.run(batch, profiled=False)
        generator.links.drain()
        self.timers.comm_s = self.timers.idle_s = 0.0
        self.timers.forward_s.clear()
        return time.perf_counter() - start

    def decode(self) -> Decoded:
        """The replica's share in batches, `repeats` times. Result-owning ranks write the first pass's shard rows
        as each batch ends, and compare every later pass's tokens with them (greedy: they must be equal)."""
        cfg, work, generator, outputs = self.cfg, self.work, self.generator, self.outputs
        assert generator is not None
        outputs.rows_expected *= cfg.repeats  # the dashboard's progress counts every pass
        decoded = Decoded()
        for repeat in range(cfg.repeats):
            note = f"repeat {repeat + 1}/{cfg.repeats}" if cfg.repeats > 1 else None
            outputs.progress("running", note)
            rows: list[ShardRow] = []
            start = time.perf_counter()
            for first in range(0, len(work.ids), cfg.batch_size):
                results = generator.run(work.ids[first : first + cfg.batch_size])
                if self.topo.owns_results:
                    batch = self.shard_rows(first, results)
                    if repeat == 0:
                        outputs.write_rows(batch)
                    else:
                        outputs.count(batch)
                    rows += batch
                outputs.progress("running", note, self.compute_ms_per_step())
            wall = time.perf_counter() - start
            if repeat == 0:
                decoded.rows = rows
            elif decoded.mismatch is None:
                decoded.mismatch = self.mismatch(repeat, decoded.rows, rows)
            decoded.repeats.append(self.pass_figures(wall, rows))
        return decoded

    def compute_ms_per_step(self) -> float | None:
        """This rank's median forward step in the timed passes so far, where it is measured (CPU)."""
        steps = self.timers.forward_s
        return statistics.median(steps) * 1e3 if self.timers.enabled and steps else None

    @staticmethod
    def pass_figures(wall_s: float, rows: list[ShardRow]) -> RepeatFigures:
        """One pass's figures from its rows: tokens, median TTFT and inter-token latency, and its prefill time
        (per batch, until its last row's first token)."""
        gaps = [(r.latency_ms - r.ttft_ms) / (r.tokens_generated - 1) for r in rows if r.tokens_generated > 1]
        first_tokens: dict[int, float] = {}
        for r in rows:
            first_tokens[r.batch_index] = max(first_tokens.get(r.batch_index, 0.0), r.ttft_ms)
        return RepeatFigures(
            wall_s,
            tokens=sum(r.tokens_generated for r in rows),
            ttft_ms=median([r.ttft_ms for r in rows]),
            itl_ms=median(gaps),
            rows=len(rows),
            prompt_tokens=sum(r.prompt_tokens for r in rows),
            prefill_s=sum(first_tokens.values()) / 1e3 if rows else None,
        )

    @staticmethod
    def mismatch(repeat: int, first: list[ShardRow], again: list[ShardRow]) -> str | None:
        """The first row of pass `repeat` (0-based) whose tokens differ from the first pass's, named."""
        for before, now in zip(first, again, strict=True):
            at = first_divergence(before.token_ids, now.token_ids)
            if at is not None:
                return (
                    f"repeat {repeat + 1} differs from repeat 1 at prompt {now.prompt_id} ({now.variant}), "
                    f"token {at}: greedy decoding must repeat exactly"
                )
        return None

    def shard_rows(self, first: int, results: list[RowResult]) -> list[ShardRow]:
        """The rows of the batch that starts at prompt `first`, as the shard file holds them."""
        cfg, work, device = self.cfg, self.work, self.device
        batch = slice(first, first + cfg.batch_size)
        return [
            ShardRow(
                prompt_id=pid,
                variant=variant,
                strategy_id=cfg.strategy_id,
                rank=self.info.rank,
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

    def footprint(self) -> Footprint:
        """Peak memory and the weights held; then, on a single rank that calibrates, the memory bandwidth (the
        reference eta is fitted against), measured with the model let go so its buffers inflate no peak here."""
        import torch

        from runtime.quantize import decodes_from_codes, weight_bytes

        assert self.stage is not None
        peak = peak_memory_bytes(self.device)
        held = weight_bytes(self.stage.model)
        bandwidth, dequant, decode_dequantizes = None, (None, None), None
        if self.info.world_size == 1 and not self.args.skip_calibration:
            from runtime.microbench import dequantize_rates, memory_bandwidth

            dequant = dequantize_rates(self.stage.model, self.dtype, self.device)
            if dequant[0] is not None:
                decode_dequantizes = not decodes_from_codes(self.device, self.dtype)
            self.generator = self.stage = None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            megabytes = 64 if self.device.type == "cpu" else 1024
            bandwidth = memory_bandwidth(self.device, megabytes=megabytes, repeats=3)["bandwidth_Bps"]
        return Footprint(peak, held, bandwidth, *dequant, decode_dequantizes)

    def time_split(self, decoded: Decoded) -> TimeSplit | None:
        """Compute, communication and idle time of a timed pass (the mean of the passes), where they were
        measured (CPU)."""
        timers, passes = self.timers, len(decoded.repeats)
        if not timers.enabled:
            return None
        wall = sum(figures.wall_s for figures in decoded.repeats)
        return TimeSplit(
            compute_s=max(wall - timers.comm_s - timers.idle_s, 0.0) / passes,
            comm_s=timers.comm_s / passes,
            idle_s=timers.idle_s / passes,
            steps=len(timers.forward_s) / passes,
            step_ms=self.compute_ms_per_step(),
        )

    def metrics(
        self,
        decoded: Decoded,
        warmup_s: float,
        footprint: Footprint,
        link_fits: list[LinkFit],
        energy: dict[str, Any],
    ) -> RankMetrics:
        """This rank's metrics record; `energy` as `runtime.energy.energy_fields` gives it."""
        cfg, info, topo, typical = self.cfg, self.info, self.topo, decoded.median_pass
        return RankMetrics(
            strategy_id=cfg.strategy_id,
            run_id=cfg.run_id,
            rank=info.rank,
            world_size=info.world_size,
            tp_rank=topo.tp_rank,
            pp_rank=topo.pp_rank,
            dp_rank=topo.dp_rank,
            hostname=info.hostname,
            device=str(self.device),
            backend=self.backend,
            precision=cfg.precision,
            quant_group_size=self.quant_group_size,
            prompts=len(self.work.ids),
            tokens_generated=typical.tokens,
            wall_time_s=typical.wall_s,
            tokens_per_s=typical.tokens / typical.wall_s,
            started_at=self.started.isoformat(),
            finished_at=datetime.now(UTC).isoformat(),
            latency_ms=percentiles([row.latency_ms for row in decoded.rows]),
            ttft_ms=percentiles([row.ttft_ms for row in decoded.rows]),
            load_s=self.load_s,
            weight_bytes=footprint.weight_bytes,
            peak_memory_bytes=footprint.peak_memory_bytes,
            time_split=self.time_split(decoded),
            **energy,
            device_name=device_name(self.device),
            host_cpus=host_cpus(),
            memory_bandwidth_Bps=footprint.memory_bandwidth_Bps,
            dequant_weights_per_s=footprint.dequant_weights_per_s,
            dequant_one_cpu_weights_per_s=footprint.dequant_one_cpu_weights_per_s,
            decode_dequantizes=footprint.decode_dequantizes,
            links=tuple(link_fits),
            runtime_build=os.environ.get(RUNTIME_BUILD_VAR),
            warmup_s=warmup_s,
            repeats=tuple(decoded.repeats),
            repeat_mismatch=decoded.mismatch,
            comm_interface=self.world.interface if self.world else None,
            comm_address=self.world.address if self.world else None,
        )

    def finish(self) -> None:
        self.outputs.progress("done")
        if self.world is not None:
            self.world.finish()

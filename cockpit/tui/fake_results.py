"""Fake runs for the results screen's snapshots: fixed tables of three strategies (the reference, TP over two
nodes, PP over two nodes), two prompt variants of two prompts each, scored by the same code as a real run. TP
diverges from the reference on one prompt. The completed run has a fixed performance analysis (PP measured at
under half its predicted tokens/s) and profiles: TP's two ranks traced by torch.profiler, rank 0 by perf too,
and one PP trace too torn to summarize; the running one has neither, its model folder not being on this machine.
Nothing here reads or writes a file."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pandas as pd

from cockpit.analysis import performance_model as pm
from cockpit.analysis.bottlenecks import SPLIT_PARTS, WHAT_IF_LINKS, Performance, StrategyPerformance
from cockpit.analysis.report import score_rows
from cockpit.analysis.results import RunInfo, RunResults, run_results
from cockpit.errors import BadInput
from cockpit.sweep import strategies as parallelism
from cockpit.sweep.collect import TraceFile
from runtime.contract import PROFILER_FILES, OpTime, Profiler, ProfileSummary

RUNS_DIR = Path("/srv/cockpit/runs")
# strategy -> kind, tp, pp, nodes, latency ms of its first prompt, wall time s, energy J (None: not measured)
STRATEGIES: dict[str, tuple[str, int, int, int, float, float, float | None]] = {
    "tiny_pp1_tp1_n1": ("reference", 1, 1, 1, 820.0, 4.2, 310.0),
    "tiny_pp1_tp2_n2": ("tp_nodes", 2, 1, 2, 540.0, 2.9, 402.0),
    "tiny_pp2_tp1_n2": ("pp_nodes", 1, 2, 2, 700.0, 3.6, None),
}
PROMPTS = [("2k", 0), ("2k", 1), ("4k", 0), ("4k", 1)]
TEXT = (
    "A cluster scheduler decides which job runs on which node and when. Slurm keeps a queue per partition, "
    "starts a job once the nodes it asked for are free, and"
)
TOKENS = list(range(100, 132))
DIVERGING = ("tiny_pp1_tp2_n2", "4k", 1)  # this strategy's completion of this prompt parts from the reference
DIVERGED_TEXT = TEXT[: TEXT.index("keeps")] + "runs jobs in the order they came, unless a backfill slot opens first."
MODEL_DIR = Path("/srv/cockpit/models/tiny")
HARDWARE = (
    "Reference device: AMD Ryzen AI Max+ 395; 16 CPUs; decode reads at 41.3 GB/s (eta 16% of 256.0 GB/s); "
    "prefill computes at 182.4 GFLOP/s; overhead 4.30 ms per decode pass, 12.5 ms per prefill."
)
WHAT_IF_COLUMNS = [f"{pm.NOMINAL_LINKS[link].name} x{nodes}" for nodes in (2, 4) for link in WHAT_IF_LINKS]
# strategy -> the whole run's predicted seconds by part, predicted TTFT s, measured compute/comm/idle shares of a
# rank's wall time, the bottleneck's detail, predicted tokens/s on each of WHAT_IF_COLUMNS
PREDICTED: dict[str, tuple[dict[str, float], float, tuple[float, float, float], str, tuple[float, ...]]] = {
    "tiny_pp1_tp1_n1": (
        {pm.OVERHEAD: 0.55, pm.COMPUTE: 0.85, pm.MEMORY: 2.5},
        0.385,
        (0.93, 0.0, 0.07),
        "every decode step reads weights and KV cache at 41.3 GB/s",
        (32.8,) * 8,
    ),
    "tiny_pp1_tp2_n2": (
        {pm.OVERHEAD: 0.55, pm.COMPUTE: 0.43, pm.MEMORY: 1.25, pm.LATENCY: 1.3, pm.BANDWIDTH: 0.07},
        0.29,
        (0.52, 0.31, 0.17),
        "48 all-reduces per token at 212 us each",
        (18.4, 27.9, 36.2, 38.1, 10.7, 17.5, 25.3, 27.6),
    ),
    "tiny_pp2_tp1_n2": (
        {pm.OVERHEAD: 0.28, pm.COMPUTE: 0.22, pm.MEMORY: 1.1, pm.LATENCY: 0.04, pm.BANDWIDTH: 0.06},
        0.31,
        (0.38, 0.06, 0.56),
        "every decode step reads weights and KV cache at 41.3 GB/s",
        (70.1, 73.4, 75.0, 75.2, 96.3, 112.8, 121.5, 122.9),
    ),
}

# TP's ranks as torch.profiler saw them on the CPU: window ms, compute/all_reduce/sampling ms, idle share, gaps,
# the longest gap ms, then self ms of the operators in TOP_OPS
PROFILED: dict[int, tuple[float, tuple[float, float, float], float, int, float, tuple[float, ...]]] = {
    0: (412.6, (371.5, 127.9, 20.4), 0.050, 24, 1.84, (121.4, 86.7, 41.2, 18.3, 6.1)),
    1: (414.9, (369.8, 131.7, 21.3), 0.057, 27, 2.06, (125.0, 85.9, 40.8, 18.6, 6.3)),
}
TOP_OPS = (  # name, calls in the 8 profiled steps
    ("deepspeed::inference_all_reduce_", 72),
    ("aten::mm", 296),
    ("aten::scaled_dot_product_attention", 32),
    ("aten::mul", 512),
    ("aten::topk", 8),
)
TORN_TRACE = "not a Chrome trace (not JSON: Unterminated string starting at: line 1 column 6291431 (char 6291430))"


def fake_runs() -> list[RunInfo]:
    """Four runs, newest first: one completed, one running with only the reference collected, one planned, and
    one whose manifest is torn."""
    torn = f"unreadable: {RUNS_DIR}/run_20261121-070000/manifest.json: not valid JSON: Expecting ',' delimiter"
    return [
        RunInfo("run_20261124-093000", RUNS_DIR / "run_20261124-093000", "completed", "slurm", 3, 3,
                "2026-11-24T09:30:00+00:00", True),
        RunInfo("run_20261123-101500", RUNS_DIR / "run_20261123-101500", "running", "slurm", 3, 1,
                "2026-11-23T10:15:00+00:00", True),
        RunInfo("run_20261122-080000", RUNS_DIR / "run_20261122-080000", "planned", "slurm", 3, 0,
                "2026-11-22T08:00:00+00:00", False),
        RunInfo("run_20261121-070000", RUNS_DIR / "run_20261121-070000", torn, "?", 0, 0, None, False),
    ]  # fmt: skip


def _shape(strategy: str) -> dict[str, Any]:
    kind, tp, pp, nodes, *_ = STRATEGIES[strategy]
    return {"strategy": strategy, "strategy_kind": kind, "tp_size": tp, "pp_size": pp, "num_nodes": nodes}


def _row(strategy: str, variant: str, prompt_id: int) -> dict[str, Any]:
    latency = STRATEGIES[strategy][4]
    diverges = (strategy, variant, prompt_id) == DIVERGING
    step = 1 + PROMPTS.index((variant, prompt_id))
    return {
        **_shape(strategy),
        "variant": variant,
        "prompt_id": prompt_id,
        "completion": DIVERGED_TEXT if diverges else TEXT,
        "token_ids": TOKENS[:21] + [7] * 11 if diverges else TOKENS,
        "tokens_generated": len(TOKENS),
        "prompt_tokens": {"2k": 1800, "4k": 3700}[variant] + 150 * prompt_id,
        "latency_ms": latency * (1 + 0.35 * step),
        "ttft_ms": latency * 0.2 * step,
    }


def _metrics(strategy: str) -> dict[str, Any]:
    _, tp, pp, _, _, wall, energy = STRATEGIES[strategy]
    tokens = len(TOKENS) * len(PROMPTS)
    return {
        **_shape(strategy),
        "world_size": tp * pp,
        "elapsed_s": wall + 20.0,
        "max_rss_bytes": 2**31,
        "wall_time_s": wall,
        "tokens_generated": tokens,
        "prompts": len(PROMPTS),
        "energy_j": energy,
    }


def _strategy_performance(strategy: str) -> StrategyPerformance:
    kind, tp, pp, nodes, _, wall, _ = STRATEGIES[strategy]
    seconds, ttft_s, split, detail, what_if = PREDICTED[strategy]
    predicted = pm.Breakdown(seconds)
    what = parallelism.STRATEGIES[kind].label(parallelism.Shape(tp, pp, nodes))
    part = predicted.bottleneck
    return StrategyPerformance(
        strategy=strategy,
        kind=kind,
        label=what,
        tokens=len(TOKENS) * len(PROMPTS),
        predicted=predicted,
        predicted_ttft_s=ttft_s,
        measured_wall_s=wall,
        measured_ttft_s=statistics.median(_row(strategy, v, p)["ttft_ms"] for v, p in PROMPTS) / 1000,
        measured_split=dict(zip(SPLIT_PARTS, split, strict=True)),
        sentence=f"{strategy} ({what}) is {part}-bound, {predicted.share(part):.0%} of its predicted time: {detail}.",
        what_if=dict(zip(WHAT_IF_COLUMNS, what_if, strict=True)),
    )


def fake_performance(strategies: list[str]) -> Performance | str:
    """The completed run's analysis; for the others why there is none, as if their model folder were elsewhere."""
    if len(strategies) < len(STRATEGIES):
        return f"no prediction: {MODEL_DIR}/config.json: No such file or directory"
    return Performance(HARDWARE, [_strategy_performance(s) for s in strategies], [])


def _trace_path(run_dir: Path, strategy: str, rank: int, tool: Profiler) -> Path:
    return run_dir / strategy / "profiling" / f"rank_{rank}" / PROFILER_FILES[tool]


def _profile(run_dir: Path, rank: int) -> ProfileSummary:
    window, (compute, all_reduce, sampling), idle, gaps, longest, self_ms = PROFILED[rank]
    strategy = "tiny_pp1_tp2_n2"
    return ProfileSummary(
        strategy_id=strategy,
        run_id=run_dir.name,
        rank=rank,
        hostname=f"node{rank}",
        trace=str(_trace_path(run_dir, strategy, rank, "torch").relative_to(run_dir / strategy)),
        steps=8,
        window_ms=window,
        ranges_ms={"compute": compute, "all_reduce": all_reduce, "send_recv": 0.0, "sampling": sampling},
        comm_share=all_reduce / window,
        idle_share=idle,
        gaps=gaps,
        gap_threshold_ms=0.05,
        longest_gap_ms=longest,
        device_busy_share=None,
        top_ops=tuple(OpTime(name, calls, ms, ms / window) for (name, calls), ms in zip(TOP_OPS, self_ms, strict=True)),
    )


def fake_traces(run_dir: Path) -> tuple[TraceFile, ...]:
    """The completed run's profiler outputs, in `iter_traces`' order: by strategy, rank, torch first."""
    tp, pp = "tiny_pp1_tp2_n2", "tiny_pp2_tp1_n2"
    torn = _trace_path(run_dir, pp, 1, "torch")
    return (
        TraceFile(tp, 0, "torch", _trace_path(run_dir, tp, 0, "torch"), 18_734_512, _profile(run_dir, 0)),
        TraceFile(tp, 0, "perf", _trace_path(run_dir, tp, 0, "perf"), 41_208_832),
        TraceFile(tp, 1, "torch", _trace_path(run_dir, tp, 1, "torch"), 18_902_114, _profile(run_dir, 1)),
        TraceFile(pp, 1, "torch", torn, 6_291_456, problem=f"{torn}: {TORN_TRACE}"),
    )


def fake_results(run_dir: Path) -> RunResults:
    """The results of one of `fake_runs()`, as `load_results` gives them; BadInput as it raises it for a run
    with nothing collected or a torn manifest."""
    run = next((r for r in fake_runs() if r.run_dir == run_dir), None)
    if run is None or run.state.startswith("unreadable: "):
        raise BadInput(run.state.removeprefix("unreadable: ") if run else f"{run_dir}: not a sweep run folder")
    if not run.has_results:
        raise BadInput(f"{run_dir}: no strategy has been collected yet (no results/{run.run_id}.parquet)")
    strategies = list(STRATEGIES)[: run.collected]
    rows = pd.DataFrame([_row(s, v, p) for s in strategies for v, p in PROMPTS]).assign(run_id=run.run_id)
    metrics = pd.DataFrame([_metrics(s) for s in strategies])
    baseline = pd.DataFrame({"variant": [v for v, _ in PROMPTS], "prompt_id": [p for _, p in PROMPTS]})
    baseline["local_completion"] = TEXT
    scored = score_rows(rows, metrics, baseline, run.run_id, performance=fake_performance(strategies))
    traces = fake_traces(run_dir) if run.collected == len(STRATEGIES) else ()
    return run_results(run_dir, scored, {}, traces)

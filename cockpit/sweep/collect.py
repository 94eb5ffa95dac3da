"""`ResultCollector`: a finished strategy's shards and metrics into the run's tables.

It reads exactly the ranks that own results. A missing shard, a prompt no shard holds, a torn last line (the
rank died mid-write) or a line that is not JSON make the strategy *partial*: the rows that are whole are kept,
every problem is named by file and line, and nothing is fatal. After each strategy the long-form table
`results/run_<ts>.parquet` and `results/cluster_metrics_run_<ts>.parquet` are rewritten atomically, so a sweep
that dies later has lost nothing already collected. A strategy's energy sums its ranks' device counters and
its hosts' package counters, each host's split between its ranks by busy time (`strategy_energy`).
`iter_traces` finds what the ranks' profilers left.
"""

from __future__ import annotations

import io
import json
import statistics
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq

from cockpit.errors import BAD_INPUT
from cockpit.jobs.records import JobRecord
from cockpit.sweep.strategies import ParallelismStrategy
from runtime.atomic import atomic_open
from runtime.contract import PROFILER_FILES, PROFILER_VIEWERS, ExperimentConfig, Profiler, ProfileSummary
from runtime.trace_summary import summarize

SHARD_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.int64()),
        ("variant", pa.string()),
        ("strategy_id", pa.string()),
        ("rank", pa.int64()),
        ("completion", pa.string()),
        ("token_ids", pa.list_(pa.int64())),
        ("latency_ms", pa.float64()),
        ("ttft_ms", pa.float64()),
        ("tokens_generated", pa.int64()),
        ("prompt_tokens", pa.int64()),
        ("batch_index", pa.int64()),
        ("finish_reason", pa.string()),
        ("gpu_id", pa.int64()),
    ]
)
REQUIRED = ("prompt_id", "variant", "completion", "token_ids", "latency_ms")
STRATEGY_COLUMNS = ["run_id", "strategy", "strategy_kind", "tp_size", "pp_size", "num_nodes"]
# each timed pass's figures, kept per strategy as `pass_<figure>` (JSON lists) for the report's medians and spreads
PASS_FIGURES = ("tokens_per_s", "ttft_ms", "itl_ms", "prefill_tokens_per_s", "decode_tokens_per_s")
# trace_path: the rank's torch trace, relative to the run folder (the folder can move), or null when not profiled
RESULT_COLUMNS = [*STRATEGY_COLUMNS, *(n for n in SHARD_SCHEMA.names if n != "strategy_id"), "trace_path"]


@dataclass
class ShardRead:
    table: pa.Table
    problems: list[str] = field(default_factory=list)


def read_shard(path: Path) -> ShardRead:
    """One shard's rows through pyarrow's JSON reader; torn and non-JSON lines dropped and named."""
    data = path.read_bytes()
    problems = []
    if data and not data.endswith(b"\n"):
        whole = data.rfind(b"\n") + 1
        line = data[:whole].count(b"\n") + 1
        problems.append(f"{path}:{line}: torn last line dropped ({len(data) - whole} bytes, no newline)")
        data = data[:whole]
    options = pajson.ParseOptions(explicit_schema=SHARD_SCHEMA, unexpected_field_behavior="ignore")
    try:
        table = pajson.read_json(io.BytesIO(data), parse_options=options) if data else SHARD_SCHEMA.empty_table()
    except pa.ArrowInvalid:
        return _read_lines(path, data, problems)
    if any(table[name].null_count for name in REQUIRED):
        return _read_lines(path, data, problems)
    return ShardRead(table, problems)


def _read_lines(path: Path, data: bytes, problems: list[str]) -> ShardRead:
    """The slow path, line by line, for a shard with bad lines: every good row kept, every bad one named."""
    rows: list[dict[str, Any]] = []
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            row = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            problems.append(f"{path}:{number}: not JSON ({getattr(err, 'msg', err)}), line dropped")
            continue
        missing = [k for k in REQUIRED if not isinstance(row, dict) or row.get(k) is None]
        if missing:
            problems.append(f"{path}:{number}: no {', '.join(missing)}, line dropped")
            continue
        rows.append({name: row.get(name) for name in SHARD_SCHEMA.names})
    return ShardRead(pa.Table.from_pylist(rows, schema=SHARD_SCHEMA), problems)


@dataclass(frozen=True)
class TraceFile:
    """One profiler output of one rank, and for a torch trace what it says (ProfileSummary)."""

    strategy_id: str
    rank: int
    tool: Profiler
    path: Path
    bytes: int
    summary: ProfileSummary | None = None
    problem: str | None = None  # why a torch trace has no summary

    @property
    def opens_with(self) -> str:
        return PROFILER_VIEWERS[self.tool]


def how_to_open(traces: Iterable[TraceFile]) -> list[str]:
    """A line per kind of profiler output among `traces`: its file name and what opens it."""
    present = {trace.tool for trace in traces}
    return [f"{name}: open with {PROFILER_VIEWERS[tool]}" for tool, name in PROFILER_FILES.items() if tool in present]


def trace_summary(config: ExperimentConfig, rank: int, trace: Path) -> ProfileSummary:
    """The rank's summary as it wrote it; else made here from its trace (a rank that died after the export)."""
    written = config.profile_summary_path(rank)
    if written.exists():
        return ProfileSummary.load(written)
    relative = str(trace.relative_to(config.output_root))
    return summarize(trace, strategy_id=config.strategy_id, run_id=config.run_id, rank=rank, trace=relative)


def rank_traces(config: ExperimentConfig, rank: int) -> Iterator[TraceFile]:
    """What the profilers left in one rank's trace folder, torch's trace first."""
    for tool, name in PROFILER_FILES.items():
        path = config.trace_path(rank) / name
        if not path.is_file():
            continue
        summary, problem = None, None
        if tool == "torch":
            try:
                summary = trace_summary(config, rank, path)
            except BAD_INPUT as err:
                problem = str(err)
        yield TraceFile(config.strategy_id, rank, tool, path, path.stat().st_size, summary, problem)


@dataclass
class Collected:
    """One strategy's rows, its metrics row, and what was wrong with its files."""

    strategy_id: str
    rows: pd.DataFrame
    metrics: dict[str, Any]
    problems: list[str]
    partial: bool


def _busy_s(metrics: dict[str, Any], by_compute: bool) -> float:
    return metrics["time_split"]["compute_s"] if by_compute else metrics["wall_time_s"]


def strategy_energy(by_rank: list[dict[str, Any]]) -> dict[str, Any]:
    """The strategy's energy from its ranks' metrics (by rank, {} for a rank that wrote none): each rank's own
    device counter, or its share of its host's package counter, which the host's local rank 0 read, split
    between the host's ranks by busy time (compute time where every one has a time split, else wall time): an
    estimate where a host ran several ranks, though their sum is the host's measured joules. The total is known
    only when every rank is covered; else `energy_why` names the first rank that is not, and why."""
    joules: list[float | None] = [m.get("energy_j") for m in by_rank]
    hosts: dict[str, list[int]] = {}
    for rank, m in enumerate(by_rank):
        if m:
            hosts.setdefault(m.get("hostname") or "", []).append(rank)
    estimated = False
    for ranks in hosts.values():
        host_j = next((by_rank[r]["host_energy_j"] for r in ranks if by_rank[r].get("host_energy_j") is not None), None)
        shared = [r for r in ranks if joules[r] is None]
        if host_j is None or not shared:
            continue
        by_compute = all(by_rank[r].get("time_split") for r in shared)
        busy = [_busy_s(by_rank[r], by_compute) for r in shared]
        for r, b in zip(shared, busy, strict=True):
            joules[r] = host_j * (b / sum(busy) if sum(busy) > 0 else 1 / len(shared))
        estimated |= len(shared) > 1
    why = None
    if missing := [r for r, j in enumerate(joules) if j is None]:
        m = by_rank[missing[0]]
        host = m.get("hostname") or ""
        reasons = [m.get("energy_why"), *(by_rank[r].get("energy_why") for r in hosts.get(host, []))]
        reason = next((w for w in reasons if w), "no energy figure") if m else "wrote no metrics"
        why = f"rank {missing[0]}{f' on {host}' if host else ''}: {reason}"
    return {
        "energy_j": None if missing else sum(j for j in joules if j is not None),
        "energy_source": ",".join(sorted({m["energy_source"] for m in by_rank if m.get("energy_source")})) or None,
        "energy_estimated": estimated,  # a host's joules split between its ranks: the per-rank shares estimated
        "energy_why": why,
        "rank_energy_j": json.dumps(joules),  # by rank: its own or its share of its host's (null: unknown)
    }


def _metrics_row(strategy: ParallelismStrategy, rows: pd.DataFrame, job: JobRecord | None) -> dict[str, Any]:
    """The strategy's cluster metrics: ranks' own measurements, with the scheduler's view of the job."""
    config = strategy.config()
    by_rank = [
        json.loads(path.read_text()) if path.exists() else {}
        for path in map(config.metrics_path, range(strategy.world_size))
    ]
    ranks, rank_hosts = [m for m in by_rank if m], [m.get("hostname") for m in by_rank]
    passes = _passes(ranks)
    walls = [p.wall_s for p in passes]  # the median pass's (the lower middle: a pass that happened)
    wall = statistics.median_low(walls) if walls else max((m["wall_time_s"] for m in ranks), default=None)
    tokens = int(rows["tokens_generated"].sum()) if len(rows) else 0
    splits = [m.get("time_split") for m in ranks]
    hosts = Counter(m["hostname"] for m in ranks if m.get("hostname"))

    def first(key: str) -> Any:
        return next((m[key] for m in ranks if m.get(key) is not None), None)

    def mean_split(key: str) -> float | None:
        return sum(s[key] for s in splits) / len(splits) if ranks and all(splits) else None

    return {
        "strategy": strategy.strategy_id,
        "strategy_kind": strategy.kind,
        "tp_size": strategy.tp_size,
        "pp_size": strategy.pp_size,
        "num_nodes": strategy.num_nodes,
        "world_size": strategy.world_size,
        "batch_size": config.batch_size,
        "device": ranks[0]["device"] if ranks else None,
        "job_id": job.job_id if job else None,
        "state": job.state if job else None,
        "elapsed_s": job.elapsed_s if job else None,
        "max_rss_bytes": job.max_rss_bytes if job else None,
        "wall_time_s": wall,
        "load_s": max((m.get("load_s") or 0.0 for m in ranks), default=None),
        "tokens_generated": tokens,
        "tokens_per_s": tokens / wall if wall else None,
        "prompts": len(rows),
        **strategy_energy(by_rank),
        "metrics_ranks": len(ranks),
        # the timed passes (runtime.contract.RepeatFigures) as the strategy made them: tokens/s, TTFT, ITL each
        "repeats": len(passes) or None,
        **{f"pass_{figure}": json.dumps([getattr(p, figure) for p in passes]) for figure in PASS_FIGURES},
        "warmup_s": max((m["warmup_s"] for m in ranks if m.get("warmup_s") is not None), default=None),
        "repeat_mismatch": first("repeat_mismatch"),
        "precision": config.precision,
        "micro_batches": config.micro_batches_in_flight if config.pp_size > 1 else 1,
        "device_name": first("device_name"),
        "host_cpus": first("host_cpus"),
        "memory_bandwidth_Bps": first("memory_bandwidth_Bps"),
        "dequant_weights_per_s": first("dequant_weights_per_s"),
        "dequant_one_cpu_weights_per_s": first("dequant_one_cpu_weights_per_s"),
        "decode_dequantizes": first("decode_dequantizes"),
        "hosts": len(hosts) or None,
        "hostnames": json.dumps(sorted(hosts)),
        "ranks_per_host": max(hosts.values(), default=None),
        "rank_hosts": json.dumps(rank_hosts),  # by rank: the host it ran on (null: no metrics from it)
        # by rank: the most memory it held, and its share of the weights (the memory plan's estimate is checked
        # against the first)
        "rank_peak_memory_bytes": json.dumps([m.get("peak_memory_bytes") for m in by_rank]),
        "rank_weight_bytes": json.dumps([m.get("weight_bytes") for m in by_rank]),
        # by rank: its pipeline stage, its forward steps in a timed pass and the median one's compute
        "rank_stages": json.dumps([m.get("pp_rank") for m in by_rank]),
        "rank_step_ms": json.dumps([(m.get("time_split") or {}).get("step_ms") for m in by_rank]),
        "rank_steps": json.dumps([(m.get("time_split") or {}).get("steps") for m in by_rank]),
        "links": json.dumps(first("links") or []),  # the ranks' own link timings (runtime.contract.LinkFit)
        # the network interface(s) the ranks' collectives used between hosts
        "comm_interfaces": ",".join(sorted({m["comm_interface"] for m in ranks if m.get("comm_interface")})) or None,
        # the verified runtime build(s) the ranks ran from; more than one would mean nodes ran different code
        "runtime_build": ",".join(sorted({m["runtime_build"] for m in ranks if m.get("runtime_build")})) or None,
        # a rank's mean seconds in its own work, waiting on communication, and idle (pipeline bubble)
        **{key: mean_split(key) for key in ("compute_s", "comm_s", "idle_s")},
        **_profiled(strategy),
    }


@dataclass(frozen=True)
class Pass:
    """One timed pass of a strategy: as long as its slowest rank; the tokens, rows and prompt tokens of the ranks
    that own results (a replica each), their median TTFT and ITL, and their longest prefill."""

    wall_s: float
    tokens: int
    rows: int
    prompt_tokens: int
    ttft_ms: float | None
    itl_ms: float | None
    prefill_s: float | None

    @property
    def tokens_per_s(self) -> float | None:
        return self.tokens / self.wall_s if self.wall_s else None

    @property
    def prefill_tokens_per_s(self) -> float | None:
        """The prompts' own tokens over the prefill: how fast prompts are read."""
        return self.prompt_tokens / self.prefill_s if self.prefill_s else None

    @property
    def decode_tokens_per_s(self) -> float | None:
        """Tokens after each row's first over the rest of the pass: how fast tokens are generated."""
        decode_s = self.wall_s - (self.prefill_s or 0.0)
        return (self.tokens - self.rows) / decode_s if self.prefill_s is not None and decode_s > 0 else None


def _passes(ranks: list[dict[str, Any]]) -> list[Pass]:
    """Each timed pass of the strategy, from every rank's figures (runtime.contract.RepeatFigures)."""
    counts = {len(m.get("repeats") or ()) for m in ranks}
    if not ranks or len(counts) != 1 or 0 in counts:
        return []  # no pass figures, or ranks that disagree on how many passes there were: none to trust

    def median(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    passes = []
    for figures in zip(*(m["repeats"] for m in ranks), strict=True):
        owners = [f for f in figures if f["tokens"]]
        prefills = [f.get("prefill_s") for f in owners]
        passes.append(
            Pass(
                wall_s=max(f["wall_s"] for f in figures),
                tokens=sum(f["tokens"] for f in owners),
                rows=sum(f.get("rows", 0) for f in owners),
                prompt_tokens=sum(f.get("prompt_tokens", 0) for f in owners),
                ttft_ms=median([f["ttft_ms"] for f in owners]),
                itl_ms=median([f["itl_ms"] for f in owners]),
                prefill_s=max(prefills) if prefills and None not in prefills else None,
            )
        )
    return passes


def _profiled(strategy: ParallelismStrategy) -> dict[str, Any]:
    """The ranks' profiled windows, averaged: how many ranks were profiled, their comm and idle shares."""
    config = strategy.config()
    summaries = []
    for rank in range(strategy.world_size):
        path = config.profile_summary_path(rank)
        if path.exists():
            try:
                summaries.append(ProfileSummary.load(path))
            except BAD_INPUT:
                continue  # `cluster traces` names it; the metrics row does without
    if not summaries:
        return {"profiled_ranks": 0, "profiled_comm_share": None, "profiled_idle_share": None}
    return {
        "profiled_ranks": len(summaries),
        "profiled_comm_share": sum(s.comm_share for s in summaries) / len(summaries),
        "profiled_idle_share": sum(s.idle_share for s in summaries) / len(summaries),
    }


class ResultCollector:
    """Collects strategies into the run's long-form results table and its per-strategy metrics table."""

    def __init__(self, prompt_table: pd.DataFrame, results_dir: Path, stamp: str, run_id: str) -> None:
        self.expected = pd.MultiIndex.from_frame(prompt_table[["variant", "prompt_id"]])
        self.results_dir, self.stamp, self.run_id = results_dir, stamp, run_id
        self.rows = self._reload(self.results_path)
        self.metrics = self._reload(self.metrics_path)

    @property
    def results_path(self) -> Path:
        return self.results_dir / f"run_{self.stamp}.parquet"  # as load_rows reads it

    @property
    def metrics_path(self) -> Path:
        return self.results_dir / f"cluster_metrics_run_{self.stamp}.parquet"  # as load_metrics reads it

    @classmethod
    def load_rows(cls, results_dir: Path, stamp: str) -> pd.DataFrame | None:
        """A run's collected rows, or None before the first strategy is collected."""
        return cls._reload(results_dir / f"run_{stamp}.parquet")

    @classmethod
    def load_metrics(cls, results_dir: Path, stamp: str) -> pd.DataFrame | None:
        return cls._reload(results_dir / f"cluster_metrics_run_{stamp}.parquet")

    @staticmethod
    def _reload(path: Path) -> pd.DataFrame | None:
        """What an earlier process of this run already collected (a resumed sweep keeps it)."""
        return pq.read_table(path).to_pandas() if path.exists() else None

    def collect(self, strategy: ParallelismStrategy, job: JobRecord | None = None) -> Collected:
        """Read the strategy's result shards, merge them into the run's tables and checkpoint both."""
        config = strategy.config()
        problems: list[str] = []
        tables = []
        for rank in strategy.result_ranks():
            path = config.shard_path(rank)
            if not path.exists():
                problems.append(f"{path}: missing (rank {rank} owns results)")
                continue
            read = read_shard(path)
            problems += read.problems
            tables.append(read.table)
        shard = pa.concat_tables(tables) if tables else SHARD_SCHEMA.empty_table()
        rows = shard.to_pandas()
        duplicated = rows.duplicated(["variant", "prompt_id"], keep="first")
        if duplicated.any():
            problems.append(f"{strategy.strategy_id}: {int(duplicated.sum())} prompt(s) written twice, first kept")
            rows = rows[~duplicated]
        known = pd.MultiIndex.from_frame(rows[["variant", "prompt_id"]]).isin(self.expected)
        if not known.all():
            problems.append(
                f"{strategy.strategy_id}: {int((~known).sum())} row(s) for prompts not in the table, dropped"
            )
            rows = rows[known]
        missing = len(self.expected) - len(rows)
        if missing:
            problems.append(f"{strategy.strategy_id}: {missing} of {len(self.expected)} prompts have no row")
        rows = self._long_form(strategy, rows.drop(columns="strategy_id"))
        collected = Collected(strategy.strategy_id, rows, _metrics_row(strategy, rows, job), problems, missing > 0)
        self._merge(collected)
        return collected

    @staticmethod
    def iter_traces(strategies: Iterable[ParallelismStrategy]) -> Iterator[TraceFile]:
        """Every profiler output of the strategies' ranks, by strategy and rank."""
        for strategy in strategies:
            config = strategy.config()
            for rank in range(strategy.world_size):
                yield from rank_traces(config, rank)

    def _long_form(self, strategy: ParallelismStrategy, rows: pd.DataFrame) -> pd.DataFrame:
        config = strategy.config()
        torch_trace = PROFILER_FILES["torch"]
        traces = {
            r: str(path.relative_to(strategy.settings.run_dir))
            for r in rows["rank"].unique()
            if (path := config.trace_path(r) / torch_trace).exists()
        }
        rows = rows.assign(run_id=self.run_id, num_nodes=strategy.num_nodes, trace_path=rows["rank"].map(traces))
        return strategy.postprocess(rows)[RESULT_COLUMNS]

    def _merge(self, collected: Collected) -> None:
        keep = collected.strategy_id

        def replace(old: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame:
            if old is None or old.empty:
                return new.reset_index(drop=True)
            return pd.concat([old[old["strategy"] != keep], new], ignore_index=True)

        self.rows = replace(self.rows, collected.rows)
        self.metrics = replace(self.metrics, pd.DataFrame([collected.metrics]))
        self.write_table(self.rows, self.results_path)
        self.write_table(self.metrics, self.metrics_path)

    @staticmethod
    def write_table(frame: pd.DataFrame, path: Path) -> None:
        """A frame to parquet, atomically."""
        with atomic_open(path, "wb") as handle:
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), handle)

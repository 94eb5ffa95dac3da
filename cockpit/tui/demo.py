"""`cockpit --demo`: a simulated cluster in the shape `LiveSource` gives, for a person to try the app on and for the
snapshot tests and benchmarks. Eight nodes with an Arc A770 each, a Slurm queue, a sweep under way, four runs for
the results screen, a playbook run for configure, and job logs that grow by a line each read. Every poll moves its
panel's simulation on by one tick, deterministically: the same ticks give the same data, so the dashboard is live
and a test's frame is fixed.

Actions are only recorded (`DemoSource.actions`) and answered as a demo. Nothing here touches the machine or the
network: no ssh, no scheduler, no process, no file. The results are fixed tables of three strategies (the
reference, TP over two nodes, PP over two nodes), two prompt variants of two prompts each, scored by the same code
as a real run; TP diverges from the reference on one prompt. The completed run has a fixed performance analysis
(PP measured at under half its predicted tokens/s) and profiles: TP's two ranks traced by torch.profiler, rank 0 by
perf too, and one PP trace too torn to summarize; the running one has neither, its model folder not being on this
machine. Like the live source's, they load pandas on first use only."""

from __future__ import annotations

import json
import math
import statistics
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from cockpit.analysis import performance_model as pm
from cockpit.config import ClusterSection, CockpitFile, ModelSection, PathsSection, Settings, WakeOnLanSection
from cockpit.errors import BadInput, OperationFailed
from cockpit.jobs.output import JobLog, JobLogs, LogChunk
from cockpit.jobs.queue import QueueRow
from cockpit.nodes.leases import Lease
from cockpit.nodes.power import PowerAction
from cockpit.nodes.probe_script import NO_BUILD
from cockpit.nodes.telemetry import GpuTelemetry, NodeSample, NodeTelemetry, RuntimeBuild
from cockpit.provision.events import (
    HostResult,
    HostStats,
    PlayStarted,
    ProvisionEvent,
    Recap,
    ResultStatus,
    TaskStarted,
)
from cockpit.sweep import strategies as parallelism
from cockpit.sweep.progress import RankProgress, StrategyProgress, SweepProgress
from cockpit.tui.sources import ActionResult, SweepStarted
from runtime.contract import PROFILER_FILES, OpTime, Phase, Profiler, ProfileSummary

if TYPE_CHECKING:
    from cockpit.analysis.bottlenecks import Performance, StrategyPerformance
    from cockpit.analysis.results import RunInfo, RunResults
    from cockpit.sweep.collect import TraceFile

DATA_DIR = Path("/srv/cockpit")
RUNS_DIR = DATA_DIR / "runs"
MODEL_DIR = DATA_DIR / "models/tiny"
RUNNING_RUN = "run_20261123-101500"  # the sweep under way: on the dashboard, and among the runs half collected
# strategy -> kind, tp, pp, nodes, latency ms of its first prompt, wall time s, energy J (None: not measured)
STRATEGIES: dict[str, tuple[str, int, int, int, float, float, float | None]] = {
    "tiny_pp1_tp1_n1": ("reference", 1, 1, 1, 820.0, 4.2, 310.0),
    "tiny_pp1_tp2_n2": ("tp_nodes", 2, 1, 2, 540.0, 2.9, 402.0),
    "tiny_pp2_tp1_n2": ("pp_nodes", 1, 2, 2, 700.0, 3.6, None),
}
NO_COUNTER = "no energy counter on xpu 0: 0 DRM card(s) with a hwmon energy1_input"  # why PP has no energy

# ---- the cluster: nodes, queue and sweep, each a function of its panel's tick (1: the first poll)

STATES = ("RUNNING", "PENDING", "PENDING", "RUNNING", "COMPLETING")
QUEUE_TICK_S, SWEEP_TICK_S = 3.0, 2.0  # the simulated seconds a poll stands for: the default refresh intervals
SWEEP_STARTED = 1_700_000_000.0  # the sweep's first poll
TOKENS_PER_ROW = 32  # a row is a completion of len(TOKENS) tokens: a rank's ETA is its rows left at its tokens/s
DECODING = cast("Phase", "decode")  # a decoding rank's phase as the snapshots show it; the runtime says "running"
STALL_TICKS = 3  # TP's rank 1 sends no heartbeat for its first polls, then catches up
# polls TP takes for its last 16 rows, PP for its 40; then the run stays completed for a while and starts over
TP_TICKS, PP_TICKS, DONE_TICKS = 15, 40, 15
SWEEP_TICKS = TP_TICKS + PP_TICKS + DONE_TICKS


def demo_settings() -> Settings:
    """What `cockpit --demo` runs with, read from no file: a cluster named so, Slurm as its scheduler, and the
    paths the demo's data names."""
    file = CockpitFile(
        cluster=ClusterSection(name="demo (simulated)", scheduler="slurm"),
        paths=PathsSection(data_dir=str(DATA_DIR)),
        model=ModelSection(path=str(MODEL_DIR)),
        wake_on_lan=WakeOnLanSection(broadcast="10.77.0.255"),
    )
    return Settings(file)


def demo_telemetry(name: str, index: int, gpus: int, tick: int) -> NodeTelemetry:
    """A node's readings at `tick`: utilisation, memory, temperature and power move on every tick."""
    cards = tuple(
        GpuTelemetry(
            index=g,
            vendor="intel",
            name="Arc A770",
            source="xpu-smi",
            pci_bus_id=f"0000:{3 + g:02x}:00.0",
            util_pct=float((index * 17 + g * 29 + tick * 13) % 101),
            memory_used_mib=float(1024 + (index * 311 + tick * 97) % 14000),
            memory_total_mib=16384.0,
            temperature_c=float(40 + (index + tick) % 35),
            power_w=float(60 + (index * 7 + tick * 11) % 150),
            energy_j=None,
        )
        for g in range(gpus)
    )
    load = (round(0.2 + index % 7 * 0.5, 2), 0.5, 0.4)
    return NodeTelemetry(name, 86400.0 + index, load, 16, 65536.0, 40960.0 - index * 64, cards, ())


def demo_jobs(count: int, tick: int = 1) -> list[QueueRow]:
    """`count` jobs through STATES in turn; a running one's elapsed time moves on with `tick`."""
    rows = []
    for i in range(count):
        state = STATES[i % len(STATES)]
        running = state == "RUNNING"
        rows.append(
            QueueRow(
                job_id=str(1000 + i),
                name=f"llama8b_pp2_tp1_n2_{i}",
                user="admin",
                state=state,
                partition="gpu",
                nodes=f"node[{(2 * i) % 64}-{(2 * i) % 64 + 1}]" if running else None,
                elapsed_s=i * 37 % 5000 + (tick - 1) * QUEUE_TICK_S if running else None,
                time_limit_s=3600.0,
                reason="Resources" if state == "PENDING" else None,
                submitted_at=1_700_000_000.0 + i,
            )
        )
    return rows


def _rate(tokens_per_s: float, step: int) -> float:
    """A decode rate that wavers a few percent from poll to poll."""
    return tokens_per_s * (1 + 0.03 * math.sin(step))


def _rank(
    rank: int, phase: Phase, rows: tuple[int, int], tokens_per_s: float, at: float, stall: str | None = None
) -> RankProgress:
    """A rank's heartbeat of a second before `at`: `rows` written and expected (0 for a rank that writes none)."""
    written, expected = rows
    eta = None if not tokens_per_s or written == expected else (expected - written) * TOKENS_PER_ROW / tokens_per_s
    return RankProgress(rank, phase, written, expected, tokens_per_s, at - 1, eta, stall is not None, stall)


def _strategy(
    strategy_id: str, job_id: str, ranks: tuple[RankProgress, ...], eta_s: float | None, done: bool
) -> StrategyProgress:
    """A strategy whose rank 0 writes the rows; COMPLETED when `done`, else RUNNING."""
    writer = ranks[0]
    status = "COMPLETED" if done else "RUNNING"
    kind = STRATEGIES[strategy_id][0]
    rows, expected = writer.rows_written, writer.rows_expected
    return StrategyProgress(strategy_id, kind, status, job_id, ranks, rows, expected, writer.tokens_per_s, eta_s)


def demo_sweep(tick: int) -> SweepProgress:
    """The sweep at `tick`: the reference done; TP-2 from 24 of its 40 rows to the end, rank 1 stalled for its
    first polls; then PP-2 from its job's start to its end; the run completed for a while, and again from the
    start. TP and PP each write one row a poll or so, at a few hundred tokens/s."""
    step = (tick - 1) % SWEEP_TICKS
    at = SWEEP_STARTED + (tick - 1) * SWEEP_TICK_S
    reference_id, tp_id, pp_id = STRATEGIES
    reference = _strategy(reference_id, "1001", (_rank(0, "done", (40, 40), 950.0, at),), 0.0, done=True)
    if step < TP_TICKS:
        rate = _rate(610.0, step)
        stall = f"no heartbeat for {42 + step * SWEEP_TICK_S:.0f} s" if step < STALL_TICKS else None
        written = 24 + round(16 * step / TP_TICKS)
        ranks = (
            _rank(0, DECODING, (written, 40), rate, at),
            _rank(1, DECODING, (0, 0), 0.0 if stall else rate, at, stall),
        )
        tp = _strategy(tp_id, "1002", ranks, (TP_TICKS - step) * SWEEP_TICK_S, done=False)
        pp = StrategyProgress(pp_id, STRATEGIES[pp_id][0], "PENDING", "1003", (), 0, 0, 0.0, None)
        return SweepProgress(RUNNING_RUN, RUNS_DIR / RUNNING_RUN, "running", (reference, tp, pp), at)
    tp_ranks = (_rank(0, "done", (40, 40), 610.0, at), _rank(1, "done", (0, 0), 610.0, at))
    tp = _strategy(tp_id, "1002", tp_ranks, 0.0, done=True)
    pp_step = min(step - TP_TICKS, PP_TICKS)
    running = pp_step < PP_TICKS
    phase, rate = (DECODING, _rate(480.0, pp_step)) if running else ("done", 480.0)
    pp_ranks = (_rank(0, phase, (round(40 * pp_step / PP_TICKS), 40), rate, at), _rank(1, phase, (0, 0), rate, at))
    pp = _strategy(pp_id, "1003", pp_ranks, (PP_TICKS - pp_step) * SWEEP_TICK_S, done=not running)
    state = "running" if running else "completed"
    return SweepProgress(RUNNING_RUN, RUNS_DIR / RUNNING_RUN, state, (reference, tp, pp), at)


LOG_OPENS_WITH = 30  # lines a demo log shows when opened; each read after brings the next one


def demo_log(label: str, start: int, count: int) -> str:
    """Lines `start` to `start + count` of a simulated job log as the runtime writes it (ANSI colours as a rank's
    terminal would show them): `rank N` that rank's own lines, any other label both ranks' interleaved."""
    rank = int(label.removeprefix("rank ")) if label.startswith("rank ") else None
    lines = []
    for i in range(start, start + count):
        who = rank if rank is not None else i % 2
        batch = i if rank is not None else i // 2
        stamp = f"2026-11-23 10:{15 + batch // 60:02d}:{batch % 60:02d},{(batch * 37 + who * 5) % 1000:03d}"
        if batch % 9 == 4:
            level, message = "\x1b[33mWARNING\x1b[0m", f"batch {batch}: all-reduce waited 41 ms for rank {1 - who}"
        else:
            level, message = "\x1b[32mINFO\x1b[0m", f"batch {batch}: 32 tokens in {52 + batch % 5} ms"
        lines.append(f"{stamp} [rank {who}] {level} {message}\n")
    return "".join(lines)


def _demo_logs(job_id: str, name: str, state: str, nodes: str | None, reason: str | None = None) -> JobLogs:
    """A demo job's output and its two ranks' logs, in its strategy's folder of the running run."""
    folder = RUNS_DIR / RUNNING_RUN / name / "logs"
    outputs = [JobLog("output", folder / f"slurm-{job_id}.out")]
    ranks = [JobLog(f"rank {rank}", folder / f"rank_{rank}.log") for rank in range(2 if "_n2" in name else 1)]
    pending = f"job {job_id} is pending ({reason}): its output starts when it runs" if state == "PENDING" else None
    return JobLogs(f"job {job_id} {name} · {state}{f' on {nodes}' if nodes else ''}", (*outputs, *ranks), pending)


class DemoSource:
    """`nodes` x `gpus` simulated nodes, `jobs` queued jobs and the sweep; each poll of a panel is its next tick.
    Nodes in `unreachable` do not answer, those in `failing` answer garbage. With `installed` (node name to build
    id; a node left out has none) the nodes report their runtime builds, and `built` is the build made here. The
    nodes in `lacking_model` lack the model, each with the nodes table's words why; `unknown_hosts` are DHCP leases
    on the compute network that no node's MAC matches."""

    def __init__(
        self,
        nodes: int = 8,
        gpus: int = 1,
        jobs: int = 5,
        unreachable: tuple[str, ...] = (),
        failing: tuple[str, ...] = (),
        installed: Mapping[str, str] | None = None,
        built: str | None = None,
        lacking_model: Mapping[str, str] | None = None,
        unknown_hosts: Sequence[Lease] = (),
    ) -> None:
        self.node_names = [f"node{i}" for i in range(nodes)]
        self.gpus = gpus
        self.job_count = jobs
        self.unreachable = set(unreachable)
        self.failing = set(failing)
        self.installed = installed
        self.built = built
        self.lacking_model = lacking_model or {}
        self.leases = list(unknown_hosts)
        self.ticks: Counter[str] = Counter()  # polls so far, by panel
        self.actions: list[tuple[str, ...]] = []  # what the app asked for, in order
        self.unwritten: set[Path] = set()  # the logs of the pending jobs asked for

    def _tick(self, panel: str) -> int:
        self.ticks[panel] += 1
        return self.ticks[panel]

    def _sample(self, index: int, name: str, tick: int) -> NodeSample:
        if name in self.unreachable:
            return NodeSample(name, None, "no answer within 5 s (connect timeout)", None)
        if name in self.failing:
            return NodeSample(name, None, f"{name}: probe output is not JSON: 'Segmentation fault'", 3.0)
        telemetry = demo_telemetry(name, index, self.gpus, tick)
        if self.installed is not None:
            build = self.installed.get(name)
            telemetry = replace(
                telemetry, runtime=RuntimeBuild(build, "xpu" if build else None, None if build else NO_BUILD)
            )
        return NodeSample(name, telemetry, None, 2.0 + index % 5)

    async def nodes(self) -> list[NodeSample]:
        tick = self._tick("nodes")
        return [self._sample(i, name, tick) for i, name in enumerate(self.node_names)]

    async def runtime_build(self) -> str | None:
        return self.built

    async def model_gaps(self) -> dict[str, str]:
        return dict(self.lacking_model)

    async def unknown_hosts(self) -> list[Lease]:
        return list(self.leases)

    async def queue(self) -> list[QueueRow]:
        return demo_jobs(self.job_count, self._tick("queue"))

    async def finished(self) -> list[QueueRow]:
        return [replace(job, state="COMPLETED", reason=None) for job in demo_jobs(self.job_count)[:3]]

    async def sweep(self) -> SweepProgress | None:
        return demo_sweep(self._tick("sweep"))

    async def runs(self) -> list[RunInfo]:
        return demo_runs()

    async def results(self, run_dir: Path) -> RunResults:
        return demo_results(run_dir)

    async def wake(self, names: Sequence[str]) -> ActionResult:
        self.actions.append(("wake", *names))
        return ActionResult("simulated wake (demo: no magic packet sent)", tuple(names))

    async def power(self, names: Sequence[str], action: PowerAction) -> ActionResult:
        self.actions.append((action, *names))
        what = "shutdown" if action == "off" else "restart"
        return ActionResult(f"simulated {what} (demo: nothing sent)", tuple(names))

    async def configure(self, names: Sequence[str]) -> DemoProvisionRun:
        self.actions.append(("configure", *names))
        return DemoProvisionRun(hosts=names, pace_s=PLAYBOOK_PACE_S)

    async def start_sweep(self, overrides: dict[str, Any], telemetry: Mapping[str, NodeTelemetry]) -> SweepStarted:
        """Nothing starts: the simulated sweep under way stands for the one asked for."""
        settings = tuple(f"{k}={v}" for k, v in sorted(overrides.items()))
        self.actions.append(("sweep", *settings))
        what = ", ".join(settings) or "the [sweep] settings"
        return SweepStarted(RUNNING_RUN, f"simulated start (demo: nothing runs) with {what}")

    async def cancel_job(self, job_id: str) -> ActionResult:
        self.actions.append(("cancel", job_id))
        return ActionResult("simulated cancel (demo: nothing sent) of job", (job_id,))

    async def job_logs(self, job_id: str) -> JobLogs:
        job = next((job for job in demo_jobs(self.job_count) if job.job_id == job_id), None)
        if job is None:
            raise BadInput(f"job {job_id}: not in the demo's queue")
        return self._logs(_demo_logs(job_id, job.name, job.state, job.nodes, job.reason))

    async def strategy_logs(self, run_dir: Path, strategy_id: str) -> JobLogs:
        strategy = next(s for s in demo_sweep(max(1, self.ticks["sweep"])).strategies if s.strategy_id == strategy_id)
        nodes = None if strategy.status == "PENDING" else "node[0-1]" if "_n2" in strategy_id else "node0"
        return self._logs(_demo_logs(strategy.job_id or "-", strategy_id, strategy.status, nodes, "Resources"))

    def _logs(self, logs: JobLogs) -> JobLogs:
        if logs.pending:
            self.unwritten.update(log.path for log in logs.logs)
        return logs

    async def read_log(self, log: JobLog, offset: int | None) -> LogChunk:
        """A pending job's logs are not there; any other opens with LOG_OPENS_WITH lines and grows by one a read
        (`offset` counts lines here)."""
        if log.path in self.unwritten:
            return LogChunk("", 0, missing=True)
        if offset is None:
            return LogChunk(demo_log(log.label, 0, LOG_OPENS_WITH), LOG_OPENS_WITH)
        return LogChunk(demo_log(log.label, offset, 1), offset + 1)

    def shell_argv(self, name: str) -> list[str]:
        raise OperationFailed(f"{name} is simulated (demo): there is no machine to open a shell on")

    async def close(self) -> None:
        return None


# ---- the results screen's runs

PROMPTS = [("2k", 0), ("2k", 1), ("4k", 0), ("4k", 1)]
TEXT = (
    "A cluster scheduler decides which job runs on which node and when. Slurm keeps a queue per partition, "
    "starts a job once the nodes it asked for are free, and"
)
TOKENS = list(range(100, 100 + TOKENS_PER_ROW))
DIVERGING = ("tiny_pp1_tp2_n2", "4k", 1)  # this strategy's completion of this prompt parts from the reference
DIVERGED_TEXT = TEXT[: TEXT.index("keeps")] + "runs jobs in the order they came, unless a backfill slot opens first."
HARDWARE = (
    "Reference device: AMD Ryzen AI Max+ 395; 16 CPUs; decode reads at 41.3 GB/s (eta 16% of 256.0 GB/s); "
    "prefill computes at 182.4 GFLOP/s; overhead 4.30 ms per decode pass, 12.5 ms per prefill."
)
# strategy -> the whole run's predicted seconds by part, predicted TTFT s, measured compute/comm/idle shares of a
# rank's wall time, the bottleneck's detail, predicted tokens/s on each what-if column (links x nodes)
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


def demo_runs() -> list[RunInfo]:
    """Four runs, newest first: one completed, one running with only the reference collected, one planned, and
    one whose manifest is torn."""
    from cockpit.analysis.results import RunInfo

    torn = f"unreadable: {RUNS_DIR}/run_20261121-070000/manifest.json: not valid JSON: Expecting ',' delimiter"
    return [
        RunInfo("run_20261124-093000", RUNS_DIR / "run_20261124-093000", "completed", "slurm", 3, 3,
                "2026-11-24T09:30:00+00:00", True),
        RunInfo(RUNNING_RUN, RUNS_DIR / RUNNING_RUN, "running", "slurm", 3, 1, "2026-11-23T10:15:00+00:00", True),
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
    _, tp, pp, _, latency, wall, energy = STRATEGIES[strategy]
    tokens = len(TOKENS) * len(PROMPTS)
    passes = [wall * jitter for jitter in (0.97, 1.0, 1.04)]  # three timed passes, a few percent apart
    return {
        **_shape(strategy),
        "world_size": tp * pp,
        "elapsed_s": wall + 20.0,
        "max_rss_bytes": 2**31,
        "wall_time_s": wall,
        "tokens_generated": tokens,
        "prompts": len(PROMPTS),
        "energy_j": energy,
        "repeats": len(passes),
        "pass_tokens_per_s": json.dumps([tokens / seconds for seconds in passes]),
        "pass_ttft_ms": json.dumps([latency * 0.2 * jitter for jitter in (1.02, 0.98, 1.0)]),
        "pass_itl_ms": json.dumps([seconds * 1000 / tokens for seconds in passes]),
        "pass_prefill_tokens_per_s": json.dumps(
            [2600 * 1000 / (latency * 0.2 * jitter) for jitter in (1.02, 0.98, 1.0)]
        ),
        "pass_decode_tokens_per_s": json.dumps([tokens / (seconds * 0.8) for seconds in passes]),
        "warmup_s": 1.5,
        "energy_source": "hwmon:card0" if energy is not None else None,
        "energy_why": None if energy is not None else f"rank 1 on node1: {NO_COUNTER}",
    }


def _strategy_performance(strategy: str) -> StrategyPerformance:
    from cockpit.analysis.bottlenecks import SPLIT_PARTS, WHAT_IF_LINKS, StrategyPerformance

    kind, tp, pp, nodes, _, wall, _ = STRATEGIES[strategy]
    seconds, ttft_s, split, detail, what_if = PREDICTED[strategy]
    what_if_columns = [f"{pm.NOMINAL_LINKS[link].name} x{n}" for n in (2, 4) for link in WHAT_IF_LINKS]
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
        what_if=dict(zip(what_if_columns, what_if, strict=True)),
    )


def demo_performance(strategies: list[str]) -> Performance | str:
    """The completed run's analysis; for the others why there is none, as if their model folder were elsewhere."""
    from cockpit.analysis.bottlenecks import Performance

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


def demo_traces(run_dir: Path) -> tuple[TraceFile, ...]:
    """The completed run's profiler outputs, in `iter_traces`' order: by strategy, rank, torch first."""
    from cockpit.sweep.collect import TraceFile

    tp, pp = "tiny_pp1_tp2_n2", "tiny_pp2_tp1_n2"
    torn = _trace_path(run_dir, pp, 1, "torch")
    return (
        TraceFile(tp, 0, "torch", _trace_path(run_dir, tp, 0, "torch"), 18_734_512, _profile(run_dir, 0)),
        TraceFile(tp, 0, "perf", _trace_path(run_dir, tp, 0, "perf"), 41_208_832),
        TraceFile(tp, 1, "torch", _trace_path(run_dir, tp, 1, "torch"), 18_902_114, _profile(run_dir, 1)),
        TraceFile(pp, 1, "torch", torn, 6_291_456, problem=f"{torn}: {TORN_TRACE}"),
    )


def demo_results(run_dir: Path) -> RunResults:
    """The results of one of `demo_runs()`, as `load_results` gives them; BadInput as it raises it for a run
    with nothing collected or a torn manifest."""
    import pandas as pd

    from cockpit.analysis.report import score_rows
    from cockpit.analysis.results import run_results

    run = next((r for r in demo_runs() if r.run_dir == run_dir), None)
    if run is None or run.state.startswith("unreadable: "):
        raise BadInput(run.state.removeprefix("unreadable: ") if run else f"{run_dir}: not a sweep run folder")
    if not run.has_results:
        raise BadInput(f"{run_dir}: no strategy has been collected yet (no results/{run.run_id}.parquet)")
    strategies = list(STRATEGIES)[: run.collected]
    rows = pd.DataFrame([_row(s, v, p) for s in strategies for v, p in PROMPTS]).assign(run_id=run.run_id)
    metrics = pd.DataFrame([_metrics(s) for s in strategies])
    baseline = pd.DataFrame({"variant": [v for v, _ in PROMPTS], "prompt_id": [p for _, p in PROMPTS]})
    baseline["local_completion"] = TEXT
    scored = score_rows(rows, metrics, baseline, run.run_id, performance=demo_performance(strategies))
    traces = demo_traces(run_dir) if run.collected == len(STRATEGIES) else ()
    return run_results(run_dir, scored, {}, traces)


# ---- configure: a playbook run in the shape `PlaybookRun` reports

PLAYBOOK = Path("/srv/fake/ansible/fake_compute.yml")
PLAY = "Fake base configuration"
TASKS = ("Gather facts", "Install the fake GPU driver", "Probe the fake GPU")
PROBE = "sh -c 'echo probing; echo \"no OpenCL platforms found\" >&2; exit 3'"
PLAYBOOK_PACE_S = 0.6  # between two events of the demo's runs, so that a person sees them come
WAIT_S = 0.05  # how often a held run looks whether it was cancelled
UNPARSABLE_OUTPUT = """\
ERROR! the role 'fake_missing_role' was not found in /srv/fake/ansible/roles

The error appears to be in '/srv/fake/ansible/fake_compute.yml': line 4, column 7"""


def _result(
    host: str,
    task: str,
    status: ResultStatus,
    duration_s: float,
    *,
    message: str = "",
    command: str | None = None,
    rc: int | None = None,
    stdout: str = "",
    stderr: str = "",
) -> HostResult:
    return HostResult(host, task, status, message, command, rc, stdout, stderr, False, duration_s)


def _probe(host: str, fails: bool) -> HostResult:
    if not fails:
        return _result(host, TASKS[2], "ok", 0.4, command=PROBE, rc=0, stdout="probing\n1 GPU found")
    return _result(host, TASKS[2], "failed", 0.3, message="non-zero return code", command=PROBE, rc=3,
                   stdout="probing", stderr="no OpenCL platforms found")  # fmt: skip


def _stats(fails: bool) -> HostStats:
    return HostStats(ok=2 if fails else 3, changed=1, failed=int(fails), unreachable=0, skipped=0, rescued=0, ignored=0)


def playbook_events(hosts: Sequence[str]) -> tuple[ProvisionEvent, ...]:
    """The fake playbook on `hosts`: facts gathered and the driver installed on each, then the GPU probe, which
    fails on the last host, and the recap."""
    last = len(hosts) - 1
    return (
        PlayStarted(PLAY),
        TaskStarted(PLAY, TASKS[0], f"{PLAYBOOK}:6"),
        *(_result(host, TASKS[0], "ok", 1.2 + 0.2 * i) for i, host in enumerate(hosts)),
        TaskStarted(PLAY, TASKS[1], f"{PLAYBOOK}:9"),
        *(_result(host, TASKS[1], "changed", 12.5 + 0.6 * i) for i, host in enumerate(hosts)),
        TaskStarted(PLAY, TASKS[2], f"{PLAYBOOK}:13"),
        *(_probe(host, i == last) for i, host in enumerate(hosts)),
        Recap({host: _stats(i == last) for i, host in enumerate(hosts)}),
    )


def playbook_output(hosts: Sequence[str]) -> str:
    """What Ansible printed last in that run: the probe's results and the recap."""
    last = len(hosts) - 1
    probe = [
        f'fatal: [{host}]: FAILED! => {{"changed": false, "rc": 3, "stderr": "no OpenCL platforms found"}}'
        if i == last
        else f"ok: [{host}]"
        for i, host in enumerate(hosts)
    ]
    recap = [
        f"{host:<27}: ok={stats.ok:<5}changed={stats.changed:<5}unreachable={stats.unreachable:<5}failed={stats.failed}"
        for host, stats in ((host, _stats(i == last)) for i, host in enumerate(hosts))
    ]
    headers = [f"{title} ".ljust(80, "*") for title in (f"PLAY [{PLAY}]", f"TASK [{TASKS[2]}]", "PLAY RECAP")]
    return "\n".join([headers[0], headers[1], *probe, headers[2], *recap])


class DemoProvisionRun:
    """The fake playbook's run on `hosts`, following `ProvisionRun`: its events come `pace_s` apart. With a
    `gate`, it holds once its last task has started until the gate is set (or the run is cancelled).
    `unparsable` makes it a playbook that does not load: no events, status failed, the reason only in the output.
    `cancel` is recorded in `cancelled`."""

    def __init__(
        self,
        gate: threading.Event | None = None,
        unparsable: bool = False,
        hosts: Sequence[str] = ("node0", "node1"),
        pace_s: float = 0.0,
    ) -> None:
        self.playbook = PLAYBOOK
        self.gate = gate
        self.unparsable = unparsable
        self.hosts = list(hosts)
        self.pace_s = pace_s
        self.cancelled = threading.Event()
        self._status = "running"
        self._rc: int | None = None

    def events(self) -> Iterator[ProvisionEvent]:
        """The run's events, holding at the gate; what is left is dropped once cancelled."""
        planned = () if self.unparsable else playbook_events(self.hosts)
        hold_at = len(planned) - len(self.hosts) - 1  # the last task started, none of its results in
        for number, event in enumerate(planned):
            if number == hold_at and self.gate is not None:
                while not (self.gate.wait(WAIT_S) or self.cancelled.is_set()):
                    pass
            self.cancelled.wait(self.pace_s)
            if self.cancelled.is_set():
                break
            yield event
        if self.cancelled.is_set():
            self._status, self._rc = "canceled", 254
        else:
            self._status, self._rc = "failed", 4 if self.unparsable else 2

    def cancel(self) -> None:
        self.cancelled.set()

    @property
    def status(self) -> str:
        return self._status

    @property
    def rc(self) -> int | None:
        return self._rc

    def output_tail(self, lines: int = 20) -> str:
        text = UNPARSABLE_OUTPUT if self.unparsable else playbook_output(self.hosts)
        return "\n".join(text.splitlines()[-lines:])

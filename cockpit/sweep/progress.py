"""The active sweep's live progress: per strategy and per rank, rows written, tokens/s, ETA, stall markers, and
the rank that straggles behind its peers (its compute per step so far, from its heartbeats).

`ProgressTracker.poll()` is what the dashboard calls on its timer (every 0.5-2 s). Each poll stats the manifest
and every rank's progress file and re-reads only those whose (size, mtime_ns) changed since the last poll, so a
tick on which nothing changed costs a few `stat` calls; the poll still has to run on such ticks, because the "no
heartbeat" stall marker is a matter of time passing. The snapshots are frozen dataclasses: the view re-renders a
strategy when its `StrategyProgress` differs from the last one. A missing or unreadable file (job still
pending, a torn last line, the manifest between two atomic writes) never raises: the last good value stands.
No Textual import here: the model stays usable headless.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cockpit.errors import BAD_INPUT
from cockpit.sweep import peers
from cockpit.sweep.manifest import MANIFEST_NAME, Manifest, StrategyEntry
from runtime.contract import ExperimentConfig, Phase, ProgressLine
from runtime.outputs import last_progress
from runtime.topology import Topology

ACTIVE_RUN_STATES = frozenset({"planned", "running"})
RATE_HISTORY = 50  # tokens/s samples kept per rank for its running median
MIN_RATE_SAMPLES = 5  # before this many, a median says too little to call a drop
RATE_DROP = 0.25  # a rate under this fraction of the rank's median marks it stalled
ROW_WINDOW = 5  # heartbeats the ETA's row rate is measured over
FINISHED_PHASES = frozenset({"done", "failed"})

Signature = tuple[int, int]  # (size, mtime_ns)


@dataclass(frozen=True)
class RankProgress:
    """One rank's latest heartbeat, as the dashboard shows it. `phase` is None until its first heartbeat."""

    rank: int
    phase: Phase | None
    rows_written: int
    rows_expected: int  # 0 for a rank that owns no results
    tokens_per_s: float
    updated_at: float | None  # the heartbeat's own timestamp
    eta_s: float | None
    stalled: bool
    stall_reason: str | None
    straggling: str | None = None  # slower than its peers (cockpit.sweep.peers), said as how much

    @property
    def fraction(self) -> float:
        if self.rows_expected:
            return min(self.rows_written / self.rows_expected, 1.0)
        return 1.0 if self.phase == "done" else 0.0


@dataclass(frozen=True)
class StrategyProgress:
    """One strategy's job and ranks; rows, tokens/s and ETA add up the ranks that write rows."""

    strategy_id: str
    kind: str
    status: str  # the manifest's: NOT_STARTED, then the job's state as the scheduler names it
    job_id: str | None
    ranks: tuple[RankProgress, ...]
    rows_written: int
    rows_expected: int
    tokens_per_s: float
    eta_s: float | None  # the slowest writing rank's

    @property
    def fraction(self) -> float:
        return min(self.rows_written / self.rows_expected, 1.0) if self.rows_expected else 0.0

    @property
    def stalled(self) -> bool:
        return any(r.stalled for r in self.ranks)


@dataclass(frozen=True)
class SweepProgress:
    """A snapshot of one run folder. `state` is the manifest's, or "unknown" before it could be read once."""

    run_id: str
    run_dir: Path
    state: str
    strategies: tuple[StrategyProgress, ...]
    taken_at: float


def _signature(path: Path) -> Signature | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _rate_text(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


@dataclass
class _RankState:
    """What the tracker remembers of one rank's progress file between polls."""

    signature: Signature | None = None
    line: ProgressLine | None = None
    changed_at: float | None = None  # by the tracker's clock: when the file was last seen to change
    rates: deque[float] = field(default_factory=lambda: deque(maxlen=RATE_HISTORY))
    rows: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=ROW_WINDOW))

    def observe(self, line: ProgressLine) -> None:
        previous, self.line = self.line, line
        if line.phase != "running" or (previous is not None and line.ts <= previous.ts):
            return
        self.rows.append((line.ts, line.rows_written))
        if previous is not None and previous.phase == "running":
            # the line's own tokens_per_s averages the whole run; a drop shows between heartbeats
            self.rates.append((line.tokens_generated - previous.tokens_generated) / (line.ts - previous.ts))

    def tokens_per_s(self) -> float:
        if self.line is None:
            return 0.0
        return self.rates[-1] if self.rates and self.line.phase == "running" else self.line.tokens_per_s

    def eta_s(self) -> float | None:
        line = self.line
        if line is None or not line.rows_expected:
            return None
        remaining = line.rows_expected - line.rows_written
        if remaining <= 0:
            return 0.0
        if len(self.rows) < 2:
            return None
        (first_ts, first_rows), (last_ts, last_rows) = self.rows[0], self.rows[-1]
        rate = (last_rows - first_rows) / (last_ts - first_ts)
        return remaining / rate if rate > 0 else None


@dataclass
class _StrategyState:
    """One strategy's job as the tracker follows it; a new job id (a retry) starts it afresh."""

    job_id: str | None
    config: ExperimentConfig | None = None
    running_since: float | None = None  # by the tracker's clock: a job's pending time is no stall
    ranks: dict[int, _RankState] = field(default_factory=dict)


class ProgressTracker:
    """Follows one run folder's manifest and progress files across polls; see the module docstring."""

    def __init__(self, run_dir: Path, clock: Callable[[], float] = time.time, stall_after_s: float = 30.0) -> None:
        self.run_dir, self.clock, self.stall_after_s = run_dir, clock, stall_after_s
        self._manifest: Manifest | None = None
        self._manifest_signature: Signature | None = None
        self._strategies: dict[str, _StrategyState] = {}

    def poll(self) -> SweepProgress:
        """The sweep now: the manifest and the progress files that changed since the last poll, re-read."""
        now = self.clock()
        manifest = self._read_manifest()
        if manifest is None:
            return SweepProgress(self.run_dir.name, self.run_dir, "unknown", (), now)
        strategies = tuple(self._strategy(entry, now) for entry in manifest.strategies.values())
        return SweepProgress(manifest.run_id, self.run_dir, manifest.state, strategies, now)

    def _read_manifest(self) -> Manifest | None:
        signature = _signature(self.run_dir / MANIFEST_NAME)
        if signature is not None and signature != self._manifest_signature:
            try:
                self._manifest = Manifest.load(self.run_dir)
            except BAD_INPUT:
                return self._manifest  # gone or unreadable this instant: the last good one stands
            self._manifest_signature = signature
        return self._manifest

    def _strategy(self, entry: StrategyEntry, now: float) -> StrategyProgress:
        state = self._strategies.get(entry.strategy_id)
        if state is None or state.job_id != entry.job_id:
            state = self._strategies[entry.strategy_id] = _StrategyState(entry.job_id)
        running = entry.status == "RUNNING"
        if not running:
            state.running_since = None
        elif state.running_since is None:
            state.running_since = now
        if state.config is None:
            with contextlib.suppress(*BAD_INPUT):  # not written yet: no ranks to show until it reads
                # its outputs where the manifest says the strategy's folder is now (an older exp_config.json names
                # an absolute output_root: where the run was written, which it may since have left)
                loaded = ExperimentConfig.load(entry.exp_config_path)
                state.config = dataclasses.replace(loaded, output_root=entry.output_root)
        config = state.config
        paths = [config.progress_path(rank) for rank in range(config.world_size)] if config else []
        ranks = self._mark_straggler(state, tuple(self._rank(state, path, r, now) for r, path in enumerate(paths)))
        writers = [r for r in ranks if r.rows_expected]
        etas = [r.eta_s for r in writers]
        return StrategyProgress(
            strategy_id=entry.strategy_id,
            kind=entry.kind,
            status=entry.status,
            job_id=entry.job_id,
            ranks=ranks,
            rows_written=sum(r.rows_written for r in writers),
            rows_expected=sum(r.rows_expected for r in writers),
            tokens_per_s=sum(r.tokens_per_s for r in writers),
            eta_s=max(etas) if etas and None not in etas else None,
        )

    @staticmethod
    def _mark_straggler(state: _StrategyState, ranks: tuple[RankProgress, ...]) -> tuple[RankProgress, ...]:
        """The ranks, the one whose compute per step so far lags its stage's peers marked (when one does)."""
        config = state.config
        lines = {r: rank_state.line for r, rank_state in state.ranks.items()}
        per_rank = {
            r: line.compute_ms_per_step
            for r, line in lines.items()
            if line is not None and line.phase == "running" and line.compute_ms_per_step is not None
        }
        if config is None or len(per_rank) < 2:
            return ranks
        stage_of = {r: Topology(config.tp_size, config.pp_size, config.dp_size, r).pp_rank for r in per_rank}
        found = peers.straggling(per_rank, stage_of)
        if found is None:
            return ranks
        slow, ratio = found
        said = f"straggling: {ratio:.1f}x its peers' compute per step"
        return tuple(dataclasses.replace(r, straggling=said) if r.rank == slow else r for r in ranks)

    def _rank(self, strategy: _StrategyState, path: Path, rank: int, now: float) -> RankProgress:
        state = strategy.ranks.setdefault(rank, _RankState())
        signature = _signature(path)
        if signature is not None and signature != state.signature:
            if state.signature is not None and signature[0] < state.signature[0]:
                state = strategy.ranks[rank] = _RankState()  # truncated: a new attempt started the file afresh
            state.signature, state.changed_at = signature, now
            line = last_progress(path)
            if line is not None:  # None: torn or bad last line, or gone since the stat; keep the last good one
                state.observe(line)
        line = state.line
        reason = self._stall_reason(state, strategy.running_since, now)
        return RankProgress(
            rank=rank,
            phase=line.phase if line else None,
            rows_written=line.rows_written if line else 0,
            rows_expected=line.rows_expected if line else 0,
            tokens_per_s=state.tokens_per_s(),
            updated_at=line.ts if line else None,
            eta_s=state.eta_s(),
            stalled=reason is not None,
            stall_reason=reason,
        )

    def _stall_reason(self, state: _RankState, running_since: float | None, now: float) -> str | None:
        """Why a rank of a RUNNING job looks stuck, or None; a rank that has finished or failed is not stalled."""
        if running_since is None or (state.line is not None and state.line.phase in FINISHED_PHASES):
            return None
        since = running_since if state.changed_at is None else max(running_since, state.changed_at)
        quiet_s = now - since
        if quiet_s >= self.stall_after_s:
            return f"no heartbeat for {quiet_s:.0f} s"
        if len(state.rates) >= MIN_RATE_SAMPLES:
            median = statistics.median(state.rates)
            if state.rates[-1] < RATE_DROP * median:
                latest = state.rates[-1]
                return f"{_rate_text(latest)} tok/s, under a quarter of its median {_rate_text(median)} tok/s"
        return None


def find_active_run(runs_dir: Path) -> Path | None:
    """The newest run folder under `runs_dir` whose manifest says planned or running, or None."""
    for path in sorted(runs_dir.glob(f"run_*/{MANIFEST_NAME}"), reverse=True):
        try:
            manifest = Manifest.load(path.parent)
        except BAD_INPUT:
            continue  # being rewritten this instant, or not a manifest this cockpit can read
        if manifest.state in ACTIVE_RUN_STATES:
            return path.parent
    return None

"""`DistributedExperimentPipeline`: the strategies of a sweep, one job at a time.

For each strategy: render its job, submit it, follow it until the scheduler's final word, and only on COMPLETED
hand it to the collector. On a cluster without shared storage the run's storage (cockpit.sweep.staging) copies
the job's files to its nodes before the submission, mirrors its progress while it runs and brings its outputs
back, checked, before anything is collected. A failed job is written to `failed_experiments.csv` with its config
and error, and the retry policy (cockpit.sweep.retry) may name the next config to try (a halved batch after
running out of memory, a plain retry after a node failure). The manifest is rewritten after every change;
re-running a sweep skips what it marks done and re-attaches to a job still running from an earlier process
instead of submitting it again. Ctrl-C or SIGTERM cancels the running job, records it, and leaves the manifest
whole."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cockpit.errors import Interrupted
from cockpit.jobs.factory import JobFiles, SlurmJobFactory
from cockpit.jobs.local import parse_time_limit
from cockpit.jobs.records import ACTIVE_STATES, JobManager, JobRecord, wait_final
from cockpit.sweep.collect import ResultCollector
from cockpit.sweep.manifest import Attempt, Manifest, StrategyEntry, now_iso
from cockpit.sweep.retry import next_attempt
from cockpit.sweep.staging import RunStorage, SharedRunStorage
from cockpit.sweep.strategies import ParallelismStrategy
from runtime.atomic import atomic_write_text
from runtime.schema import to_plain

FAILED_LOG_NAME = "failed_experiments.csv"
CANCELLED_BY_USER = "cancelled by the user"
# the failed-experiment log's columns: what was tried, the job, and why it failed
FAILED_LOG_COLUMNS = [
    "timestamp",
    "experiment_id",
    "config_name",
    "model_name",
    "job_id",
    "error_message",
    "config_json",
]


class SweepCancelled(Interrupted):
    """The sweep stopped because its job was cancelled (Ctrl-C, SIGTERM, `sweep cancel` or scancel)."""


@dataclass(frozen=True)
class SweepEvent:
    """What the pipeline tells its caller (the CLI prints these; the cockpit shows them)."""

    kind: str  # skipped | warning | staged | submitted | state | collected | failed | retry | cancelled
    strategy_id: str
    message: str
    job: JobRecord | None = None


def log_tail(path: Path, lines: int = 60) -> str:
    """The end of a job's log ('' if it has none yet)."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, io.SEEK_END) - 64 * 1024))
            return b"\n".join(handle.read().splitlines()[-lines:]).decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def describe_failure(job: JobRecord, tail: str) -> str:
    """One line: the scheduler's verdict and the last error-looking line of the log."""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "exception" in line.lower()]
    detail = (errors or lines or ["(no output)"])[-1][:300]
    return f"{job.state} (exit {job.exit_code}): {detail}"


def register(manifest: Manifest, strategy: ParallelismStrategy, files: JobFiles) -> StrategyEntry:
    """The strategy's entry in the manifest, made on first sight (a planned run lists every strategy up front)."""
    return manifest.strategies.setdefault(
        strategy.strategy_id,
        StrategyEntry(
            strategy_id=strategy.strategy_id,
            kind=strategy.kind,
            description=strategy.describe_topology(),
            exp_config_path=str(files.config),
            script_path=str(files.script),
            output_root=str(strategy.output_root),
        ),
    )


def time_budget(measured: pd.DataFrame | None, strategy: ParallelismStrategy) -> str | None:
    """Why the strategy's job may not fit its time limit at the slowest speed `measured` (the run's collected
    metrics) shows: loading, warm-up, and one timed pass times its repeats; None when it fits or nothing is
    measured yet."""
    columns = {"strategy", "wall_time_s", "load_s", "warmup_s"}
    if measured is None or not columns <= set(measured.columns) or not measured["wall_time_s"].notna().any():
        return None
    slowest = measured.loc[measured["wall_time_s"].idxmax()]
    setup_s = sum(float(slowest[c]) for c in ("load_s", "warmup_s") if pd.notna(slowest[c]))
    repeats, limit = strategy.settings.repeats, strategy.settings.slurm_time_limit
    needed = setup_s + repeats * float(slowest["wall_time_s"])
    if needed <= parse_time_limit(limit):
        return None
    return (
        f"{repeats} repeat(s) may not fit its time limit {limit}: at {slowest['strategy']}'s measured speed "
        f"(loading and warm-up {setup_s:,.0f} s, one pass {slowest['wall_time_s']:,.0f} s) it needs about "
        f"{needed:,.0f} s; lower [sweep] repeats or raise time_limit"
    )


class DistributedExperimentPipeline:
    """Runs a sweep's strategies in order, each through the job manager, into the collector."""

    def __init__(
        self,
        strategies: list[ParallelismStrategy],
        factory: SlurmJobFactory,
        manager: JobManager,
        collector: ResultCollector,
        manifest: Manifest,
        *,
        max_attempts: int = 3,
        retry_backoff_s: float = 5.0,
        poll_s: float = 0.5,
        on_event: Callable[[SweepEvent], None] = lambda event: None,
        storage: RunStorage | None = None,
    ) -> None:
        self.strategies, self.factory, self.manager = strategies, factory, manager
        self.collector, self.manifest = collector, manifest
        self.storage = storage or SharedRunStorage()
        self.max_attempts, self.retry_backoff_s, self.poll_s = max_attempts, retry_backoff_s, poll_s
        self.on_event = on_event

    def run(self) -> Manifest:
        """Every strategy not yet done; the manifest's state says how the sweep ended."""
        self.manifest.state, self.manifest.pipeline_pid = "running", os.getpid()
        self.manifest.save()
        try:
            for strategy in self.strategies:
                self.run_strategy(strategy)
        except (KeyboardInterrupt, SweepCancelled):
            self.manifest.state = "cancelled"
            raise
        finally:
            if self.manifest.state == "running":
                done = all(entry.done for entry in self.manifest.strategies.values())
                self.manifest.state = "completed" if done else "failed"
            self.manifest.pipeline_pid = None
            self.manifest.save()
        return self.manifest

    def entry(self, strategy: ParallelismStrategy) -> StrategyEntry:
        return register(self.manifest, strategy, self.factory.files(strategy.config()))

    def run_strategy(self, strategy: ParallelismStrategy) -> bool:
        """Submit (or re-attach), follow, collect; retries as the strategy says. Whether it ended collected."""
        entry = self.entry(strategy)
        if entry.done:
            self._tell("skipped", entry, "already completed and collected")
            return True
        if entry.skipped:
            assert entry.memory is not None
            entry.status = "SKIPPED"
            self.manifest.save()
            self._tell("skipped", entry, entry.memory.sentence)
            return False
        if entry.memory and entry.memory.sentence and not entry.attempts:
            self._tell("warning", entry, entry.memory.sentence)
        current: ParallelismStrategy | None = strategy
        if entry.job_id and (entry.status in ACTIVE_STATES or entry.status in ("SUBMITTED", "COMPLETED")):
            self._tell("state", entry, f"re-attaching to job {entry.job_id} ({entry.status})")
            current = self._finish(strategy, entry, self.factory.files(strategy.config()), entry.job_id)
        tries = 0  # in this process: a resumed sweep gives a failed strategy its attempts afresh
        while current is not None and not entry.done:
            if tries == self.max_attempts:
                self._tell("failed", entry, f"giving up after {tries} attempts")
                break
            tries += 1
            files = self.factory.render(current.job_spec())
            warning = time_budget(self.collector.metrics, current)
            if warning:
                self._tell("warning", entry, warning)
            sent = self.storage.send(current, files)
            if sent:
                self._tell("staged", entry, f"sent {sent}")
            job_id = self.manager.submit(files)
            entry.job_id, entry.status, entry.collected = job_id, "SUBMITTED", False
            entry.attempts.append(
                Attempt(job_id, current.settings.batch_size, now_iso(), log_path=str(files.log(job_id)))
            )
            self.manifest.save()
            self._tell("submitted", entry, f"job {job_id}: {current.describe_topology()}")
            current = self._finish(current, entry, files, job_id)
            if current is not None and not entry.done:
                self._tell("retry", entry, f"next attempt with batch size {current.settings.batch_size}")
                time.sleep(self.retry_backoff_s * 2 ** (tries - 1))
        return entry.done

    def _finish(
        self, strategy: ParallelismStrategy, entry: StrategyEntry, files: JobFiles, job_id: str
    ) -> ParallelismStrategy | None:
        """Follow the job to its end; collect it, or log the failure. The strategy to try next, if any."""
        try:
            job = self._follow(strategy, entry, job_id)
        except KeyboardInterrupt:
            self._log_failure(strategy, job_id, CANCELLED_BY_USER)
            raise
        fetched = self.storage.fetch(strategy, job)
        if fetched is not None:
            self._tell("staged", entry, fetched.summary(job.nodes or "its nodes"))
        if job.state == "COMPLETED" and fetched is not None and fetched.problems:
            # the outputs stay on the nodes; a resume re-attaches to the completed job and copies them again
            error = f"COMPLETED, but not every node's outputs came back: {'; '.join(fetched.problems)}"
            entry.attempts[-1].error = error
            self.manifest.save()
            self._log_failure(strategy, job_id, error)
            self._tell("failed", entry, f"{error} (cluster sweep resume copies them again)", job)
            return None
        if job.state == "COMPLETED":
            collected = self.collector.collect(strategy, job)
            entry.collected, entry.partial = True, collected.partial
            entry.rows, entry.problems = len(collected.rows), collected.problems
            self.manifest.save()
            note = f"; partial: {'; '.join(collected.problems)}" if collected.partial else ""
            self._tell("collected", entry, f"{entry.rows} rows in {job.elapsed_s or 0:.1f} s{note}", job)
            self._settle(entry, job)
            return None
        job = self._settle(entry, job)
        tail = log_tail(files.log(job_id))
        error = describe_failure(job, tail)
        entry.attempts[-1].error = error
        self.manifest.save()
        self._log_failure(strategy, job_id, error)
        self._tell("failed", entry, error, job)
        if job.state == "CANCELLED":
            raise SweepCancelled(f"{entry.strategy_id}: job {job_id} was cancelled")
        return next_attempt(strategy, job, tail)

    def _follow(self, strategy: ParallelismStrategy, entry: StrategyEntry, job_id: str) -> JobRecord:
        def seen(job: JobRecord) -> None:
            self.storage.mirror(strategy, job)
            if job.state != entry.status:
                entry.record(job)
                self.manifest.save()
                self._tell("state", entry, job.state, job)

        try:
            job = wait_final(self.manager, job_id, poll_s=self.poll_s, on_poll=seen)
        except KeyboardInterrupt:
            self._tell("cancelled", entry, f"cancelling job {job_id}")
            self.manager.cancel(job_id)
            job = wait_final(self.manager, job_id, poll_s=self.poll_s, timeout_s=120)
            entry.record(job)
            entry.attempts[-1].error = CANCELLED_BY_USER
            self.manifest.save()
            raise
        entry.record(job)
        self.manifest.save()
        return job

    def _settle(self, entry: StrategyEntry, job: JobRecord, timeout_s: float = 30.0) -> JobRecord:
        """The scheduler's final accounting for the attempt (it can trail the final state by a second or two)."""
        deadline = time.monotonic() + timeout_s
        while not job.settled and time.monotonic() < deadline:
            job = self.manager.accounting(job.job_id) or job
            if not job.settled:
                time.sleep(self.poll_s)
        entry.record(job)
        self.manifest.save()
        return job

    def _log_failure(self, strategy: ParallelismStrategy, job_id: str, error: str) -> None:
        """The failed-experiment log, one row per failed attempt (the file is rewritten atomically)."""
        path = Path(self.manifest.run_dir) / FAILED_LOG_NAME
        old = path.read_text() if path.exists() else ""
        out = io.StringIO()
        writer = csv.writer(out)
        if not old:
            writer.writerow(FAILED_LOG_COLUMNS)
        config = strategy.config()
        writer.writerow(
            [
                now_iso(),
                f"{config.run_id}/{config.strategy_id}",
                config.strategy_id,
                config.model_name,
                job_id,
                error,
                json.dumps(to_plain(config), separators=(",", ":")),
            ]
        )
        atomic_write_text(path, old + out.getvalue())

    def _tell(self, kind: str, entry: StrategyEntry, message: str, job: JobRecord | None = None) -> None:
        self.on_event(SweepEvent(kind, entry.strategy_id, message, job))

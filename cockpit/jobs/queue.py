"""The job queue the dashboard shows: Slurm's (squeue, and sacct for finished jobs) or the local scheduler's.

Every listing is bounded to `MAX_ROWS` rows, the newest kept, so one refresh costs at most one scheduler call (or
one pass over the local state folders) and a table of at most that many lines; Slurm's queue is read from the
snapshot every watcher shares (cockpit.jobs.watch).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cockpit.errors import BadInput
from cockpit.jobs.local import SWEEP_JOBS_DIR, LocalJobManager, script_time_limit
from cockpit.jobs.output import JobLogs, job_logs, slurm_job_logs
from cockpit.jobs.records import ACTIVE_STATES, JobError, JobRecord
from cockpit.jobs.slurm import run_slurm, run_slurm_json, sacct_record, slurm_number, squeue_record
from cockpit.jobs.watch import SqueueWatch

MAX_ROWS = 2000


@dataclass(frozen=True)
class QueueRow:
    """One job as the dashboard lists it, with Slurm's state names; `submitted_at` in seconds since the epoch."""

    job_id: str
    name: str
    user: str | None
    state: str
    partition: str | None
    nodes: str | None
    elapsed_s: float | None
    time_limit_s: float | None
    reason: str | None
    submitted_at: float | None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


def _row(
    record: JobRecord,
    *,
    user: str | None,
    partition: str | None,
    elapsed_s: float | None,
    time_limit_s: float | None,
    submitted_at: float | None,
) -> QueueRow:
    """The record's fields with what the queue shows beside them."""
    return QueueRow(
        job_id=record.job_id,
        name=record.name,
        user=user,
        state=record.state,
        partition=partition,
        nodes=record.nodes,
        elapsed_s=elapsed_s,
        time_limit_s=time_limit_s,
        reason=record.reason,
        submitted_at=submitted_at,
    )


def _epoch(value: Any) -> float | None:
    """A Slurm timestamp; None for 0, which Slurm writes for a time not reached yet."""
    seconds = slurm_number(value)
    return float(seconds) if seconds else None


def _minutes(value: Any) -> float | None:
    """A Slurm time limit (minutes) in seconds; None when unlimited."""
    minutes = slurm_number(value)
    return None if minutes is None else minutes * 60.0


def _squeue_row(job: Mapping[str, Any], now: float) -> QueueRow:
    record = squeue_record(job)
    start = _epoch(job.get("start_time"))
    elapsed = record.elapsed_s
    # squeue gives a running job's start, not its run time; a pending job's start is 0 or a future estimate
    if elapsed is None and record.state != "PENDING" and start is not None and start <= now:
        elapsed = now - start
    return _row(
        record,
        user=job.get("user_name") or None,
        partition=job.get("partition") or None,
        elapsed_s=elapsed,
        time_limit_s=_minutes(job.get("time_limit")),
        submitted_at=_epoch(job.get("submit_time")),
    )


def _queue_order(row: QueueRow) -> tuple[int, int]:
    """Running first, pending last, the other active states (completing, suspended, ...) between; then by id."""
    rank = 0 if row.state == "RUNNING" else 2 if row.state == "PENDING" else 1
    return rank, int(row.job_id)


def slurm_queue(timeout_s: float = 10) -> list[QueueRow]:
    """Every user's active jobs from one `squeue --json` call (`queue_rows`). A failed call raises `JobError`
    naming the command and its stderr."""
    return queue_rows(run_slurm_json(["squeue", "--json"], "job queue", timeout_s))


def queue_rows(data: Mapping[str, Any]) -> list[QueueRow]:
    """Every user's active jobs in `squeue --json` output: running first, then pending, each by job id.

    squeue also lists jobs that ended within slurmctld's MinJobAge; those are `slurm_finished`'s. At most
    `MAX_ROWS` rows: of a longer queue, the newest jobs (highest ids) are kept.
    """
    now = time.time()
    active = [row for row in (_squeue_row(job, now) for job in data.get("jobs", [])) if row.active]
    newest = sorted(active, key=lambda row: int(row.job_id))[-MAX_ROWS:]
    return sorted(newest, key=_queue_order)


def slurm_finished(since_s: float = 3600, timeout_s: float = 10) -> list[QueueRow]:
    """Every user's jobs that ended in the last `since_s` seconds, from one `sacct --json` call; newest first.

    Only settled records: for a second or two after a job ends slurmdbd can hold a placeholder, which a later
    call picks up. At most `MAX_ROWS` rows, the latest to end. A failed call raises `JobError` naming the
    command and its stderr.
    """
    start = time.time() - since_s
    window = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(start))
    command = ["sacct", "--json", "--allusers", "--allocations", "--starttime", window]
    data = run_slurm_json(command, "finished jobs", timeout_s)
    ended: list[tuple[float, int, QueueRow]] = []
    for job in data.get("jobs", []):
        record = sacct_record(job)
        times = job.get("time", {})
        end = _epoch(times.get("end"))
        # -S selects every job active at some time in the window: pending and running ones too
        if record is None or not record.final or end is None or end < start:
            continue
        row = _row(
            record,
            user=job.get("user") or None,
            partition=job.get("partition") or None,
            elapsed_s=record.elapsed_s,
            time_limit_s=_minutes(times.get("limit")),
            submitted_at=_epoch(times.get("submission")),
        )
        ended.append((end, int(record.job_id), row))
    ended.sort(key=lambda item: item[:2], reverse=True)
    return [row for _, _, row in ended[:MAX_ROWS]]


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


def _script_time_limit(info_path: Path) -> float | None:
    """The `#SBATCH --time` the job's supervisor enforces, read from its script as `LocalJobManager.submit` does."""
    try:
        return script_time_limit(Path(json.loads(info_path.read_text())["script"]).read_text())
    except (OSError, KeyError, json.JSONDecodeError, JobError, BadInput):  # its run folder removed or edited since
        return None


def _local_row(manager: LocalJobManager, job_id: str, submitted_at: float, now: float) -> QueueRow:
    try:
        record = manager.status(job_id)
    except JobError as err:  # a file removed or damaged since the listing: shown, not fatal to the table
        record = JobRecord(job_id, "UNKNOWN", reason=str(err))
    elapsed = record.elapsed_s if record.final else now - submitted_at  # a supervisor starts its job at once
    return _row(
        record,
        user=None,  # every local job is this machine's user's
        partition=None,
        elapsed_s=elapsed,
        time_limit_s=_script_time_limit(manager.paths(job_id)[0]),
        submitted_at=submitted_at,
    )


def local_queue(source: LocalJobManager | Path, since_s: float = 3600) -> list[QueueRow]:
    """The local scheduler's jobs in one state folder: active ones and those that ended in the last `since_s`
    seconds, newest submitted first; at most `MAX_ROWS` rows, the newest kept.

    `source` is the manager or its state folder (another process's jobs are read from their files alone).
    """
    manager = source if isinstance(source, LocalJobManager) else LocalJobManager(source)
    now = time.time()
    cutoff = now - since_s
    candidates: list[tuple[float, str]] = []
    for job_id in manager.job_ids():
        info_path, result_path = manager.paths(job_id)
        submitted_at, ended_at = _mtime(info_path), _mtime(result_path)
        if submitted_at is not None and (ended_at is None or ended_at >= cutoff):
            candidates.append((submitted_at, job_id))
    candidates.sort(reverse=True)
    return [_local_row(manager, job_id, submitted_at, now) for submitted_at, job_id in candidates[:MAX_ROWS]]


class QueueSource(Protocol):
    """Where the dashboard's job table comes from, how a job in it is cancelled and where its logs are; any call
    may raise `JobError`."""

    def active(self) -> list[QueueRow]: ...

    def finished(self) -> list[QueueRow]: ...

    def cancel(self, job_id: str) -> None: ...

    def logs(self, job_id: str) -> JobLogs:
        """Where the job's output is (cockpit.jobs.output)."""
        ...


@dataclass(frozen=True)
class SlurmQueue:
    """Slurm's queue (the shared squeue snapshot, at most `max_age_s` old: by default the watch's backed-off
    interval) and its recently finished jobs (sacct)."""

    watch: SqueueWatch
    max_age_s: float | None = None
    since_s: float = 3600
    timeout_s: float = 10

    def active(self) -> list[QueueRow]:
        return queue_rows(self.watch.snapshot(self.max_age_s))

    def finished(self) -> list[QueueRow]:
        return slurm_finished(self.since_s, self.timeout_s)

    def cancel(self, job_id: str) -> None:
        run_slurm(["scancel", job_id], f"job {job_id}", self.timeout_s)
        self.watch.reset()

    def logs(self, job_id: str) -> JobLogs:
        """From the same snapshot as the queue's rows (squeue --json names each job's output patterns): the job
        the user picked in the table is in it, and no extra squeue call is made."""
        return slurm_job_logs(self.watch.snapshot(self.max_age_s), job_id)


@dataclass(frozen=True)
class LocalQueue:
    """The local scheduler's jobs in every sweep run's state folder, `<runs_dir>/run_*/jobs` (as sweeps make them)."""

    runs_dir: Path
    since_s: float = 3600

    def _rows(self) -> list[QueueRow]:
        folders = self.runs_dir.glob(f"run_*/{SWEEP_JOBS_DIR}")
        rows = [row for jobs in folders for row in local_queue(jobs, self.since_s)]
        rows.sort(key=lambda row: row.submitted_at or 0.0, reverse=True)
        return rows[:MAX_ROWS]

    def active(self) -> list[QueueRow]:
        """Running jobs, newest submitted first."""
        return [row for row in self._rows() if row.active]

    def finished(self) -> list[QueueRow]:
        """Jobs that ended in the last `since_s` seconds, newest submitted first."""
        return [row for row in self._rows() if not row.active]

    def _manager(self, job_id: str) -> LocalJobManager:
        """The state folder of the run the job belongs to (its id names its supervisor, which the folder records)."""
        for jobs in self.runs_dir.glob(f"run_*/{SWEEP_JOBS_DIR}"):
            manager = LocalJobManager(jobs)
            if job_id in manager.job_ids():
                return manager
        raise JobError(f"job {job_id}: no such local job under {self.runs_dir}")

    def cancel(self, job_id: str) -> None:
        """Cancel a job of any run."""
        self._manager(job_id).cancel(job_id)

    def logs(self, job_id: str) -> JobLogs:
        """The log its supervisor writes (every local job's files are on this machine)."""
        manager = self._manager(job_id)
        info_path = manager.paths(job_id)[0]
        record = manager.status(job_id)
        try:
            log = Path(json.loads(info_path.read_text())["log"])
        except (OSError, KeyError, json.JSONDecodeError):
            raise JobError(f"job {job_id}: {info_path} names no log (submitted by an older cockpit?)") from None
        return job_logs(job_id, record.name, record.state, [("output", log)], nodes=record.nodes)

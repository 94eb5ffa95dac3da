"""`SlurmJobManager`: sbatch, squeue/sacct with `--json`, scancel.

A job's state comes from squeue (the snapshot every watcher shares: cockpit.jobs.watch) while slurmctld remembers
it (MinJobAge), and its accounting from sacct. For a second or two after a job ends, slurmdbd can hold a placeholder
record with no working directory: squeue's final state is then returned at once, marked not settled, and the
settled sacct record (exit code, elapsed, MaxRSS) follows on a later call.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cockpit.jobs.factory import JobFiles
from cockpit.jobs.records import JobError, JobRecord

if TYPE_CHECKING:
    from cockpit.jobs.watch import SqueueWatch

UNKNOWN_GRACE_S = 30.0  # how long a submitted job may be missing from both squeue and sacct


def _state(value: Any) -> str:
    """Slurm 22.05 writes a state as a string, 23.02+ as a list of flags with the base state first."""
    if isinstance(value, list):
        return str(value[0]) if value else "UNKNOWN"
    return str(value or "UNKNOWN")


def slurm_number(value: Any) -> int | None:
    """22.05 writes plain numbers (null for unlimited), newer releases {"set", "infinite", "number"}; None if unset."""
    if isinstance(value, dict):
        known = value.get("set", True) and not value.get("infinite", False) and "number" in value
        return int(value["number"]) if known else None
    return None if value is None else int(value)


def squeue_record(job: Mapping[str, Any]) -> JobRecord:
    """One job of `squeue --json` output; a final one is not settled (its sacct record follows)."""
    start, end = slurm_number(job.get("start_time")), slurm_number(job.get("end_time"))
    record = JobRecord(
        job_id=str(job.get("job_id")),
        state=_state(job.get("job_state")),
        name=job.get("name", ""),
        nodes=job.get("nodes") or None,
        reason=None if job.get("state_reason") in (None, "None") else job["state_reason"],
        settled=False,
    )
    if record.final and start and end:
        return dataclasses.replace(record, elapsed_s=float(end - start))
    return record


def record_from_squeue(data: Mapping[str, Any], job_id: str) -> JobRecord | None:
    """The job's record in `squeue --json` output (filtered here: 22.05 ignores -j with --json), or None."""
    for job in data.get("jobs", []):
        if str(job.get("job_id")) == job_id:
            return squeue_record(job)
    return None


def _max_rss(job: Mapping[str, Any]) -> int | None:
    """The largest `mem` any step's task reached (sampled: very short steps have none)."""
    peaks = [
        slurm_number(item.get("count"))
        for step in job.get("steps", [])
        for item in step.get("tres", {}).get("requested", {}).get("max", [])
        if item.get("type") == "mem"
    ]
    known = [p for p in peaks if p]
    return max(known) if known else None


def sacct_record(job: Mapping[str, Any]) -> JobRecord | None:
    """One job of `sacct --json` output, settled; None while it runs or slurmdbd has only a placeholder."""
    state = _state(job.get("state", {}).get("current"))
    if state in ("PENDING", "RUNNING") or not job.get("working_directory"):
        return None
    exit_code = job.get("exit_code") or {}
    return JobRecord(
        job_id=str(job.get("job_id")),
        state=state,
        name=job.get("name", ""),
        exit_code=slurm_number(exit_code.get("return_code")),
        elapsed_s=float(slurm_number(job.get("time", {}).get("elapsed")) or 0),
        max_rss_bytes=_max_rss(job),
        nodes=job.get("nodes") or None,
        reason=None if job.get("state", {}).get("reason") in (None, "None") else job["state"]["reason"],
    )


def record_from_sacct(data: Mapping[str, Any], job_id: str) -> JobRecord | None:
    """The job's settled record in `sacct --json -j ID` output; None while slurmdbd has only a placeholder."""
    for job in data.get("jobs", []):
        if str(job.get("job_id")) == job_id:
            return sacct_record(job)
    return None


def run_slurm(command: list[str], what: str, timeout_s: float, env: Mapping[str, str] | None = None) -> str:
    """A Slurm client command's output; a `JobError` starting with `what` names the command and its stderr."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    except FileNotFoundError:
        raise JobError(f"{what}: {command[0]} not found (is this a Slurm control node?)") from None
    except subprocess.TimeoutExpired:
        raise JobError(f"{what}: {shlex.join(command)} gave no answer in {timeout_s:.0f} s") from None
    if done.returncode != 0:
        raise JobError(f"{what}: {shlex.join(command)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return done.stdout


def run_slurm_json(command: list[str], what: str, timeout_s: float) -> Mapping[str, Any]:
    """A `--json` command's parsed output (errors as `run_slurm`'s)."""
    out = run_slurm(command, what, timeout_s)
    try:
        return json.loads(out)
    except json.JSONDecodeError as err:
        raise JobError(f"{what}: {command[0]} --json gave no JSON ({err.msg} at line {err.lineno})") from None


class SlurmJobManager:
    """Jobs on a real Slurm, through its client commands (which must be on PATH)."""

    backend = "slurm"

    def __init__(
        self,
        watch: SqueueWatch,
        env: Mapping[str, str] | None = None,
        command_timeout_s: float = 30.0,
        unknown_grace_s: float = UNKNOWN_GRACE_S,
    ) -> None:
        self.watch = watch
        self.env = dict(env) if env is not None else None  # what sbatch passes on to the job
        self.command_timeout_s, self.unknown_grace_s = command_timeout_s, unknown_grace_s
        self._unknown_since: dict[str, float] = {}

    def submit(self, files: JobFiles) -> str:
        """sbatch the job script; its job id."""
        command = ["sbatch", "--parsable", str(files.script)]
        out = run_slurm(command, f"{files.script}", self.command_timeout_s, env=self.env)
        job_id = out.strip().split(";")[0]
        if not job_id.isdigit():
            raise JobError(f"{files.script}: sbatch gave no job id (output {out.strip()[:200]!r})")
        self.watch.reset()
        return job_id

    def status(self, job_id: str) -> JobRecord:
        """squeue's record while slurmctld remembers the job (final ones unsettled); sacct's once it forgot."""
        queued = record_from_squeue(self.watch.snapshot(), job_id)
        if queued is not None:
            self._unknown_since.pop(job_id, None)
            return queued
        settled = self.accounting(job_id)
        if settled is not None:
            self._unknown_since.pop(job_id, None)
            return settled
        first = self._unknown_since.setdefault(job_id, time.monotonic())
        if time.monotonic() - first >= self.unknown_grace_s:
            raise JobError(f"job {job_id}: neither squeue nor sacct knows it (after {self.unknown_grace_s:.0f} s)")
        return JobRecord(job_id, "PENDING", reason="not yet in squeue or sacct", settled=False)

    def accounting(self, job_id: str) -> JobRecord | None:
        """The job's settled record from slurmdbd (exit code, elapsed, MaxRSS), or None until there is one."""
        data = run_slurm_json(["sacct", "--json", "-j", job_id], f"job {job_id}", self.command_timeout_s)
        return record_from_sacct(data, job_id)

    def cancel(self, job_id: str) -> None:
        run_slurm(["scancel", job_id], f"job {job_id}", self.command_timeout_s)
        self.watch.reset()

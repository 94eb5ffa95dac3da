"""What a job manager says about a job, whichever scheduler ran it: one `JobRecord`, with Slurm's state names."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from cockpit.errors import OperationFailed

if TYPE_CHECKING:
    from cockpit.jobs.factory import JobFiles

ACTIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"})
# a retry of the same config may well succeed after these: the fault was the machine's, not the job's
TRANSIENT_STATES = frozenset({"NODE_FAIL", "BOOT_FAIL", "PREEMPTED"})


class JobError(OperationFailed):
    """A scheduler refused or lost a job; the message names the job or the script."""


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    state: str  # Slurm's names: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, ...
    name: str = ""
    exit_code: int | None = None
    elapsed_s: float | None = None
    max_rss_bytes: int | None = None
    nodes: str | None = None
    reason: str | None = None
    settled: bool = True  # False while the scheduler's accounting (exit code, elapsed, MaxRSS) may still change

    @property
    def final(self) -> bool:
        return self.state not in ACTIVE_STATES


class JobManager(Protocol):
    """Submit, watch and cancel the jobs the factory renders: Slurm's `sbatch`/`sacct`/`scancel`, or this machine."""

    backend: str

    def submit(self, files: JobFiles) -> str: ...

    def status(self, job_id: str) -> JobRecord: ...

    def accounting(self, job_id: str) -> JobRecord | None: ...

    def cancel(self, job_id: str) -> None: ...


def wait_final(
    manager: JobManager,
    job_id: str,
    *,
    poll_s: float = 0.5,
    timeout_s: float | None = None,
    on_poll: Callable[[JobRecord], None] | None = None,
) -> JobRecord:
    """Poll until the job is in a final state; `on_poll` sees every record (for progress and the manifest)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        record = manager.status(job_id)
        if on_poll is not None:
            on_poll(record)
        if record.final:
            return record
        if deadline is not None and time.monotonic() > deadline:
            raise JobError(f"job {job_id}: still {record.state} after {timeout_s:.0f} s")
        time.sleep(poll_s)

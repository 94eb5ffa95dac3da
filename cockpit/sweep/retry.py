"""What a sweep tries after a strategy's job failed: out of memory halves the batch (down to 1), a fault of the
machine (node failure, boot failure, preemption) retries as it was, anything else gives up."""

from __future__ import annotations

import re

from cockpit.jobs.records import TRANSIENT_STATES, JobRecord
from cockpit.sweep.strategies import ParallelismStrategy

# how running out of memory reads in a job's log, on any device (and Slurm's own state for a cgroup kill)
OUT_OF_MEMORY = re.compile(
    r"out of memory|OutOfMemoryError|can't allocate memory|oom[-_ ]kill|OUT_OF_MEMORY", re.IGNORECASE
)


def next_attempt(strategy: ParallelismStrategy, job: JobRecord, log_tail: str) -> ParallelismStrategy | None:
    """The strategy to run after its job ended as `job` with `log_tail` at the end of its log; None to give up."""
    if job.state == "OUT_OF_MEMORY" or OUT_OF_MEMORY.search(log_tail):
        half = strategy.settings.batch_size // 2
        return strategy.with_settings(batch_size=half) if half >= 1 else None
    if job.state in TRANSIENT_STATES:
        return strategy
    return None

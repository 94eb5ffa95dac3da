"""One `squeue --json` per poll cycle for everything that watches Slurm's queue, as submitit's watcher does: the
dashboard's queue, every sweep's job watch and `cluster sweep status` read one snapshot, shared between processes
through a file in the runs folder, so a sweep that looks at its job every 0.5 s asks slurmctld no more often than
the snapshot ages out.

`snapshot(max_age_s)` returns the last answer while it is younger than `max_age_s` (by default the watch's own
interval); otherwise it asks squeue once, under a file lock, so readers that come meanwhile wait for that call and
share it. The interval backs off (`next_interval`): doubled after each answer that says what the one before said,
up to `cap_s`, and back at `base_s` after a change, or after `reset()` (a job submitted or cancelled here).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cockpit.jobs.slurm import run_slurm_json
from runtime.atomic import atomic_write_text

BASE_S = 0.5  # how often a sweep looked at its job before there was a shared watch
CAP_S = 8.0  # how stale an unchanging queue may get for a sweep's watch ([refresh] squeue_max_s; the dashboard
# asks at its own rate, squeue_s)
SNAPSHOT_NAME = ".squeue.json"


def next_interval(interval_s: float, changed: bool, base_s: float = BASE_S, cap_s: float = CAP_S) -> float:
    """The back-off: `base_s` after a change, otherwise twice `interval_s`, never above `cap_s`."""
    return base_s if changed else min(cap_s, max(base_s, interval_s * 2))


def fingerprint(data: Mapping[str, Any]) -> str:
    """What counts as a change in squeue's answer: which jobs there are, and each one's state, nodes and reason."""
    jobs = sorted(
        [str(job.get("job_id")), str(job.get("job_state")), str(job.get("nodes")), str(job.get("state_reason"))]
        for job in data.get("jobs") or ()
    )
    return hashlib.sha256(json.dumps(jobs).encode()).hexdigest()


@dataclass(frozen=True)
class SqueueWatch:
    """The shared snapshot of Slurm's queue kept in `folder` (the runs folder, which every reader knows)."""

    folder: Path
    base_s: float = BASE_S
    cap_s: float = CAP_S
    timeout_s: float = 10.0
    clock: Callable[[], float] = field(default=time.time, compare=False, repr=False)  # shared between processes

    @property
    def path(self) -> Path:
        return self.folder / SNAPSHOT_NAME

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The stored state (empty when there is none, or it is unreadable), under an exclusive lock."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / f"{SNAPSHOT_NAME}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = json.loads(self.path.read_text())
            except (OSError, ValueError):
                state = {}
            yield state if isinstance(state, dict) else {}

    def interval(self) -> float:
        """How old a snapshot may be before the next read asks squeue again (the backed-off interval)."""
        with self._locked() as state:
            return min(float(state.get("interval", self.base_s)), self.cap_s)

    def snapshot(self, max_age_s: float | None = None) -> Mapping[str, Any]:
        """squeue's answer, at most `max_age_s` old (default: the backed-off interval); a JobError naming squeue
        when it has to ask and squeue fails. Where the runs folder cannot be written (a read-only cockpit on another
        user's runs), each read asks squeue itself, as before there was a shared snapshot."""
        try:
            return self._shared_snapshot(max_age_s)
        except OSError:
            return run_slurm_json(["squeue", "--json"], "job queue", self.timeout_s)

    def _shared_snapshot(self, max_age_s: float | None) -> Mapping[str, Any]:
        with self._locked() as state:
            interval = min(float(state.get("interval", self.base_s)), self.cap_s)  # another reader's cap may be higher
            age = self.clock() - float(state.get("at", 0.0))
            if state.get("data") is not None and 0 <= age < (interval if max_age_s is None else max_age_s):
                return state["data"]
            data = run_slurm_json(["squeue", "--json"], "job queue", self.timeout_s)
            digest = fingerprint(data)
            interval = next_interval(interval, digest != state.get("digest"), self.base_s, self.cap_s)
            stored = {"at": self.clock(), "interval": interval, "digest": digest, "data": data}
            atomic_write_text(self.path, json.dumps(stored))
            return data

    def reset(self) -> None:
        """Something changed here (a job submitted or cancelled): the next read asks squeue, at the base interval."""
        with self._locked():
            atomic_write_text(self.path, json.dumps({"at": 0.0, "interval": self.base_s, "digest": "", "data": None}))

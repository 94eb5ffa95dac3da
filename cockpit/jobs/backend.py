"""The one place that chooses a scheduler backend (as submitit's `AutoExecutor` does): given the configured
scheduler it returns the job manager a sweep submits through, the queue the dashboard lists, and the launcher
the job scripts start their ranks with. Nothing else in the cockpit names SlurmJobManager or LocalJobManager."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, Protocol

from cockpit.jobs.factory import Launcher
from cockpit.jobs.local import SWEEP_JOBS_DIR, LocalJobManager
from cockpit.jobs.queue import LocalQueue, QueueSource, SlurmQueue
from cockpit.jobs.records import JobManager
from cockpit.jobs.slurm import SlurmJobManager
from cockpit.jobs.watch import CAP_S, SqueueWatch

Scheduler = Literal["local", "slurm"]


class Backend(Protocol):
    """A scheduler: where a run's jobs go, what the queue shows, how a job starts its ranks."""

    name: Scheduler
    launcher: Launcher

    def job_manager(self, run_dir: Path) -> JobManager:
        """The job manager for one run folder's jobs."""
        ...

    def queue(self, max_age_s: float | None = None) -> QueueSource:
        """Every job the dashboard lists (a shared listing at most `max_age_s` old), and how one is cancelled."""
        ...


@dataclass(frozen=True)
class SlurmBackend:
    """A real Slurm: sbatch/squeue/sacct/scancel; ranks started by srun or by the deepspeed launcher. Every job
    manager and queue of one runs folder reads the same squeue snapshot (cockpit.jobs.watch)."""

    runs_dir: Path
    launcher: Launcher = "srun"
    watch_cap_s: float = CAP_S  # how far a quiet queue's watch backs off
    name: ClassVar[Scheduler] = "slurm"

    def job_manager(self, run_dir: Path) -> JobManager:
        return SlurmJobManager(SqueueWatch(self.runs_dir, cap_s=self.watch_cap_s))

    def queue(self, max_age_s: float | None = None) -> QueueSource:
        return SlurmQueue(SqueueWatch(self.runs_dir, cap_s=self.watch_cap_s), max_age_s)


@dataclass(frozen=True)
class LocalBackend:
    """This machine: each job a supervised process whose records live in its run folder's `jobs/`; every rank
    started here by the deepspeed launcher's local mode."""

    runs_dir: Path
    name: ClassVar[Scheduler] = "local"
    launcher: ClassVar[Launcher] = "local"

    def job_manager(self, run_dir: Path) -> JobManager:
        return LocalJobManager(run_dir / SWEEP_JOBS_DIR)

    def queue(self, max_age_s: float | None = None) -> QueueSource:
        return LocalQueue(self.runs_dir)  # read from the run folders at every poll: no scheduler to spare


def choose_backend(
    scheduler: Scheduler, runs_dir: Path, launcher: Launcher = "srun", watch_cap_s: float = CAP_S
) -> Backend:
    """The backend for `scheduler`; `runs_dir` holds the run folders, `launcher` is how Slurm jobs start ranks,
    `watch_cap_s` how far the watch of Slurm's queue backs off while it does not change."""
    if scheduler == "slurm":
        return SlurmBackend(runs_dir, launcher, watch_cap_s)
    return LocalBackend(runs_dir)

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

Scheduler = Literal["local", "slurm"]


class Backend(Protocol):
    """A scheduler: where a run's jobs go, what the queue shows, how a job starts its ranks."""

    name: Scheduler
    launcher: Launcher

    def job_manager(self, run_dir: Path) -> JobManager:
        """The job manager for one run folder's jobs."""
        ...

    def queue(self) -> QueueSource:
        """Every job the dashboard lists, and how one is cancelled."""
        ...


@dataclass(frozen=True)
class SlurmBackend:
    """A real Slurm: sbatch/squeue/sacct/scancel; ranks started by srun or by the deepspeed launcher."""

    launcher: Launcher = "srun"
    name: ClassVar[Scheduler] = "slurm"

    def job_manager(self, run_dir: Path) -> JobManager:
        return SlurmJobManager()

    def queue(self) -> QueueSource:
        return SlurmQueue()


@dataclass(frozen=True)
class LocalBackend:
    """This machine: each job a supervised process whose records live in its run folder's `jobs/`; every rank
    started here by the deepspeed launcher's local mode."""

    runs_dir: Path
    name: ClassVar[Scheduler] = "local"
    launcher: ClassVar[Launcher] = "local"

    def job_manager(self, run_dir: Path) -> JobManager:
        return LocalJobManager(run_dir / SWEEP_JOBS_DIR)

    def queue(self) -> QueueSource:
        return LocalQueue(self.runs_dir)


def choose_backend(scheduler: Scheduler, runs_dir: Path, launcher: Launcher = "srun") -> Backend:
    """The backend for `scheduler`; `runs_dir` holds the run folders, `launcher` is how Slurm jobs start ranks."""
    if scheduler == "slurm":
        return SlurmBackend(launcher)
    return LocalBackend(runs_dir)

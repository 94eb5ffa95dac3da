"""`run_<ts>/manifest.json`: what a sweep did, strategy by strategy, rewritten atomically after
every change so that a crash, a Ctrl-C or a second reader never sees it half written.

A strategy is done when its job is COMPLETED *and* its rows are collected; `sweep resume` skips exactly those.

Every path into the run folder is stored relative to it (`run_dir` itself as "."), and read back against where the
folder is now, so a run copied or moved elsewhere reads, reports and resumes there. A manifest written before, with
absolute paths, is read the same way: a path inside the folder it names as its `run_dir` is taken as that path
inside the folder it is in now.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cockpit.config import RunStorageKind
from cockpit.errors import BadInput
from cockpit.jobs.factory import Launcher
from cockpit.jobs.output import JobLogs, job_logs
from cockpit.jobs.records import ACTIVE_STATES, JobRecord
from cockpit.sweep.memory import MemoryPlan
from runtime.atomic import atomic_write_text
from runtime.contract import found_path, loads, read_text, stored_path
from runtime.schema import to_plain

MANIFEST_NAME = "manifest.json"
RUN_PATH_SETTINGS = ("run_dir", "prompt_df_path")  # the settings that are paths into the run folder


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Attempt:
    """One submission of one strategy's job, with the config it ran and how it ended."""

    job_id: str
    batch_size: int
    submitted_at: str
    state: str = "SUBMITTED"
    finished_at: str | None = None
    exit_code: int | None = None
    elapsed_s: float | None = None
    max_rss_bytes: int | None = None
    nodes: str | None = None
    log_path: str | None = None
    error: str | None = None


@dataclass
class StrategyEntry:
    strategy_id: str
    kind: str
    description: str
    exp_config_path: str
    script_path: str
    output_root: str
    status: str = "NOT_STARTED"  # until submitted; then the latest job's state, as the scheduler names it
    job_id: str | None = None
    collected: bool = False
    partial: bool = False
    rows: int = 0
    problems: list[str] = field(default_factory=list)  # missing shards, torn or bad lines: what collection found
    attempts: list[Attempt] = field(default_factory=list)
    memory: MemoryPlan | None = None  # the memory plan made before anything was submitted (cockpit.sweep.memory)

    @property
    def skipped(self) -> bool:
        """The memory plan found it cannot fit: it is never submitted."""
        return self.memory is not None and self.memory.verdict == "skipped"

    @property
    def done(self) -> bool:
        return self.status == "COMPLETED" and self.collected

    def record(self, job: JobRecord) -> None:
        """The latest word from the scheduler about the current attempt."""
        self.status = job.state
        attempt = self.attempts[-1]
        attempt.state = job.state
        if job.final:
            attempt.finished_at = attempt.finished_at or now_iso()
            attempt.exit_code, attempt.elapsed_s = job.exit_code, job.elapsed_s
            attempt.max_rss_bytes = job.max_rss_bytes
        attempt.nodes = job.nodes or attempt.nodes


@dataclass
class Manifest:
    run_id: str
    run_dir: str
    backend: str
    created_at: str
    state: str = "planned"  # planned | running | completed | failed | cancelled
    pipeline_pid: int | None = None
    launcher: Launcher = "local"  # how jobs start their ranks
    run_storage: RunStorageKind = "shared"  # how the jobs' nodes see the run folder (cockpit.sweep.staging)
    max_attempts: int = 3
    # the sweep's SweepSettings
    settings: dict[str, str | int | float | bool | list[str] | None] = field(default_factory=dict)
    baseline: str = "reference"  # where baseline completions come from: the reference run, or an endpoint URL
    strategies: dict[str, StrategyEntry] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return Path(self.run_dir) / MANIFEST_NAME

    @classmethod
    def load(cls, run_dir: Path) -> Manifest:
        """The manifest in `run_dir`, its paths into the run taken against `run_dir` wherever it now is."""
        path = run_dir / MANIFEST_NAME
        stored = loads(cls, read_text(path), str(path))
        here = run_dir.absolute()
        return stored._with_paths(lambda value: found_path(value, here, Path(stored.run_dir)))

    def save(self) -> None:
        run_dir = Path(self.run_dir)
        plain = to_plain(self._with_paths(lambda value: stored_path(value, run_dir)))
        atomic_write_text(self.path, json.dumps(plain, indent=2) + "\n")

    def _with_paths(self, change: Callable[[str], str]) -> Manifest:
        """A copy with every path into the run passed through `change`."""
        moved = copy.deepcopy(self)
        moved.run_dir = change(self.run_dir)
        for key in RUN_PATH_SETTINGS:
            if isinstance(value := moved.settings.get(key), str):
                moved.settings[key] = change(value)
        for entry in moved.strategies.values():
            entry.exp_config_path, entry.script_path = change(entry.exp_config_path), change(entry.script_path)
            entry.output_root = change(entry.output_root)
            for attempt in entry.attempts:
                attempt.log_path = attempt.log_path and change(attempt.log_path)
        return moved

    def memory_lines(self) -> list[str]:
        """A line per strategy the memory plan skipped or gave a smaller batch, in plan order."""
        return [e.memory.sentence for e in self.strategies.values() if e.memory is not None and e.memory.sentence]

    def running(self) -> list[StrategyEntry]:
        """Entries whose latest job has not ended."""
        return [e for e in self.strategies.values() if e.job_id and e.status in ACTIVE_STATES | {"SUBMITTED"}]

    def logs(self, strategy_id: str) -> JobLogs:
        """The logs of the strategy's latest job."""
        entry = self.strategies.get(strategy_id)
        if entry is None:
            raise BadInput(f"{self.path}: no strategy {strategy_id!r}")
        attempt = entry.attempts[-1] if entry.attempts else None
        if attempt is None or attempt.log_path is None:
            return JobLogs(f"{strategy_id} · {entry.status}", (), f"{strategy_id}: no job submitted yet")
        return job_logs(
            attempt.job_id,
            strategy_id,
            entry.status,
            [("output", Path(attempt.log_path))],
            nodes=attempt.nodes,
        )

    def pipeline_alive(self) -> bool:
        """Whether the sweep process that wrote this manifest is still running (pid and cmdline checked)."""
        if self.pipeline_pid is None:
            return False
        try:
            cmdline = Path(f"/proc/{self.pipeline_pid}/cmdline").read_bytes()
        except OSError:
            return False
        return b"sweep" in cmdline and os.getpid() != self.pipeline_pid

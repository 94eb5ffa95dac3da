"""`LocalJobManager`: the job manager for the embedded default, running the same job script on this machine.

Each job is a small supervisor process (`python -m cockpit.jobs.local`, its own session) that runs
`bash job.slurm`, enforces the time limit, and on exit writes the job's final record (state, exit code,
elapsed, MaxRSS) atomically beside the job's own bookkeeping. The manager only reads those files, so a sweep
started by one process can be followed, resumed or cancelled by another.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from cockpit.errors import BadInput
from cockpit.jobs.factory import JobFiles, job_log
from cockpit.jobs.records import JobError, JobRecord
from runtime.atomic import atomic_write_text
from runtime.local_launch import local_env

KILL_GRACE_S = 10.0
DEFAULT_TIME_LIMIT = "01:00:00"
SWEEP_JOBS_DIR = "jobs"  # a sweep's local jobs keep their state in <run folder>/jobs


def parse_time_limit(text: str) -> float:
    """Slurm's time formats (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) in seconds."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise BadInput(f"time limit {text!r}: expected a Slurm time like 30, 01:00:00 or 1-12:00:00")
    days, a, b, c = match.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = int(a), int(b or 0), int(c or 0)
        return ((int(days) * 24 + hours) * 60 + minutes) * 60.0 + seconds
    if c is not None:  # HH:MM:SS
        return int(a) * 3600.0 + int(b) * 60 + int(c)
    return int(a) * 60.0 + int(b or 0)  # MM[:SS]


def script_time_limit(script: str) -> float:
    """The seconds a job script's `#SBATCH --time` allows (Slurm's default here when it sets none)."""
    limit = re.search(r"^#SBATCH --time=(\S+)", script, re.MULTILINE)
    return parse_time_limit(limit[1] if limit else DEFAULT_TIME_LIMIT)


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot: with the pid, it names one process (pids get reused)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


class LocalJobManager:
    """Jobs as supervised processes on this machine; their files live in `state_dir`."""

    backend = "local"

    def __init__(self, state_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.env = dict(env) if env is not None else local_env()
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    def paths(self, job_id: str) -> tuple[Path, Path]:
        """A job's record (written at submission) and its result (written when it ends)."""
        return self.state_dir / f"{job_id}.json", self.state_dir / f"{job_id}.result.json"

    def job_ids(self) -> list[str]:
        """Every job this state folder has a record of (the `<job_id>.json` written at submission)."""
        return [
            p.name.removesuffix(".json") for p in self.state_dir.glob("*.json") if not p.name.endswith(".result.json")
        ]

    def submit(self, files: JobFiles) -> str:
        """Start the job's supervisor, which honours the script's `#SBATCH --time`; its job id (`local-<pid>`)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        time_limit = script_time_limit(files.script.read_text())
        command = [sys.executable, "-m", "cockpit.jobs.local", "--state-dir", str(self.state_dir)]
        command += ["--log-pattern", files.log_pattern, "--time-limit", str(time_limit)]
        command += ["bash", str(files.script)]
        child = subprocess.Popen(
            command,
            cwd=files.script.parent,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C at the terminal is the pipeline's to handle, not the job's
        )
        job_id = f"local-{child.pid}"
        self._children[job_id] = child
        info = {
            "pid": child.pid,
            "start_ticks": _start_ticks(child.pid),
            "script": str(files.script),
            "log": str(files.log(job_id)),  # what the supervisor writes the job's output to
        }
        atomic_write_text(self.paths(job_id)[0], json.dumps(info))
        return job_id

    def _cancelled(self, job_id: str) -> Path:
        return self.state_dir / f"{job_id}.cancelled"

    def _read(self, path: Path, job_id: str) -> dict:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise JobError(f"job {job_id}: unknown to the local backend (no {path})") from None
        except (OSError, json.JSONDecodeError) as err:
            raise JobError(f"job {job_id}: {path} unreadable ({err})") from None

    def _alive(self, job_id: str, info: dict) -> bool:
        child = self._children.get(job_id)
        if child is not None:
            return child.poll() is None
        return info["start_ticks"] is not None and _start_ticks(info["pid"]) == info["start_ticks"]

    def status(self, job_id: str) -> JobRecord:
        info_path, result_path = self.paths(job_id)
        info = self._read(info_path, job_id)
        name = Path(info["script"]).parent.name
        alive = self._alive(job_id, info)  # before looking for the record: a supervisor writes it, then exits
        if result_path.exists():
            self._children.pop(job_id, None)
            return JobRecord(job_id, name=name, **self._read(result_path, job_id))
        if alive:
            return JobRecord(job_id, "RUNNING", name=name, nodes="localhost")
        if self._cancelled(job_id).exists():  # cancelled while its supervisor was still starting
            return JobRecord(job_id, "CANCELLED", name=name, nodes="localhost")
        return JobRecord(job_id, "FAILED", name=name, reason="the job's supervisor ended without a record (killed?)")

    def accounting(self, job_id: str) -> JobRecord | None:
        """The final record, once there is one (a local job's final record is already its accounting)."""
        record = self.status(job_id)
        return record if record.final else None

    def cancel(self, job_id: str) -> None:
        info_path, result_path = self.paths(job_id)
        info = self._read(info_path, job_id)
        if not result_path.exists() and self._alive(job_id, info):
            self._cancelled(job_id).touch()  # read only if the supervisor dies before it can record
            os.kill(info["pid"], signal.SIGTERM)  # the supervisor stops the job's process group, then records


def _supervise(command: list[str], state_dir: Path, log_pattern: str, time_limit_s: float) -> int:
    """Run the job in its own process group and write its final record; exits with the job's exit code."""
    stop_reason: list[str] = []
    job: subprocess.Popen[bytes] | None = None

    def stop(reason: str) -> None:
        if not stop_reason:
            stop_reason.append(reason)
        if job is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(job.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, lambda *_: stop("CANCELLED"))
    signal.signal(signal.SIGINT, lambda *_: stop("CANCELLED"))
    job_id = f"local-{os.getpid()}"
    log = job_log(log_pattern, job_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    result: dict[str, object] = {"state": "CANCELLED", "exit_code": None, "elapsed_s": 0.0, "nodes": "localhost"}
    if not stop_reason:  # a cancel can come before the job has started
        with log.open("ab") as out:
            job = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        result = _follow(job, started, time_limit_s, stop, stop_reason)
    atomic_write_text(state_dir / f"{job_id}.result.json", json.dumps(result))
    return 0 if result["exit_code"] == 0 else 1


def _follow(
    job: subprocess.Popen[bytes],
    started: float,
    time_limit_s: float,
    stop: Callable[[str], None],
    stop_reason: list[str],
) -> dict[str, object]:
    """Wait for the job, stopping it at its time limit (SIGTERM, then SIGKILL after a grace); its final record."""
    killed_at: float | None = None
    while True:
        pid, status, usage = os.wait4(job.pid, os.WNOHANG)
        if pid:
            break
        now = time.monotonic()
        if now - started > time_limit_s:
            stop("TIMEOUT")
        if stop_reason and killed_at is None:
            killed_at = now
        if killed_at is not None and now - killed_at > KILL_GRACE_S:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(job.pid, signal.SIGKILL)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(job.pid, signal.SIGKILL)  # ranks the launcher left behind
    exit_code = os.waitstatus_to_exitcode(status)
    return {
        "state": stop_reason[0] if stop_reason else ("COMPLETED" if exit_code == 0 else "FAILED"),
        "exit_code": exit_code,
        "elapsed_s": round(time.monotonic() - started, 3),
        "max_rss_bytes": usage.ru_maxrss * 1024,  # of the largest process in the job's tree (Linux: KiB)
        "nodes": "localhost",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cockpit.jobs.local", description="supervise one local job")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--log-pattern", required=True)
    parser.add_argument("--time-limit", type=float, required=True, help="seconds")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    return _supervise(args.command, args.state_dir, args.log_pattern, args.time_limit)


if __name__ == "__main__":
    sys.exit(main())

"""The local backend: real job scripts in supervised processes, with Slurm's states, time limit and records."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cockpit.errors import BadInput
from cockpit.jobs.factory import JobFiles
from cockpit.jobs.local import LocalJobManager, parse_time_limit
from cockpit.jobs.records import JobError, wait_final


def job(tmp_path: Path, body: str, time_limit: str = "00:30") -> JobFiles:
    script = tmp_path / "tiny_pp1_tp1_n1" / "job.slurm"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(f"#!/bin/bash\n#SBATCH --job-name=x\n#SBATCH --time={time_limit}\nset -e\n{body}\n")
    return JobFiles(script.parent / "exp_config.json", script, str(script.parent / "logs" / "slurm-%j.out"))


def gone(pid: int, within_s: float = 3.0) -> bool:
    """Whether the process has ended (killed processes linger as zombies until their new parent reaps them)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 1800), ("00:05", 5), ("01:00:00", 3600), ("1-02", 93600), ("1-00:00:10", 86410), ("2:30", 150)],
)
def test_parse_time_limit(text: str, seconds: float) -> None:
    assert parse_time_limit(text) == seconds


def test_bad_time_limit_is_named() -> None:
    with pytest.raises(BadInput, match="time limit 'soon'"):
        parse_time_limit("soon")


def test_completed_job_with_its_log_and_record(tmp_path: Path) -> None:
    manager = LocalJobManager(tmp_path / "jobs")
    files = job(tmp_path, "echo on $(hostname)\npython3 -c 'x = bytearray(64 << 20); print(len(x))'")
    job_id = manager.submit(files)
    record = wait_final(manager, job_id, poll_s=0.05, timeout_s=30)
    assert (record.state, record.exit_code, record.name) == ("COMPLETED", 0, "tiny_pp1_tp1_n1")
    assert record.elapsed_s is not None and record.elapsed_s > 0
    assert record.max_rss_bytes is not None and record.max_rss_bytes > 64 << 20  # the python child's peak
    assert files.log(job_id).read_text().splitlines()[-1] == str(64 << 20)
    # another process (a resumed sweep, `sweep status`) reads the same record from the files alone
    assert LocalJobManager(tmp_path / "jobs").status(job_id) == record


def test_failed_job_keeps_its_exit_code(tmp_path: Path) -> None:
    manager = LocalJobManager(tmp_path / "jobs")
    record = wait_final(manager, manager.submit(job(tmp_path, "exit 3")), poll_s=0.05, timeout_s=30)
    assert (record.state, record.exit_code) == ("FAILED", 3)


def test_cancel_stops_the_whole_job(tmp_path: Path) -> None:
    manager = LocalJobManager(tmp_path / "jobs")
    files = job(tmp_path, "sleep 60 &\necho $! > child.pid\nwait")
    job_id = manager.submit(files)
    child = files.script.parent / "child.pid"
    deadline = time.monotonic() + 10
    while not child.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert manager.status(job_id).state == "RUNNING"
    started = time.monotonic()
    manager.cancel(job_id)
    record = wait_final(manager, job_id, poll_s=0.05, timeout_s=30)
    assert record.state == "CANCELLED" and time.monotonic() - started < 5
    assert gone(int(child.read_text()))  # the job's own children went too


def test_time_limit_from_the_script(tmp_path: Path) -> None:
    manager = LocalJobManager(tmp_path / "jobs")
    record = wait_final(manager, manager.submit(job(tmp_path, "sleep 30", "00:01")), poll_s=0.1, timeout_s=30)
    assert record.state == "TIMEOUT" and 1 <= record.elapsed_s < 5


def test_unknown_job_is_named(tmp_path: Path) -> None:
    with pytest.raises(JobError, match="job local-1: unknown to the local backend"):
        LocalJobManager(tmp_path / "jobs").status("local-1")


def test_cancel_right_after_submit(tmp_path: Path) -> None:
    """A cancel that lands while the supervisor is still starting still ends CANCELLED, and the job never runs."""
    manager = LocalJobManager(tmp_path / "jobs")
    files = job(tmp_path, "touch ran")
    job_id = manager.submit(files)
    manager.cancel(job_id)
    assert wait_final(manager, job_id, poll_s=0.05, timeout_s=30).state == "CANCELLED"
    assert not (files.script.parent / "ran").exists()

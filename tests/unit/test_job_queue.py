"""The dashboard's job queue: squeue/sacct `--json` in 22.05's and 23.02+'s shapes, and the local scheduler's jobs."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cockpit.config import ClusterSection, CockpitFile, Settings
from cockpit.jobs import queue
from cockpit.jobs.backend import choose_backend
from cockpit.jobs.factory import JobFiles
from cockpit.jobs.local import LocalJobManager
from cockpit.jobs.queue import (
    LocalQueue,
    QueueRow,
    SlurmQueue,
    local_queue,
    slurm_finished,
    slurm_queue,
)
from cockpit.jobs.records import JobError, wait_final
from cockpit.jobs.watch import SqueueWatch

FakeCommand = Callable[..., Path]


def squeue_job(
    job_id: int,
    state: str,
    *,
    submit: int,
    start: int = 0,
    end: int = 0,
    limit: int | None = 5,
    nodes: str = "",
    reason: str = "None",
    name: str = "qsleep",
) -> dict:
    """The parts of a real 22.05 `squeue --json` job the queue reads (captured from the test cluster)."""
    return {
        "job_id": job_id,
        "name": name,
        "user_name": "root",
        "user_id": 0,
        "job_state": state,
        "partition": "debug",
        "nodes": nodes,
        "node_count": 1,
        "start_time": start,
        "end_time": end,
        "submit_time": submit,
        "time_limit": limit,  # minutes; null when unlimited
        "state_reason": reason,
        "array_job_id": 0,
        "array_task_id": None,
    }


def sacct_job(
    job_id: int,
    state: str,
    *,
    submit: int,
    start: int,
    end: int,
    limit: int | None = 5,
    workdir: str = "/work/main",
    name: str = "qsleep",
) -> dict:
    """The parts of a real 22.05 `sacct --json -X` job the queue reads (captured from the test cluster)."""
    return {
        "job_id": job_id,
        "name": name,
        "user": "root",
        "partition": "debug",
        "nodes": "node0" if start else "None assigned",
        "state": {"current": state, "reason": "None"},
        "exit_code": {"status": "SUCCESS" if state == "COMPLETED" else "FAILED", "return_code": 0},
        "time": {
            "elapsed": end - start if end else 0,
            "eligible": submit,
            "end": end,
            "start": start,
            "submission": submit,
            "suspended": 0,
            "limit": limit,
        },
        "working_directory": workdir,
        "steps": [],
        "association": {"account": "root", "cluster": "cockpit", "partition": None, "user": "root"},
    }


def newer(value: int | None) -> dict:
    """A number as 23.02+ writes it; unlimited is unset and infinite."""
    if value is None:
        return {"set": False, "infinite": True, "number": 0}
    return {"set": True, "infinite": False, "number": value}


@pytest.fixture
def fake_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCommand:
    """Put a stand-in for a Slurm client command first on PATH; it records its arguments in the returned file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def install(name: str, stdout: str = "", stderr: str = "", code: int = 0) -> Path:
        (bin_dir / f"{name}.out").write_text(stdout)
        (bin_dir / f"{name}.err").write_text(stderr)
        argv = bin_dir / f"{name}.argv"
        command = bin_dir / name
        command.write_text(
            f'#!/bin/sh\nprintf "%s\\n" "$@" > {argv}\ncat {bin_dir / f"{name}.out"}\n'
            f"cat {bin_dir / f'{name}.err'} >&2\nexit {code}\n"
        )
        command.chmod(0o755)
        return argv

    return install


def test_squeue_22_05_shape(fake_command: FakeCommand) -> None:
    now = int(time.time())
    jobs = [
        squeue_job(134, "COMPLETED", submit=now - 60, start=now - 57, end=now - 54, nodes="node0"),  # MinJobAge
        squeue_job(135, "PENDING", submit=now - 30, limit=None, reason="Priority", name="qbig"),
        squeue_job(133, "RUNNING", submit=now - 200, start=now - 120, end=now + 180, nodes="node[0-1]"),
    ]
    argv = fake_command("squeue", json.dumps({"meta": {}, "errors": [], "jobs": jobs}))
    running, pending = slurm_queue()
    assert argv.read_text().split() == ["--json"]
    assert (running.job_id, running.name, running.state, running.nodes, running.reason) == (
        "133",
        "qsleep",
        "RUNNING",
        "node[0-1]",
        None,
    )
    assert (running.user, running.partition, running.time_limit_s, running.submitted_at) == (
        "root",
        "debug",
        300.0,
        now - 200,
    )
    assert running.elapsed_s == pytest.approx(120, abs=5)  # from its start time: squeue gives no run time
    assert pending == QueueRow("135", "qbig", "root", "PENDING", "debug", None, None, None, "Priority", now - 30)


def test_squeue_newer_shape(fake_command: FakeCommand) -> None:
    """23.02+: states as flag lists, numbers as {set, infinite, number}, a pending job's start an estimate."""
    now = int(time.time())
    running = squeue_job(7, "RUNNING", submit=now - 90, start=now - 60, end=now + 3540, limit=60, nodes="gpu01")
    pending = squeue_job(8, "PENDING", submit=now - 10, start=now + 600, end=now + 4200, limit=None)
    for job in (running, pending):
        for key in ("start_time", "end_time", "submit_time", "time_limit"):
            job[key] = newer(job[key])
    running["job_state"], pending["job_state"] = ["RUNNING"], ["PENDING", "REQUEUED"]
    pending["state_reason"] = "Resources"
    fake_command("squeue", json.dumps({"jobs": [pending, running]}))
    first, second = slurm_queue()
    assert (first.job_id, first.state, first.time_limit_s, first.submitted_at) == ("7", "RUNNING", 3600.0, now - 90)
    assert first.elapsed_s == pytest.approx(60, abs=5)
    assert (second.job_id, second.state, second.reason, second.time_limit_s) == ("8", "PENDING", "Resources", None)
    assert second.elapsed_s is None  # its start time is the scheduler's estimate, still ahead


def test_queue_order_running_then_pending_by_id(fake_command: FakeCommand) -> None:
    now = int(time.time())
    states = {10: "PENDING", 3: "RUNNING", 12: "RUNNING", 2: "PENDING", 7: "SUSPENDED", 5: "FAILED", 9: "COMPLETING"}
    jobs = [squeue_job(i, s, submit=now - 100, start=0 if s == "PENDING" else now - 50) for i, s in states.items()]
    fake_command("squeue", json.dumps({"jobs": jobs}))
    assert [(row.job_id, row.state) for row in slurm_queue()] == [
        ("3", "RUNNING"),
        ("12", "RUNNING"),
        ("7", "SUSPENDED"),
        ("9", "COMPLETING"),
        ("2", "PENDING"),
        ("10", "PENDING"),
    ]


def test_queue_keeps_the_newest_2000(fake_command: FakeCommand) -> None:
    now = int(time.time())
    jobs = [squeue_job(i, "PENDING", submit=now) for i in range(1, 2101)]
    jobs.append(squeue_job(5, "RUNNING", submit=now, start=now))  # the cap keeps the highest ids, whatever their state
    fake_command("squeue", json.dumps({"jobs": jobs}))
    rows = slurm_queue()
    assert len(rows) == queue.MAX_ROWS == 2000
    assert (rows[0].job_id, rows[-1].job_id) == ("101", "2100")


def test_finished_22_05_shape(fake_command: FakeCommand) -> None:
    now = int(time.time())
    jobs = [
        sacct_job(96, "COMPLETED", submit=now - 4000, start=now - 3990, end=now - 3700),  # before the window
        sacct_job(134, "COMPLETED", submit=now - 600, start=now - 597, end=now - 594),
        sacct_job(135, "FAILED", submit=now - 500, start=now - 400, end=now - 100, limit=None, name="qbig"),
        sacct_job(136, "TIMEOUT", submit=now - 500, start=now - 400, end=now - 100),
        sacct_job(137, "RUNNING", submit=now - 50, start=now - 40, end=0),
        sacct_job(138, "PENDING", submit=now - 20, start=0, end=0),
        sacct_job(139, "COMPLETED", submit=now - 9, start=now - 8, end=now - 2, workdir=""),  # a placeholder
    ]
    argv = fake_command("sacct", json.dumps({"meta": {}, "errors": [], "jobs": jobs}))
    rows = slurm_finished(since_s=3600)
    args = argv.read_text().split()
    assert args[:-1] == ["--json", "--allusers", "--allocations", "--starttime"]
    started = time.mktime(time.strptime(args[-1], "%Y-%m-%dT%H:%M:%S"))
    assert started == pytest.approx(now - 3600, abs=5)
    assert [row.job_id for row in rows] == ["136", "135", "134"]  # newest first; ties by id
    assert rows[2] == QueueRow("134", "qsleep", "root", "COMPLETED", "debug", "node0", 3.0, 300.0, None, now - 600)
    assert (rows[1].state, rows[1].elapsed_s, rows[1].time_limit_s) == ("FAILED", 300.0, None)


def test_finished_newer_shape(fake_command: FakeCommand) -> None:
    now = int(time.time())
    job = sacct_job(7, "OUT_OF_MEMORY", submit=now - 100, start=now - 90, end=now - 78, limit=30)
    job["state"]["current"] = ["OUT_OF_MEMORY"]
    job["exit_code"] = {"status": ["FAILED"], "return_code": newer(137)}
    for key in ("elapsed", "end", "start", "submission", "limit"):
        job["time"][key] = newer(job["time"][key])
    fake_command("sacct", json.dumps({"jobs": [job]}))
    assert slurm_finished() == [
        QueueRow("7", "qsleep", "root", "OUT_OF_MEMORY", "debug", "node0", 12.0, 1800.0, None, now - 100)
    ]


def test_finished_keeps_the_latest_2000(fake_command: FakeCommand) -> None:
    now = int(time.time())
    jobs = [sacct_job(i, "COMPLETED", submit=now - 3000, start=now - 3000, end=now - 3000 + i) for i in range(2100)]
    fake_command("sacct", json.dumps({"jobs": jobs}))
    rows = slurm_finished()
    assert len(rows) == 2000
    assert (rows[0].job_id, rows[-1].job_id) == ("2099", "100")


def test_failures_name_the_command_and_its_stderr(fake_command: FakeCommand, tmp_path: Path) -> None:
    error = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"
    fake_command("squeue", stderr=error, code=1)
    with pytest.raises(JobError, match=r"job queue: squeue --json exited 1: slurm_load_jobs error: Unable to contact"):
        slurm_queue()
    fake_command("sacct", stderr="sacct: error: Problem talking to the database: Connection refused", code=1)
    with pytest.raises(JobError, match=r"finished jobs: sacct --json --allusers .* exited 1: .*Connection refused"):
        SlurmQueue(SqueueWatch(tmp_path)).finished()
    fake_command("squeue", stdout="squeue: error: Invalid user\n")
    with pytest.raises(JobError, match="job queue: squeue --json gave no JSON"):
        SlurmQueue(SqueueWatch(tmp_path)).active()


def test_missing_slurm_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(JobError, match=r"job queue: squeue not found \(is this a Slurm control node\?\)"):
        slurm_queue()


def local_job(root: Path, name: str, body: str, time_limit: str = "00:30") -> JobFiles:
    """A job folder as the factory renders one (see test_local_jobs.py)."""
    script = root / name / "job.slurm"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(f"#!/bin/bash\n#SBATCH --job-name={name}\n#SBATCH --time={time_limit}\nset -e\n{body}\n")
    return JobFiles(script.parent / "exp_config.json", script, str(script.parent / "logs" / "slurm-%j.out"))


def test_local_queue_from_a_real_manager(tmp_path: Path) -> None:
    manager = LocalJobManager(tmp_path / "jobs")
    done = manager.submit(local_job(tmp_path, "tiny_pp1_tp1_n1", "echo done", time_limit="00:45"))
    record = wait_final(manager, done, poll_s=0.05, timeout_s=30)
    running = manager.submit(local_job(tmp_path, "tiny_pp1_tp2_n1", "sleep 60"))
    try:
        time.sleep(0.3)
        rows = local_queue(manager)
        assert [(row.job_id, row.state, row.name) for row in rows] == [
            (running, "RUNNING", "tiny_pp1_tp2_n1"),  # newest submitted first
            (done, "COMPLETED", "tiny_pp1_tp1_n1"),
        ]
        assert (rows[0].nodes, rows[0].time_limit_s, rows[0].user, rows[0].partition) == ("localhost", 30, None, None)
        assert 0.2 < rows[0].elapsed_s < 10  # running: since its submission
        assert (rows[1].elapsed_s, rows[1].time_limit_s) == (record.elapsed_s, 45)
        assert rows[1].submitted_at is not None and rows[1].submitted_at <= rows[0].submitted_at
        # another process (the cockpit) sees the same jobs from the state folder alone
        assert [(r.job_id, r.state) for r in local_queue(tmp_path / "jobs")] == [
            (running, "RUNNING"),
            (done, "COMPLETED"),
        ]
        # a job that ended before the window is left out
        result = tmp_path / "jobs" / f"{done}.result.json"
        os.utime(result, (time.time() - 7200, time.time() - 7200))
        assert [row.job_id for row in local_queue(manager, since_s=3600)] == [running]
    finally:
        manager.cancel(running)
        wait_final(manager, running, poll_s=0.05, timeout_s=30)
    assert local_queue(manager, since_s=3600)[0].state == "CANCELLED"


def test_local_queue_keeps_the_newest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue, "MAX_ROWS", 2)
    manager = LocalJobManager(tmp_path / "jobs")
    ids = []
    for i in range(4):
        ids.append(manager.submit(local_job(tmp_path, f"job{i}", "true")))
        wait_final(manager, ids[-1], poll_s=0.05, timeout_s=30)
    assert [row.job_id for row in local_queue(manager)] == [ids[3], ids[2]]
    assert local_queue(tmp_path / "missing") == []  # no job submitted yet


def test_local_queue_shows_a_damaged_record(tmp_path: Path) -> None:
    state_dir = tmp_path / "jobs"
    state_dir.mkdir()
    (state_dir / "local-1.json").write_text("{not json")
    (row,) = local_queue(state_dir)
    assert (row.job_id, row.state, row.time_limit_s) == ("local-1", "UNKNOWN", None)
    assert row.reason is not None and "local-1.json unreadable" in row.reason


def test_local_source_reads_every_runs_state_folder(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    settings = Settings()  # the embedded default
    assert choose_backend(settings.cluster.scheduler, settings.runs_dir).queue() == LocalQueue(settings.runs_dir)
    ids = []
    for run in ("run_20250101-000000", "run_20250102-000000"):
        manager = LocalJobManager(runs_dir / run / "jobs")  # where a sweep's local manager keeps its jobs
        ids.append(manager.submit(local_job(runs_dir / run, "tiny_pp1_tp1_n1", "true")))
        wait_final(manager, ids[-1], poll_s=0.05, timeout_s=30)
    running_manager = LocalJobManager(runs_dir / "run_20250103-000000" / "jobs")
    running = running_manager.submit(local_job(runs_dir / "run_20250103-000000", "tiny_pp1_tp2_n1", "sleep 60"))
    try:
        source = LocalQueue(runs_dir)
        assert [row.job_id for row in source.active()] == [running]
        assert [row.job_id for row in source.finished()] == [ids[1], ids[0]]
        source.cancel(running)  # found in its run's state folder
        assert wait_final(running_manager, running, poll_s=0.05, timeout_s=30).state == "CANCELLED"
        with pytest.raises(JobError, match=f"job local-1: no such local job under {runs_dir}"):
            source.cancel("local-1")
    finally:
        running_manager.cancel(running)
        wait_final(running_manager, running, poll_s=0.05, timeout_s=30)


def test_slurm_source_when_configured() -> None:
    settings = Settings(CockpitFile(cluster=ClusterSection(name="lab", scheduler="slurm")), Path("/etc/cockpit.toml"))
    assert choose_backend(settings.cluster.scheduler, settings.runs_dir).queue(3.0) == SlurmQueue(
        SqueueWatch(settings.runs_dir), 3.0
    )

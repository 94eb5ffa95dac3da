"""A Slurm cluster with no inventory, on the real test cluster: its nodes come from sinfo (the dashboard's and the
CLI's), what needs ssh is refused in one line, the dashboard's queue and a sweep's job watch share one squeue call
per poll, backing off while nothing changes, and a sweep's watch follows its job with fewer squeue calls than polls
(counted by a PATH shim that logs each call, then runs the real squeue)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from cockpit.cli import main
from cockpit.config import load_settings
from cockpit.errors import EXIT_OK, OperationFailed
from cockpit.jobs.backend import choose_backend
from cockpit.jobs.factory import JobFiles
from cockpit.jobs.records import wait_final
from cockpit.jobs.watch import SqueueWatch
from cockpit.tui.sources import LiveSource
from tests.infra.services import SlurmCluster

pytestmark = [pytest.mark.infra]


def squeue_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put a wrapper first on PATH that logs each squeue call and then runs the real squeue; the log's path."""
    real, log, folder = shutil.which("squeue"), tmp_path / "squeue.calls", tmp_path / "bin"
    folder.mkdir()
    (folder / "squeue").write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {real} "$@"\n')
    (folder / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    log.touch()
    return log


async def test_nodes_from_sinfo_and_one_squeue_per_poll(
    slurm_cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "cockpit.toml"
    config.write_text(f'[cluster]\nscheduler = "slurm"\n[paths]\ndata_dir = "{tmp_path / "data"}"\n')
    settings = load_settings(config)
    source = LiveSource(settings)
    assert source.node_names == list(slurm_cluster.nodes)
    samples = await source.nodes()
    assert [(s.name, s.slurm and (s.slurm.usable, s.slurm.cpus, s.slurm.gres)) for s in samples] == [
        (name, (True, 2, "gpu:2")) for name in slurm_cluster.nodes
    ]
    with pytest.raises(OperationFailed, match=r"^wake needs ssh to the nodes, and .*cockpit.toml: \[cluster\] names"):
        await source.wake(["node0"])
    assert main(["--config", str(config), "--json", "nodes", "list"]) == EXIT_OK
    listed = json.loads(capsys.readouterr().out)
    assert [(n["name"], n["state"], n["gres"]) for n in listed["nodes"]] == [
        ("node0", "idle", "gpu:2"),
        ("node1", "idle", "gpu:2"),
    ]
    assert main(["--config", str(config), "compute", "status"]) == EXIT_OK
    assert capsys.readouterr().out == "slurm: node[0-1] idle\n"

    calls = squeue_calls(tmp_path, monkeypatch)
    script = tmp_path / "held.slurm"
    script.write_text(f"#!/bin/bash\n#SBATCH --hold\n#SBATCH --output={tmp_path}/slurm-%j.out\nsleep 1\n")
    job_id = slurm_cluster.submit(script)  # held: pending, unchanging, until cancelled
    manager = choose_backend("slurm", settings.runs_dir).job_manager(settings.runs_dir / "run_x")
    queued = [row.job_id for row in await source.queue()]  # the dashboard's poll asks squeue...
    assert job_id in queued and manager.status(job_id).state == "PENDING"  # ...and the sweep's watch shares it
    assert len(calls.read_text().splitlines()) == 1

    # a reader every 0.5 s for a minute of an unchanging queue (its clock stepped, not waited for)
    now = [SqueueWatch(settings.runs_dir).clock() + 1]
    watch = SqueueWatch(settings.runs_dir, clock=lambda: now[0])
    for _ in range(120):
        watch.snapshot()
        now[0] += 0.5
    asked = len(calls.read_text().splitlines()) - 1
    assert asked <= 12, f"{asked} squeue calls in a quiet minute"  # 10 when no other job comes or goes meanwhile
    assert watch.interval() == 8.0

    done = await source.cancel_job(job_id)  # a cancel here resets the watch: the next poll asks again
    assert done.ok and watch.interval() == 0.5
    assert manager.status(job_id).state != "PENDING"
    assert len(calls.read_text().splitlines()) == asked + 2

    # a sweep's watch follows a job from its submit to its end with fewer squeue calls than its polls every 0.5 s
    script.write_text(f"#!/bin/bash\n#SBATCH --output={tmp_path}/slurm-%j.out\nsleep 3\n")
    before, polls = len(calls.read_text().splitlines()), []
    short = manager.submit(JobFiles(script, script, str(tmp_path / "slurm-%j.out")))
    assert wait_final(manager, short, poll_s=0.5, timeout_s=60, on_poll=polls.append).state == "COMPLETED"
    asked = len(calls.read_text().splitlines()) - before
    assert 2 <= asked < len(polls), f"{asked} squeue calls for {len(polls)} polls"

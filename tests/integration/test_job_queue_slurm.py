"""The dashboard's job queue on a real Slurm 22.05: a short batch job in squeue while it waits and runs, then in
sacct's finished jobs with its accounting."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cockpit.jobs.queue import QueueRow, slurm_finished, slurm_queue
from tests.infra.services import SlurmCluster

pytestmark = [pytest.mark.infra]


def test_a_job_in_the_queue_then_finished(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    script = tmp_path / "job.slurm"
    script.write_text(
        "#!/bin/bash\n#SBATCH --job-name=cockpit-queue-sleep\n#SBATCH --time=00:02:00\n"
        f"#SBATCH --output={tmp_path}/slurm-%j.out\nsleep 3\n"
    )
    job_id = slurm_cluster.submit(script)
    seen: list[QueueRow] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = [row for row in slurm_queue() if row.job_id == job_id]
        if not rows:
            break
        seen.extend(rows)
        time.sleep(0.2)
    assert seen, f"job {job_id} never appeared in squeue"
    assert {row.state for row in seen} <= {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING"}
    assert seen[0].state in ("PENDING", "RUNNING")
    assert {row.name for row in seen} == {"cockpit-queue-sleep"}
    assert (seen[0].partition, seen[0].time_limit_s, seen[0].user) == (slurm_cluster.partition, 120.0, "root")
    running = [row for row in seen if row.state == "RUNNING"]
    assert running, f"job {job_id} never seen running: {[row.state for row in seen]}"
    assert all(row.elapsed_s is not None and 0 <= row.elapsed_s < 30 for row in running)
    assert running[0].nodes in slurm_cluster.nodes

    slurm_cluster.wait_settled(job_id)
    finished = {row.job_id: row for row in slurm_finished(since_s=600)}
    assert job_id in finished
    row = finished[job_id]
    assert (row.state, row.name, row.time_limit_s) == ("COMPLETED", "cockpit-queue-sleep", 120)
    assert (row.partition, row.user) == (slurm_cluster.partition, "root")
    assert row.elapsed_s is not None and 3 <= row.elapsed_s < 30
    assert row.nodes == running[0].nodes and row.submitted_at is not None
    assert job_id not in {row.job_id for row in slurm_queue()}  # ended jobs are the finished list's

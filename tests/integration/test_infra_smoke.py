"""The test infrastructure itself: real sshd hosts in network namespaces and a real Slurm with two nodes."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from tests.infra.services import SlurmCluster, TestHosts

pytestmark = pytest.mark.infra


def test_hosts_answer_over_ssh_with_their_own_identity(test_hosts: TestHosts) -> None:
    for host in test_hosts.hosts:
        done = test_hosts.ssh(host.name, "hostname; cat /sys/class/net/eth0/address; ip -4 -o addr show dev eth0")
        assert done.returncode == 0, done.stderr
        name, mac, addr = done.stdout.splitlines()
        assert (name, mac) == (host.name, host.mac)
        assert f" {host.address}/24 " in addr


def test_hosts_refuse_a_wrong_key(test_hosts: TestHosts, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    host = test_hosts.hosts[0]
    done = subprocess.run(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-i",
            str(stranger),
            "-o",
            f"UserKnownHostsFile={test_hosts.known_hosts}",
            f"root@{host.address}",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 255 and "Permission denied (publickey)" in done.stderr


def test_slurm_runs_a_two_node_job_on_the_test_hosts(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text(
        textwrap.dedent(f"""\
        #!/bin/bash
        #SBATCH --job-name=cockpit-smoke
        #SBATCH --nodes=2
        #SBATCH --ntasks-per-node=1
        #SBATCH --gres=gpu:1
        #SBATCH --output={tmp_path}/%x-%j.out
        srun bash -c 'echo "$(hostname) $SLURM_PROCID gpu=$CUDA_VISIBLE_DEVICES"'
        """)
    )
    job_id = slurm_cluster.submit(script)
    record = slurm_cluster.wait_settled(job_id)
    assert record["state"]["current"] == "COMPLETED", record["state"]
    assert record["name"] == "cockpit-smoke" and record["nodes"] == "node[0-1]"
    lines = sorted((tmp_path / f"cockpit-smoke-{job_id}.out").read_text().split("\n")[:-1])
    assert lines == ["node0 0 gpu=0", "node1 1 gpu=0"]


def test_slurm_queue_and_cancel(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    job_id = slurm_cluster.run(
        "sbatch", "--parsable", "--job-name=cockpit-cancel", f"--output={tmp_path}/%j.out", "--wrap=srun sleep 300"
    ).stdout.strip()
    deadline = time.monotonic() + 30
    while True:
        # Slurm 22.05's `squeue --json` ignores -j and lists every job slurmctld still holds: filter here
        queue = json.loads(slurm_cluster.run("squeue", "--json").stdout)["jobs"]
        ours = [j for j in queue if str(j["job_id"]) == job_id]
        if ours and ours[0]["job_state"] == "RUNNING":
            break
        assert time.monotonic() < deadline, f"job {job_id} not RUNNING after 30 s: {ours}"
        time.sleep(0.2)
    assert ours[0]["name"] == "cockpit-cancel"
    slurm_cluster.run("scancel", job_id)
    assert slurm_cluster.wait_settled(job_id)["state"]["current"] == "CANCELLED"

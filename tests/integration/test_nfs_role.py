"""The nfs role that shares run folders ([paths] run_storage = "shared"), run for real on the test hosts with this
machine as the control node. This kernel can neither serve nor mount NFS, so the run writes the files only
(nfs_activate false): the control node's exports and each node's fstab, read back here."""

from __future__ import annotations

from pathlib import Path

import pytest

from cockpit.provision.runner import PlaybookRun
from tests.infra.services import TEST_NET, TestHosts, slurm_inventory

pytestmark = pytest.mark.infra

ANSIBLE = Path(__file__).resolve().parents[2] / "ansible"
PLAYBOOK = ANSIBLE / "playbooks" / "nfs.yml"


def run_nfs(test_hosts: TestHosts, tmp_path: Path, **extravars: object) -> PlaybookRun:
    run = PlaybookRun(
        PLAYBOOK,
        slurm_inventory(test_hosts),
        artifacts_root=tmp_path / "provision",
        envvars={
            "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"),  # as control.yml runs it: the roles are found
            "ANSIBLE_SSH_ARGS": f"-o UserKnownHostsFile={test_hosts.known_hosts} -o StrictHostKeyChecking=yes",
        },
        extravars={
            "cockpit_scheduler": "slurm",
            "cockpit_runs_dir": str(tmp_path / "runs"),
            "cockpit_model_path": str(tmp_path / "tiny-llama"),
            "nfs_activate": False,
            "nfs_exports_file": str(tmp_path / "exports.d" / "cockpit.exports"),
            "nfs_fstab_file": str(test_hosts.node_local / f"fstab-{tmp_path.name}"),
            "compute_network": f"{TEST_NET}.0/24",
            **extravars,
        },
        timeout_s=300,
    ).start()
    for _event in run.events():
        pass
    return run


def test_shared_run_folders_are_exported_to_the_compute_network_and_mounted_at_the_same_path(
    test_hosts: TestHosts, tmp_path: Path
) -> None:
    run = run_nfs(test_hosts, tmp_path, cockpit_run_storage="shared", nfs_share_models=True)
    assert run.rc == 0, run.output_tail(40)
    runs, model = tmp_path / "runs", tmp_path / "tiny-llama"
    exports = (tmp_path / "exports.d" / "cockpit.exports").read_text().splitlines()
    assert exports[1:] == [
        f"{runs} {TEST_NET}.0/24(rw,sync,no_subtree_check)",
        f"{model} {TEST_NET}.0/24(rw,sync,no_subtree_check)",
    ]
    assert runs.is_dir() and model.is_dir()  # what is exported exists
    for host in test_hosts.hosts:  # each host wrote its own fstab
        fstab = test_hosts.local_folder(host.name) / f"fstab-{tmp_path.name}"
        assert fstab.read_text().splitlines() == [
            f"{TEST_NET}.1:{runs} {runs} nfs rw,hard,noatime,_netdev 0 0",
            f"{TEST_NET}.1:{model} {model} nfs rw,hard,noatime,_netdev 0 0",
        ]
        fstab.unlink()


def test_staged_run_folders_share_nothing(test_hosts: TestHosts, tmp_path: Path) -> None:
    run = run_nfs(test_hosts, tmp_path, cockpit_run_storage="staged")
    assert run.rc == 0, run.output_tail(40)
    assert not (tmp_path / "exports.d").exists()
    assert not any(
        test_hosts.local_folder(host.name).joinpath(f"fstab-{tmp_path.name}").exists() for host in test_hosts.hosts
    )

"""The compute playbooks as one ansible-runner run over the selected nodes, as the CLI and the TUI start it."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from cockpit.config import Settings
from cockpit.nodes.host_keys import host_key_dir
from cockpit.nodes.inventory import CONTROL_GROUP, Node
from cockpit.provision.runner import PlaybookRun, compute_playbook
from runtime.atomic import atomic_write_text

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _embedded_inventory(settings: Settings) -> Path:
    """The embedded default's one node, this machine, as an inventory file Ansible can read."""
    path = settings.data_dir / "provision" / "localhost.ini"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        path, "[compute]\nlocalhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n"
    )
    return path


def compute_run(
    settings: Settings,
    nodes: Sequence[Node],
    playbook: Path | None = None,
    also: Sequence[str] = (),
    extravars: dict[str, object] | None = None,
) -> PlaybookRun:
    """A run (not yet started) of the compute playbooks, limited to `nodes`, the control node (its side of what
    the nodes use: slurmctld for their slurmd) and the host patterns in `also` (hosts a play adds itself), checking
    host keys against the cockpit's own known_hosts so Ansible trusts exactly the nodes the cockpit does.

    Facts are cached in the data folder, so that a run on some nodes still knows the others (slurm.conf lists
    them all); the playbooks learn the cockpit's scheduler as `cockpit_scheduler`, and how the nodes see run
    folders as `cockpit_run_storage` and `cockpit_runs_dir` (the nfs role shares them), the model as
    `cockpit_model_path`, the runtime's install root as `cockpit_runtime_install_root` (the golden image keeps it
    on the node's own disk), and where the nodes' issued ssh host keys are kept as `cockpit_host_key_dir`."""
    ssh_args = [
        "-o", "ControlMaster=auto", "-o", "ControlPersist=60s",
        "-o", f"UserKnownHostsFile={settings.known_hosts}", "-o", "StrictHostKeyChecking=yes",
        "-o", f"ConnectTimeout={settings.ssh.connect_timeout_s:g}",
    ]  # fmt: skip
    return PlaybookRun(
        playbook or compute_playbook(PROJECT_ROOT),
        settings.inventory or _embedded_inventory(settings),
        artifacts_root=settings.data_dir / "provision",
        limit=",".join([*(node.name for node in nodes), CONTROL_GROUP, *also]),
        envvars={
            "ANSIBLE_SSH_ARGS": shlex.join(ssh_args),
            "ANSIBLE_CACHE_PLUGIN": "jsonfile",
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(settings.data_dir / "provision" / "facts"),
            "ANSIBLE_CACHE_PLUGIN_TIMEOUT": "0",  # never expires: a node off for a week is still in slurm.conf
        },
        extravars={
            "cockpit_scheduler": settings.cluster.scheduler,
            "cockpit_run_storage": settings.file.paths.run_storage,
            "cockpit_runs_dir": str(settings.runs_dir),
            "cockpit_model_path": str(settings.model_path),
            "cockpit_host_key_dir": str(host_key_dir(settings)),
            "cockpit_runtime_install_root": settings.runtime.install_root,
            **(extravars or {}),
        },
    )

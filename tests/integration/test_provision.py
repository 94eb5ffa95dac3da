"""Playbook runs through ansible-runner on the sshd test hosts: the compute playbook, failures, unreachable hosts."""

from __future__ import annotations

import contextlib
import json
import os
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from cockpit.errors import BadInput
from cockpit.provision.events import HostResult, PlayStarted, ProvisionEvent, Recap, TaskStarted, failure_details
from cockpit.provision.runner import PlaybookRun, compute_playbook
from tests.infra.services import TestHosts

pytestmark = pytest.mark.infra

REPO = Path(__file__).resolve().parents[2]
GHOST = "10.77.0.99"  # inside the test LAN, answered by nobody
QUICK = {"ANSIBLE_TIMEOUT": "3"}  # ssh's connect timeout, for the host that does not answer
BASE_TASKS = [
    "Wait for the node to answer over SSH",
    "Gather facts",
    "Find the NIC the node is reached on",
    "Create the node state directory",
    "Write node.json",
]
# The test hosts' NIC is a veth: no Wake-on-LAN, so the tasks that would turn it on are skipped.
WOL_TASKS = [
    "Set up Wake-on-LAN",
    "Install ethtool",
    "Gather the network facts",
    "Find the NIC the node is reached on",
    "Stop when there is no NIC to wake on",
    "Report that there is no NIC to wake on",
    "Create the systemd folder for the unit and its multi-user target's links",
    "Place the Wake-on-LAN unit",
    "Enable Wake-on-LAN at boot on eth0",
    "Create the udev rules folder",
    "Place the udev rule that starts the unit for each wired NIC",
    "Read the Wake-on-LAN settings of eth0",
    "Note what the NIC supports and has",
    "Stop when the NIC cannot wake by magic packet",
    "Report that the NIC cannot wake by magic packet",
    "Turn Wake-on-LAN on now on eth0",
    "Create the node's host_vars folder",
    "Write the node's MAC address into its host_vars",
    "Reload systemd",  # the handler, after the unit was placed; skipped, as systemd is not running here
]
# skipped: the test hosts' host_vars name no node_disk_device
NODE_DISK_TASKS = ["Check the inputs and what the disk holds", "Partition, format and mount the disk"]
CLUSTER_LINK_TASKS = ["Bring up the cluster link"]  # skipped: the test hosts have no cluster_link_interface
INTEL_GPU_TASKS = ["Set up the Intel GPU stack"]  # skipped: the test hosts have no gpu_kind
# Slurm's and NFS's plays include the roles' parts; skipped: the inventory has no control node, so no Slurm is wanted
PLAYS = {
    "Base configuration of the compute nodes": ("roles/node_base", BASE_TASKS),
    "The node's own disk on the compute nodes": ("roles/node_disk", NODE_DISK_TASKS),
    "Wake-on-LAN on the compute nodes": ("roles/wol", WOL_TASKS),
    "Cluster link on the compute nodes": ("playbooks/cluster_link.yml", CLUSTER_LINK_TASKS),
    "Intel GPU drivers on the compute nodes": ("roles/intel_gpu", INTEL_GPU_TASKS),
    "Compute nodes as Slurm will see them": ("playbooks/slurm.yml", ["Gather the node's CPUs, memory and GPUs"]),
    "Slurm controller on the control node": ("playbooks/slurm.yml", []),  # no hosts: no [control] here
    "Slurm on the compute nodes": ("playbooks/slurm.yml", ["Set up slurmd"]),
    # skipped too: no Slurm, so no shared run folders to mount
    "NFS server on the control node": ("playbooks/nfs.yml", []),
    "NFS mounts on the compute nodes": ("playbooks/nfs.yml", ["Mount the shared folders"]),
}
# Tasks a play's role takes from another role: wol finds its NIC with node_base's task
BORROWED = {"Find the NIC the node is reached on": "roles/node_base"}
SKIPPED_ON_TEST_HOSTS = {
    "Gather the network facts",  # node_base gathered them
    "Stop when there is no NIC to wake on",
    "Report that there is no NIC to wake on",
    "Create the udev rules folder",  # for an image build only
    "Place the udev rule that starts the unit for each wired NIC",
    "Stop when the NIC cannot wake by magic packet",  # wol_required is false
    "Turn Wake-on-LAN on now on eth0",
    "Reload systemd",
    *NODE_DISK_TASKS,
    *CLUSTER_LINK_TASKS,
    "Set up the Intel GPU stack",
    "Gather the node's CPUs, memory and GPUs",
    "Set up slurmd",
    "Mount the shared folders",
}


def host_vars(state_root: Path, host: str) -> str:
    """One test host's variables: its own state and systemd folders (the hosts share this machine's disk), no
    Wake-on-LAN required (a veth has none), its MAC recorded under `state_root/recorded`."""
    return (
        f"node_base_state_dir: {state_root / host}\n"
        "wol_required: false\n"
        f"wol_record_dir: {state_root / 'recorded'}\n"
        f"wol_systemd_dir: {state_root / host / 'systemd'}\n"
    )


def write_inventory(test_hosts: TestHosts, folder: Path, state_root: Path, extra: str = "") -> Path:
    """The test hosts' inventory, each host with the variables of `host_vars`."""
    (folder / "host_vars").mkdir(parents=True)
    for host in test_hosts.hosts:
        (folder / "host_vars" / f"{host.name}.yml").write_text(host_vars(state_root, host.name))
    inventory = folder / "hosts.ini"
    inventory.write_text(test_hosts.inventory.read_text() + extra)
    return inventory


def write_playbook(path: Path, tasks: str) -> Path:
    play = "- name: Test play\n  hosts: all\n  gather_facts: false\n  tasks:\n"
    path.write_text(play + textwrap.indent(textwrap.dedent(tasks), "    "))
    return path


def run_env(run: PlaybookRun) -> dict[str, str]:
    """The environment ansible-playbook ran with, as ansible-runner recorded it."""
    return json.loads((run.artifact_dir / "command").read_text())["env"]


def results(events: list[ProvisionEvent]) -> list[HostResult]:
    return [event for event in events if isinstance(event, HostResult)]


def wait_ended(run: PlaybookRun, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while run.status == "running" and time.monotonic() < deadline:
        time.sleep(0.1)


@dataclass(frozen=True)
class Configured:
    state_root: Path
    runs: tuple[PlaybookRun, PlaybookRun]
    events: tuple[list[ProvisionEvent], list[ProvisionEvent]]


@pytest.fixture(scope="module")
def configured(test_hosts: TestHosts, tmp_path_factory: pytest.TempPathFactory) -> Configured:
    """compute.yml run twice on both test hosts: the first run configures them, the second must change nothing."""
    tmp = tmp_path_factory.mktemp("provision")
    inventory = write_inventory(test_hosts, tmp / "inventory", tmp / "state")
    first, second = (PlaybookRun(compute_playbook(REPO), inventory, artifacts_root=tmp / "runs") for _ in range(2))
    events = list(first.start().events()), list(second.start().events())
    return Configured(tmp / "state", (first, second), events)


def test_compute_playbook_configures_both_hosts_with_events_in_order(
    configured: Configured, test_hosts: TestHosts
) -> None:
    run, events = configured.runs[0], configured.events[0]
    assert run.status == "successful" and run.rc == 0, run.output_tail()
    assert isinstance(events[0], PlayStarted) and isinstance(events[-1], Recap)
    current_play, current_task, plays, tasks = None, None, [], []
    for event in events[:-1]:
        assert not isinstance(event, Recap)
        if isinstance(event, PlayStarted):
            current_play = event.play
            plays.append(event.play)
        elif isinstance(event, TaskStarted):
            current_task = event.task
            tasks.append(event.task)
            source = BORROWED.get(event.task, PLAYS[event.play][0])
            assert event.play == current_play and event.path
            assert event.path.startswith(str(REPO / "ansible" / source))
        else:
            assert event.task == current_task, "a host result before its task started"
    assert plays == list(PLAYS)
    expected = [task for _, role_tasks in PLAYS.values() for task in role_tasks]
    assert tasks == expected
    names = {host.name for host in test_hosts.hosts}
    for task in expected:
        assert {r.host for r in results(events) if r.task == task} == names
        allowed = {"skipped"} if task in SKIPPED_ON_TEST_HOSTS else {"ok", "changed"}
        assert {r.status for r in results(events) if r.task == task} <= allowed, task
    recap = events[-1]
    assert isinstance(recap, Recap) and set(recap.hosts) == names
    ran = len(expected) - len(SKIPPED_ON_TEST_HOSTS)
    assert all(s.failed == s.unreachable == 0 and s.ok == ran for s in recap.hosts.values())
    assert {r.host for r in results(events) if r.task == "Write node.json" and r.status == "changed"} == names


def test_node_json_describes_each_host(configured: Configured, test_hosts: TestHosts) -> None:
    for host in test_hosts.hosts:
        path = configured.state_root / host.name / "node.json"
        assert oct(path.stat().st_mode & 0o777) == "0o644"
        node = json.loads(path.read_text())
        assert (node["hostname"], node["mac_address"], node["ipv4_address"]) == (host.name, host.mac, host.address)
        assert node["kernel"] == os.uname().release
        assert node["cpu_count"] >= 1 and node["memory_mb"] > 0


def test_wake_on_lan_unit_and_macs_are_in_place(configured: Configured, test_hosts: TestHosts) -> None:
    for host in test_hosts.hosts:
        systemd = configured.state_root / host.name / "systemd"
        assert "ExecStart=/usr/sbin/ethtool -s %i wol g" in (systemd / "wol@.service").read_text()
        assert (systemd / "multi-user.target.wants" / "wol@eth0.service").readlink() == systemd / "wol@.service"
        recorded = configured.state_root / "recorded" / host.name / "wol.yml"
        assert f'mac_address: "{host.mac}"' in recorded.read_text()


def test_second_run_changes_nothing(configured: Configured) -> None:
    run, events = configured.runs[1], configured.events[1]
    assert run.status == "successful"
    assert [r for r in results(events) if r.status not in ("ok", "skipped")] == []
    recap = events[-1]
    assert isinstance(recap, Recap) and all(s.changed == 0 for s in recap.hosts.values())


def test_each_run_has_its_own_artifacts_and_ssh_control_path(configured: Configured) -> None:
    first, second = configured.runs
    assert first.artifact_dir != second.artifact_dir
    for run in configured.runs:
        assert run.artifact_dir.parent.parent == first.artifact_dir.parent.parent
        assert oct(run.artifact_dir.parent.stat().st_mode & 0o777) == "0o700"
        assert "PLAY RECAP" in run.stdout_path.read_text()
        assert (run.artifact_dir / "status").read_text() == "successful"
        env = run_env(run)
        assert env["ANSIBLE_HOST_KEY_CHECKING"] == "True" and env["ANSIBLE_NOCOLOR"] == "1"
        control_dir = Path(env["ANSIBLE_SSH_CONTROL_PATH_DIR"])
        assert len(str(control_dir)) < 30 and not control_dir.exists()  # removed, its ssh masters stopped
    assert run_env(first)["ANSIBLE_SSH_CONTROL_PATH_DIR"] != run_env(second)["ANSIBLE_SSH_CONTROL_PATH_DIR"]


def test_a_failing_command_reports_what_debugging_needs(test_hosts: TestHosts, tmp_path: Path) -> None:
    playbook = write_playbook(
        tmp_path / "probe.yml",
        """\
        - name: Probe the GPU
          ansible.builtin.command: sh -c 'echo probing; echo "no OpenCL platforms found" >&2; exit 3'
          changed_when: false
        - name: Never reached
          ansible.builtin.command: "true"
          changed_when: false
        """,
    )
    inventory = write_inventory(test_hosts, tmp_path / "inventory", tmp_path / "state")
    run = PlaybookRun(playbook, inventory, artifacts_root=tmp_path / "runs", limit="node0").start()
    events = list(run.events())
    assert run.status == "failed" and run.rc == 2
    [failed] = results(events)
    assert (failed.host, failed.task, failed.status, failed.rc) == ("node0", "Probe the GPU", "failed", 3)
    assert failed.stderr == "no OpenCL platforms found" and failed.stdout == "probing" and not failed.ignored
    details = failure_details(failed)
    for needed in ("node0", "Probe the GPU", "sh -c 'echo probing;", "rc: 3", "no OpenCL platforms found"):
        assert needed in details
    recap = events[-1]
    assert isinstance(recap, Recap) and list(recap.hosts) == ["node0"] and recap.hosts["node0"].failed == 1


def test_an_unreachable_host_does_not_stop_the_others(test_hosts: TestHosts, tmp_path: Path) -> None:
    playbook = write_playbook(
        tmp_path / "reach.yml",
        """\
        - name: Ping
          ansible.builtin.ping:
        - name: Read the hostname
          ansible.builtin.command: hostname
          changed_when: false
        """,
    )
    ghost = f"\n[ghosts]\nghost ansible_host={GHOST} ansible_user=root\n"
    inventory = write_inventory(test_hosts, tmp_path / "inventory", tmp_path / "state", extra=ghost)
    run = PlaybookRun(playbook, inventory, artifacts_root=tmp_path / "runs", limit="node0,ghost", envvars=QUICK)
    events = list(run.start().events())
    assert run.status == "failed"
    by_host = {(r.host, r.task): r for r in results(events)}
    gone = by_host[("ghost", "Ping")]
    assert gone.status == "unreachable" and GHOST in gone.message
    assert ("ghost", "Read the hostname") not in by_host
    assert [by_host[("node0", task)].status for task in ("Ping", "Read the hostname")] == ["ok", "ok"]
    assert by_host[("node0", "Read the hostname")].stdout == "node0"
    recap = events[-1]
    assert isinstance(recap, Recap)
    assert recap.hosts["ghost"].unreachable == 1 and recap.hosts["node0"].ok == 2


def test_a_playbook_that_does_not_load_explains_itself_in_the_output(test_hosts: TestHosts, tmp_path: Path) -> None:
    playbook = tmp_path / "broken.yml"
    playbook.write_text("- name: Broken\n  hosts: all\n  roles:\n    - role: no_such_role\n")
    run = PlaybookRun(playbook, test_hosts.inventory, artifacts_root=tmp_path / "runs").start()
    assert list(run.events()) == []
    assert run.status == "failed" and run.rc != 0
    assert "the role 'no_such_role' was not found" in run.output_tail()


def test_missing_playbook_or_inventory_is_one_line_naming_it(test_hosts: TestHosts, tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=f"^{tmp_path / 'nope.yml'}: playbook not found$"):
        PlaybookRun(tmp_path / "nope.yml", test_hosts.inventory, artifacts_root=tmp_path / "runs")
    with pytest.raises(BadInput, match=f"^{tmp_path / 'hosts.ini'}: inventory not found$"):
        PlaybookRun(compute_playbook(REPO), tmp_path / "hosts.ini", artifacts_root=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def sleeper(tmp_path: Path) -> Path:
    """A playbook whose one task sleeps on node0, after writing its pid (the hosts share this machine's disk)."""
    task = f"- name: Sleep\n  ansible.builtin.shell: echo $$ > {tmp_path}/task.pid; exec sleep 30\n"
    return write_playbook(tmp_path / "slow.yml", task)


def ended(pid: int, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return not Path(f"/proc/{pid}").exists()


def processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if text in (line := cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")):
                found.append(line)
    return found


def test_leaving_the_events_early_cancels_the_run_and_its_workers(test_hosts: TestHosts, tmp_path: Path) -> None:
    run = PlaybookRun(sleeper(tmp_path), test_hosts.inventory, artifacts_root=tmp_path / "runs", limit="node0").start()
    started = time.monotonic()
    events = run.events()
    assert any(isinstance(event, TaskStarted) for event in events)
    events.close()  # what a Ctrl-C or an exception in the loop does too
    wait_ended(run)
    assert run.status == "canceled" and run.rc == 254 and time.monotonic() - started < 15
    # Ansible's workers run in sessions of their own: left alive, the one sleeping would start its task anyway
    time.sleep(3)
    pid_file = tmp_path / "task.pid"
    assert not pid_file.exists() or ended(int(pid_file.read_text()))
    control_dir = run_env(run)["ANSIBLE_SSH_CONTROL_PATH_DIR"]
    assert not Path(control_dir).exists() and processes_mentioning(control_dir) == []


def test_a_run_past_its_time_limit_is_stopped_with_its_task(test_hosts: TestHosts, tmp_path: Path) -> None:
    playbook = sleeper(tmp_path)
    run = PlaybookRun(playbook, test_hosts.inventory, artifacts_root=tmp_path / "runs", limit="node0", timeout_s=6)
    started = time.monotonic()
    pid_file = tmp_path / "task.pid"
    for event in run.start().events():
        assert not isinstance(event, HostResult)
        while isinstance(event, TaskStarted) and not pid_file.exists() and time.monotonic() - started < 20:
            time.sleep(0.1)  # the task is running on the node when the time is up
    assert run.status == "timeout" and run.rc == 254 and time.monotonic() - started < 15
    assert ended(int(pid_file.read_text())), "the task on the node outlived its run"

"""The wol, intel_gpu and vllm roles on the sshd test hosts, through cockpit's ansible-runner bridge: check mode
(`--check --diff`) with the tasks that need real hardware skipped by their guards, the systemd units and the vLLM
command line as the diffs show them, a real wol run that records each host's MAC for the inventory, and the
messages of bad inputs. All the runs start at once and are read afterwards: each takes seconds of ssh round trips.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from cockpit.nodes.inventory import Inventory
from cockpit.provision.events import HostResult, ProvisionEvent, Recap
from cockpit.provision.runner import PlaybookRun
from tests.infra.services import TestHosts

pytestmark = pytest.mark.infra

ANSIBLE = Path(__file__).resolve().parents[2] / "ansible"
WOL, INTEL_GPU, VLLM = ANSIBLE / "playbooks" / "wol.yml", ANSIBLE / "playbooks" / "intel_gpu.yml", ANSIBLE / "vllm.yml"
ENV = {
    "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"),  # as when run from ansible/: playbooks/*.yml find the roles
    "ANSIBLE_PIPELINING": "True",  # one ssh round trip a task instead of several
}
ARC = {"gpu_kind": "intel-arc-a770"}
# The test hosts have no GPU and a veth without Wake-on-LAN: each role reports that and goes on.
NO_HARDWARE = {"wol_required": False, "intel_gpu_required": False, "vllm_required": False}
# apt must not be touched on this machine (the test hosts share its package database), nor its groups.
NO_APT = {"intel_gpu_install_packages": False, "intel_gpu_users": [], "intel_gpu_groups": []}

HARDWARE_TASKS = {
    WOL: ["Turn Wake-on-LAN on now on eth0"],
    INTEL_GPU: ["List the OpenCL devices", "Check that clinfo lists the GPU"],
    VLLM: [
        "Start the Ray head",
        "Start the Ray workers",
        "Wait for every node to join the Ray cluster with its GPUs",
        "Start the vLLM server",
        "Wait for the endpoint to serve the model",
        "Ask for a completion, as the experiment baseline does",
        "Read the Ray cluster while it serves",
        "Read the parallel sizes the server started with",
        "Check that the model runs on every node",
    ],
}
REPORTS = {
    WOL: ("Report that the NIC cannot wake by magic packet", "eth0 does not support Wake-on-LAN by magic packet"),
    INTEL_GPU: ("Report that the node has no GPU render node", "no GPU render node was found"),
    VLLM: ("Report that a node cannot run its part", "cannot serve vLLM: no GPU ("),
}


@dataclass(frozen=True)
class Scenario:
    """One playbook run on both test hosts, in a folder of its own (inventory, state, artifacts)."""

    playbook: Path
    variables: dict[str, Any]
    check: bool = True
    strip_macs: bool = False  # leave the inventory's own mac_address out, so only the recorded one is there
    fake_gpu: bool = False  # a render node file, and a clinfo that lists an Arc on node0 and nothing on node1


SCENARIOS = {
    "wol-check": Scenario(WOL, NO_HARDWARE),
    "intel_gpu-check": Scenario(INTEL_GPU, {**ARC, **NO_HARDWARE, **NO_APT}),
    "vllm-check": Scenario(VLLM, {**ARC, **NO_HARDWARE}),
    "wol-real": Scenario(WOL, NO_HARDWARE, check=False, strip_macs=True),
    # as the golden image's play runs it: the live machine's NIC is none of the image's business
    "wol-image": Scenario(WOL, {"golden_image_build": True}, check=False),
    "wol-required": Scenario(WOL, {}, check=False),
    "intel_gpu-no-render-node": Scenario(INTEL_GPU, {**ARC, **NO_APT}, check=False),
    "intel_gpu-clinfo": Scenario(INTEL_GPU, {**ARC, **NO_APT}, check=False, fake_gpu=True),
    # a repository apt would never fetch from, in case the check let it through
    "intel_gpu-not-ubuntu": Scenario(
        INTEL_GPU,
        {**ARC, "intel_gpu_supported_distributions": ["NoSuchLinux"], "intel_gpu_ppa": "deb file:/nonexistent ./"},
    ),
    "vllm-parallel-sizes": Scenario(VLLM, {**ARC, "vllm_pipeline_parallel_size": 3}),
}


@dataclass(frozen=True)
class Finished:
    """A scenario's run once it has ended, with its events."""

    folder: Path
    inventory: Path
    run: PlaybookRun
    events: list[ProvisionEvent]

    @property
    def results(self) -> list[HostResult]:
        return [event for event in self.events if isinstance(event, HostResult)]

    def statuses(self, task: str) -> dict[str, str]:
        return {r.host: r.status for r in self.results if r.task == task}

    def raw_events(self) -> list[dict[str, Any]]:
        paths = (self.run.artifact_dir / "job_events").glob("*.json")
        return sorted((json.loads(path.read_text()) for path in paths), key=lambda event: event["counter"])

    def rendered(self, task: str) -> dict[tuple[str, str], str]:
        """What a template task would write, from its --diff: (host, loop item or "") -> the file's content."""
        found = {}
        for event in self.raw_events():
            data = event.get("event_data", {})
            if event["event"] not in ("runner_on_ok", "runner_item_on_ok") or data.get("task") != task:
                continue
            res = data.get("res", {})
            diffs = res.get("diff") or []
            for diff in diffs if isinstance(diffs, list) else [diffs]:
                if "after" in diff:
                    found[(data["host"], str(res.get("item", "")))] = diff["after"]
        return found


def host_folders(folder: Path, host: str) -> dict[str, Any]:
    """A host's own folders for what the roles write: the test hosts share this machine's disk."""
    state = folder / "state" / host
    return {
        "wol_systemd_dir": str(state / "systemd"),
        "wol_udev_rules_dir": str(state / "udev"),
        "vllm_systemd_dir": str(state / "systemd"),
        "vllm_install_dir": str(state / "vllm"),
        "vllm_hf_home": str(state / "huggingface"),
        # empty, wherever this test runs: no GPU, unless a scenario fakes one
        "intel_gpu_dri_dir": str(state / "dri"),
        "vllm_gpu_devices": {"xpu": {"path": str(state / "dri"), "pattern": "renderD*"}},
        "intel_gpu_clinfo": str(state / "clinfo"),  # written only for a fake GPU
    }


ARC_LISTING = "Platform #0: Intel(R) OpenCL Graphics\n `-- Device #0: Intel(R) Arc(TM) A770 Graphics\n"


def fake_gpu(folder: Path, host: str) -> None:
    """A render node (a plain file does for the role's find) and a clinfo: an Arc on node0, no platform on node1."""
    folders = host_folders(folder, host)
    (Path(folders["intel_gpu_dri_dir"]) / "renderD128").touch()
    clinfo = Path(folders["intel_gpu_clinfo"])
    clinfo.write_text(f"#!/bin/sh\nprintf '{ARC_LISTING if host == 'node0' else ''}'\n")
    clinfo.chmod(0o755)


def write_inventory(test_hosts: TestHosts, folder: Path, scenario: Scenario) -> Path:
    """The test hosts' inventory with the scenario's variables for the compute group and each host's folders."""
    text = test_hosts.inventory.read_text()
    if scenario.strip_macs:
        for host in test_hosts.hosts:
            text = text.replace(f" mac_address={host.mac}", "")
    (folder / "group_vars").mkdir(parents=True)
    (folder / "group_vars" / "compute.yml").write_text(yaml.safe_dump(scenario.variables))
    (folder / "host_vars").mkdir()
    for host in test_hosts.hosts:
        (folder / "host_vars" / f"{host.name}.yml").write_text(yaml.safe_dump(host_folders(folder, host.name)))
        (folder / "state" / host.name / "dri").mkdir(parents=True)
        if scenario.fake_gpu:
            fake_gpu(folder, host.name)
    inventory = folder / "hosts.ini"
    inventory.write_text(text)
    return inventory


@pytest.fixture(scope="module")
def finished(test_hosts: TestHosts, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Finished]:
    """Every scenario run to its end, all started at once."""
    started = {}
    for name, scenario in SCENARIOS.items():
        folder = tmp_path_factory.mktemp(name)
        inventory = write_inventory(test_hosts, folder, scenario)
        run = PlaybookRun(
            scenario.playbook,
            inventory,
            artifacts_root=folder / "runs",
            envvars=ENV,
            check=scenario.check,
            diff=scenario.check,
        )
        started[name] = (folder, inventory, run.start())
    return {name: Finished(folder, inv, run, list(run.events())) for name, (folder, inv, run) in started.items()}


@pytest.mark.parametrize("name", ["wol-check", "intel_gpu-check", "vllm-check"])
def test_check_mode_ends_without_failures_and_skips_the_hardware(
    finished: dict[str, Finished], test_hosts: TestHosts, name: str
) -> None:
    done = finished[name]
    playbook = SCENARIOS[name].playbook
    assert done.run.status == "successful", done.run.output_tail()
    recap = done.events[-1]
    names = {host.name for host in test_hosts.hosts}
    assert isinstance(recap, Recap) and set(recap.hosts) == names
    assert all(s.failed == s.unreachable == 0 for s in recap.hosts.values())
    for task in HARDWARE_TASKS[playbook]:
        assert set(done.statuses(task).values()) == {"skipped"}, task
    task, message = REPORTS[playbook]
    reports = [r for r in done.results if r.task == task]
    assert {r.host for r in reports} == names and all(message in r.message for r in reports)
    assert not (done.folder / "state" / "node0" / "systemd").exists()  # check mode wrote nothing


def test_check_mode_would_place_the_wake_on_lan_unit_and_record_the_macs(
    finished: dict[str, Finished], test_hosts: TestHosts
) -> None:
    done = finished["wol-check"]
    units = done.rendered("Place the Wake-on-LAN unit")
    assert set(units) == {(host.name, "") for host in test_hosts.hosts}
    unit = units[("node0", "")]
    assert "ExecStart=/usr/sbin/ethtool -s %i wol g" in unit and "WantedBy=multi-user.target" in unit
    assert "BindsTo=sys-subsystem-net-devices-%i.device" in unit
    recorded = done.rendered("Write the node's MAC address into its host_vars")
    for host in test_hosts.hosts:
        assert yaml.safe_load(recorded[(host.name, "")]) == {"mac_address": host.mac}
    links = done.statuses("Enable Wake-on-LAN at boot on eth0")
    assert links == {host.name: "changed" for host in test_hosts.hosts}


def unit_command(unit: str) -> list[str]:
    """The ExecStart of a unit as an argument list, its continuation lines joined."""
    lines = unit.replace("\\\n", " ").splitlines()
    [command] = [line.removeprefix("ExecStart=") for line in lines if line.startswith("ExecStart=")]
    return shlex.split(command)


def test_vllm_units_make_node0_the_head_and_serve_across_both_nodes(finished: dict[str, Finished]) -> None:
    done = finished["vllm-check"]
    units = done.rendered("Place the units")
    assert set(units) == {("node0", "vllm-ray-head"), ("node0", "vllm-serve"), ("node1", "vllm-ray-worker")}
    venv = {
        host: Path(host_folders(done.folder, host)["vllm_install_dir"]) / "venv" / "bin" for host in ("node0", "node1")
    }
    assert unit_command(units[("node0", "vllm-ray-head")]) == [
        f"{venv['node0']}/ray", "start", "--head", "--block", "--disable-usage-stats",
        "--node-ip-address=10.77.0.10", "--port=6379", "--num-gpus=1",
    ]  # fmt: skip
    assert unit_command(units[("node1", "vllm-ray-worker")]) == [
        f"{venv['node1']}/ray", "start", "--block", "--disable-usage-stats",
        "--address=10.77.0.10:6379", "--node-ip-address=10.77.0.11", "--num-gpus=1",
    ]  # fmt: skip
    serve = units[("node0", "vllm-serve")]
    assert unit_command(serve) == [
        f"{venv['node0']}/vllm", "serve", "/models/Mistral-Small-Instruct-2409-AWQ",
        "--served-model-name", "mistralai/Mistral-Small-Instruct-2409",
        "--host", "0.0.0.0", "--port", "8000",
        "--tensor-parallel-size", "1", "--pipeline-parallel-size", "2",
        "--distributed-executor-backend", "ray",
        "--quantization", "awq",
        "--max-model-len", "8192",
    ]  # fmt: skip
    assert "Environment=RAY_ADDRESS=10.77.0.10:6379" in serve and "Requires=vllm-ray-head.service" in serve
    for unit in units.values():  # the Arc GPUs' device files belong to render and video
        assert "SupplementaryGroups=render video" in unit and "User=root" in unit
    environments = done.rendered("Write the services' environment")
    for host, address in (("node0", "10.77.0.10"), ("node1", "10.77.0.11")):
        assert f"VLLM_HOST_IP={address}\n" in environments[(host, "")]
    assert set(done.statuses("Install vLLM for xpu").values()) == {"skipped"}  # a command: never run in check mode


def test_real_wol_run_records_each_mac_where_the_inventory_reads_it(
    finished: dict[str, Finished], test_hosts: TestHosts
) -> None:
    done = finished["wol-real"]
    assert done.run.status == "successful", done.run.output_tail()
    for host in test_hosts.hosts:
        recorded = done.inventory.parent / "host_vars" / host.name / "wol.yml"
        assert oct(recorded.stat().st_mode & 0o777) == "0o644"
        assert yaml.safe_load(recorded.read_text()) == {"mac_address": host.mac}
        systemd = Path(host_folders(done.folder, host.name)["wol_systemd_dir"])
        assert (systemd / "multi-user.target.wants" / "wol@eth0.service").readlink() == systemd / "wol@.service"
    assert "mac_address" not in done.inventory.read_text()
    nodes = Inventory.load(done.inventory).compute
    assert {node.name: node.mac for node in nodes} == {host.name: host.mac for host in test_hosts.hosts}


def test_in_an_image_build_wol_places_the_unit_for_every_wired_nic_and_leaves_the_live_nic_alone(
    finished: dict[str, Finished], test_hosts: TestHosts
) -> None:
    done = finished["wol-image"]
    assert done.run.status == "successful", done.run.output_tail()
    for host in test_hosts.hosts:
        folders = host_folders(done.folder, host.name)
        systemd, udev = Path(folders["wol_systemd_dir"]), Path(folders["wol_udev_rules_dir"])
        assert "ExecStart=/usr/sbin/ethtool -s %i wol g" in (systemd / "wol@.service").read_text()
        assert list((systemd / "multi-user.target.wants").iterdir()) == []  # no NIC named: udev starts it
        rule = (udev / "81-wol.rules").read_text().splitlines()[-1]
        assert rule == (
            'ACTION=="add", SUBSYSTEM=="net", KERNEL=="en*|eth*", TAG+="systemd", '
            'ENV{SYSTEMD_WANTS}+="wol@$name.service"'
        )
    for task in (
        "Read the Wake-on-LAN settings of ",
        "Turn Wake-on-LAN on now on ",
        "Create the node's host_vars folder",
    ):
        assert set(done.statuses(task).values()) == {"skipped"}, task
    assert not (done.inventory.parent / "host_vars" / "node0").exists()


def failures(done: Finished) -> dict[str, HostResult]:
    """The failed result of each host that failed."""
    return {r.host: r for r in done.results if r.status == "failed"}


def test_wol_required_on_a_nic_without_wake_on_lan_fails_saying_so(
    finished: dict[str, Finished], test_hosts: TestHosts
) -> None:
    done = finished["wol-required"]
    assert done.run.status == "failed"
    failed = failures(done)
    assert set(failed) == {host.name for host in test_hosts.hosts}
    for host, result in failed.items():
        assert result.task == "Stop when the NIC cannot wake by magic packet"
        assert result.message.startswith(f"{host}: eth0 does not support Wake-on-LAN by magic packet")
        assert "ethtool reports no Wake-on-LAN support" in result.message and "wol_required: false" in result.message
    assert done.statuses("Write the node's MAC address into its host_vars") == {}  # a failed host goes no further


def test_intel_gpu_without_a_render_node_fails_saying_so_packages_and_groups_left_out(
    finished: dict[str, Finished],
) -> None:
    done = finished["intel_gpu-no-render-node"]
    assert done.run.status == "failed"
    for host, result in failures(done).items():
        assert result.task == "Stop when the node has no GPU render node"
        dri = host_folders(done.folder, host)["intel_gpu_dri_dir"]
        assert result.message.startswith(f"{host}: no GPU render node was found ({dri}/renderD* does not exist)")
        assert "firmware" in result.message and "reboot" in result.message
    assert len(failures(done)) == 2
    assert done.statuses("List the OpenCL devices") == {}  # never reached


def test_intel_gpu_passes_when_clinfo_lists_the_arc_and_says_what_it_listed_when_not(
    finished: dict[str, Finished],
) -> None:
    done = finished["intel_gpu-clinfo"]
    check = {r.host: r for r in done.results if r.task == "Check that clinfo lists the GPU"}
    assert check["node0"].status == "ok" and check["node0"].message == f"node0: {ARC_LISTING.strip()}"
    assert check["node1"].status == "failed"
    assert check["node1"].message.startswith(
        "node1: `clinfo -l` lists no OpenCL device matching 'Arc'. It listed: nothing (no OpenCL platform). "
        "Check the kernel driver"
    )
    assert "reboot" in check["node1"].message and "firmware" in check["node1"].message


def test_intel_gpu_on_a_distribution_the_ppa_does_not_serve_stops_before_apt(finished: dict[str, Finished]) -> None:
    done = finished["intel_gpu-not-ubuntu"]
    assert done.run.status == "failed"
    assert len(failures(done)) == 2
    for result in failures(done).values():
        assert result.task == "Check that the distribution is one the PPA supports"
        assert "the Intel GPU packages come from deb file:/nonexistent ./, built for NoSuchLinux only" in result.message
    assert done.statuses("Add the Intel graphics PPA") == {}


def test_vllm_parallel_sizes_that_leave_gpus_out_are_refused(finished: dict[str, Finished]) -> None:
    done = finished["vllm-parallel-sizes"]
    assert done.run.status == "failed"
    for result in failures(done).values():
        assert result.task == "Check that the parallel sizes use every GPU"
        assert result.message.startswith("tensor parallel 1 x pipeline parallel 3 is not the 2 GPU(s) of 2 node(s)")
    assert done.statuses("Install what builds the virtual environment") == {}

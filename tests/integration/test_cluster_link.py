"""The cluster_link role on the sshd test hosts over a fake USB4 link, and two ranks talking over it.

This machine has no Thunderbolt device (and no modprobe in a namespace): a veth pair joining node0's and node1's
namespaces stands in for the USB4 cable, the module load is left out and the files for boot are asserted as
written. The role gives each end its address and MTU for real and pings the peer over it; run again on node0 with
node1's end down, it changes nothing and stops, naming the silent peer with what `ip` says of the link. Then one
rank on each host joins through runtime.launch.join_world with the environment the job script exports for the
inventory's ranks_interface, and their all-reduce shows on the fake link's byte counters, not on the hosts'
ordinary network.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cockpit.jobs.factory import RanksLink, RuntimeEnvironment, SlurmJobFactory
from cockpit.nodes.inventory import Inventory
from cockpit.provision.events import Recap
from cockpit.provision.runner import PlaybookRun
from cockpit.sweep.execute import ranks_link
from cockpit.sweep.strategies import STRATEGIES, SweepSettings
from tests.infra.services import TestHosts
from tests.integration.test_node_roles import ENV, Finished, failures

pytestmark = pytest.mark.infra

PLAYBOOK = Path(__file__).resolve().parents[2] / "ansible" / "playbooks" / "cluster_link.yml"
FAKE = "fakeusb4"  # the fake USB4 interface: one end in node0, the other in node1, the same name in both
ADDRESSES = {"node0": "10.99.0.10/24", "node1": "10.99.0.11/24"}
MTU = 65522  # the role's default: what thunderbolt_net allows
TENSOR_BYTES = 4 << 20  # one all-reduce's tensor: 1 Mi float32


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def fake_usb4(test_hosts: TestHosts) -> Iterator[None]:
    """The fake USB4 pair between node0 and node1 (gone afterwards)."""
    subprocess.run(["ip", "-n", "node0", "link", "del", FAKE], check=False, capture_output=True)
    ip("link", "add", "ckfusb0", "type", "veth", "peer", "name", "ckfusb1")
    for end, host in (("ckfusb0", "node0"), ("ckfusb1", "node1")):
        ip("link", "set", end, "netns", host)
        ip("-n", host, "link", "set", end, "name", FAKE)
    yield
    subprocess.run(["ip", "-n", "node0", "link", "del", FAKE], check=False, capture_output=True)


def write_inventory(test_hosts: TestHosts, folder: Path) -> Path:
    """The test hosts' inventory with the link's variables, each host's boot files in a folder of its own."""
    link = {
        "cluster_link_interface": FAKE,
        "cluster_link_load_module": False,
        "cluster_link_packages": [],  # ip and ping are this machine's, which the hosts share (scripts/setup)
        "cluster_link_ping_deadline_s": 2,
        "ranks_interface": FAKE,
    }
    (folder / "group_vars").mkdir(parents=True)
    (folder / "group_vars" / "compute.yml").write_text(yaml.safe_dump(link))
    (folder / "host_vars").mkdir()
    for host in test_hosts.hosts:
        dirs = {key: folder / "state" / host.name / key for key in ("modules-load.d", "network")}
        for path in dirs.values():
            path.mkdir(parents=True)
        host_vars = {
            "cluster_link_address": ADDRESSES[host.name],
            "cluster_link_modules_load_dir": str(dirs["modules-load.d"]),
            "cluster_link_networkd_dir": str(dirs["network"]),
        }
        (folder / "host_vars" / f"{host.name}.yml").write_text(yaml.safe_dump(host_vars))
    inventory = folder / "hosts.ini"
    inventory.write_text(test_hosts.inventory.read_text())
    return inventory


@pytest.fixture(scope="module")
def applied(test_hosts: TestHosts, fake_usb4: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Finished]:
    """The role over the fake link on both hosts; then again on node0 with node1's end down (the peer silent)."""
    folder = tmp_path_factory.mktemp("cluster_link")
    inventory = write_inventory(test_hosts, folder)

    def run(name: str, limit: str | None = None) -> Finished:
        started = PlaybookRun(PLAYBOOK, inventory, artifacts_root=folder / name, envvars=ENV, limit=limit).start()
        return Finished(folder, inventory, started, list(started.events()))

    both = run("both")
    ip("-n", "node1", "link", "set", FAKE, "down")
    try:
        return {"both": both, "silent": run("silent", limit="node0")}
    finally:
        ip("-n", "node1", "link", "set", FAKE, "up")


def link_state(host: str, interface: str) -> dict[str, Any]:
    shown = subprocess.run(["ip", "-n", host, "-j", "-s", "addr", "show", "dev", interface], capture_output=True)
    return json.loads(shown.stdout)[0]


def test_fake_usb4_link_gets_its_address_and_mtu_and_each_peer_answers(
    applied: dict[str, Finished], test_hosts: TestHosts
) -> None:
    done = applied["both"]
    assert done.run.status == "successful", done.run.output_tail()
    for host in test_hosts.hosts:
        state = link_state(host.name, FAKE)
        address = ADDRESSES[host.name]
        assert state["mtu"] == MTU and "UP" in state["flags"]
        assert [f"{a['local']}/{a['prefixlen']}" for a in state["addr_info"] if a["family"] == "inet"] == [address]
        state_dir = done.folder / "state" / host.name
        assert (state_dir / "modules-load.d" / "cockpit-cluster-link.conf").read_text().splitlines()[-1] == (
            "thunderbolt_net"
        )
        network = (state_dir / "network" / "50-cockpit-cluster-link.network").read_text()
        for line in (f"Name={FAKE}", f"MTUBytes={MTU}", f"Address={address}", "ConfigureWithoutCarrier=yes"):
            assert f"\n{line}\n" in network
    assert done.statuses(f"Ping each peer over {FAKE}") == {"node0": "ok", "node1": "ok"}
    assert set(done.statuses("Load now the module thunderbolt_net").values()) == {"skipped"}


def test_a_peer_that_does_not_answer_is_named_with_what_ip_says_of_the_link(applied: dict[str, Finished]) -> None:
    done = applied["silent"]  # node0 again, node1's end of the link down
    assert done.run.status == "failed"
    [(host, result)] = failures(done).items()
    assert host == "node0" and result.task == "Stop when a peer does not answer"
    assert result.message.startswith(f"node0: node1 (10.99.0.11) did not answer a ping over {FAKE} within 2 s.")
    link, addr = (
        re.search(rf"`ip -br {what} show {FAKE}`: ({FAKE}@\S+ DOWN [^;]*)", result.message) for what in ("link", "addr")
    )
    assert link and "<NO-CARRIER," in link[1] and addr and "10.99.0.10/24" in addr[1], result.message
    assert "cluster compute configure" in result.message
    recap = done.events[-1]
    assert isinstance(recap, Recap) and recap.hosts["node0"].changed == 0  # the second run changed nothing


# One rank: joins the world as runtime.rank does, all-reduces twice, says what it used and leaves cleanly.
RANK = f"""
import json, sys, torch, torch.distributed as dist
from runtime.launch import detect_launch, join_world
info = detect_launch()
world = join_world(info, "cpu", 60, 60, sys.exit)
tensor = torch.ones({TENSOR_BYTES // 4})
for _ in range(2):
    dist.all_reduce(tensor)
print(json.dumps({{"interface": world.interface, "address": world.address, "master": info.master_addr,
                  "value": tensor[0].item()}}))
world.finish()
"""


def byte_counters(host: str) -> dict[str, int]:
    """Bytes through `host`'s fake link and its ordinary network, both directions together."""
    return {
        name: sum(link_state(host, name)["stats64"][way]["bytes"] for way in ("rx", "tx")) for name in (FAKE, "eth0")
    }


def test_ranks_traffic_goes_over_the_fake_usb4_link(
    applied: dict[str, Finished], test_hosts: TestHosts, tmp_path: Path
) -> None:
    done = applied["both"]
    assert done.run.status == "successful", done.run.output_tail()
    link = ranks_link(Inventory.load(done.inventory).compute, str(done.inventory))
    assert link == RanksLink(FAKE, {host: address.split("/")[0] for host, address in ADDRESSES.items()})
    settings = SweepSettings(
        "tiny", str(tmp_path / "model"), "tiny", "run_1", tmp_path / "run_1", tmp_path / "p.parquet", nodes=2
    )
    script = SlurmJobFactory(RuntimeEnvironment(link=link)).render(STRATEGIES["tp_nodes"](settings).job_spec())
    # what the job exports before it starts ranks, as on its batch host node0; srun hands it to every rank
    environment = script.script.read_text().split("\ncd ", 1)[0]
    before = byte_counters("node0")
    ranks = [
        subprocess.Popen(
            ["ssh", "-F", str(test_hosts.ssh_config), host.name, "bash", "-c", shlex.quote(
                f"SLURMD_NODENAME=node0\n{environment}\nexport RANK={rank} WORLD_SIZE=2 MASTER_PORT=29731\n"
                f"exec {sys.executable} -c {shlex.quote(RANK)}"
            )],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank, host in enumerate(test_hosts.hosts)
    ]  # fmt: skip
    said = []
    for rank in ranks:
        out, err = rank.communicate(timeout=120)
        assert rank.returncode == 0, err[-3000:]
        said.append(json.loads(out.strip().splitlines()[-1]))
    grown = {name: count - before[name] for name, count in byte_counters("node0").items()}
    assert said == [
        {"interface": FAKE, "address": address.split("/")[0], "master": "10.99.0.10", "value": 4.0}
        for address in ADDRESSES.values()
    ]
    assert grown[FAKE] >= 2 * TENSOR_BYTES and grown["eth0"] < TENSOR_BYTES, grown

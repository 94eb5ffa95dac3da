"""`cluster compute ...` and `cluster nodes ...` against the two sshd test hosts in their network namespaces:
status, a cut link, Wake-on-LAN packets caught inside the namespaces, host keys, power through the hosts' fake
`shutdown` (they share this machine's kernel), probes, fan-out and configure through ansible-runner."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra.services import SlurmCluster, TestHosts

pytestmark = pytest.mark.infra
CLUSTER_PY = Path(__file__).resolve().parents[2] / "cluster.py"

LISTENER = """
import json, socket, sys, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("", int(sys.argv[1])))
sock.settimeout(0.5)
print("ready", flush=True)
end, got = time.monotonic() + float(sys.argv[2]), []
while time.monotonic() < end:
    try:
        data, _ = sock.recvfrom(4096)
    except socket.timeout:
        continue
    ok = len(data) == 102 and data[:6] == b"\\xff" * 6 and data[6:] == data[6:12] * 16
    got.append(data[6:12].hex(":") if ok else "bad:" + data.hex())
print(json.dumps(got), flush=True)
"""


def write_config(folder: Path, hosts: TestHosts, inventory: Path, known_hosts: Path) -> Path:
    config = folder / "cockpit.toml"
    config.write_text(
        f'[cluster]\ninventory = "{inventory}"\n'
        f'[paths]\ndata_dir = "{folder / "data"}"\n'
        f'[ssh]\nknown_hosts = "{known_hosts}"\nconnect_timeout_s = 2\n'
        f'[wake_on_lan]\nbroadcast = "{hosts.broadcast}"\nport = 9\nrepeat = 3\n'
    )
    return config


@pytest.fixture
def cockpit_toml(test_hosts: TestHosts, tmp_path: Path) -> Path:
    """The test hosts as the cluster: their inventory, a copy of their known_hosts, their broadcast address."""
    known = tmp_path / "known_hosts"
    shutil.copy(test_hosts.known_hosts, known)
    return write_config(tmp_path, test_hosts, test_hosts.inventory, known)


def cluster(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CLUSTER_PY), "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_status_ok_for_both_nodes(cockpit_toml: Path) -> None:
    done = cluster(cockpit_toml, "compute", "status")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("node[0-1]: every node answers (2 node(s)")
    data = json.loads(cluster(cockpit_toml, "compute", "status", "--json").stdout)
    assert data["ok"] and [n["node"] for n in data["nodes"]] == ["node0", "node1"]


def test_status_with_slurm_names_a_drained_node_and_why(cockpit_toml: Path, slurm_cluster: SlurmCluster) -> None:
    slurm_config = cockpit_toml.read_text().replace("[cluster]\n", '[cluster]\nscheduler = "slurm"\n', 1)
    cockpit_toml.write_text(slurm_config)
    done = cluster(cockpit_toml, "compute", "status")
    assert done.returncode == 0, done.stderr
    assert "slurm: node[0-1] idle" in done.stdout
    slurm_cluster.run("scontrol", "update", "nodename=node1", "state=drain", "reason=disk replaced")
    try:
        done = cluster(cockpit_toml, "compute", "status")
        data = json.loads(cluster(cockpit_toml, "compute", "status", "--json").stdout)
    finally:
        slurm_cluster.run("scontrol", "update", "nodename=node1", "state=resume")
    assert done.returncode == 1
    assert "slurm: node1 drained (disk replaced)" in done.stderr and "slurm: node0 idle" in done.stdout
    assert data["slurm"]["node1"] == {"state": "drained", "reason": "disk replaced", "usable": False}


@pytest.fixture
def node1_link_cut(test_hosts: TestHosts) -> Iterator[None]:
    """node1's cable pulled: the root end of its veth down, restored afterwards."""
    subprocess.run(["ip", "link", "set", "ck-node1", "down"], check=True)
    try:
        yield
    finally:
        subprocess.run(["ip", "link", "set", "ck-node1", "up"], check=True)
        test_hosts.ssh("node1", "true")  # the bridge port needs a moment to forward again


def test_status_fails_naming_the_node_whose_link_is_cut(cockpit_toml: Path, node1_link_cut: None) -> None:
    done = cluster(cockpit_toml, "compute", "status")
    assert done.returncode == 1
    assert "node1 (10.77.0.11): no answer within 2 s (connect timeout)" in done.stderr
    assert "command: cat /proc/uptime" in done.stderr
    assert done.stderr.strip().endswith("1 of 2 node(s) failed: node1")
    assert "node0" not in done.stderr


@pytest.fixture
def listeners(test_hosts: TestHosts) -> Iterator[list[subprocess.Popen[str]]]:
    """A UDP listener on port 9 inside each node's namespace, recording the MAC of every magic packet."""
    started = [
        subprocess.Popen(
            ["ip", "netns", "exec", host.name, sys.executable, "-c", LISTENER, "9", "6"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for host in test_hosts.hosts
    ]
    for process in started:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_up_sends_magic_packets_received_in_both_namespaces(
    cockpit_toml: Path, test_hosts: TestHosts, listeners: list[subprocess.Popen[str]]
) -> None:
    done = cluster(cockpit_toml, "compute", "up", "--timeout", "20")
    assert done.returncode == 0, done.stderr
    assert "wake-on-lan: 3 packet(s) each to node[0-1] via 10.77.0.255:9" in done.stdout
    assert "node0 up after" in done.stdout and "node1 up after" in done.stdout
    macs = {host.mac for host in test_hosts.hosts}
    for process in listeners:
        out, _ = process.communicate(timeout=15)
        received = json.loads(out.strip().splitlines()[-1])
        # a broadcast reaches every listener: each namespace sees both nodes' packets, three of each
        assert sorted(received) == sorted([mac for mac in macs for _ in range(3)])


def test_up_names_the_node_without_a_mac(test_hosts: TestHosts, tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(test_hosts.inventory.read_text().replace(" mac_address=02:77:00:00:00:0b", ""))
    known = tmp_path / "known_hosts"
    shutil.copy(test_hosts.known_hosts, known)
    done = cluster(write_config(tmp_path, test_hosts, inventory, known), "compute", "up", "--timeout", "20")
    assert done.returncode == 0, done.stderr  # node1 is up anyway; it just could not be woken
    assert "wake-on-lan: node1: no mac_address in the inventory; cannot wake it" in done.stderr


def test_changed_host_key_is_refused(cockpit_toml: Path, test_hosts: TestHosts, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    node0_key = (test_hosts.state_dir / "node0" / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    lines = [line for line in known.read_text().splitlines() if "10.77.0.11" not in line.split()[0]]
    lines = [line for line in lines if not line.startswith("node1 ")]
    known.write_text("\n".join([*lines, f"node1,10.77.0.11 {' '.join(node0_key)}"]) + "\n")
    for extra in ([], ["--accept-new"]):  # --accept-new never overrides a changed key
        done = cluster(cockpit_toml, "compute", "status", *extra)
        assert done.returncode == 1
        assert "node1 (10.77.0.11): host key CHANGED: node1's key is not the one recorded in" in done.stderr
        assert "refusing to connect" in done.stderr and "node0" not in done.stderr.split("\n")[0]


def test_unknown_host_only_with_accept_new(cockpit_toml: Path, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.unlink()
    done = cluster(cockpit_toml, "compute", "status")
    assert done.returncode == 1
    assert "node0 (10.77.0.10): unknown host key: node0 is not in" in done.stderr and "--accept-new" in done.stderr
    assert not known.exists()
    assert cluster(cockpit_toml, "compute", "status", "--accept-new").returncode == 0
    assert sorted(line.split()[0] for line in known.read_text().splitlines()) == [
        "node0,10.77.0.10",
        "node1,10.77.0.11",
    ]
    assert known.stat().st_mode & 0o777 == 0o600
    assert cluster(cockpit_toml, "compute", "status").returncode == 0  # recorded: trusted from now on


def test_down_and_restart_run_the_hosts_fake_shutdown(cockpit_toml: Path, test_hosts: TestHosts) -> None:
    log = test_hosts.state_dir / "power.log"
    log.unlink(missing_ok=True)
    assert cluster(cockpit_toml, "compute", "down").returncode == 0
    assert cluster(cockpit_toml, "compute", "restart", "node1").returncode == 0
    assert sorted(log.read_text().splitlines()) == [
        "node0 shutdown -h now",
        "node1 shutdown -h now",
        "node1 shutdown -r now",
    ]


def test_probe_returns_json_with_nulls_where_no_gpu(cockpit_toml: Path) -> None:
    done = cluster(cockpit_toml, "nodes", "probe", "--json")
    assert done.returncode == 0, done.stderr
    nodes = json.loads(done.stdout)["nodes"]
    assert [(n["node"], n["ok"], n["telemetry"]["hostname"]) for n in nodes] == [
        ("node0", True, "node0"),
        ("node1", True, "node1"),
    ]
    assert all(n["telemetry"]["gpus"] == [] and n["telemetry"]["uptime_s"] > 0 for n in nodes)
    table = cluster(cockpit_toml, "nodes", "probe")
    assert table.returncode == 0 and "node0" in table.stdout and "node1" in table.stdout


def test_fan_out_folds_identical_output_and_reports_hung_commands(cockpit_toml: Path) -> None:
    done = cluster(cockpit_toml, "nodes", "run", "-w", "node[0-1]", "--", "uname", "-s")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "---------------\nnode[0-1] (exit 0)\n---------------\nLinux\n"
    done = cluster(cockpit_toml, "nodes", "run", "--", "printf", "%s|", "a b", "it's")
    assert done.stdout.endswith("a b|it's|")
    started = time.monotonic()
    hung = cluster(cockpit_toml, "nodes", "run", "--command-timeout", "1", "-w", "node0", "--", "sleep", "30")
    assert hung.returncode == 1 and "node0 (command timed out after 1 s)" in hung.stdout
    assert time.monotonic() - started < 20


def test_bad_nodes_are_named_and_the_others_still_served(test_hosts: TestHosts, tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        test_hosts.inventory.read_text().replace(
            "[compute]\n",
            "[compute]\noff ansible_host=10.77.0.99\nghost ansible_host=no-such-node.invalid\n"
            f"wrongkey ansible_host=10.77.0.11 ansible_user=root ansible_ssh_private_key_file={tmp_path / 'other'}\n",
        )
    )
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    known = tmp_path / "known_hosts"
    shutil.copy(test_hosts.known_hosts, known)
    node1_key = (test_hosts.state_dir / "node1" / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    with known.open("a") as out:  # wrongkey is node1 reached with a key it does not accept
        out.write(f"wrongkey {' '.join(node1_key)}\n")
    config = write_config(tmp_path, test_hosts, inventory, known)
    done = cluster(config, "compute", "status", "--json")
    assert done.returncode == 1
    by_node = {n["node"]: n for n in json.loads(done.stdout)["nodes"]}
    assert by_node["node0"]["ok"] and by_node["node1"]["ok"]
    # keys are checked before connecting: a node never seen is refused, whether or not it would answer
    assert by_node["off"]["error"].startswith("unknown host key: off is not in")
    assert by_node["ghost"]["error"].startswith("unknown host key: ghost is not in")
    assert by_node["wrongkey"]["error"].startswith("permission denied for user root with")
    done = cluster(config, "compute", "status", "--accept-new", "off", "ghost")
    assert "off (10.77.0.99): no answer within 2 s (connect timeout)" in done.stderr
    assert "ghost (no-such-node.invalid): cannot resolve 'no-such-node.invalid'" in done.stderr


def test_malformed_inventory_is_one_line(test_hosts: TestHosts, tmp_path: Path) -> None:
    inventory = tmp_path / "broken.yml"
    inventory.write_text("all:\n  hosts: [node0\n")
    done = cluster(write_config(tmp_path, test_hosts, inventory, tmp_path / "kh"), "compute", "status")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"cluster: {inventory}: yaml inventory: YAML parsing failed: "
        "While parsing a flow sequence did not find expected ',' or ']'."
    ]


def test_configure_runs_the_compute_playbooks_on_both_nodes(test_hosts: TestHosts, tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.ini"
    text = test_hosts.inventory.read_text()
    for host in test_hosts.hosts:  # the namespaces share this machine's disk: state and systemd folders each
        state = tmp_path / host.name
        text = text.replace(
            f"\n{host.name} ",
            f"\n{host.name} node_base_state_dir={state} wol_systemd_dir={state / 'systemd'} "
            f"wol_record_dir={tmp_path / 'recorded'} wol_required=False ",  # a veth has no Wake-on-LAN
        )
    inventory.write_text(text)
    known = tmp_path / "known_hosts"
    shutil.copy(test_hosts.known_hosts, known)
    done = cluster(write_config(tmp_path, test_hosts, inventory, known), "compute", "configure", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("configure: node[0-1] configured")
    for host in test_hosts.hosts:
        facts = json.loads((tmp_path / host.name / "node.json").read_text())
        assert facts["hostname"] == host.name
        assert (tmp_path / "recorded" / host.name / "wol.yml").read_text().endswith(f'mac_address: "{host.mac}"\n')

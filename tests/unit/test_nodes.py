"""The node layer without a network: ranges, the inventory through ansible-core, magic packets, power rules,
and the ssh pool's local path (the embedded default's node runs commands without ssh)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from cockpit.config import WakeOnLanSection
from cockpit.errors import BadInput
from cockpit.nodes import power
from cockpit.nodes.inventory import LOCALHOST, Inventory, Node
from cockpit.nodes.nodeset import expand, expand_list, fold
from cockpit.nodes.ssh import CommandResult, SshPool, group_identical, shell_argv
from cockpit.nodes.wol import magic_packet, wake


@pytest.mark.parametrize(
    ("pattern", "names"),
    [
        ("node[0-3]", ["node0", "node1", "node2", "node3"]),
        ("node[0-1,5]", ["node0", "node1", "node5"]),
        ("gpu[08-10]", ["gpu08", "gpu09", "gpu10"]),
        ("r[1-2]n[0-1]", ["r1n0", "r1n1", "r2n0", "r2n1"]),
        ("control", ["control"]),
    ],
)
def test_expand_ranges(pattern: str, names: list[str]) -> None:
    assert expand(pattern) == names


@pytest.mark.parametrize("bad", ["node[3-1]", "node[a-b]", "node[0-1", "node0]", "node[]"])
def test_expand_rejects_bad_ranges(bad: str) -> None:
    with pytest.raises(BadInput, match="node"):
        expand(bad)


def test_slurm_node_lists_expand_pattern_by_pattern() -> None:
    assert expand_list("node[0-1,4],gpu3") == ["node0", "node1", "node4", "gpu3"]
    assert expand_list("node7") == ["node7"] and expand_list("") == []


def test_fold_is_the_inverse_of_expand() -> None:
    assert fold(["node0", "node1", "node2", "node5", "control"]) == "control,node[0-2,5]"
    assert fold(["gpu08", "gpu09", "gpu10"]) == "gpu[08-10]"
    assert fold(["node1"]) == "node1"
    assert expand(fold(expand("node[0-9,12-13]"))) == expand("node[0-9,12-13]")


@pytest.fixture
def yaml_inventory(tmp_path: Path) -> Path:
    """A YAML inventory with group_vars beside it, as the home cluster's would be."""
    folder = tmp_path / "inventories"
    (folder / "group_vars").mkdir(parents=True)
    (folder / "group_vars" / "compute.yml").write_text("ansible_user: admin\ngpu_kind: intel-arc\n")
    path = folder / "home.yml"
    path.write_text(
        "all:\n"
        "  children:\n"
        "    control:\n"
        "      hosts:\n"
        "        nuc: {ansible_connection: local}\n"
        "    compute:\n"
        "      hosts:\n"
        "        node0: {ansible_host: 192.168.1.10, mac_address: 'AA-BB-CC-00-00-01', memory_bandwidth_gbps: 560}\n"
        "        node[1:2]:\n"
        "      vars: {ansible_port: 2222}\n"
    )
    return path


def test_yaml_inventory_with_group_vars(yaml_inventory: Path) -> None:
    inventory = Inventory.load(yaml_inventory)
    assert inventory.names == ["nuc", "node0", "node1", "node2"]
    node0 = inventory["node0"]
    assert (node0.address, node0.port, node0.user, node0.gpu_kind) == ("192.168.1.10", 2222, "admin", "intel-arc")
    assert node0.mac == "aa:bb:cc:00:00:01"
    assert node0.target == "node0 (192.168.1.10:2222)"
    assert inventory["node1"].address == "node1" and inventory["node1"].mac is None
    assert inventory["nuc"].local and inventory["nuc"].groups == ("control",)
    assert [n.name for n in inventory.compute] == ["node0", "node1", "node2"]
    assert inventory.memory_bandwidths() == {"node0": 560e9}  # the performance model's peak, by node


def test_selection_by_patterns_and_ranges(yaml_inventory: Path) -> None:
    inventory = Inventory.load(yaml_inventory)
    names = lambda patterns: [n.name for n in inventory.select(patterns)]  # noqa: E731
    assert names([]) == ["node0", "node1", "node2"]  # default: the compute group
    assert names(["node[0-1]"]) == ["node0", "node1"]
    assert names(["compute:!node1"]) == ["node0", "node2"]
    assert names(["node2,control"]) == ["nuc", "node2"]
    assert names(["node*"]) == ["node0", "node1", "node2"]
    with pytest.raises(BadInput, match=r"'node6', 'node7' match\(es\) no node \(known: nuc, node0, node1, node2\)"):
        inventory.select(["node[6-7]"])


def test_embedded_default_is_this_machine() -> None:
    inventory = Inventory.load(None)
    assert inventory.nodes == (LOCALHOST,)
    assert inventory.select([]) == [LOCALHOST] == inventory.select(["localhost"])
    with pytest.raises(BadInput, match=r"embedded default: 'node0' match\(es\) no node"):
        inventory.select(["node0"])


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("broken.ini", "[compute\nnode0 ansible_host=10.0.0.1\n", "ini inventory"),
        ("broken.yml", "all:\n  hosts: [node0, node1\n", "yaml inventory: YAML parsing failed"),
        ("badmac.ini", "[compute]\nnode0 mac_address=02:77:zz:00:00:0a\n", "host node0: mac_address '02:77:zz"),
        ("badport.ini", "[compute]\nnode0 ansible_port=ssh\n", "host node0: ansible_port 'ssh' is not a port"),
        ("badbw.ini", "[compute]\nnode0 memory_bandwidth_gbps=fast\n", "host node0: memory_bandwidth_gbps 'fast' is"),
    ],
)
def test_bad_inventory_names_the_file(tmp_path: Path, name: str, text: str, problem: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(BadInput) as caught:
        Inventory.load(path)
    assert str(caught.value).startswith(f"{path}: ") and problem in str(caught.value)


def test_missing_inventory(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="inventory not found"):
        Inventory.load(tmp_path / "nope.ini")


def test_magic_packet_layout() -> None:
    packet = magic_packet("02:77:00:00:00:0a")
    assert len(packet) == 102
    assert packet[:6] == b"\xff" * 6
    assert packet[6:] == bytes.fromhex("02770000000a") * 16
    with pytest.raises(BadInput):
        magic_packet("02:77:00")


def test_wake_sends_to_the_configured_address_and_names_nodes_without_mac() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(2)
    port = listener.getsockname()[1]
    nodes = [
        Node("node0", "a", mac="02:77:00:00:00:0a"),
        Node("node9", "b"),
        Node("node1", "c", mac="02:77:00:00:00:0b"),
    ]
    results = wake(nodes, WakeOnLanSection(broadcast="127.0.0.1", port=port, repeat=2), interval_s=0)
    assert [(r.node, r.packets, r.ok) for r in results] == [("node0", 2, True), ("node9", 0, False), ("node1", 2, True)]
    assert results[1].error == "no mac_address in the inventory"
    received = [listener.recvfrom(200)[0] for _ in range(4)]
    listener.close()
    assert sorted(p[6:12].hex(":") for p in received) == ["02:77:00:00:00:0a"] * 2 + ["02:77:00:00:00:0b"] * 2


def test_wake_without_broadcast_sends_nothing() -> None:
    with pytest.raises(BadInput, match=r"no broadcast address set; add \[wake_on_lan\] broadcast"):
        wake([Node("node0", "a", mac="02:77:00:00:00:0a")], WakeOnLanSection())


def test_power_commands_use_sudo_unless_root() -> None:
    assert power.power_command(Node("n", "a", user="root"), "off") == "shutdown -h now"
    assert power.power_command(Node("n", "a", user="admin"), "reboot") == "sudo -n shutdown -r now"
    custom = Node("n", "a", user="root", power_off_command="poweroff")
    assert power.power_command(custom, "off") == "poweroff"


async def test_power_refuses_the_control_node(tmp_path: Path) -> None:
    async with SshPool(tmp_path / "known_hosts") as pool:
        (result,) = await power.power(pool, [LOCALHOST], "off")
    assert not result.ok and "control node itself" in (result.error or "")


async def test_local_node_runs_without_ssh(tmp_path: Path) -> None:
    async with SshPool(tmp_path / "known_hosts", command_timeout_s=0.5) as pool:
        ok, failed, hung = await asyncio.gather(
            pool.run(LOCALHOST, "read line; echo got $line", input="hello\n"),
            pool.run(LOCALHOST, "echo broken >&2; exit 4"),
            pool.run(LOCALHOST, "sleep 30"),
        )
        status = await power.status(pool, [LOCALHOST])
    assert ok.ok and ok.stdout == "got hello\n"
    assert (failed.exit_status, failed.stderr) == (4, "broken\n")
    assert "command: echo broken >&2; exit 4" in failed.failure() and "    broken" in failed.failure()
    assert hung.error == "command timed out after 0.5 s" and hung.elapsed_s < 5
    assert status[0].ok and float(status[0].stdout.split()[0]) > 0  # /proc/uptime: seconds since boot


def test_identical_outputs_fold_like_dshbak() -> None:
    def result(node: str, out: str, status: int = 0) -> CommandResult:
        return CommandResult(node, node, "uname", status, out, "", None, 0.01)

    results = [
        result("node0", "Linux\n"),
        result("node1", "Linux\n"),
        result("node2", "BSD\n"),
        result("node3", "Linux\n", 1),
    ]
    folded = group_identical([*results, result("node4", "Linux\n")])
    assert [(header, r.stdout, r.exit_status) for header, r in folded] == [
        ("node[0-1,4]", "Linux\n", 0),
        ("node2", "BSD\n", 0),
        ("node3", "Linux\n", 1),
    ]


def test_shell_argv_checks_host_keys_strictly_against_the_cockpits_known_hosts() -> None:
    node = Node("node0", "10.77.0.10", 2222, "admin", Path("/keys/id_ed25519"))
    known = Path("/srv/cockpit/known_hosts")
    assert shell_argv(node, known, 4.5) == [
        "ssh", "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=/srv/cockpit/known_hosts",
        "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", "-p", "2222", "-l", "admin",
        "-i", "/keys/id_ed25519", "-o", "IdentitiesOnly=yes", "--", "10.77.0.10",
    ]  # fmt: skip
    plain = shell_argv(Node("node1", "node1"), known, 5, command="hostname")
    assert plain[-5:] == ["-p", "22", "--", "node1", "hostname"] and "-l" not in plain and "-i" not in plain
    assert shell_argv(LOCALHOST, known, 5, local_shell="/bin/zsh") == ["/bin/zsh"]  # here: no ssh
    assert shell_argv(LOCALHOST, known, 5, command="uptime") == ["/bin/sh", "-c", "uptime"]

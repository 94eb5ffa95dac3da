"""Discovery without a network: dnsmasq's lease file read (lines as dnsmasq 2.90 wrote them for two dhclients),
`cluster compute discover` and its `--write` run in-process against a YAML inventory, and the nodes table's rows
for unknown hosts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from cockpit.cli import main
from cockpit.errors import EXIT_BAD_INPUT, EXIT_OK, BadInput
from cockpit.nodes.inventory import Inventory
from cockpit.nodes.leases import Lease, lease_file, parse_leases, unknown_hosts
from cockpit.tui.node_board import NodeBoard

REPO = Path(__file__).resolve().parents[2]
ROLE_DEFAULTS = REPO / "ansible" / "roles" / "pxe_server" / "defaults" / "main.yml"
# dnsmasq 2.90's file after two dhclient requests: one sent a host name, one a client id; the third line, node1's
# own, is a static lease (expiry 0: never), as dnsmasq writes for an infinite lease time
LEASES = (
    "1796353267 96:89:4d:54:b8:4d 10.99.0.137 * 01:02:77:00:00:00:0a\n"
    "1796353264 e2:b9:1a:61:30:9f 10.99.0.146 node-live *\n"
    "0 02:77:00:00:00:0b 192.168.1.11 node1 *\n"
)
NEW = "e2:b9:1a:61:30:9f"


@pytest.fixture
def cluster(tmp_path: Path) -> Path:
    """A cockpit.toml whose inventory has a control node (its lease file beside it) and node0 (no MAC yet) and
    node1 (its MAC in the inventory)."""
    (tmp_path / "inv").mkdir()
    (tmp_path / "inv" / "hosts.yml").write_text(
        "all:\n  children:\n"
        "    control:\n      hosts:\n"
        f"        nuc: {{ansible_connection: local, pxe_server_dhcp_lease_file: {tmp_path}/leases}}\n"
        "    compute:\n      hosts:\n"
        "        node0: {ansible_host: 192.168.1.10}\n"
        "        node1: {ansible_host: 192.168.1.11, mac_address: '02:77:00:00:00:0b'}\n"
    )  # fmt: skip
    (tmp_path / "leases").write_text(LEASES)
    config = tmp_path / "cockpit.toml"
    config.write_text('[cluster]\ninventory = "inv/hosts.yml"\n')
    return config


def discover(config: Path, *words: str) -> int:
    return main(["--config", str(config), "compute", "discover", *words])


def test_the_lease_file_read_as_dnsmasq_writes_it() -> None:
    leases = parse_leases(LEASES + "duid 00:01:00:01:2c:4e:2b:0a:02:77:00:00:00:01\n1796353300 123 fd00::5 * *\n", "f")
    assert leases == [
        Lease("96:89:4d:54:b8:4d", "10.99.0.137", None, 1796353267),
        Lease(NEW, "10.99.0.146", "node-live", 1796353264),
        Lease("02:77:00:00:00:0b", "192.168.1.11", "node1", None),
    ]  # the DHCPv6 leases after the duid line are not the PXE server's


@pytest.mark.parametrize(
    "line",
    ["1796353267 96:89:4d:54:b8:4d 10.99.0.137 *", "soon 96:89:4d:54:b8:4d 10.99.0.137 * *",
     "1796353267 96:89:4d:54:b8 10.99.0.137 * *", "1796353267 96:89:4d:54:b8:4d 10.99.0.300 * *"],
)  # fmt: skip
def test_a_line_that_is_not_a_lease_is_named(line: str) -> None:
    with pytest.raises(BadInput, match=re.escape(f"/var/x.leases: line 2: '{line}' is not a dnsmasq lease (<expiry>")):
        parse_leases(LEASES.splitlines()[0] + "\n" + line + "\n", "/var/x.leases")


def test_the_lease_file_is_the_control_hosts_variable_else_the_roles_default(cluster: Path, tmp_path: Path) -> None:
    assert lease_file(Inventory.load(tmp_path / "inv" / "hosts.yml")) == tmp_path / "leases"
    plain = tmp_path / "plain.ini"
    plain.write_text("[control]\nnuc ansible_connection=local\n")
    assert lease_file(Inventory.load(plain)) == Path("/var/lib/misc/dnsmasq.leases")  # Debian's dnsmasq's own
    assert yaml.safe_load(ROLE_DEFAULTS.read_text())["pxe_server_dhcp_lease_file"] == "/var/lib/misc/dnsmasq.leases"
    template = (ROLE_DEFAULTS.parents[1] / "templates" / "dnsmasq.conf.j2").read_text()
    assert "\ndhcp-leasefile={{ pxe_server_dhcp_lease_file }}\n" in template
    assert lease_file(Inventory.load(None)) is None  # the embedded default has no control node


def test_discover_lists_each_lease_with_its_node(cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert discover(cluster, "--json") == EXIT_OK
    shown = json.loads(capsys.readouterr().out)
    assert shown["lease_file"] == str(cluster.parent / "leases") and shown["written"] == []
    assert [(x["mac"], x["address"], x["hostname"], x["node"]) for x in shown["leases"]] == [
        ("96:89:4d:54:b8:4d", "10.99.0.137", None, None),
        (NEW, "10.99.0.146", "node-live", None),
        ("02:77:00:00:00:0b", "192.168.1.11", "node1", "node1"),
    ]
    assert discover(cluster) == EXIT_OK
    table = capsys.readouterr().out
    assert table.count("unknown host on the compute network") == 2 and "never" in table and NEW in table
    assert "cluster compute discover --write NODE=MAC" in table


def test_write_records_the_mac_where_the_wol_role_does(cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record = cluster.parent / "inv" / "host_vars" / "node0" / "wol.yml"
    record.parent.mkdir(parents=True)
    record.write_text('mac_address: "02:77:00:00:00:99"\nwol_required: false\n')
    assert discover(cluster, "--write", f"node0={NEW.upper()}") == EXIT_OK
    out = capsys.readouterr().out
    assert f"recorded node0's MAC {NEW} in {record}" in out and "next: cluster control configure" in out
    assert yaml.safe_load(record.read_text()) == {"mac_address": NEW, "wol_required": False}
    assert f'\nmac_address: "{NEW}"\n' in record.read_text()  # as the wol role writes it
    assert Inventory.load(cluster.parent / "inv" / "hosts.yml")["node0"].mac == NEW


def test_the_wol_role_writes_the_same_file() -> None:
    """What record_mac matches: the wol role's record of a MAC (its path and its one line)."""
    tasks = yaml.safe_load((REPO / "ansible" / "roles" / "wol" / "tasks" / "wake_on_lan.yml").read_text())
    block = next(task["block"] for task in tasks if task["name"] == "Record the MAC address for the inventory")
    copy = block[-1]["ansible.builtin.copy"]
    assert copy["dest"] == "{{ wol_record_dir }}/{{ inventory_hostname }}/wol.yml"
    assert 'mac_address: "{{ wol_mac }}"' in copy["content"].splitlines()
    defaults = yaml.safe_load((REPO / "ansible" / "roles" / "wol" / "defaults" / "main.yml").read_text())
    assert defaults["wol_record_dir"] == "{{ inventory_dir }}/host_vars"


def test_a_mac_without_a_lease_is_written_with_a_warning(cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert discover(cluster, "--write", "node0=02:77:00:00:00:0a") == EXIT_OK
    err = capsys.readouterr().err
    assert "warning: 02:77:00:00:00:0a (node0) holds no lease in" in err
    assert (cluster.parent / "inv" / "host_vars" / "node0" / "wol.yml").exists()


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["node9=02:77:00:00:00:0a"], "hosts.yml: no node named 'node9' (known: nuc, node0, node1)"),
        (["node0=02:77:zz:00:00:0a"], "--write 'node0=02:77:zz:00:00:0a': '02:77:zz:00:00:0a' is not a MAC like"),
        (["node0=02:77:00:00:00:0B"], "hosts.yml: 02:77:00:00:00:0b is already node1's mac_address, not node0's"),
        (["node0"], "--write 'node0': expected NODE=MAC"),
        ([f"node0={NEW}", f"node1={NEW}"], f"--write: {NEW} is given to both node0 and node1"),
    ],
)
def test_bad_writes_are_named_and_write_nothing(
    cluster: Path, capsys: pytest.CaptureFixture[str], words: list[str], message: str
) -> None:
    assert discover(cluster, "--write", *words) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1, err
    assert not (cluster.parent / "inv" / "host_vars").exists()


def test_a_swap_between_two_nodes_is_allowed(cluster: Path) -> None:
    assert discover(cluster, "--write", "node0=02:77:00:00:00:0b", f"node1={NEW}") == EXIT_OK
    written = {name: yaml.safe_load((cluster.parent / "inv" / "host_vars" / name / "wol.yml").read_text())
               for name in ("node0", "node1")}  # fmt: skip
    assert written == {"node0": {"mac_address": "02:77:00:00:00:0b"}, "node1": {"mac_address": NEW}}


@pytest.mark.parametrize("problem", ["missing", "a folder", "malformed"])
def test_a_lease_file_that_cannot_be_read_is_one_line_exit_2(
    cluster: Path, capsys: pytest.CaptureFixture[str], problem: str
) -> None:
    leases = cluster.parent / "leases"
    leases.unlink()
    if problem == "a folder":
        leases.mkdir()
    elif problem == "malformed":
        leases.write_text(LEASES + "garbage\n")
    assert discover(cluster) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith(f"cluster: {leases}: ") and len(err.splitlines()) == 1, err
    assert {"missing": "no DHCP lease file", "a folder": "Is a directory", "malformed": "line 4: 'garbage'"}[
        problem
    ] in err


def test_the_nodes_table_shows_unknown_hosts_after_the_nodes(cluster: Path) -> None:
    inventory = Inventory.load(cluster.parent / "inv" / "hosts.yml")
    found = unknown_hosts(lease_file(inventory), inventory)
    assert [lease.mac for lease in found] == ["96:89:4d:54:b8:4d", NEW]
    assert unknown_hosts(cluster.parent / "absent", inventory) == unknown_hosts(None, inventory) == []
    board = NodeBoard(["node0"], runtime=True)
    board.set_unknown_hosts(found)
    rows = dict(board.rows())
    assert list(rows) == ["node0/-", "lease 96:89:4d:54:b8:4d", f"lease {NEW}"]
    cells = [str(cell) for cell in rows[f"lease {NEW}"]]
    assert len(cells) == len(board.columns)
    assert cells[:2] == [NEW, "unknown host on the compute network"]
    assert cells[board.columns.index("gpu")] == "10.99.0.146 · DHCP name node-live"
    board.set_unknown_hosts(found, "leases: /x: line 4: 'garbage' is not a dnsmasq lease")
    assert board.problems()[-1] == ("leases", "/x: line 4: 'garbage' is not a dnsmasq lease")

"""Pinning the host keys the control node issues (cockpit.nodes.host_keys) in a known_hosts file: recorded for a
node known_hosts does not know, kept when equal, never replaced when different; nodes without a MAC (booting the
generic seed, with random keys) or without an issued key are left alone."""

from __future__ import annotations

from pathlib import Path

import asyncssh
import pytest

from cockpit.errors import BadInput
from cockpit.nodes.host_keys import HOST_PUBLIC_KEY, golden_image_key, pin_host_keys
from cockpit.nodes.inventory import Inventory, Node
from cockpit.nodes.ssh import KnownHosts

NODE0 = Node("node0", "192.168.1.10", mac="02:00:00:00:00:10")


def issue(key_dir: Path, name: str) -> asyncssh.SSHKey:
    """A key as the pxe_server role leaves it: <key_dir>/<node>/ssh_host_ed25519_key.pub."""
    key = asyncssh.generate_private_key("ssh-ed25519", comment=name)
    (key_dir / name).mkdir(parents=True)
    key.write_public_key(key_dir / name / HOST_PUBLIC_KEY)
    return key.convert_to_public()


async def test_an_unknown_node_gets_its_issued_key_under_its_name_and_address(tmp_path: Path) -> None:
    known_hosts = KnownHosts(tmp_path / "known_hosts")
    key = issue(tmp_path / "keys", "node0")
    await known_hosts.record(Node("other", "192.168.1.99"), asyncssh.generate_private_key("ssh-ed25519"))
    assert await pin_host_keys(known_hosts, tmp_path / "keys", [NODE0]) == (["node0"], [])
    assert known_hosts.trusted(NODE0) == [key]
    assert key in known_hosts.trusted(Node("node0", "node0")) and key in known_hosts.trusted(Node("x", "192.168.1.10"))
    assert known_hosts.path.stat().st_mode & 0o777 == 0o600
    before = known_hosts.path.read_text()
    assert await pin_host_keys(known_hosts, tmp_path / "keys", [NODE0]) == ([], [])  # equal: kept as it is
    assert known_hosts.path.read_text() == before


async def test_a_different_recorded_key_is_kept_and_named(tmp_path: Path) -> None:
    known_hosts = KnownHosts(tmp_path / "known_hosts")
    issue(tmp_path / "keys", "node0")
    await known_hosts.record(NODE0, asyncssh.generate_private_key("ssh-ed25519"))
    before = known_hosts.path.read_text()
    recorded, warnings = await pin_host_keys(known_hosts, tmp_path / "keys", [NODE0])
    assert recorded == [] and known_hosts.path.read_text() == before
    [warning] = warnings
    assert warning.startswith("node0 (192.168.1.10): ") and "holds another host key" in warning
    assert f"ssh-keygen -R 192.168.1.10 -f {known_hosts.path}" in warning


async def test_nodes_without_a_mac_or_an_issued_key_are_left_out(tmp_path: Path) -> None:
    known_hosts = KnownHosts(tmp_path / "known_hosts")
    issue(tmp_path / "keys", "node1")
    no_mac, no_key = Node("node1", "192.168.1.11"), Node("node2", "192.168.1.12", mac="02:00:00:00:00:12")
    assert await pin_host_keys(known_hosts, tmp_path / "keys", [no_mac, no_key]) == ([], [])
    assert not known_hosts.path.exists()


async def test_a_damaged_issued_key_is_bad_input_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "keys" / "node0").mkdir(parents=True)
    (tmp_path / "keys" / "node0" / HOST_PUBLIC_KEY).write_text("not a key\n")
    with pytest.raises(BadInput, match=f"{tmp_path}/keys/node0/{HOST_PUBLIC_KEY}: not an ssh public key"):
        await pin_host_keys(KnownHosts(tmp_path / "known_hosts"), tmp_path / "keys", [NODE0])


async def test_the_golden_image_key_is_trusted_for_every_node_beside_its_issued_one(tmp_path: Path) -> None:
    """The image on the control node holds one key every netbooting node shows: trusted for each compute node,
    without turning the issued key into 'another recorded key', and recorded once."""
    known_hosts = KnownHosts(tmp_path / "known_hosts")
    issued = issue(tmp_path / "keys", "node0")
    image = issue(tmp_path / "image" / "etc", "ssh")
    image_key = tmp_path / "image" / "etc" / "ssh" / HOST_PUBLIC_KEY
    node1 = Node("node1", "192.168.1.11")  # no MAC: no issued key, but it can netboot the image
    assert await pin_host_keys(known_hosts, tmp_path / "keys", [NODE0, node1], image_key) == (["node0", "node1"], [])
    assert known_hosts.trusted(NODE0) == [issued, image] and known_hosts.trusted(node1) == [image]
    before = known_hosts.path.read_text()
    assert await pin_host_keys(known_hosts, tmp_path / "keys", [NODE0, node1], image_key) == ([], [])
    assert known_hosts.path.read_text() == before


async def test_an_image_key_first_does_not_block_the_issued_one(tmp_path: Path) -> None:
    known_hosts = KnownHosts(tmp_path / "known_hosts")
    image = issue(tmp_path / "image" / "etc", "ssh")
    image_key = tmp_path / "image" / "etc" / "ssh" / HOST_PUBLIC_KEY
    await known_hosts.record(NODE0, image)  # recorded by a `control golden-image` before any live seed was issued
    issued = issue(tmp_path / "keys", "node0")
    assert await pin_host_keys(known_hosts, tmp_path / "keys", [NODE0], image_key) == (["node0"], [])
    assert known_hosts.trusted(NODE0) == [image, issued]


def test_the_image_key_is_read_where_the_golden_image_role_builds_the_root(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.ini"
    hosts.write_text("[control]\nnuc ansible_connection=local\n[compute]\nnode0\n")
    assert golden_image_key(Inventory.load(hosts)) == Path("/srv/golden/ubuntu-22.04/etc/ssh") / HOST_PUBLIC_KEY
    hosts.write_text(f"[control]\nnuc ansible_connection=local golden_image_root={tmp_path}/root\n[compute]\nnode0\n")
    assert golden_image_key(Inventory.load(hosts)) == tmp_path / "root" / "etc" / "ssh" / HOST_PUBLIC_KEY
    assert golden_image_key(Inventory.load(None)) is None

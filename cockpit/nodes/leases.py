"""What is on the compute network right now: the control node's dnsmasq leases, each matched to the inventory node
whose `mac_address` it is; and a node's MAC recorded where the `wol` role records it
(`<inventory_dir>/host_vars/<node>/wol.yml`), for the inventory, Wake-on-LAN and the PXE server's pinned address.

dnsmasq's lease file holds one IPv4 lease a line, `<expiry epoch, 0: never> <MAC> <address> <hostname or *>
<client-id or *>`; a `duid` line starts its DHCPv6 leases, which the PXE server does not hand out. The file is the
control host's `pxe_server_dhcp_lease_file`, else the pxe_server role's default, read from the role itself so the
two cannot drift apart.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from cockpit.errors import BadInput
from cockpit.nodes.inventory import Inventory, normal_mac
from runtime.atomic import atomic_write_text
from runtime.contract import read_text

LEASE_FILE_VARIABLE = "pxe_server_dhcp_lease_file"
UNKNOWN = "unknown host on the compute network"
LEASE_FORMAT = "<expiry> <MAC> <address> <hostname or *> <client-id or *>"


@dataclass(frozen=True)
class Lease:
    """One DHCP lease, and the inventory node whose MAC it is (None: an unknown host)."""

    mac: str
    address: str
    hostname: str | None  # the name the node's DHCP request gave; None: it gave none
    expires: int | None  # epoch seconds; None: never
    node: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"mac": self.mac, "address": self.address, "hostname": self.hostname, "expires": self.expires,
                "node": self.node}  # fmt: skip


def parse_leases(text: str, source: str) -> list[Lease]:
    """The IPv4 leases of a dnsmasq lease file; a line that is not one is BadInput naming `source` and the line."""
    leases = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if fields[:1] == ["duid"]:
            break  # the DHCPv6 leases follow
        try:
            expiry, mac, address, hostname, _client_id = fields
            ipaddress.IPv4Address(address)
            lease = Lease(normal_mac(mac, source), address, None if hostname == "*" else hostname, int(expiry) or None)
        except (ValueError, BadInput):
            raise BadInput(
                f"{source}: line {number}: {line.strip()!r} is not a dnsmasq lease ({LEASE_FORMAT})"
            ) from None
        leases.append(lease)
    return leases


def lease_file(inventory: Inventory) -> Path | None:
    """Where the control node's dnsmasq keeps its leases; None when the inventory has no control node."""
    configured = inventory.control_setting(LEASE_FILE_VARIABLE, "pxe_server")
    return None if configured is None else Path(configured)


def read_leases(path: Path, inventory: Inventory) -> list[Lease]:
    """The leases in `path`, each with the inventory node its MAC is; BadInput when the file is missing, unreadable
    or has a line that is not a lease."""
    if not path.exists():
        raise BadInput(
            f"{path}: no DHCP lease file: dnsmasq has not run with it here (run `cluster control configure` on the "
            f"control node, or set {LEASE_FILE_VARIABLE} in the inventory to where its dnsmasq keeps leases)"
        )
    owners = {node.mac: node.name for node in inventory.nodes if node.mac}
    return [replace(lease, node=owners.get(lease.mac)) for lease in parse_leases(read_text(path), str(path))]


def unknown_hosts(path: Path | None, inventory: Inventory) -> list[Lease]:
    """The leases in `path` no inventory node's MAC matches; none without a lease file (`lease_file` found none,
    or dnsmasq has not made it yet)."""
    if path is None or not path.exists():
        return []
    return [lease for lease in read_leases(path, inventory) if lease.node is None]


def wanted_macs(inventory: Inventory, assignments: Sequence[str]) -> dict[str, str]:
    """`node=MAC` words as node -> MAC, checked before anything is written: each node in the inventory, each MAC
    well formed, named once, and not already another node's (unless that node gets a new one here too)."""
    wanted: dict[str, str] = {}
    for word in assignments:
        name, equals, value = word.partition("=")
        if not equals:
            raise BadInput(f"--write {word!r}: expected NODE=MAC, like node0=02:77:00:00:00:0a")
        node = inventory[name]
        mac = normal_mac(value, f"--write {word!r}:")
        if node.name in wanted:
            raise BadInput(f"--write: {node.name} is named twice")
        twin = next((other for other, known in wanted.items() if known == mac), None)
        if twin is not None:
            raise BadInput(f"--write: {mac} is given to both {twin} and {node.name}; a MAC belongs to one node")
        wanted[node.name] = mac
    owners = {node.mac: node.name for node in inventory.nodes if node.mac and node.name not in wanted}
    for name, mac in wanted.items():
        if mac in owners:
            raise BadInput(
                f"{inventory.where}: {mac} is already {owners[mac]}'s mac_address, not {name}'s: correct or remove "
                f"{owners[mac]}'s first"
            )
    return wanted


def wol_file(inventory: Inventory, name: str) -> Path:
    """The file the wol role records `name`'s MAC in: host_vars beside the inventory file that defines it."""
    return Path(str(inventory.variable(name, "inventory_dir"))) / "host_vars" / name / "wol.yml"


def record_mac(inventory: Inventory, name: str, mac: str) -> Path:
    """Write `mac` as `name`'s mac_address in its wol.yml, atomically, keeping the file's other keys."""
    path = wol_file(inventory, name)
    kept = (yaml.safe_load(read_text(path)) if path.exists() else None) or {}  # the inventory read it: a mapping
    others = {key: value for key, value in kept.items() if key != "mac_address"}
    text = (
        f"# Written by `cluster compute discover`: the MAC address of {name}, for Wake-on-LAN and its DHCP address.\n"
        f'mac_address: "{mac}"\n'
    )
    atomic_write_text(path, text + (yaml.safe_dump(others, sort_keys=False) if others else ""))
    return path

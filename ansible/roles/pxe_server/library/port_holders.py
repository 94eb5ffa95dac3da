#!/usr/bin/python
"""Ansible module: which processes hold the given ports on an address (or on every address)."""

from __future__ import annotations

import ipaddress
import socket
import struct
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: port_holders
short_description: The processes listening on ports that an address needs
description:
  - Reads the kernel's socket tables (/proc/net) of the network namespace the module runs in and names each
    process bound to one of O(ports) on O(address) or on the wildcard address, except the processes of the
    services given in O(own_pidfiles) and their children (the services being configured).
options:
  ports:
    description: Ports as C(NUMBER/udp) or C(NUMBER/tcp).
    type: list
    elements: str
    required: true
  address:
    description: The IPv4 address the services will listen on.
    type: str
    required: true
  own_pidfiles:
    description: Pid files of the services this play manages; their processes do not count.
    type: list
    elements: str
    default: []
"""

RETURN = r"""
holders:
  description: One entry per foreign socket.
  type: list
  elements: dict
  returned: always
  sample: [{"port": "69/udp", "address": "0.0.0.0", "process": "in.tftpd", "pid": 1234}]
"""


TCP_LISTEN = "0A"


def _address(hex_address: str) -> str:
    """/proc/net's little-endian hex address as text."""
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = struct.unpack("<4I", raw)
    return str(ipaddress.IPv6Address(struct.pack(">4I", *words)))


def _sockets(proto: str) -> list[tuple[str, int, str]]:
    """(address, port, inode) of every listening tcp or bound udp socket, IPv4 and IPv6."""
    found = []
    for table in (proto, proto + "6"):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if proto == "tcp" and state != TCP_LISTEN:
                continue
            hex_address, hex_port = local.split(":")
            found.append((_address(hex_address), int(hex_port, 16), inode))
    return found


def _processes() -> list[Path]:
    return [path for path in Path("/proc").iterdir() if path.name.isdigit()]


def _owners() -> dict[str, int]:
    """socket inode -> pid, from every process's open files."""
    owners = {}
    for process in _processes():
        try:
            for fd in (process / "fd").iterdir():
                target = str(fd.readlink())
                if target.startswith("socket:["):
                    owners.setdefault(target[8:-1], int(process.name))
        except OSError:
            continue
    return owners


def _own_pids(pidfiles: list[str]) -> set[int]:
    """The services' pids and their children (nginx's workers, dnsmasq's helper)."""
    pids = set()
    for path in pidfiles:
        try:
            pids.add(int(Path(path).read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            continue
    for process in _processes():
        try:
            parent = int((process / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent in pids:
            pids.add(int(process.name))
    return pids


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "ports": {"type": "list", "elements": "str", "required": True},
            "address": {"type": "str", "required": True},
            "own_pidfiles": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    wanted = {}
    for spec in module.params["ports"]:
        number, _, proto = spec.partition("/")
        if proto not in ("tcp", "udp") or not number.isdigit():
            module.fail_json(msg=f"port_holders: {spec!r} is not NUMBER/tcp or NUMBER/udp")
        wanted.setdefault(proto, set()).add(int(number))
    relevant = {module.params["address"], "0.0.0.0", "::", "::ffff:" + module.params["address"]}
    owners, own = _owners(), _own_pids(module.params["own_pidfiles"])
    holders = []
    for proto, ports in sorted(wanted.items()):
        for address, port, inode in _sockets(proto):
            pid = owners.get(inode)
            if port in ports and address in relevant and pid not in own:
                holders.append(
                    {"port": f"{port}/{proto}", "address": address, "pid": pid, "process": _name(pid) if pid else "?"}
                )
    module.exit_json(changed=False, holders=holders)


if __name__ == "__main__":
    main()

"""Wake-on-LAN: magic packets (6 x 0xFF, then the MAC 16 times) to the configured broadcast address.

Nothing is sent until `[wake_on_lan] broadcast` is set: the cockpit never guesses a network to shout on.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cockpit.config import WakeOnLanSection
from cockpit.errors import BadInput
from cockpit.nodes.inventory import Node


def magic_packet(mac: str) -> bytes:
    """The 102-byte magic packet for a MAC written like 02:77:00:00:00:0a (or with dashes)."""
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise BadInput(f"{mac!r} is not a MAC address")
    return b"\xff" * 6 + raw * 16


@dataclass(frozen=True)
class WakeResult:
    """Whether packets left for one node; `error` names what is missing (no MAC, send failure)."""

    node: str
    mac: str | None
    packets: int
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def wake(nodes: Sequence[Node], settings: WakeOnLanSection, interval_s: float = 0.05) -> list[WakeResult]:
    """Send `settings.repeat` magic packets to each node with a MAC; a node without one is named, not skipped."""
    if settings.broadcast is None:
        raise BadInput(
            'wake-on-lan: no broadcast address set; add [wake_on_lan] broadcast = "192.168.1.255" '
            "(the compute network's) to cockpit.toml"
        )
    target = (settings.broadcast, settings.port)
    results: dict[str, WakeResult] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        for round_ in range(settings.repeat):
            for node in nodes:
                if node.mac is None:
                    results[node.name] = WakeResult(node.name, None, 0, "no mac_address in the inventory")
                    continue
                if round_ and not results[node.name].ok:
                    continue
                try:
                    sock.sendto(magic_packet(node.mac), target)
                except OSError as err:
                    results[node.name] = WakeResult(node.name, node.mac, round_, f"send to {target[0]}: {err}")
                    continue
                results[node.name] = WakeResult(node.name, node.mac, round_ + 1)
            if round_ + 1 < settings.repeat:
                time.sleep(interval_s)
    return [results[node.name] for node in nodes]

"""The Ansible inventory as the one list of nodes, read with ansible-core's own parser.

Host patterns (`compute`, `node*`, `compute:!node1`), group_vars and host_vars behave exactly as in Ansible,
and a ClusterShell range (`node[0-3]`) in a pattern expands first. With no inventory configured, the cluster is
this machine alone (`localhost`, reached without ssh).
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cockpit.errors import BadInput
from cockpit.nodes.nodeset import expand

COMPUTE_GROUP = "compute"
CONTROL_GROUP = "control"  # the control node: PXE server, golden image builder
_MAC = re.compile(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$", re.IGNORECASE)


@dataclass(frozen=True)
class Node:
    """One node as the cockpit reaches it. `local` nodes are this machine: commands run without ssh."""

    name: str
    address: str
    port: int = 22
    user: str | None = None
    key_file: Path | None = None
    mac: str | None = None
    gpu_kind: str | None = None
    memory_bandwidth_Bps: float | None = None  # the GPU's peak, overriding the performance model's table
    device_memory_gib: float | None = None  # each GPU's memory (a CPU node: its host memory), for the memory plan
    groups: tuple[str, ...] = ()
    local: bool = False
    power_off_command: str = "shutdown -h now"
    reboot_command: str = "shutdown -r now"
    ranks_interface: str | None = None  # the interface the ranks' traffic between nodes goes over
    ranks_address: str | None = None  # the node's address on it, where it is the cluster link's (cluster_link_*)

    @property
    def endpoint(self) -> str:
        """Where ssh goes: the address, with the port unless it is 22."""
        return self.address if self.port == 22 else f"{self.address}:{self.port}"

    @property
    def target(self) -> str:
        """How messages name the node: `node0 (10.77.0.10)`."""
        return self.name if self.endpoint == self.name else f"{self.name} ({self.endpoint})"


LOCALHOST = Node("localhost", "127.0.0.1", groups=(COMPUTE_GROUP,), local=True)


def normal_mac(value: object, where: str) -> str:
    """A MAC written like 02:77:00:00:00:0a (or with dashes), in that form and lower case; BadInput after `where`
    for anything else."""
    if not isinstance(value, str) or not _MAC.match(value):
        raise BadInput(f"{where} {value!r} is not a MAC like 02:77:00:00:00:0a")
    return value.lower().replace("-", ":")


def _mac(value: object, host: str, source: str) -> str | None:
    return None if value in (None, "") else normal_mac(value, f"{source}: host {host}: mac_address")


def _positive(value: object, host: str, source: str, key: str, unit: str) -> float | None:
    """A host variable that must be a positive number when set (None when it is not)."""
    if value in (None, ""):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = 0.0
    if not number > 0:
        raise BadInput(f"{source}: host {host}: {key} {value!r} is not a positive number of {unit}")
    return number


def _ranks_address(hostvars: Mapping[str, Any], interface: str | None) -> str | None:
    """The node's cluster_link_address without its prefix, where the ranks' interface is the cluster link's."""
    address = str(hostvars.get("cluster_link_address") or "")
    link = hostvars.get("cluster_link_interface")
    return address.split("/")[0] if interface and address and link == interface else None


def node_from_vars(name: str, hostvars: Mapping[str, Any], groups: Iterable[str], source: str) -> Node:
    """A Node from one host's Ansible variables (ansible_host, ansible_port, ansible_user, ...)."""
    local = hostvars.get("ansible_connection") == "local"
    try:
        port = int(hostvars.get("ansible_port") or 22)
    except (TypeError, ValueError):
        raise BadInput(f"{source}: host {name}: ansible_port {hostvars['ansible_port']!r} is not a port") from None
    key = hostvars.get("ansible_ssh_private_key_file")
    ranks_interface = str(hostvars.get("ranks_interface") or "") or None
    defaults = Node(name, name)
    bandwidth = _positive(hostvars.get("memory_bandwidth_gbps"), name, source, "memory_bandwidth_gbps", "GB/s")
    return Node(
        name=name,
        address=str(hostvars.get("ansible_host") or ("127.0.0.1" if local else name)),
        port=port,
        user=hostvars.get("ansible_user"),
        key_file=Path(str(key)).expanduser() if key else None,
        mac=_mac(hostvars.get("mac_address"), name, source),
        gpu_kind=hostvars.get("gpu_kind"),
        memory_bandwidth_Bps=None if bandwidth is None else bandwidth * 1e9,
        device_memory_gib=_positive(hostvars.get("device_memory_gib"), name, source, "device_memory_gib", "GiB"),
        groups=tuple(sorted(g for g in groups if g != "all")),
        local=local,
        power_off_command=str(hostvars.get("power_off_command") or defaults.power_off_command),
        reboot_command=str(hostvars.get("reboot_command") or defaults.reboot_command),
        ranks_interface=ranks_interface,
        ranks_address=_ranks_address(hostvars, ranks_interface),
    )


def _parse_failure(path: Path, loader: Any) -> str:
    """Why no inventory plugin could read `path`: the message of the plugin its suffix points at."""
    from ansible.inventory.data import InventoryData
    from ansible.plugins.loader import inventory_loader

    preferred = ("yaml", "ini") if path.suffix in (".yml", ".yaml") else ("ini", "yaml")
    for name in (*preferred, "toml"):
        plugin = inventory_loader.get(name)
        if plugin is None or not plugin.verify_file(str(path)):
            continue
        try:
            plugin.parse(InventoryData(), loader, str(path))
        except Exception as err:
            return f"{name} inventory: {str(err).splitlines()[0]}"
    return "not an inventory Ansible can read (INI, YAML or TOML)"


@dataclass(frozen=True)
class Inventory:
    """The nodes of one inventory, in the inventory's order, selectable by Ansible host patterns."""

    nodes: tuple[Node, ...]
    source: Path | None = None  # None: the embedded default (this machine)
    manager: Any = field(default=None, compare=False, repr=False)  # ansible's, for host patterns
    variables: Any = field(default=None, compare=False, repr=False)  # ansible's, for `variable`

    @classmethod
    def load(cls, path: Path | None) -> Inventory:
        """Parse an inventory file or folder; None gives the embedded default. Errors name the file."""
        if path is None:
            return cls((LOCALHOST,))
        if not path.exists():
            raise BadInput(f"{path}: inventory not found")
        from ansible.inventory.manager import InventoryManager
        from ansible.parsing.dataloader import DataLoader
        from ansible.vars.manager import VariableManager

        loader = DataLoader()
        chatter = io.StringIO()  # ansible warns on stderr; we say it in one line instead
        with contextlib.redirect_stderr(chatter), contextlib.redirect_stdout(chatter):
            manager = InventoryManager(loader=loader, sources=[str(path)])
        if not manager._inventory.processed_sources:
            raise BadInput(f"{path}: {_parse_failure(path, loader)}")
        variables = VariableManager(loader=loader, inventory=manager)
        nodes = []
        for host in manager.get_hosts("all"):
            hostvars = variables.get_vars(host=host, include_hostvars=False)
            nodes.append(node_from_vars(host.name, hostvars, (g.name for g in host.get_groups()), str(path)))
        return cls(tuple(nodes), path, manager, variables)

    def __getitem__(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise BadInput(f"{self.where}: no node named {name!r} (known: {', '.join(self.names)})")

    def variable(self, name: str, key: str) -> Any:
        """Host `name`'s variable `key` as the inventory sets it (host_vars, group_vars, Ansible's own such as
        inventory_dir), not templated; None where it is unset, and for the embedded default."""
        if self.variables is None:
            return None
        return self.variables.get_vars(host=self.manager.get_host(name), include_hostvars=False).get(key)

    def control_setting(self, key: str, role: str) -> Any:
        """The control node's variable `key` as the inventory sets it, else the default in `role`'s
        defaults/main.yml, read from the role itself so the two cannot drift apart; None without a control node."""
        control = next((node for node in self.nodes if CONTROL_GROUP in node.groups), None)
        if control is None:
            return None
        configured = self.variable(control.name, key)
        if configured:
            return configured
        defaults = Path(__file__).resolve().parents[2] / "ansible" / "roles" / role / "defaults" / "main.yml"
        return yaml.safe_load(defaults.read_text(encoding="utf-8"))[key]

    def memory_bandwidths(self) -> dict[str, float]:
        """Node name -> peak memory bandwidth (bytes/s), where the inventory sets `memory_bandwidth_gbps`."""
        return {node.name: node.memory_bandwidth_Bps for node in self.nodes if node.memory_bandwidth_Bps}

    @property
    def names(self) -> list[str]:
        return [node.name for node in self.nodes]

    @property
    def where(self) -> str:
        return str(self.source) if self.source else "embedded default"

    @property
    def compute(self) -> list[Node]:
        """The compute nodes (group `compute`); an inventory without that group means all of its nodes."""
        chosen = [node for node in self.nodes if COMPUTE_GROUP in node.groups]
        return chosen or list(self.nodes)

    def select(self, patterns: Sequence[str]) -> list[Node]:
        """The nodes matching Ansible host patterns, with `node[0-3]` ranges expanded; empty selects compute.

        A pattern that matches nothing is an error naming it, so a typo never silently shrinks a command."""
        if not patterns:
            return self.compute
        chosen: dict[str, Node] = {}
        unmatched: list[str] = []
        for pattern in patterns:
            for item in (name for part in pattern.split(",") if part for name in expand(part)):
                matched = self._match(item)
                chosen.update((node.name, node) for node in matched)
                unmatched += [] if matched else [item]
        if unmatched:
            raise BadInput(
                f"{self.where}: {', '.join(map(repr, unmatched))} match(es) no node (known: {', '.join(self.names)})"
            )
        return [node for node in self.nodes if node.name in chosen]

    def _match(self, pattern: str) -> list[Node]:
        if self.manager is None:  # the embedded default: names and the group
            return [n for n in self.nodes if pattern in (n.name, "all", *n.groups)]
        chatter = io.StringIO()
        with contextlib.redirect_stderr(chatter), contextlib.redirect_stdout(chatter):
            names = {host.name for host in self.manager.get_hosts(pattern)}
        return [node for node in self.nodes if node.name in names]

"""What Slurm says of each node (`sinfo --json`): its state as `sinfo -o %T` words it, why it is down or drained,
and its CPUs, memory, load and GRES, for `cluster compute status`, the sweep's check before it submits, and the
node list of a cluster with no inventory (`Settings.nodes_from_slurm`), shown without ssh."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cockpit.jobs.slurm import run_slurm_json, slurm_number

USABLE_STATES = frozenset({"idle", "mixed", "allocated", "completing"})
BASE_STATES = frozenset({"IDLE", "MIXED", "ALLOCATED", "DOWN", "ERROR", "FUTURE", "UNKNOWN"})  # 23.02+'s list


@dataclass(frozen=True)
class SlurmNode:
    """One node as slurmctld sees it."""

    name: str
    state: str  # the base state: idle, mixed, allocated, down, future, unknown...
    flags: tuple[str, ...] = ()  # DRAIN, NOT_RESPONDING, COMPLETING, ... (22.05's state_flags)
    reason: str = ""  # why it is down or drained, as whoever set it wrote it
    partitions: tuple[str, ...] = ()
    cpus: int | None = None
    alloc_cpus: int | None = None
    memory_mib: int | None = None  # RealMemory
    free_memory_mib: int | None = None  # what slurmd last read of the node's free memory
    cpu_load: float | None = None  # the node's load average, as slurmd last read it
    gres: str = ""  # "gpu:2", as slurm.conf configures it

    @property
    def memory_used_mib(self) -> int | None:
        if self.memory_mib is None or self.free_memory_mib is None:
            return None
        return self.memory_mib - self.free_memory_mib

    @property
    def label(self) -> str:
        """The state as `sinfo -o %T` prints it: drained or draining for a drain, a `*` when it does not answer."""
        word = self.state
        if "DRAIN" in self.flags:
            word = "drained" if self.state in ("idle", "down") else "draining"
        return word + ("*" if "NOT_RESPONDING" in self.flags else "")

    @property
    def usable(self) -> bool:
        """Whether a job can start on it (now or once its running jobs end)."""
        return self.state in USABLE_STATES and not {"DRAIN", "NOT_RESPONDING"} & set(self.flags)

    @property
    def silent(self) -> bool:
        """Whether slurmctld cannot hear its slurmd: then the node's own log says why (cockpit.nodes.slurmd_log)."""
        return "NOT_RESPONDING" in self.flags or self.state in ("down", "unknown")

    def describe(self) -> str:
        return f"{self.label} ({self.reason})" if self.reason else self.label


def _state(node: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    """22.05 gives `state` a word and `state_flags` a list; 23.02+ gives `state` a list, base state first."""
    state = node.get("state")
    if isinstance(state, list):
        base = next((s for s in state if s in BASE_STATES), state[0] if state else "UNKNOWN")
        return base.lower(), tuple(s for s in state if s != base)
    return str(state or "unknown").lower(), tuple(node.get("state_flags") or ())


def _known(value: Any) -> int | None:
    """A node figure; None where Slurm has none (22.05 writes NO_VAL, 0xfffffffe, for a node it cannot hear)."""
    number = slurm_number(value)
    return None if number is None or number < 0 or number >= 0xFFFFFFFE else number


def nodes_from_sinfo(data: Mapping[str, Any]) -> dict[str, SlurmNode]:
    """Each node of `sinfo --json` once (it lists a node per partition)."""
    nodes: dict[str, SlurmNode] = {}
    for node in data.get("nodes") or ():
        state, flags = _state(node)
        reason, partitions = (node.get("reason") or "").strip(), tuple(node.get("partitions") or ())
        load = _known(node.get("cpu_load"))  # in hundredths
        nodes[node["name"]] = SlurmNode(
            node["name"],
            state,
            flags,
            reason,
            partitions,
            cpus=_known(node.get("cpus")),
            alloc_cpus=_known(node.get("alloc_cpus")),
            memory_mib=_known(node.get("real_memory")),
            free_memory_mib=_known(node.get("free_mem", node.get("free_memory"))),  # 23.02+ renamed it
            cpu_load=None if load is None else load / 100,
            gres="" if node.get("gres") in (None, "(null)") else str(node["gres"]),
        )
    return nodes


def nodes_named(known: Mapping[str, SlurmNode], names: Iterable[str]) -> dict[str, SlurmNode]:
    """Each of `names` as Slurm knows it; one that slurm.conf does not list takes no job and is said so."""
    return {name: known.get(name, SlurmNode(name, "not in slurm.conf")) for name in names}


def partition_nodes(nodes: Mapping[str, SlurmNode], partition: str | None) -> list[SlurmNode]:
    """The nodes a job in `partition` may run on (every node when no partition is named)."""
    return [node for node in nodes.values() if partition is None or partition in node.partitions]


def slurm_nodes(timeout_s: float = 10.0) -> dict[str, SlurmNode]:
    """What slurmctld says of every node now; a JobError naming the command when it does not answer."""
    return nodes_from_sinfo(run_slurm_json(["sinfo", "--json"], "sinfo", timeout_s))

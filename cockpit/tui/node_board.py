"""The nodes table's model: per node the last good telemetry, when it last answered, each GPU's readings of the
last minutes (the table's utilisation sparkline, the node view's plots), its recent probe failures, the state the
user's own actions imply (waking after a wake, off after a shutdown), where a runtime delivery is configured the
build each node runs against the one built here, a mark where a node lacks the model a sweep needs there (as the
model's push record says: cockpit.delivery.model), and after the nodes a row for each DHCP lease whose MAC is no
node's (cockpit.nodes.leases). Where the nodes come from Slurm alone (no inventory, no probe), a node is up while
its slurmd answers, and its row shows what sinfo says: load, memory, CPUs in use and GRES.
Headless (rich only), so it is tested without a screen and fed fake samples by the benchmarks."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Literal

from rich.text import Text

from cockpit.nodes.leases import UNKNOWN, Lease
from cockpit.nodes.telemetry import GpuTelemetry, NodeSample, NodeTelemetry, fixed, gib_pair, gpu_label

if TYPE_CHECKING:
    from cockpit.jobs.slurm_nodes import SlurmNode

# failing: it answers ssh, but its probe fails or says something that is not telemetry
NodeState = Literal["unknown", "up", "failing", "unreachable", "waking", "off"]
Expectation = Literal["waking", "off"]
COLUMNS = ("node", "state", "rtt ms", "load", "mem GiB", "gpu", "util %", "gpu mem GiB", "temp °C", "power W")
NODE_COLUMNS = 5  # the node's own columns come first; the runtime column, when shown, follows them
STATE_STYLE = {
    "up": "green",
    "failing": "bold magenta",
    "unreachable": "bold red",
    "waking": "yellow",
    "off": "dim",
    "unknown": "dim",
}
SPARK = "▁▂▃▄▅▆▇█"
HISTORY = 180  # polls kept per GPU: six minutes at the default 2 s
FAILURES = 5  # probe failures kept per node (a repeat of the latest one counts there)


def sparkline(values: Sequence[float], width: int = 12) -> str:
    """The last `width` percentages as block characters (0-100 scale, so bars compare across GPUs)."""
    recent = list(values)[-width:]
    return "".join(SPARK[min(len(SPARK) - 1, int(max(0.0, v) / 100 * len(SPARK)))] for v in recent)


@dataclass
class Failure:
    """A node's probe failure (no answer, or no telemetry in it), and how often it came again in a row since."""

    error: str
    first_at: float
    last_at: float
    times: int = 1


class NodeBoard:
    """What the nodes table shows, built from samples as they come."""

    def __init__(
        self,
        names: Sequence[str],
        history: int = HISTORY,
        clock: Callable[[], float] = time.monotonic,
        runtime: bool = False,
    ) -> None:
        self.names = list(names)
        self.clock = clock
        self.history = history
        self.last: dict[str, NodeSample] = {}
        self.good: dict[str, NodeTelemetry] = {}
        self.seen_at: dict[str, float] = {}
        self.trace: dict[tuple[str, int], deque[tuple[float, GpuTelemetry]]] = {}  # (node, GPU) -> (when, readings)
        self.failures: dict[str, deque[Failure]] = {}  # the latest last
        self.expected: dict[str, Expectation] = {}
        self.marked: set[str] = set()  # nodes the user picked for the next action
        self.runtime = runtime  # a runtime column: each node's build, marked where it is not the one built here
        self.control_build: str | None = None  # the build built here, that the nodes should run
        self.control_build_read = False  # whether control_build is known yet (None is an answer: nothing built)
        self.model_gaps: dict[str, str] = {}  # node -> why it lacks the model ("model differs"); none: it has it
        self.unknown_hosts: list[Lease] = []  # leases on the compute network whose MAC is no inventory node's
        self.lease_error: str | None = None  # why the lease file could not be read

    @property
    def columns(self) -> tuple[str, ...]:
        """The table's columns: COLUMNS, with "runtime" after the node's own where the runtime is shown."""
        if not self.runtime:
            return COLUMNS
        return (*COLUMNS[:NODE_COLUMNS], "runtime", *COLUMNS[NODE_COLUMNS:])

    def ingest(self, samples: Sequence[NodeSample]) -> None:
        """Take one poll's samples; a node that answers is no longer waking."""
        now = self.clock()
        for sample in samples:
            self.last[sample.name] = sample
            if sample.telemetry is None:
                self._failed(sample.name, sample.error or "no telemetry", now)
                continue
            self.good[sample.name] = sample.telemetry
            self.seen_at[sample.name] = now
            if self.expected.get(sample.name) == "waking":
                del self.expected[sample.name]
            for gpu in sample.telemetry.gpus:
                self.trace.setdefault((sample.name, gpu.index), deque(maxlen=self.history)).append((now, gpu))

    def _failed(self, name: str, error: str, now: float) -> None:
        failures = self.failures.setdefault(name, deque(maxlen=FAILURES))
        if failures and failures[-1].error == error:
            failures[-1].last_at, failures[-1].times = now, failures[-1].times + 1
        else:
            failures.append(Failure(error, now, now))

    def recent_util(self, node: str, index: int, polls: int = 12) -> list[float]:
        """The GPU's utilisation in the last `polls` polls, oldest first (polls that had none left out)."""
        recent = islice(reversed(self.trace.get((node, index), ())), polls)
        return [gpu.util_pct for _, gpu in recent if gpu.util_pct is not None][::-1]

    def set_control_build(self, build_id: str | None) -> None:
        """The build the nodes should run (the one built here); None when nothing is built here."""
        self.control_build, self.control_build_read = build_id, True

    def set_model_gaps(self, gaps: Mapping[str, str]) -> None:
        """The nodes that lack the model a sweep needs on them, each with a few words why."""
        self.model_gaps = dict(gaps)

    def set_unknown_hosts(self, leases: Sequence[Lease], error: str | None = None) -> None:
        """The leases whose MAC is no node's, and why the latest read of the lease file failed (None: it did not)."""
        self.unknown_hosts, self.lease_error = list(leases), error

    def expect(self, names: Sequence[str], state: Expectation) -> None:
        """After a wake or a shutdown: the node is waking (or off) rather than unreachable, until it answers."""
        self.expected.update((name, state) for name in names)

    def toggle_mark(self, name: str) -> None:
        """Pick a node for the next action, or put it back."""
        self.marked ^= {name}

    def state(self, name: str) -> NodeState:
        sample = self.last.get(name)
        if sample is None:
            return self.expected.get(name, "unknown")
        if sample.telemetry is not None or (sample.slurm is not None and not sample.slurm.silent):
            return "up"
        return self.expected.get(name, "unreachable" if sample.rtt_ms is None else "failing")

    def problems(self) -> list[tuple[str, str]]:
        """(node, why) for every node whose latest poll failed, that Slurm runs no job on, or that lacks the model,
        in inventory order."""
        out = []
        for name in self.names:
            sample = self.last.get(name)
            if sample is not None and sample.telemetry is None and sample.slurm is None:
                out.append((name, (sample.error or "no telemetry").removeprefix(f"{name}: ")))
            elif sample is not None and sample.slurm_problem:
                out.append((name, f"Slurm: {sample.slurm_problem}"))
            if name in self.model_gaps:
                out.append((name, self.model_gaps[name]))
        return out + ([("leases", self.lease_error.removeprefix("leases: "))] if self.lease_error else [])

    def state_cell(self, name: str) -> Text:
        """The node's state, how long since it last answered where it does not now, and Slurm's and the model's
        marks."""
        state = self.state(name)
        text = Text(state, style=STATE_STYLE[state])
        if state != "up" and name in self.seen_at:
            text.append(f" ⚠ {self.clock() - self.seen_at[name]:.0f} s", style="yellow")
        sample = self.last.get(name)
        if sample is not None and sample.slurm_problem:  # up, but no job runs there: drained, down...
            text.append(f" · {sample.slurm_problem.split(' (', 1)[0]}", style="bold yellow")
        if name in self.model_gaps:  # a sweep would refuse to start on it
            text.append(f" · {self.model_gaps[name]}", style="bold yellow")
        return text

    def counts(self) -> dict[NodeState, int]:
        """How many nodes are in each state (for the panel title)."""
        out: dict[NodeState, int] = {}
        for name in self.names:
            out[self.state(name)] = out.get(self.state(name), 0) + 1
        return out

    def rows(self) -> list[tuple[str, tuple[str | Text, ...]]]:
        """Keyed rows: one per GPU (`node/0`, `node/1`), or one per node without GPUs (`node/-`). The node's own
        columns fill its first row only; values of a node that stopped answering stay, dimmed."""
        out: list[tuple[str, tuple[str | Text, ...]]] = []
        for name in self.names:
            telemetry = self.good.get(name)
            sample = self.last.get(name)
            if sample is not None and sample.slurm is not None:
                out.append((f"{name}/-", self._slurm_cells(name, sample.slurm)))
                continue
            fresh = sample is not None and sample.telemetry is not None
            style = "" if fresh else "dim"
            node_cells: tuple[str | Text, ...] = (
                Text(name, style="bold reverse yellow" if name in self.marked else "bold"),
                self.state_cell(name),
                Text(fixed(sample.rtt_ms if fresh and sample else None), style=style),
                Text(fixed(telemetry.load[0], 2) if telemetry and telemetry.load else "-", style=style),
                Text(
                    gib_pair(telemetry.memory_used_mib, telemetry.memory_total_mib) if telemetry else "-", style=style
                ),
            )
            if self.runtime:
                node_cells = (*node_cells, self._runtime_cell(telemetry, style))
            gpus: Sequence[GpuTelemetry | None] = (telemetry.gpus if telemetry else ()) or (None,)
            for i, gpu in enumerate(gpus):
                lead = node_cells if i == 0 else ("",) * len(node_cells)
                key = f"{name}/{'-' if gpu is None else gpu.index}"
                out.append((key, (*lead, *self._gpu_cells(name, gpu, style))))
        return out + [(f"lease {lease.mac}", self._unknown_host_cells(lease)) for lease in self.unknown_hosts]

    def _slurm_cells(self, name: str, node: SlurmNode) -> tuple[str | Text, ...]:
        """A node sinfo lists: its load and memory as slurmd reads them, and in the gpu column its CPUs in use and
        its GRES; no rtt, runtime or GPU readings (those come from a probe over ssh)."""
        dim = Text("-", style="dim")
        cells: list[str | Text] = [
            Text(name, style="bold reverse yellow" if name in self.marked else "bold"),
            self.state_cell(name),
            dim,
            Text(fixed(node.cpu_load, 2)),
            Text(gib_pair(node.memory_used_mib, node.memory_mib)),
        ]
        cpus = f"{fixed(node.alloc_cpus)}/{fixed(node.cpus)} CPUs"
        cells += [dim] * self.runtime + [Text(f"{cpus} · {node.gres or 'no GRES'}")] + [dim] * 4
        return tuple(cells)

    def _unknown_host_cells(self, lease: Lease) -> tuple[Text, ...]:
        """MAC, the words, and address and DHCP name in the wide gpu column; "-" elsewhere."""
        cells = [Text(lease.mac, style="bold"), Text(UNKNOWN, style="yellow")]
        cells += [Text("-", style="dim") for _ in self.columns[2:]]
        cells[self.columns.index("gpu")] = Text(f"{lease.address} · DHCP name {lease.hostname or '-'}")
        return tuple(cells)

    def _runtime_cell(self, telemetry: NodeTelemetry | None, style: str) -> Text:
        """The node's build id ("missing" or "unreadable" without one), with ≠ where it is not the build made
        here, or a note that nothing is built here to compare with."""
        installed = telemetry.runtime if telemetry else None
        if installed is None:  # never answered, or not asked
            return Text("-", style=style)
        shown = installed.build_id or ("missing" if installed.missing else "unreadable")
        text = Text(shown, style=style)
        if not self.control_build_read:
            return text
        if self.control_build is None:
            text.append(" · none built here", style="yellow")
        elif installed.build_id != self.control_build:
            text.append(" ≠", style="bold yellow")
        return text

    def _gpu_cells(self, node: str, gpu: GpuTelemetry | None, style: str) -> tuple[Text, ...]:
        if gpu is None:
            return tuple(Text("-", style="dim") for _ in range(5))
        util = fixed(gpu.util_pct)
        spark = sparkline(self.recent_util(node, gpu.index))
        return (
            Text(gpu_label(gpu), style=style),
            Text(f"{util:>3} {spark}", style=style),
            Text(gib_pair(gpu.memory_used_mib, gpu.memory_total_mib), style=style),
            Text(fixed(gpu.temperature_c), style=style),
            Text(fixed(gpu.power_w), style=style),
        )

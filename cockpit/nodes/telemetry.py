"""Node telemetry on the control node: the probe to send, its answer checked, and a table of it.

One ssh round trip per node: run `probe_command()` there with `probe_source()` on stdin; the probe prints one JSON
object (uptime, load, memory, per GPU its readings, and when asked the runtime build installed there) that
`parse_probe` turns into a `NodeTelemetry`. What a device does not expose stays None all the way to the table, where
it shows as "-"; a GPU's `unknown` says why, reading by reading.
"""

from __future__ import annotations

import functools
import json
import math
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from cockpit.nodes.inventory import Node
from cockpit.nodes.probe_script import GPU_FIELDS, NO_BUILD, PROBE_VERSION
from cockpit.nodes.ssh import SshPool

if TYPE_CHECKING:
    from cockpit.jobs.slurm_nodes import SlurmNode

PROBE_COMMAND = "python3 -"  # the probe's source goes on stdin: nothing is copied to or left on the node
EXCERPT_CHARS = 200
_TRADEMARKS = re.compile(r"\((R|TM)\)")  # "Intel(R) Arc(TM) A770 Graphics" fits the table as "Intel Arc A770 Graphics"
COLUMNS = ("node", "up", "load", "mem used/total", "gpu", "util %", "mem", "temp °C", "power W", "energy")


class ProbeError(Exception):
    """A node's probe answered with something that is not a probe report."""

    def __init__(self, host: str, message: str) -> None:
        super().__init__(f"{host}: {message}")
        self.host = host
        self.message = message


@dataclass(frozen=True)
class GpuTelemetry:
    """One GPU's readings; None where the device or its tool does not expose the value."""

    index: int
    vendor: str  # "nvidia", "intel", "amd"
    name: str | None
    source: str  # "nvidia-smi", "xpu-smi", "rocm-smi" or "sysfs"
    pci_bus_id: str | None
    util_pct: float | None
    memory_used_mib: float | None
    memory_total_mib: float | None
    temperature_c: float | None
    power_w: float | None
    energy_j: float | None  # a counter (since the driver loaded, or boot): differences give energy used
    unknown: tuple[tuple[str, str], ...] = ()  # (reading, why it is None), e.g. ("util_pct", "the ... driver ...")

    def why_unknown(self, field: str) -> str | None:
        """Why `field` (one of GPU_FIELDS) has no reading; None when it has one or no reason was given."""
        return dict(self.unknown).get(field)


@dataclass(frozen=True)
class RuntimeBuild:
    """The runtime build a node has installed, from its manifest; `build_id` None and `error` why when it has none."""

    build_id: str | None
    device: str | None  # "cpu", "cuda", "xpu"
    error: str | None  # "no build installed", or why the manifest could not be read

    @property
    def missing(self) -> bool:
        """No build is installed there (rather than one whose manifest could not be read)."""
        return self.error == NO_BUILD


@dataclass(frozen=True)
class NodeTelemetry:
    """One node's report. `errors` names the sources that failed; the rest of the report still holds."""

    hostname: str
    uptime_s: float | None
    load: tuple[float, float, float] | None
    cpu_count: int | None
    memory_total_mib: float | None
    memory_available_mib: float | None
    gpus: tuple[GpuTelemetry, ...]
    errors: tuple[str, ...]
    runtime: RuntimeBuild | None = None  # None: the probe was not asked (no runtime delivery configured)

    @property
    def memory_used_mib(self) -> float | None:
        """Total minus available; None unless the node reported both."""
        if self.memory_total_mib is None or self.memory_available_mib is None:
            return None
        return self.memory_total_mib - self.memory_available_mib


@dataclass(frozen=True)
class NodeSample:
    """One probe's outcome for one node: its telemetry, or why there is none; `rtt_ms` when it answered."""

    name: str
    telemetry: NodeTelemetry | None
    error: str | None
    rtt_ms: float | None
    slurm_problem: str | None = None  # why Slurm runs no job on it ("drained (fan failed)"); None: it does, or no Slurm
    slurm: SlurmNode | None = None  # what slurmctld says of it, where Slurm is the only source (no inventory, no ssh)


@functools.cache
def probe_source() -> str:
    """The probe script's text, to send as stdin to `probe_command()`."""
    return resources.files("cockpit.nodes").joinpath("probe_script.py").read_text(encoding="utf-8")


def probe_command(manifest: str | None = None) -> str:
    """The command that runs the probe on a node; with `manifest` (a path there) it also reports the runtime build
    whose manifest that is."""
    if manifest is None:
        return PROBE_COMMAND
    return f"COCKPIT_RUNTIME_MANIFEST={shlex.quote(manifest)} {PROBE_COMMAND}"


class _Bad(Exception):
    """A report field of the wrong type or shape, named by its path."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: object) -> bool:
    return type(value) is int


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _field(obj: dict[str, Any], key: str, where: str, ok: Callable[[object], bool], what: str, null: bool) -> Any:
    """obj[key] once it passes `ok` (or is None, where `null` allows); _Bad naming `where` + `key` otherwise."""
    value = obj.get(key)
    if key not in obj or not ((null and value is None) or (value is not None and ok(value))):
        got = "nothing" if key not in obj else f"{value!r:.40}"
        raise _Bad(f"{where}{key}: expected {what}{' or null' if null else ''}, got {got}")
    return value


def _reading(obj: dict[str, Any], key: str, where: str) -> float | None:
    value = _field(obj, key, where, _is_number, "a number", null=True)
    return None if value is None else float(value)


def _is_reasons(value: object) -> bool:
    return isinstance(value, dict) and all(key in GPU_FIELDS and _is_str(why) for key, why in value.items())


def _gpu(obj: dict[str, Any], where: str) -> GpuTelemetry:
    readings = {key: _reading(obj, key, where) for key in GPU_FIELDS}
    # Optional: reports recorded before the probe gave reasons have none.
    unknown = _field(obj, "unknown", where, _is_reasons, "readings and reasons", null=True) if "unknown" in obj else {}
    return GpuTelemetry(
        index=_field(obj, "index", where, _is_int, "an integer", null=False),
        vendor=_field(obj, "vendor", where, _is_str, "a string", null=False),
        name=_field(obj, "name", where, _is_str, "a string", null=True),
        source=_field(obj, "source", where, _is_str, "a string", null=False),
        pci_bus_id=_field(obj, "pci_bus_id", where, _is_str, "a string", null=True),
        **readings,
        unknown=tuple((unknown or {}).items()),
    )


def _runtime(obj: dict[str, Any], where: str) -> RuntimeBuild:
    return RuntimeBuild(
        build_id=_field(obj, "build_id", where, _is_str, "a string", null=True),
        device=_field(obj, "device", where, _is_str, "a string", null=True),
        error=_field(obj, "error", where, _is_str, "a string", null=True),
    )


def _is_object(value: object) -> bool:
    return isinstance(value, dict)


def _is_load(value: object) -> bool:
    return isinstance(value, list) and len(value) == 3 and all(map(_is_number, value))


def _is_objects(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


def _is_strings(value: object) -> bool:
    return isinstance(value, list) and all(map(_is_str, value))


def _node(data: dict[str, Any]) -> NodeTelemetry:
    load = _field(data, "load", "", _is_load, "3 numbers", null=True)
    gpus = _field(data, "gpus", "", _is_objects, "a list of objects", null=False)
    errors = _field(data, "errors", "", _is_strings, "a list of strings", null=False)
    runtime = _field(data, "runtime", "", _is_object, "an object", null=True)
    return NodeTelemetry(
        hostname=_field(data, "hostname", "", _is_str, "a string", null=False),
        uptime_s=_reading(data, "uptime_s", ""),
        load=None if load is None else (float(load[0]), float(load[1]), float(load[2])),
        cpu_count=_field(data, "cpu_count", "", _is_int, "an integer", null=True),
        memory_total_mib=_reading(data, "memory_total_mib", ""),
        memory_available_mib=_reading(data, "memory_available_mib", ""),
        gpus=tuple(_gpu(gpu, f"gpus[{i}].") for i, gpu in enumerate(gpus)),
        errors=tuple(errors),
        runtime=None if runtime is None else _runtime(runtime, "runtime."),
    )


def parse_probe(text: str, host: str) -> NodeTelemetry:
    """The probe's stdout from `host` as a NodeTelemetry; ProbeError (host, problem, the output's start) if it is
    not JSON, comes from another probe version or has a field of the wrong type."""
    excerpt = f"{text[:EXCERPT_CHARS]!r}" + (" ..." if len(text) > EXCERPT_CHARS else "")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ProbeError(host, f"probe output is not JSON ({err.msg}): {excerpt}") from None
    if not isinstance(data, dict):
        raise ProbeError(host, f"probe output is not a JSON object: {excerpt}")
    version = data.get("probe")
    if type(version) is not int or version != PROBE_VERSION:
        raise ProbeError(host, f"probe version {version!r}, expected {PROBE_VERSION}: {excerpt}")
    try:
        return _node(data)
    except _Bad as err:
        raise ProbeError(host, f"bad probe report, {err}: {excerpt}") from None


def telemetry_to_json(t: NodeTelemetry) -> dict[str, Any]:
    """The report as plain JSON data, in the probe's own format (parse_probe reads it back)."""
    plain = asdict(t)
    plain["load"] = None if t.load is None else list(t.load)
    plain["gpus"] = [asdict(gpu) | {"unknown": dict(gpu.unknown)} for gpu in t.gpus]
    plain["errors"] = list(t.errors)
    return {"probe": PROBE_VERSION, **plain}


async def probe_nodes(pool: SshPool, nodes: Sequence[Node], manifest: str | None = None) -> list[NodeSample]:
    """The probe on every node at once, one ssh round trip each; a node that fails or answers garbage is a sample
    with its reason, never an exception. With `manifest`, each also reports the runtime build installed there."""
    samples = []
    for result in await pool.run_all(nodes, probe_command(manifest), input=probe_source()):
        rtt = result.elapsed_s * 1000
        if not result.ok:  # no connection (no round trip to show), or the probe failed there
            reason = result.error or f"probe exit {result.exit_status}: {result.stderr.strip()[-EXCERPT_CHARS:]}"
            samples.append(NodeSample(result.node, None, reason, None if result.error else rtt))
            continue
        try:
            samples.append(NodeSample(result.node, parse_probe(result.stdout, result.node), None, rtt))
        except ProbeError as err:
            samples.append(NodeSample(result.node, None, str(err), rtt))
    return samples


def fixed(value: float | None, digits: int = 0) -> str:
    """A reading with `digits` decimals, "-" when the device does not expose it."""
    return "-" if value is None else f"{value:.{digits}f}"


def gib_pair(used_mib: float | None, total_mib: float | None) -> str:
    """`used/total` in GiB with one decimal, "-" when neither is known."""
    if used_mib is None and total_mib is None:
        return "-"
    used, total = (None if mib is None else mib / 1024 for mib in (used_mib, total_mib))
    return f"{fixed(used, 1)}/{fixed(total, 1)}"


def gpu_name(gpu: GpuTelemetry) -> str:
    """`Intel Arc A770 Graphics`: the GPU's name (its vendor without one), trademarks dropped."""
    return _TRADEMARKS.sub("", gpu.name or gpu.vendor)


def gpu_label(gpu: GpuTelemetry) -> str:
    """`0 Intel Arc A770 Graphics`: index and name, so it fits a column."""
    return f"{gpu.index} {gpu_name(gpu)}"


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, hours, days = int(seconds // 60), int(seconds // 3600), int(seconds // 86400)
    if days:
        return f"{days}d {hours % 24}h"
    if hours:
        return f"{hours}h {minutes % 60}m"
    return f"{minutes}m" if minutes else f"{int(seconds)}s"


def _gib(used: float | None, total: float | None) -> str:
    pair = gib_pair(used, total)
    return pair if pair == "-" else f"{pair} GiB"


def _energy(joules: float | None) -> str:
    if joules is None:
        return "-"
    for scale, unit in ((1e9, "GJ"), (1e6, "MJ"), (1e3, "kJ")):
        if joules >= scale:
            return f"{joules / scale:.2f} {unit}"
    return f"{joules:.0f} J"


def _gpu_cells(gpu: GpuTelemetry | None) -> list[str]:
    if gpu is None:
        return ["-"] * 6
    return [
        gpu_label(gpu),
        fixed(gpu.util_pct),
        _gib(gpu.memory_used_mib, gpu.memory_total_mib),
        fixed(gpu.temperature_c),
        fixed(gpu.power_w, 1),
        _energy(gpu.energy_j),
    ]


def telemetry_table(rows: Sequence[tuple[str, NodeTelemetry | str]]) -> Table:
    """One row per GPU, the node's own columns on its first row only; a node without GPUs one row with "-" for
    the GPU columns; a node whose probe failed (its error message in place of telemetry) one row with the error
    in red, in the wide gpu column."""
    table = Table()
    for header in COLUMNS:
        # Only the gpu column wraps (long names, errors); the readings stay on one line each.
        table.add_column(header, justify="left" if header in ("node", "gpu") else "right", no_wrap=header != "gpu")
    for name, result in rows:
        if isinstance(result, str):
            table.add_row(name, "", "", "", Text(result, style="red"))
            continue
        load = "-" if result.load is None else " ".join(f"{x:.2f}" for x in result.load)
        node_cells = [name, _uptime(result.uptime_s), load, _gib(result.memory_used_mib, result.memory_total_mib)]
        for i, gpu in enumerate(result.gpus or (None,)):
            table.add_row(*(node_cells if i == 0 else [""] * len(node_cells)), *_gpu_cells(gpu))
    return table

"""The node telemetry probe: one JSON object on stdout, whatever the node has or lacks.

The control node sends this file over ssh as stdin to `python3 -` (one round trip per node), so it is one
self-contained script: standard library only, Python 3.8 or newer, nothing from the cockpit. Every source
stands alone: one that fails adds a short line to "errors" and the others still report. A field a device does
not expose is null, never a guess, and a GPU's "unknown" says why (reading -> reason). GPUs come from `nvidia-smi`,
`xpu-smi` and `rocm-smi` (or `amdgpu_top -J` where rocm-smi is missing), then from sysfs for any card no vendor tool
reported: amdgpu's `gpu_busy_percent` and `mem_info_vram_*`; for Intel's i915 and xe, which have neither, engine
busyness and local memory from the DRM fdinfo of the processes using the card (two samples FDINFO_INTERVAL_S apart,
as nvtop and qmassa do; only processes the probe's user may read, all of them as root) and xe's per-tile VRAM size;
and temperature, power and energy from the card's hwmon (power from the energy counter over the same interval where
the driver gives no power reading).

With COCKPIT_RUNTIME_MANIFEST set (the path of the node's installed runtime build manifest), the report's
"runtime" names the build installed there: its build_id and device, or build_id null and why; null when unset.

For tests: COCKPIT_PROBE_PATH is where the tools are looked up (default: $PATH and /opt/rocm/bin),
COCKPIT_PROBE_SYSFS the sysfs root (default: /sys), COCKPIT_PROBE_PROC the procfs root (default: /proc),
COCKPIT_PROBE_TIMEOUT_S the limit per tool call (default: 5).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PROBE_VERSION = 2
GPU_FIELDS = ("util_pct", "memory_used_mib", "memory_total_mib", "temperature_c", "power_w", "energy_j")
PCI_VENDORS = {"0x10de": "nvidia", "0x8086": "intel", "0x1002": "amd"}
MIB = 1024 * 1024
NUMBER = re.compile(r"[-+]?\d+(\.\d+)?")

# The last field is an energy counter in mJ since the driver loaded; older drivers reject any query that names it.
NVIDIA_QUERY = (
    "index",
    "name",
    "pci.bus_id",
    "utilization.gpu",
    "memory.used",
    "memory.total",
    "temperature.gpu",
    "power.draw",
    "total_energy_consumption",
)
# `xpu-smi discovery --dump` property ids: 1 Device ID, 2 Device Name, 11 PCI BDF Address, 16 Memory Physical Size
# (older releases number some properties differently, so columns are read by their header names).
XPU_PROPERTIES = "1,2,11,16"
# `xpu-smi dump --metrics` ids: utilization, power, core temperature, energy, memory used. Their columns are named
# "GPU Utilization (%)"... by xpu-smi 1.x and by field, "utilization.gpu (%)"..., by 2.x; units vary by release.
XPU_METRIC_IDS = "0,1,3,8,18"
XPU_METRICS = {
    "GPU Utilization": "util_pct",
    "GPU Power": "power_w",
    "GPU Core Temperature": "temperature_c",
    "GPU Energy Consumed": "energy_j",
    "GPU Memory Used": "memory_used_mib",
    "utilization.gpu": "util_pct",
    "power.draw": "power_w",
    "temperature.gpu": "temperature_c",
    "energy.consumed": "energy_j",
    "memory.used": "memory_used_mib",
}
NO_BUILD = "no build installed"  # the runtime's error when its manifest is not there
# `amdgpu_top` JSON mode: one sample (-n 1) over a short refresh period (-s, ms); its default period is a second.
AMDGPU_TOP_ARGS = ("-J", "-n", "1", "-s", "200")
FDINFO_INTERVAL_S = 0.15  # between the two DRM fdinfo samples: long enough to see engine time, short for the probe
FDINFO_SIZE = re.compile(r"(\d+)\s*(KiB|MiB|GiB)?$")
SIZE_UNITS = {None: 1, "KiB": 1024, "MiB": MIB, "GiB": 1024 * MIB}
# Device-local memory regions in fdinfo: i915 names them local0, local1...; xe vram0, vram1...
LOCAL_REGION = re.compile(r"drm-resident-(local|vram)\d+$")
ROCM_ARGS = ("--showuse", "--showmeminfo", "vram", "--showtemp", "--showpower", "--showproductname", "--showbus")


class ToolError(Exception):
    """A tool that is installed but failed or hung; `output` is what it printed."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


def short(text: str, limit: int = 160) -> str:
    """The first non-empty line of `text`, cut to `limit` characters: enough to name a failure."""
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def number(text: str | None, scale: float = 1.0) -> float | None:
    """The reading at the start of `text` times `scale`; None for "N/A", "[Not Supported]", "" and the like."""
    match = NUMBER.match(text.strip()) if text is not None else None
    return None if match is None else round(float(match.group()) * scale, 3)


def bus_id(text: str | None) -> str | None:
    """A PCI address as sysfs writes it (0000:03:00.0), from nvidia-smi's 00000000:03:00.0 or an upper-case one."""
    parts = (text or "").strip().lower().split(":")
    if len(parts) == 2:
        parts.insert(0, "0")
    if len(parts) != 3 or not parts[2]:
        return None
    try:
        return f"{int(parts[0], 16):04x}:{parts[1]}:{parts[2]}"
    except ValueError:
        return None


def new_gpu(index: int, vendor: str, name: str | None, source: str, pci_bus_id: str | None) -> dict[str, Any]:
    """A GPU entry with every reading null until a source fills it."""
    readings = dict.fromkeys(GPU_FIELDS)
    gpu = {"index": index, "vendor": vendor, "name": name, "source": source, "pci_bus_id": pci_bus_id, **readings}
    return {**gpu, "unknown": {}}


def explain(gpu: dict[str, Any], reason: str, *fields: str) -> None:
    """Say why each of `fields` that is still null is not known (a reason already given stays)."""
    for field in fields:
        if gpu[field] is None:
            gpu["unknown"].setdefault(field, reason)


def run_tool(argv: list[str]) -> str | None:
    """The tool's stdout; None when it is not installed. ToolError when it exits non-zero or hangs."""
    search = os.environ.get("COCKPIT_PROBE_PATH") or os.environ.get("PATH", os.defpath) + os.pathsep + "/opt/rocm/bin"
    exe = shutil.which(argv[0], path=search)
    if exe is None:
        return None
    timeout = float(os.environ.get("COCKPIT_PROBE_TIMEOUT_S", "5"))
    proc = subprocess.Popen(
        [exe, *argv[1:]],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, LC_ALL="C"),
        encoding="utf-8",
        errors="replace",
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # The whole session: a tool stuck in the driver often hangs in a child, which would keep the pipes open.
        os.killpg(proc.pid, signal.SIGKILL)
        raise ToolError(f"no answer in {timeout:g} s") from None
    if proc.returncode != 0:
        raise ToolError(f"exit {proc.returncode}: {short(err) or short(out) or 'no output'}", out + err)
    return out


def parse_nvidia_smi(text: str, fields: tuple[str, ...] = NVIDIA_QUERY) -> list[dict[str, Any]]:
    """GPUs from `nvidia-smi --query-gpu=<fields> --format=csv,noheader,nounits`."""
    gpus = []
    for row in csv.reader(io.StringIO(text), skipinitialspace=True):
        if not row:
            continue
        if len(row) != len(fields):
            raise ValueError(f"expected {len(fields)} columns, got {len(row)}: {short(','.join(row))}")
        values = columns(fields, row)
        gpu = new_gpu(
            int(values["index"]), "nvidia", values["name"] or None, "nvidia-smi", bus_id(values["pci.bus_id"])
        )
        gpu["util_pct"] = number(values["utilization.gpu"])
        gpu["memory_used_mib"] = number(values["memory.used"])
        gpu["memory_total_mib"] = number(values["memory.total"])
        gpu["temperature_c"] = number(values["temperature.gpu"])
        gpu["power_w"] = number(values["power.draw"])
        gpu["energy_j"] = number(values.get("total_energy_consumption"), 0.001)
        gpus.append(gpu)
    return gpus


def nvidia_gpus(errors: list[str]) -> list[dict[str, Any]]:
    """NVIDIA GPUs as nvidia-smi reports them; [] when it is not installed."""
    fields = NVIDIA_QUERY
    try:
        out = run_tool(["nvidia-smi", "--query-gpu=" + ",".join(fields), "--format=csv,noheader,nounits"])
    except ToolError as err:
        if "total_energy_consumption" not in err.output:
            raise
        # A driver that predates the energy counter rejects the whole query: ask again without it.
        fields = fields[:-1]
        out = run_tool(["nvidia-smi", "--query-gpu=" + ",".join(fields), "--format=csv,noheader,nounits"])
    return [] if out is None else parse_nvidia_smi(out, fields)


def columns(header: Sequence[str], row: Sequence[str]) -> dict[str, str]:
    """A CSV row by column name; cells a short row lacks are empty."""
    return {name: row[i].strip() if i < len(row) else "" for i, name in enumerate(header)}


def csv_from(text: str, first_header: str) -> list[list[str]]:
    """The CSV rows of `text` from the line that starts with `first_header` on (tools print notes before it)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().startswith(first_header)), None)
    if start is None:
        raise ValueError(f"no {first_header!r} header: {short(text) or 'no output'}")
    return [row for row in csv.reader(lines[start:], skipinitialspace=True) if row]


def parse_xpu_discovery(text: str) -> list[dict[str, Any]]:
    """GPUs from `xpu-smi discovery --dump 1,2,11,16`: index, name, PCI address and memory size."""
    header, *rows = csv_from(text, "Device ID")
    gpus = []
    for row in rows:
        values = columns(header, row)
        gpu = new_gpu(
            int(values["Device ID"]),
            "intel",
            values.get("Device Name") or None,
            "xpu-smi",
            bus_id(values.get("PCI BDF Address")),
        )
        gpu["memory_total_mib"] = number(values.get("Memory Physical Size"))
        gpus.append(gpu)
    return gpus


def apply_xpu_dump(gpus: list[dict[str, Any]], text: str) -> None:
    """Fill `gpus` from `xpu-smi dump -d <ids> --metrics 0,1,3,8,18` (one sample), 1.x's columns or 2.x's."""
    header, *rows = csv_from(text, "Timestamp")
    metrics = {cell: XPU_METRICS[cell.split(" (")[0]] for cell in header if cell.split(" (")[0] in XPU_METRICS}
    by_index = {gpu["index"]: gpu for gpu in gpus}
    for row in rows:
        values = columns(header, row)
        gpu = by_index.get(int(values["DeviceId"]))
        if gpu is not None:
            gpu.update({field: number(values[cell]) for cell, field in metrics.items()})


def intel_gpus(errors: list[str]) -> list[dict[str, Any]]:
    """Intel GPUs as xpu-smi reports them; [] when it is not installed."""
    listing = run_tool(["xpu-smi", "discovery", "--dump", XPU_PROPERTIES])
    if listing is None:
        return []
    gpus = parse_xpu_discovery(listing)
    if gpus:
        ids = ",".join(str(gpu["index"]) for gpu in gpus)
        try:
            dump = ["xpu-smi", "dump", "-d", ids, "--metrics", XPU_METRIC_IDS]
            try:
                stats = run_tool([*dump, "-n", "1"])
            except ToolError as err:
                if "not expected" not in err.output:
                    raise
                # xpu-smi 2.x counts samples with --number and rejects 1.x's -n (CLI11: "... not expected: -n 1").
                stats = run_tool([*dump, "--number", "1"])
            apply_xpu_dump(gpus, stats or "")
        except Exception as err:
            # The cards are known even when their statistics are not: report them with null readings.
            errors.append(describe("xpu-smi dump", err))
    return gpus


def first_number(values: dict[str, str], *keys: str) -> float | None:
    """The first of `keys` that holds a reading (rocm-smi names the same reading differently by GPU and release)."""
    return next((number(values[k]) for k in keys if number(values.get(k)) is not None), None)


def parse_rocm_smi(text: str) -> list[dict[str, Any]]:
    """GPUs from `rocm-smi ... --json` (after any warnings it prints first); keys are matched case-insensitively."""
    start = text.find("{")
    if start < 0:
        raise ValueError(f"no JSON: {short(text) or 'no output'}")
    data = json.loads(text[start:])
    cards = sorted((int(key[4:]), value) for key, value in data.items() if re.fullmatch(r"card\d+", key))
    gpus = []
    for index, fields in cards:
        values = {key.lower(): str(value) for key, value in fields.items()}
        name = next((values[k] for k in ("card series", "card model") if values.get(k, "N/A") not in ("", "N/A")), None)
        gpu = new_gpu(index, "amd", name, "rocm-smi", bus_id(values.get("pci bus")))
        gpu["util_pct"] = number(values.get("gpu use (%)"))
        gpu["memory_used_mib"] = number(values.get("vram total used memory (b)"), 1 / MIB)
        gpu["memory_total_mib"] = number(values.get("vram total memory (b)"), 1 / MIB)
        gpu["temperature_c"] = first_number(
            values, "temperature (sensor edge) (c)", "temperature (sensor junction) (c)"
        )
        gpu["power_w"] = first_number(
            values, "average graphics package power (w)", "current socket graphics package power (w)"
        )
        gpus.append(gpu)
    return gpus


def value_of(reading: Any) -> float | None:
    """A number from amdgpu_top's `{"unit": ..., "value": ...}` (null, or a null value, when not exposed)."""
    value = reading.get("value") if isinstance(reading, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def parse_amdgpu_top(text: str) -> list[dict[str, Any]]:
    """GPUs from `amdgpu_top -J -n 1`: one JSON object whose "devices" are the awake GPUs, in its order."""
    devices = json.loads(text).get("devices")
    if not isinstance(devices, list):
        raise ValueError(f"no devices list: {short(text) or 'no output'}")
    gpus = []
    for index, device in enumerate(devices):
        info, vram, sensors = (device.get(key) or {} for key in ("Info", "VRAM", "Sensors"))
        gpu = new_gpu(index, "amd", info.get("DeviceName"), "amdgpu_top", bus_id(info.get("PCI")))
        gpu["util_pct"] = value_of((device.get("gpu_activity") or {}).get("GFX"))
        gpu["memory_used_mib"] = value_of(vram.get("Total VRAM Usage"))
        gpu["memory_total_mib"] = value_of(vram.get("Total VRAM"))
        temperatures = (value_of(sensors.get(f"{sensor} Temperature")) for sensor in ("Edge", "Junction"))
        gpu["temperature_c"] = next((t for t in temperatures if t is not None), None)
        power = value_of(sensors.get("Average Power"))
        gpu["power_w"] = power if power is not None else value_of(sensors.get("Input Power"))
        explain(gpu, "amdgpu_top does not report it for this GPU", *GPU_FIELDS[:-1])
        explain(gpu, "amdgpu_top reports no energy counter", "energy_j")
        gpus.append(gpu)
    return gpus


def amd_gpus(errors: list[str]) -> list[dict[str, Any]]:
    """AMD GPUs as rocm-smi reports them, or amdgpu_top where rocm-smi is not installed; [] with neither."""
    out = run_tool(["rocm-smi", *ROCM_ARGS, "--json"])
    if out is not None:
        return parse_rocm_smi(out)
    out = run_tool(["amdgpu_top", *AMDGPU_TOP_ARGS])
    return [] if out is None else parse_amdgpu_top(out)


def read(path: Path) -> str | None:
    """A sysfs attribute's text; None when the file is absent or the driver refuses the read."""
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def hwmon(device: Path) -> Path | None:
    """The card's hwmon directory; None when the driver registers none."""
    return next(iter(sorted((device / "hwmon").glob("hwmon*"))), None)


def hwmon_readings(device: Path) -> dict[str, float | None]:
    """Temperature, power and energy from the card's hwmon (milli-degrees, microwatts, microjoules). Energy is the
    card's counter: energy1 (xe labels it "card", its energy2 "pkg"); the temperature the lowest-numbered sensor
    (xe: temp2 "pkg", temp3 "vram")."""
    sensors = hwmon(device)
    if sensors is None:
        return {}
    temps = sorted(sensors.glob("temp*_input"), key=lambda p: int(re.sub(r"\D", "", p.name) or 0))
    power = number(read(sensors / "power1_average"), 1e-6)
    return {
        "temperature_c": number(read(temps[0]), 1e-3) if temps else None,
        "power_w": power if power is not None else number(read(sensors / "power1_input"), 1e-6),
        "energy_j": number(read(sensors / "energy1_input"), 1e-6),
    }


def fdinfo_size(text: str) -> int:
    """Bytes from an fdinfo memory value: "23992 KiB", "16 MiB", "0"."""
    match = FDINFO_SIZE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    return int(match.group(1)) * SIZE_UNITS[match.group(2)]


def parse_fdinfo(text: str) -> dict[str, str]:
    """The drm- keys of one /proc/<pid>/fdinfo/<fd> (the DRM client usage stats); {} for a file that is no DRM fd."""
    keys = (line.partition(":") for line in text.splitlines() if line.startswith("drm-"))
    return {key.strip(): value.strip() for key, _, value in keys}


def drm_clients(proc: Path) -> tuple[dict[tuple[str, str], dict[str, str]], int]:
    """Every DRM client the probe may read, by (PCI address, drm-client-id): a client open in several fds or
    processes counts once. Also how many processes' fds it may not read (other users', unless root)."""
    clients: dict[tuple[str, str], dict[str, str]] = {}
    hidden = 0
    for fd_dir in proc.glob("[0-9]*/fd"):
        try:
            fds = [fd.name for fd in os.scandir(fd_dir) if os.readlink(fd.path).startswith("/dev/dri/")]  # noqa: PTH115 (Path.readlink is 3.9+)
        except PermissionError:
            hidden += 1
            continue
        except OSError:  # the process (or one of its fds) went away while being read
            continue
        for fd in fds:
            keys = parse_fdinfo(read(fd_dir.parent / "fdinfo" / fd) or "")
            pdev = bus_id(keys.get("drm-pdev"))
            if pdev is not None and "drm-client-id" in keys:
                clients[pdev, keys["drm-client-id"]] = keys
    return clients, hidden


def engine_counters(keys: dict[str, str]) -> dict[str, tuple[int, int | None, int]]:
    """Per engine class its busy counter, the counter's total (None: wall-clock ns) and how many engines the class
    has: i915 writes busy ns (drm-engine-render: 9288864723 ns), xe busy and total GPU cycles (drm-cycles-rcs,
    drm-total-cycles-rcs)."""
    counters = {}
    for key, value in keys.items():
        name = key.split("-", 2)[-1]
        capacity = int(keys.get(f"drm-engine-capacity-{name}", "1"))
        if key.startswith("drm-engine-") and value.endswith(" ns") and not key.startswith("drm-engine-capacity-"):
            counters[name] = (int(value[:-3]), None, capacity)
        elif key.startswith("drm-cycles-") and f"drm-total-cycles-{name}" in keys:
            counters[name] = (int(value), int(keys[f"drm-total-cycles-{name}"]), capacity)
    return counters


def drm_usage(
    before: dict[tuple[str, str], dict[str, str]], after: dict[tuple[str, str], dict[str, str]], elapsed_ns: int
) -> dict[str, tuple[float | None, float | None]]:
    """Per PCI address: the busiest engine class's utilisation in % over the interval (None: the driver writes no
    engine counters) and the device-local memory its clients hold in MiB (None: it writes no local region)."""
    busy: dict[str, dict[str, float]] = {}
    memory: dict[str, float | None] = {}
    for (pdev, client), keys in after.items():
        busy.setdefault(pdev, {})
        regions = [fdinfo_size(value) for key, value in keys.items() if LOCAL_REGION.match(key)]
        memory[pdev] = (memory.get(pdev) or 0) + sum(regions) / MIB if regions else memory.get(pdev)
        earlier = engine_counters(before.get((pdev, client), {}))
        for name, (count, total, capacity) in engine_counters(keys).items():
            span = elapsed_ns if total is None else total - earlier.get(name, (0, total))[1]
            if name in earlier and span > 0:
                share = max(count - earlier[name][0], 0) / span / capacity
                busy[pdev][name] = busy[pdev].get(name, 0.0) + share
            else:
                busy[pdev].setdefault(name, 0.0)  # a client that opened the card during the interval
    usage = {}
    for pdev, engines in busy.items():
        mib = memory.get(pdev)
        util = round(min(max(engines.values()) * 100, 100.0), 1) if engines else None
        usage[pdev] = (util, None if mib is None else round(mib, 3))
    return usage


def local_memory_total(device: Path) -> float | None:
    """xe's VRAM size in MiB, the sum of its tiles' physical_vram_size_bytes; None where the driver has none."""
    sizes = [number(read(path)) for path in sorted(device.glob("tile*/physical_vram_size_bytes"))]
    known = [size for size in sizes if size is not None]
    return sum(known) / MIB if known and len(known) == len(sizes) else None


def intel_usage(cards: list[tuple[dict[str, Any], Path]], proc: Path, interval: float) -> None:
    """Fill i915 and xe cards' utilisation and local memory from two DRM fdinfo samples `interval` apart, and their
    power from the hwmon energy counter over the same interval where the driver gives no power reading."""
    counters = [hwmon(device) for _, device in cards]
    energy = [number(read(c / "energy1_input"), 1e-6) if c else None for c in counters]
    before, _ = drm_clients(proc)
    start = time.monotonic_ns()
    time.sleep(interval)
    after, hidden = drm_clients(proc)
    elapsed_ns = time.monotonic_ns() - start
    usage = drm_usage(before, after, elapsed_ns)
    for (gpu, _), sensors, joules in zip(cards, counters, energy):  # noqa: B905 (strict= is Python 3.10+)
        now = number(read(sensors / "energy1_input"), 1e-6) if sensors else None
        if gpu["power_w"] is None and joules is not None and now is not None and now >= joules:
            gpu["power_w"] = round((now - joules) / (elapsed_ns / 1e9), 3)
        if gpu["pci_bus_id"] in usage:
            gpu["util_pct"], gpu["memory_used_mib"] = usage[gpu["pci_bus_id"]]
            explain(gpu, "the kernel's DRM fdinfo for this card has no engine counters", "util_pct")
            explain(gpu, "the kernel's DRM fdinfo for this card names no local memory region", "memory_used_mib")
        elif hidden:
            explain(
                gpu,
                f"no DRM client of this card visible, and {hidden} processes of other users are not readable "
                "(probe as root to see them)",
                "util_pct",
                "memory_used_mib",
            )
        else:  # no process has the card open: no work and no client memory on it
            gpu["util_pct"], gpu["memory_used_mib"] = 0.0, 0.0


def parse_sysfs(
    root: Path,
    claimed_buses: set[str],
    claimed_vendors: set[str],
    proc: Path = Path("/proc"),
    interval: float = FDINFO_INTERVAL_S,
) -> list[dict[str, Any]]:
    """GPUs from <root>/class/drm/card*/device that no vendor tool reported, by PCI address (or by vendor, for
    tool GPUs whose address is unknown). Only NVIDIA, Intel and AMD cards: a BMC's or a VM's display adapter is
    no compute GPU. i915 and xe cards are read from DRM fdinfo under `proc` too, which takes `interval` seconds."""
    drm = root / "class" / "drm"
    cards = sorted((int(p.name[4:]), p) for p in drm.glob("card*") if re.fullmatch(r"card\d+", p.name))
    found: list[tuple[dict[str, Any], Path, str]] = []
    for index, card in cards:
        device = card / "device"
        vendor_id = read(device / "vendor") or ""
        vendor = PCI_VENDORS.get(vendor_id)
        uevent = read(device / "uevent") or ""
        slot = re.search(r"^PCI_SLOT_NAME=(\S+)", uevent, re.MULTILINE)
        pci = bus_id(slot.group(1)) if slot else None
        if vendor is None or vendor in claimed_vendors or (pci is not None and pci in claimed_buses):
            continue
        driver = next(iter(re.findall(r"^DRIVER=(\S+)", uevent, re.MULTILINE)), "unknown")
        device_id = read(device / "device")
        name = read(device / "product_name") or (f"PCI {vendor_id[2:]}:{device_id[2:]}" if device_id else None)
        gpu = new_gpu(index, vendor, name, "sysfs", pci)
        gpu["util_pct"] = number(read(device / "gpu_busy_percent"))
        gpu["memory_used_mib"] = number(read(device / "mem_info_vram_used"), 1 / MIB)
        gpu["memory_total_mib"] = number(read(device / "mem_info_vram_total"), 1 / MIB)
        if gpu["memory_total_mib"] is None:
            gpu["memory_total_mib"] = local_memory_total(device)
        gpu.update(hwmon_readings(device))
        found.append((gpu, device, driver))
    intel = [(gpu, device) for gpu, device, driver in found if driver in ("i915", "xe") and gpu["pci_bus_id"]]
    if intel:
        intel_usage(intel, proc, interval)
    for gpu, device, driver in found:
        explain(gpu, f"the {driver} driver exposes no busy percentage in sysfs", "util_pct")
        explain(gpu, f"the {driver} driver exposes no memory use in sysfs", "memory_used_mib")
        explain(gpu, f"the {driver} driver exposes no local memory size in sysfs", "memory_total_mib")
        if hwmon(device) is None:
            explain(gpu, f"the {driver} driver registers no hwmon for the card", "temperature_c", "power_w", "energy_j")
        explain(gpu, "the card's hwmon has no temperature sensor", "temperature_c")
        explain(gpu, "the card's hwmon has no power reading or energy counter", "power_w")
        explain(gpu, "the card's hwmon has no energy counter", "energy_j")
    return [gpu for gpu, _, _ in found]


def describe(label: str, err: Exception) -> str:
    """One short line for "errors": the source and what went wrong."""
    what = str(err) if isinstance(err, ToolError) else f"{type(err).__name__}: {err}"
    return f"{label}: {short(what, 200)}"


def read_uptime() -> dict[str, Any]:
    return {"uptime_s": float(Path("/proc/uptime").read_text().split()[0])}


def read_load() -> dict[str, Any]:
    return {"load": [round(x, 2) for x in os.getloadavg()]}


def read_memory() -> dict[str, Any]:
    kib = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        kib[key] = number(rest)
    available = kib.get("MemAvailable")  # absent before Linux 3.14
    return {
        "memory_total_mib": round(kib["MemTotal"] / 1024, 1),
        "memory_available_mib": None if available is None else round(available / 1024, 1),
    }


def read_runtime(path: Path) -> dict[str, Any]:
    """The runtime build whose manifest is at `path`; build_id null when none is installed there. ValueError when
    the file is no build manifest."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:  # no install yet, or `current` names a build that is gone
        return {"build_id": None, "device": None, "error": NO_BUILD}
    manifest = json.loads(text)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("build_id"), str):
        raise ValueError("no build_id in the manifest")
    device = manifest.get("device")
    return {"build_id": manifest["build_id"], "device": device if isinstance(device, str) else None, "error": None}


def probe() -> dict[str, Any]:
    """The whole report; never raises for a missing or misbehaving source."""
    errors: list[str] = []
    report: dict[str, Any] = {
        "probe": PROBE_VERSION,
        "hostname": socket.gethostname(),
        "uptime_s": None,
        "load": None,
        "cpu_count": os.cpu_count(),
        "memory_total_mib": None,
        "memory_available_mib": None,
        "gpus": [],
        "runtime": None,
        "errors": errors,
    }
    system: tuple[tuple[str, Callable[[], dict[str, Any]]], ...] = (
        ("uptime", read_uptime),
        ("load", read_load),
        ("memory", read_memory),
    )
    for label, read_system in system:
        try:
            report.update(read_system())
        except Exception as err:
            errors.append(describe(label, err))
    tools: tuple[tuple[str, Callable[[list[str]], list[dict[str, Any]]]], ...] = (
        ("nvidia-smi", nvidia_gpus),
        ("xpu-smi", intel_gpus),
        ("rocm-smi", amd_gpus),
    )
    gpus: list[dict[str, Any]] = report["gpus"]
    for label, source in tools:
        try:
            gpus.extend(source(errors))
        except Exception as err:
            errors.append(describe(label, err))
    for gpu in gpus:
        explain(gpu, f"{gpu['source']} does not report it", *GPU_FIELDS)
    claimed_buses = {gpu["pci_bus_id"] for gpu in gpus if gpu["pci_bus_id"] is not None}
    claimed_vendors = {gpu["vendor"] for gpu in gpus if gpu["pci_bus_id"] is None}
    try:
        sysfs, proc = (Path(os.environ.get(f"COCKPIT_PROBE_{key}", f"/{key.lower()}")) for key in ("SYSFS", "PROC"))
        gpus.extend(parse_sysfs(sysfs, claimed_buses, claimed_vendors, proc))
    except Exception as err:
        errors.append(describe("sysfs", err))
    manifest = os.environ.get("COCKPIT_RUNTIME_MANIFEST")
    if manifest:
        try:
            report["runtime"] = read_runtime(Path(manifest))
        except Exception as err:
            errors.append(describe("runtime", err))
            report["runtime"] = {"build_id": None, "device": None, "error": errors[-1]}
    return report


if __name__ == "__main__":
    json.dump(probe(), sys.stdout)
    sys.stdout.write("\n")

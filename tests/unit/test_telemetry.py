"""The telemetry probe: its parsers on tool output, the real script run against fake tools and a fake sysfs, and
the control node's side (parse_probe, the table).

No GPU here, so every vendor tool output below is a fake: written to the formats the tools document (nvidia-smi's
--query-gpu CSV, Intel's xpu-smi user guide and CLI source, rocm-smi's --json keys as seen from several releases).
"""

from __future__ import annotations

import ast
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from cockpit.nodes import probe_script
from cockpit.nodes.inventory import Node
from cockpit.nodes.ssh import CommandResult
from cockpit.nodes.telemetry import (
    PROBE_COMMAND,
    GpuTelemetry,
    NodeTelemetry,
    ProbeError,
    RuntimeBuild,
    parse_probe,
    probe_command,
    probe_nodes,
    probe_source,
    telemetry_table,
    telemetry_to_json,
)
from runtime.contract import BuildManifest

NVIDIA_ARGS = f"--query-gpu={','.join(probe_script.NVIDIA_QUERY)} --format=csv,noheader,nounits"
NVIDIA_H100 = """\
0, NVIDIA H100 80GB HBM3, 00000000:19:00.0, 97, 61447, 81559, 64, 512.33, 914276533
1, NVIDIA H100 80GB HBM3, 00000000:3B:00.0, 0, 1, 81559, 31, 69.88, 411063208
"""
NVIDIA_UNSUPPORTED = """\
0, NVIDIA GeForce GTX 1080 Ti, 00000000:01:00.0, 3, 517, 11264, 41, [N/A], [Not Supported]
"""
NVIDIA_OLD_DRIVER = """\
0, Tesla K80, 00000000:05:00.0, 0, 0, 11441, 33, 26.12
"""
XPU_DISCOVERY = """\
Device ID,Device Name,PCI BDF Address,Memory Physical Size
0,"Intel(R) Arc(TM) A770 Graphics","0000:03:00.0","16288.00 MiB"
"""
XPU_DUMP = """\
Timestamp, DeviceId, GPU Utilization (%), GPU Power (W), GPU Core Temperature (Celsius Degree), \
GPU Energy Consumed (J), GPU Memory Used (MiB)
08:39:21.000,    0, 37.52, 118.40,  N/A, 91234.56, 6190.21
"""
ROCM_JSON = """\
WARNING: AMD GPU device(s) is/are in a low-power state. Check power control/runtime_status

{"card0": {"GPU use (%)": "12", "Temperature (Sensor edge) (C)": "34.0", "Temperature (Sensor junction) (C)": \
"37.0", "Average Graphics Package Power (W)": "41.0", "VRAM Total Memory (B)": "68702699520", \
"VRAM Total Used Memory (B)": "10960896", "Card series": "Instinct MI210", "Card model": "0x0c34", \
"Card vendor": "Advanced Micro Devices, Inc. [AMD/ATI]", "PCI Bus": "0000:E7:00.0"}, \
"card1": {"GPU use (%)": "N/A", "Temperature (Sensor edge) (C)": "N/A", "Temperature (Sensor junction) (C)": "44.5", \
"Current Socket Graphics Package Power (W)": "32.7", "VRAM Total Memory (B)": "536870912", \
"VRAM Total Used Memory (B)": "N/A", "Card Series": "AMD Radeon 8060S Graphics", "Card Model": "0x1586", \
"PCI Bus": "0000:C2:00.0"}, "system": {"Driver version": "6.10.5"}}
"""
GPU_KEYS = {"index", "vendor", "name", "source", "pci_bus_id", "unknown", *probe_script.GPU_FIELDS}
REPORT_KEYS = {"probe", "hostname", "uptime_s", "load", "cpu_count", "memory_total_mib", "memory_available_mib"}
REPORT_KEYS |= {"gpus", "runtime", "errors"}


def readings(gpu: dict[str, Any]) -> dict[str, Any]:
    return {key: gpu[key] for key in probe_script.GPU_FIELDS}


# --- the script's parsers on captured formats ----------------------------------------------------------------


def test_nvidia_smi_fake_h100_output() -> None:
    gpus = probe_script.parse_nvidia_smi(NVIDIA_H100)
    assert [(g["index"], g["vendor"], g["name"], g["source"], g["pci_bus_id"]) for g in gpus] == [
        (0, "nvidia", "NVIDIA H100 80GB HBM3", "nvidia-smi", "0000:19:00.0"),
        (1, "nvidia", "NVIDIA H100 80GB HBM3", "nvidia-smi", "0000:3b:00.0"),
    ]
    assert readings(gpus[0]) == {
        "util_pct": 97.0,
        "memory_used_mib": 61447.0,
        "memory_total_mib": 81559.0,
        "temperature_c": 64.0,
        "power_w": 512.33,
        "energy_j": 914276.533,  # mJ -> J
    }


def test_nvidia_smi_fake_output_with_unsupported_fields() -> None:
    (gpu,) = probe_script.parse_nvidia_smi(NVIDIA_UNSUPPORTED)
    assert gpu["power_w"] is None and gpu["energy_j"] is None
    assert gpu["util_pct"] == 3.0 and gpu["temperature_c"] == 41.0


def test_nvidia_smi_fake_output_with_a_short_row_is_an_error() -> None:
    with pytest.raises(ValueError, match="expected 9 columns, got 3"):
        probe_script.parse_nvidia_smi("0, NVIDIA H100, 00000000:19:00.0\n")


def test_xpu_smi_fake_discovery_and_dump() -> None:
    gpus = probe_script.parse_xpu_discovery("Some notice first\n" + XPU_DISCOVERY)
    probe_script.apply_xpu_dump(gpus, XPU_DUMP)
    (gpu,) = gpus
    assert (gpu["index"], gpu["vendor"], gpu["name"], gpu["source"], gpu["pci_bus_id"]) == (
        0,
        "intel",
        "Intel(R) Arc(TM) A770 Graphics",
        "xpu-smi",
        "0000:03:00.0",
    )
    assert readings(gpu) == {
        "util_pct": 37.52,
        "memory_used_mib": 6190.21,
        "memory_total_mib": 16288.0,
        "temperature_c": None,  # N/A: the core temperature needs root on this card
        "power_w": 118.4,
        "energy_j": 91234.56,
    }


# xpu-smi 2.x names dump columns by field, "<name> (<unit>)" joined by ", " (github.com/intel/xpumanager,
# ial/cmn/cmd_dump.cpp and ial/cmn/metrics/*.cpp at tag v2.0.0); no captured 2.x output was found to quote.
XPU2_DUMP = """\
Timestamp, DeviceId, utilization.gpu (%), power.draw (W), temperature.gpu (C), energy.consumed (J), memory.used (MiB)
08:39:21.000, 0, 37.52, 118.40, N/A, 91234.56, 6190.21
"""


def test_xpu_smi_fake_dump_with_2x_column_names() -> None:
    gpus = probe_script.parse_xpu_discovery(XPU_DISCOVERY)
    probe_script.apply_xpu_dump(gpus, XPU2_DUMP)
    assert readings(gpus[0]) == {
        "util_pct": 37.52,
        "memory_used_mib": 6190.21,
        "memory_total_mib": 16288.0,
        "temperature_c": None,
        "power_w": 118.4,
        "energy_j": 91234.56,
    }


def test_xpu_smi_fake_error_instead_of_a_dump() -> None:
    with pytest.raises(ValueError, match="no 'Timestamp' header: Error: Level Zero Initialization Error"):
        probe_script.apply_xpu_dump([], "Error: Level Zero Initialization Error\n")


def test_rocm_smi_fake_json_with_old_and_new_key_names() -> None:
    mi210, apu = probe_script.parse_rocm_smi(ROCM_JSON)
    assert (mi210["index"], mi210["name"], mi210["source"], mi210["pci_bus_id"]) == (
        0,
        "Instinct MI210",
        "rocm-smi",
        "0000:e7:00.0",
    )
    assert readings(mi210) == {
        "util_pct": 12.0,
        "memory_used_mib": 10.453,
        "memory_total_mib": 65520.0,
        "temperature_c": 34.0,
        "power_w": 41.0,
        "energy_j": None,
    }
    assert (apu["index"], apu["name"], apu["pci_bus_id"]) == (1, "AMD Radeon 8060S Graphics", "0000:c2:00.0")
    assert readings(apu) == {
        "util_pct": None,
        "memory_used_mib": None,
        "memory_total_mib": 512.0,
        "temperature_c": 44.5,  # no edge sensor: the junction one
        "power_w": 32.7,
        "energy_j": None,
    }


@pytest.mark.parametrize(
    ("text", "scale", "expected"),
    [
        ("97", 1.0, 97.0),
        (" 512.33 ", 1.0, 512.33),
        ("16288.00 MiB", 1.0, 16288.0),
        ("914276533", 0.001, 914276.533),
        ("[N/A]", 1.0, None),
        ("[Not Supported]", 1.0, None),
        ("N/A", 1.0, None),
        ("", 1.0, None),
        (None, 1.0, None),
    ],
)
def test_number(text: str | None, scale: float, expected: float | None) -> None:
    assert probe_script.number(text, scale) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00000000:3B:00.0", "0000:3b:00.0"),
        ("0000:03:00.0", "0000:03:00.0"),
        ("03:00.0", "0000:03:00.0"),
        ("N/A", None),
        ("", None),
        (None, None),
    ],
)
def test_bus_id(text: str | None, expected: str | None) -> None:
    assert probe_script.bus_id(text) == expected


def make_card(root: Path, card: str, vendor: str, bus: str, files: dict[str, str] | None = None) -> Path:
    """A fake /sys/class/drm/<card>/device with its PCI ids and `files` (paths relative to device/)."""
    device = root / "class" / "drm" / card / "device"
    device.mkdir(parents=True)
    (device / "vendor").write_text(vendor + "\n")
    (device / "device").write_text("0x56a0\n")
    (device / "uevent").write_text(f"DRIVER=test\nPCI_ID={vendor[2:]}:56A0\nPCI_SLOT_NAME={bus}\n")
    for name, text in (files or {}).items():
        (device / name).parent.mkdir(parents=True, exist_ok=True)
        (device / name).write_text(text + "\n")
    return device


def fake_sysfs(root: Path) -> Path:
    """An amdgpu card with every attribute, an i915 Arc with only hwmon energy, an AST BMC adapter and a connector."""
    make_card(
        root,
        "card1",
        "0x1002",
        "0000:c2:00.0",
        {
            "product_name": "AMD Radeon 8060S Graphics",
            "gpu_busy_percent": "7",
            "mem_info_vram_used": "1073741824",
            "mem_info_vram_total": "4294967296",
            "hwmon/hwmon4/temp1_input": "45000",
            "hwmon/hwmon4/temp2_input": "51000",
            "hwmon/hwmon4/power1_average": "12500000",
        },
    )
    make_card(root, "card0", "0x8086", "0000:03:00.0", {"hwmon/hwmon2/energy1_input": "123456789012"})
    make_card(root, "card2", "0x1a03", "0000:05:00.0")
    (root / "class" / "drm" / "card0-DP-1").mkdir()
    return root


def test_sysfs_fake_tree(tmp_path: Path) -> None:
    intel, amd = probe_script.parse_sysfs(fake_sysfs(tmp_path), set(), set())
    assert (intel["index"], intel["vendor"], intel["name"], intel["source"], intel["pci_bus_id"]) == (
        0,
        "intel",
        "PCI 8086:56a0",
        "sysfs",
        "0000:03:00.0",
    )
    assert readings(intel) == dict.fromkeys(probe_script.GPU_FIELDS) | {"energy_j": 123456.789}
    assert (amd["index"], amd["vendor"], amd["name"]) == (1, "amd", "AMD Radeon 8060S Graphics")
    assert readings(amd) == {
        "util_pct": 7.0,
        "memory_used_mib": 1024.0,
        "memory_total_mib": 4096.0,
        "temperature_c": 45.0,  # temp1: the edge sensor
        "power_w": 12.5,
        "energy_j": None,
    }


def test_sysfs_skips_cards_a_vendor_tool_reported(tmp_path: Path) -> None:
    root = fake_sysfs(tmp_path)
    assert [g["vendor"] for g in probe_script.parse_sysfs(root, {"0000:03:00.0"}, set())] == ["amd"]
    assert [g["vendor"] for g in probe_script.parse_sysfs(root, set(), {"amd"})] == ["intel"]


def test_probe_script_is_python_3_8_and_stdlib_only() -> None:
    tree = ast.parse(probe_source(), feature_version=(3, 8))
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported - {"__future__"} <= sys.stdlib_module_names
    assert probe_source() == Path(probe_script.__file__).read_text(encoding="utf-8")


# --- the real script, run as the nodes run it, against fake tools ----------------------------------------------


def fake_tool(
    bin_dir: Path, name: str, cases: dict[str, str], otherwise: str = 'echo "bad args: $*" >&2; exit 9'
) -> None:
    """A shell script `name` answering each exact argument string in `cases` with its shell body."""
    bin_dir.mkdir(exist_ok=True)
    arms = "".join(f"  '{args}')\n{body}\n    ;;\n" for args, body in cases.items())
    (bin_dir / name).write_text(f'#!/bin/sh\ncase "$*" in\n{arms}  *) {otherwise} ;;\nesac\n')
    (bin_dir / name).chmod(0o755)


def prints(text: str) -> str:
    return f"cat <<'EOF'\n{text}EOF"


def run_probe(
    tmp_path: Path, timeout_s: float = 5, manifest: Path | None = None
) -> tuple[dict[str, Any], NodeTelemetry]:
    """The script from stdin, as probe_command(manifest) runs it in the node's shell, with tools only from
    tmp_path/bin and sysfs at tmp_path/sys."""
    (tmp_path / "bin").mkdir(exist_ok=True)
    (tmp_path / "sys").mkdir(exist_ok=True)
    env = {
        **os.environ,
        "COCKPIT_PROBE_PATH": str(tmp_path / "bin"),
        "COCKPIT_PROBE_SYSFS": str(tmp_path / "sys"),
        "COCKPIT_PROBE_PROC": str(tmp_path / "proc"),
        "COCKPIT_PROBE_TIMEOUT_S": str(timeout_s),
    }
    env.pop("COCKPIT_RUNTIME_MANIFEST", None)
    command = probe_command(None if manifest is None else str(manifest))
    assert command.endswith(PROBE_COMMAND)
    command = command.removesuffix(PROBE_COMMAND) + f"{shlex.quote(sys.executable)} -"
    done = subprocess.run(
        ["sh", "-c", command], input=probe_source(), capture_output=True, text=True, env=env, timeout=60, check=True
    )
    return json.loads(done.stdout), parse_probe(done.stdout, "test")


def test_probe_without_tools_or_gpus_invents_nothing(tmp_path: Path) -> None:
    raw, report = run_probe(tmp_path)
    assert set(raw) == REPORT_KEYS
    assert raw["gpus"] == [] and raw["errors"] == [] and raw["runtime"] is None
    assert report.hostname == os.uname().nodename
    assert report.uptime_s is not None and report.uptime_s > 0
    assert report.load is not None and all(x >= 0 for x in report.load)
    assert report.cpu_count == os.cpu_count()
    assert report.memory_total_mib is not None and report.memory_available_mib is not None
    assert 0 < report.memory_available_mib <= report.memory_total_mib


def all_fake_tools(bin_dir: Path) -> None:
    fake_tool(bin_dir, "nvidia-smi", {NVIDIA_ARGS: prints(NVIDIA_H100)})
    fake_tool(
        bin_dir,
        "xpu-smi",
        {"discovery --dump 1,2,11,16": prints(XPU_DISCOVERY), "dump -d 0 --metrics 0,1,3,8,18 -n 1": prints(XPU_DUMP)},
    )
    fake_tool(bin_dir, "rocm-smi", {" ".join([*probe_script.ROCM_ARGS, "--json"]): prints(ROCM_JSON)})


def test_probe_reports_each_gpu_once_from_its_best_source(tmp_path: Path) -> None:
    all_fake_tools(tmp_path / "bin")
    # sysfs holds the Arc (0000:03:00.0) and the Radeon (0000:c2:00.0) the tools report too, and an iGPU they don't.
    fake_sysfs(tmp_path / "sys")
    make_card(tmp_path / "sys", "card3", "0x8086", "0000:00:02.0")
    raw, report = run_probe(tmp_path)
    assert raw["errors"] == []
    assert all(set(gpu) == GPU_KEYS for gpu in raw["gpus"])
    assert [(g.source, g.pci_bus_id) for g in report.gpus] == [
        ("nvidia-smi", "0000:19:00.0"),
        ("nvidia-smi", "0000:3b:00.0"),
        ("xpu-smi", "0000:03:00.0"),
        ("rocm-smi", "0000:e7:00.0"),
        ("rocm-smi", "0000:c2:00.0"),
        ("sysfs", "0000:00:02.0"),
    ]
    assert report.gpus[2].util_pct == 37.52 and report.gpus[2].energy_j == 91234.56
    igpu = report.gpus[5]
    assert igpu == GpuTelemetry(3, "intel", "PCI 8086:56a0", "sysfs", "0000:00:02.0", *[None] * 6, igpu.unknown)
    assert igpu.why_unknown("util_pct") == "the test driver exposes no busy percentage in sysfs"
    assert igpu.why_unknown("energy_j") == "the test driver registers no hwmon for the card"
    assert report.gpus[3].why_unknown("energy_j") == "rocm-smi does not report it"


def test_probe_asks_an_old_nvidia_driver_again_without_the_energy_field(tmp_path: Path) -> None:
    fallback = NVIDIA_ARGS.replace(",total_energy_consumption", "")
    fake_tool(
        tmp_path / "bin",
        "nvidia-smi",
        {fallback: prints(NVIDIA_OLD_DRIVER)},
        otherwise="echo 'Field \"total_energy_consumption\" is not a valid field to query.'; exit 2",
    )
    raw, report = run_probe(tmp_path)
    assert raw["errors"] == []
    (gpu,) = report.gpus
    assert (gpu.name, gpu.power_w, gpu.energy_j) == ("Tesla K80", 26.12, None)


def test_a_failing_tool_is_an_error_and_sysfs_stands_in_for_it(tmp_path: Path) -> None:
    all_fake_tools(tmp_path / "bin")
    fake_tool(tmp_path / "bin", "rocm-smi", {}, otherwise='echo "ERROR: rsmi_init() failed" >&2; exit 1')
    fake_sysfs(tmp_path / "sys")
    raw, report = run_probe(tmp_path)
    assert raw["errors"] == ["rocm-smi: exit 1: ERROR: rsmi_init() failed"]
    assert [(g.source, g.vendor) for g in report.gpus] == [
        ("nvidia-smi", "nvidia"),
        ("nvidia-smi", "nvidia"),
        ("xpu-smi", "intel"),
        ("sysfs", "amd"),  # the Radeon, from sysfs now that rocm-smi said nothing
    ]
    assert report.uptime_s is not None and report.memory_total_mib is not None


def alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie waiting for init to reap it does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_hanging_tool_times_out_into_an_error_and_its_children_die(tmp_path: Path) -> None:
    all_fake_tools(tmp_path / "bin")
    pidfile = tmp_path / "sleep.pid"
    fake_tool(tmp_path / "bin", "nvidia-smi", {}, otherwise=f"sleep 60 & echo $! > {pidfile}; wait")
    started = time.monotonic()
    raw, report = run_probe(tmp_path, timeout_s=1)
    assert time.monotonic() - started < 20
    assert raw["errors"] == ["nvidia-smi: no answer in 1 s"]
    assert [g.source for g in report.gpus] == ["xpu-smi", "rocm-smi", "rocm-smi"]
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid), "the tool's child outlived the timeout"


def test_probe_asks_a_fake_xpu_smi_2x_for_its_sample_with_number(tmp_path: Path) -> None:
    # 2.x's CLI11 parser rejects 1.x's -n the way CLI11 words it (ExtrasError); it counts with --number.
    fake_tool(
        tmp_path / "bin",
        "xpu-smi",
        {
            "discovery --dump 1,2,11,16": prints(XPU_DISCOVERY),
            "dump -d 0 --metrics 0,1,3,8,18 --number 1": prints(XPU2_DUMP),
        },
        otherwise='echo "The following arguments were not expected: -n 1" >&2; exit 109',
    )
    raw, report = run_probe(tmp_path)
    assert raw["errors"] == []
    (gpu,) = report.gpus
    assert (gpu.source, gpu.util_pct, gpu.energy_j, gpu.memory_used_mib) == ("xpu-smi", 37.52, 91234.56, 6190.21)


def test_xpu_smi_statistics_failing_still_lists_the_card(tmp_path: Path) -> None:
    fake_tool(
        tmp_path / "bin",
        "xpu-smi",
        {"discovery --dump 1,2,11,16": prints(XPU_DISCOVERY)},
        otherwise='echo "Error: device 0 is busy"; exit 3',
    )
    raw, report = run_probe(tmp_path)
    assert raw["errors"] == ["xpu-smi dump: exit 3: Error: device 0 is busy"]
    (gpu,) = report.gpus
    assert (gpu.name, gpu.memory_total_mib, gpu.util_pct, gpu.power_w) == (
        "Intel(R) Arc(TM) A770 Graphics",
        16288.0,
        None,
        None,
    )


def build_manifest() -> BuildManifest:
    digest = "sha256:3f2a9c1b7d4e" + "0" * 52
    return BuildManifest(
        BuildManifest.make_id("0.1.0", digest), "0.1.0", None, "3.11.9", "2.13.0", "0.19.8", "5.23.0", "xpu", "venv",
        digest, "2026-11-23T10:15:00+00:00",
    )  # fmt: skip


def test_probe_reports_the_runtime_build_installed_at_the_manifest_path(tmp_path: Path) -> None:
    manifest = tmp_path / "it's current" / "build_manifest.json"  # the path goes through the node's shell
    manifest.parent.mkdir()
    build_manifest().write(manifest)
    raw, report = run_probe(tmp_path, manifest=manifest)
    assert raw["errors"] == []
    assert raw["runtime"] == {"build_id": "0.1.0-3f2a9c1b7d4e", "device": "xpu", "error": None}
    assert report.runtime == RuntimeBuild("0.1.0-3f2a9c1b7d4e", "xpu", None) and not report.runtime.missing


def test_probe_without_a_runtime_manifest_reports_no_build(tmp_path: Path) -> None:
    raw, report = run_probe(tmp_path, manifest=tmp_path / "current" / "build_manifest.json")
    assert raw["errors"] == []  # no install yet is a state, not a failure
    assert report.runtime == RuntimeBuild(None, None, "no build installed") and report.runtime.missing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "runtime: JSONDecodeError: Expecting property name enclosed in double quotes"),
        ('["0.1.0-3f2a9c1b7d4e"]', "runtime: ValueError: no build_id in the manifest"),
        ('{"device": "xpu"}', "runtime: ValueError: no build_id in the manifest"),
    ],
)
def test_a_corrupt_runtime_manifest_is_an_error_and_the_rest_still_reports(
    tmp_path: Path, text: str, expected: str
) -> None:
    manifest = tmp_path / "current.json"
    manifest.write_text(text)
    raw, report = run_probe(tmp_path, manifest=manifest)
    (error,) = raw["errors"]
    assert error.startswith(expected)
    assert report.runtime == RuntimeBuild(None, None, error) and not report.runtime.missing
    assert report.uptime_s is not None and report.memory_total_mib is not None


def test_probe_command_passes_the_manifest_path_quoted() -> None:
    assert probe_command() == PROBE_COMMAND
    assert probe_command("/opt/cockpit/runtime/current/build_manifest.json") == (
        "COCKPIT_RUNTIME_MANIFEST=/opt/cockpit/runtime/current/build_manifest.json python3 -"
    )
    assert (
        probe_command("/srv/my images/current.json")
        == "COCKPIT_RUNTIME_MANIFEST='/srv/my images/current.json' python3 -"
    )


class FakePool:
    """An SshPool that answers every node with one probe report, and remembers the command it was given."""

    def __init__(self, report: str) -> None:
        self.report = report
        self.commands: list[str] = []

    async def run_all(self, nodes: Any, command: str, *, input: str | None = None) -> list[CommandResult]:
        self.commands.append(command)
        return [CommandResult(n.name, n.name, command, 0, self.report, "", None, 0.01) for n in nodes]


async def test_probe_nodes_asks_for_the_runtime_only_with_a_manifest_path() -> None:
    pool = FakePool(json.dumps(telemetry_to_json(NODE0)))
    nodes = [Node("node0", "10.77.0.10")]
    (sample,) = await probe_nodes(pool, nodes)  # type: ignore[arg-type]
    assert sample.telemetry == NODE0 and pool.commands == [PROBE_COMMAND]
    await probe_nodes(pool, nodes, "/opt/cockpit/runtime/current/build_manifest.json")  # type: ignore[arg-type]
    assert pool.commands[1] == probe_command("/opt/cockpit/runtime/current/build_manifest.json")


# --- the control node's side -------------------------------------------------------------------------------------

ARC = GpuTelemetry(
    0, "intel", "Intel(R) Arc(TM) A770 Graphics", "xpu-smi", "0000:03:00.0", 37.5, 6190.2, 16288.0, None, 118.4, 91234.5
)
NODE0 = NodeTelemetry(
    "node0", 93784.0, (0.5, 0.25, 0.1), 16, 64000.0, 48000.0, (ARC, ARC), ("rocm-smi: exit 1: x",),
    RuntimeBuild("0.1.0-3f2a9c1b7d4e", "xpu", None),
)  # fmt: skip
NODE1 = NodeTelemetry("node1", 42.0, None, None, None, None, (), ())


def test_parse_probe_reads_a_report_and_telemetry_to_json_round_trips() -> None:
    text = json.dumps(telemetry_to_json(NODE0))
    assert json.loads(text)["probe"] == probe_script.PROBE_VERSION
    assert parse_probe(text, "node0") == NODE0
    assert parse_probe(json.dumps(telemetry_to_json(NODE1)), "node1") == NODE1


def test_parse_probe_of_output_that_is_not_json() -> None:
    text = "bash: python3: command not found " + "x" * 300
    with pytest.raises(ProbeError) as caught:
        parse_probe(text, "node7")
    message = str(caught.value)
    assert caught.value.host == "node7" and message.startswith("node7: probe output is not JSON")
    assert repr(text[:200]) in message and text[:201] not in message


def good_report() -> dict[str, Any]:
    return telemetry_to_json(NODE0)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: r.update(probe=1), "probe version 1, expected 2"),
        (lambda r: r.update(probe=True), "probe version True, expected 2"),
        (lambda r: r.pop("probe"), "probe version None, expected 2"),
        (lambda r: r.update(uptime_s="93784"), "uptime_s: expected a number or null, got '93784'"),
        (lambda r: r.update(load=[0.5, 0.25]), "load: expected 3 numbers or null"),
        (lambda r: r.update(cpu_count=16.0), "cpu_count: expected an integer or null, got 16.0"),
        (lambda r: r.pop("hostname"), "hostname: expected a string, got nothing"),
        (lambda r: r.update(gpus={}), "gpus: expected a list of objects"),
        (lambda r: r.update(errors=[1]), "errors: expected a list of strings"),
        (lambda r: r["gpus"][1].update(util_pct=True), "gpus[1].util_pct: expected a number or null, got True"),
        (lambda r: r["gpus"][0].update(index=None), "gpus[0].index: expected an integer, got None"),
        (lambda r: r["gpus"][0].pop("energy_j"), "gpus[0].energy_j: expected a number or null, got nothing"),
        (lambda r: r.pop("runtime"), "runtime: expected an object or null, got nothing"),
        (lambda r: r.update(runtime="0.1.0"), "runtime: expected an object or null, got '0.1.0'"),
        (lambda r: r["runtime"].update(build_id=5), "runtime.build_id: expected a string or null, got 5"),
        (lambda r: r["runtime"].pop("error"), "runtime.error: expected a string or null, got nothing"),
    ],
)
def test_parse_probe_rejects_a_wrong_version_or_type(change: Any, expected: str) -> None:
    report = good_report()
    change(report)
    with pytest.raises(ProbeError, match=r"^node0: ") as caught:
        parse_probe(json.dumps(report), "node0")
    assert expected in str(caught.value)


def test_parse_probe_of_json_that_is_not_an_object() -> None:
    with pytest.raises(ProbeError, match=r"^node0: probe output is not a JSON object: '\[1, 2\]'"):
        parse_probe("[1, 2]", "node0")


def test_table_one_row_per_gpu_dashes_for_nulls_and_failures_in_red() -> None:
    console = Console(record=True, width=140)
    console.print(telemetry_table([("node0", NODE0), ("node1", NODE1), ("node2", "ssh: no route to host")]))
    text = console.export_text(clear=False)
    lines = [line for line in text.splitlines() if "│" in line]
    node0 = [line for line in lines if "0 Intel Arc A770 Graphics" in line]
    assert len(node0) == 2 and "node0" in node0[0] and "node0" not in node0[1]
    assert "1d 2h" in node0[0] and "0.50 0.25 0.10" in node0[0] and "15.6/62.5 GiB" in node0[0]
    assert "6.0/15.9 GiB" in node0[1] and "118.4" in node0[1] and "91.23 kJ" in node0[1]
    (node1,) = [line for line in lines if "node1" in line]
    assert [cell.strip() for cell in node1.split("│")[1:-1]] == ["node1", "42s", "-", "-", *["-"] * 6]
    assert "ssh: no route to host" in text
    assert "\x1b[31mssh: no route to host" in console.export_text(styles=True)

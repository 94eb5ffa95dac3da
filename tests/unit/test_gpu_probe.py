"""Intel Arc and AMD GPU health on the real drivers: the probe's amdgpu_top parser, DRM fdinfo and i915/xe hwmon.

Tool and fdinfo texts are captured outputs under tests/unit/fixtures/gpu (README there, and each test, names its
source). No Arc or Radeon here, so the sysfs and /proc trees are fakes built in tmp_path from those captured files
and the attribute names the kernel documents (Documentation/ABI/testing/sysfs-driver-intel-{i915,xe}-hwmon).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cockpit.nodes import probe_script
from cockpit.nodes.telemetry import GpuTelemetry, NodeTelemetry, ProbeError, parse_probe, telemetry_to_json

FIXTURES = Path(__file__).parent / "fixtures" / "gpu"
XE_FDINFO = (FIXTURES / "xe_fdinfo.txt").read_text()
I915_FDINFO = (FIXTURES / "i915_fdinfo.txt").read_text()


def readings(gpu: dict) -> dict:
    return {key: gpu[key] for key in probe_script.GPU_FIELDS}


def test_amdgpu_top_json_captured_upstream() -> None:
    # github.com/Umio-Yasuno/amdgpu_top docs/sample.json at 88f762a: `amdgpu_top -J`, an RX 6600 and an APU.
    rx6600, apu = probe_script.parse_amdgpu_top((FIXTURES / "amdgpu_top_sample.json").read_text())
    assert (rx6600["index"], rx6600["name"], rx6600["source"], rx6600["pci_bus_id"]) == (
        0,
        "AMD Radeon RX 6600",
        "amdgpu_top",
        "0000:03:00.0",
    )
    assert readings(rx6600) == {
        "util_pct": 8.0,
        "memory_used_mib": 705.0,
        "memory_total_mib": 8176.0,
        "temperature_c": 46.0,
        "power_w": 9.0,
        "energy_j": None,
    }
    assert rx6600["unknown"] == {"energy_j": "amdgpu_top reports no energy counter"}
    assert (apu["index"], apu["name"], apu["pci_bus_id"]) == (1, "AMD Radeon Graphics", "0000:08:00.0")
    # The APU has no "Average Power": its "Input Power" instead; no junction sensor: the edge one.
    assert (apu["power_w"], apu["temperature_c"], apu["memory_total_mib"]) == (9.0, 31.0, 512.0)


def test_amdgpu_top_output_without_devices_is_an_error() -> None:
    with pytest.raises(ValueError, match="no devices list"):
        probe_script.parse_amdgpu_top('{"amdgpu_top_version": {"major": 0}}')


def intel_cards(count: int) -> list[dict]:
    return [probe_script.new_gpu(i, "intel", None, "xpu-smi", None) for i in range(count)]


def test_xpu_smi_discovery_dumps_captured_upstream() -> None:
    # github.com/henrygd/beszel pull 755 (comment of 2025-04-21): `xpu-smi discovery --dump 1,2,6,16` on an A310.
    (a310,) = probe_script.parse_xpu_discovery((FIXTURES / "xpu_smi_discovery_a310.csv").read_text())
    assert (a310["index"], a310["name"], a310["pci_bus_id"]) == (0, "Intel(R) Arc(TM) A310 LP Graphics", None)
    assert a310["memory_total_mib"] is None  # "N/A": this card does not report its memory size
    # github.com/intel/xpumanager doc/smi_user_guide.md at 980fe92: `xpu-smi discovery --dump 1,2,3,6`, two Flex.
    flex = probe_script.parse_xpu_discovery((FIXTURES / "xpu_smi_discovery_flex.csv").read_text())
    assert [(g["index"], g["name"], g["source"]) for g in flex] == [
        (0, "Intel(R) Graphics [0x56c0]", "xpu-smi"),
        (1, "Intel(R) Graphics [0x56c0]", "xpu-smi"),
    ]


def test_xpu_smi_dump_of_six_max_1550_with_utilization_na() -> None:
    # github.com/intel/xpumanager issue 98: `xpu-smi dump -d 0,1,2,3,4,5 -m 0,1,2,3,4,5` on Aurora, xpu-smi 1.2.39.
    gpus = intel_cards(6)
    probe_script.apply_xpu_dump(gpus, (FIXTURES / "xpu_smi_dump_max1550.csv").read_text())
    # Each card keeps its last row; "N/A" stays unknown, "Celsius Degree" is the unit this release writes.
    assert [(g["util_pct"], g["power_w"], g["temperature_c"]) for g in gpus] == [
        (None, 409.54, 40.5),
        (None, 287.05, 38.5),
        (None, 281.7, 37.0),
        (None, 293.61, 38.0),
        (None, 292.31, 42.5),
        (None, 284.77, 41.0),
    ]


def test_xpu_smi_dumps_with_empty_cells_and_memory_used() -> None:
    # github.com/intel/xpumanager issue 69: `xpu-smi dump -d 0 -m 0,1,2,3` on a Flex 170 leaves cells empty.
    (flex,) = intel_cards(1)
    probe_script.apply_xpu_dump([flex], (FIXTURES / "xpu_smi_dump_flex170.csv").read_text())
    assert (flex["util_pct"], flex["power_w"], flex["temperature_c"]) == (None, 43.7, None)
    # github.com/henrygd/beszel pull 755: `xpu-smi dump -d "-1" -m 1,2,5,18` on an A310.
    (a310,) = intel_cards(1)
    probe_script.apply_xpu_dump([a310], (FIXTURES / "xpu_smi_dump_a310.csv").read_text())
    assert (a310["power_w"], a310["memory_used_mib"], a310["util_pct"]) == (15.36, 82.44, None)
    # github.com/intel/xpumanager doc/smi_user_guide.md at 980fe92: `xpu-smi dump -d 0 -m 0,1,2 -i 1 -n 5`.
    (idle,) = intel_cards(1)
    probe_script.apply_xpu_dump([idle], (FIXTURES / "xpu_smi_dump_guide.csv").read_text())
    assert (idle["util_pct"], idle["power_w"]) == (0.0, 14.61)


def test_xe_fdinfo_from_the_kernel_source() -> None:
    # github.com/torvalds/linux drivers/gpu/drm/xe/xe_drm_client.c, the DOC example of an xe client's fdinfo.
    keys = probe_script.parse_fdinfo(XE_FDINFO)
    assert (keys["drm-driver"], keys["drm-pdev"], keys["drm-client-id"]) == ("xe", "0000:03:00.0", "3")
    assert probe_script.engine_counters(keys) == {
        "rcs": (28257900, 7655183225, 1),
        "bcs": (0, 7655183225, 1),
        "vcs": (0, 7655183225, 2),
        "vecs": (0, 7655183225, 2),
        "ccs": (0, 7655183225, 4),
    }
    assert probe_script.fdinfo_size(keys["drm-resident-vram0"]) == 23992 * 1024
    assert probe_script.fdinfo_size(keys["drm-shared-vram0"]) == 16 * 1024 * 1024


def test_i915_fdinfo_from_the_kernel_docs() -> None:
    # github.com/torvalds/linux Documentation/gpu/i915.rst, "i915 DRM client usage stats implementation" (5.19).
    keys = probe_script.parse_fdinfo(I915_FDINFO)
    assert probe_script.engine_counters(keys) == {
        "render": (9288864723, None, 1),
        "copy": (2035071108, None, 1),
        "video": (0, None, 2),
        "video-enhance": (0, None, 1),
    }


def later(fdinfo: str, key: str, by: int) -> str:
    """The captured fdinfo as the kernel would write it once `key`'s counter has grown by `by` (and, for xe, the
    GPU timestamp in every drm-total-cycles- line by 10**9 cycles)."""
    lines = []
    for line in fdinfo.splitlines():
        name, _, value = line.partition(":")
        count, _, unit = value.strip().partition(" ")
        if name == key or name.startswith("drm-total-cycles-"):
            line = f"{name}:\t{int(count) + (by if name == key else 10**9)}{' ' + unit if unit else ''}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def clients(*texts: str) -> dict:
    return {(probe_script.bus_id(k["drm-pdev"]), k["drm-client-id"]): k for k in map(probe_script.parse_fdinfo, texts)}


def test_drm_usage_of_fake_later_samples_of_captured_fdinfo() -> None:
    xe_before, i915_before = clients(XE_FDINFO), clients(I915_FDINFO)
    # xe: 250M of 1G cycles on the render engine; ccs has 4 engines, so 1G of its cycles over 1G is 25%.
    xe_after = clients(later(XE_FDINFO, "drm-cycles-rcs", 250_000_000))
    assert probe_script.drm_usage(xe_before, xe_after, 150_000_000) == {"0000:03:00.0": (25.0, 23.43)}
    xe_after = clients(later(XE_FDINFO, "drm-cycles-ccs", 10**9))
    assert probe_script.drm_usage(xe_before, xe_after, 150_000_000)["0000:03:00.0"][0] == 25.0
    # i915: busy ns over the wall-clock interval; the two video engines count as one class of capacity 2.
    i915_after = clients(later(I915_FDINFO, "drm-engine-video", 150_000_000))
    assert probe_script.drm_usage(i915_before, i915_after, 150_000_000) == {"0000:00:02.0": (50.0, None)}
    # A client first seen in the second sample has no interval yet: it counts as idle, its memory as held.
    assert probe_script.drm_usage({}, xe_after, 150_000_000) == {"0000:03:00.0": (0.0, 23.43)}


def make_intel_card(root: Path, driver: str, hwmon: dict[str, str], files: dict[str, str] | None = None) -> None:
    """A fake /sys/class/drm/card0 of an Arc A770 (8086:56a0 at 0000:03:00.0) bound to `driver`."""
    device = root / "sys" / "class" / "drm" / "card0" / "device"
    attributes = {
        "vendor": "0x8086",
        "device": "0x56a0",
        "uevent": f"DRIVER={driver}\nPCI_CLASS=30000\nPCI_ID=8086:56A0\nPCI_SLOT_NAME=0000:03:00.0",
        **{f"hwmon/hwmon3/{name}": text for name, text in hwmon.items()},
        **(files or {}),
    }
    for name, text in attributes.items():
        (device / name).parent.mkdir(parents=True, exist_ok=True)
        (device / name).write_text(text + "\n")


def fake_process(root: Path, pid: int, fdinfo: dict[int, str]) -> None:
    """A fake /proc/<pid> whose fds `fdinfo` are open on the card's render node (and fd 0 on /dev/null)."""
    fd_dir = root / "proc" / str(pid) / "fd"
    (root / "proc" / str(pid) / "fdinfo").mkdir(parents=True)
    fd_dir.mkdir()
    (fd_dir / "0").symlink_to("/dev/null")
    (root / "proc" / str(pid) / "fdinfo" / "0").write_text("pos:\t0\nflags:\t0100002\n")
    for fd, text in fdinfo.items():
        (fd_dir / str(fd)).symlink_to("/dev/dri/renderD128")
        (root / "proc" / str(pid) / "fdinfo" / str(fd)).write_text(text)


def probe_sysfs(root: Path) -> dict:
    (root / "proc").mkdir(exist_ok=True)
    (gpu,) = probe_script.parse_sysfs(root / "sys", set(), set(), root / "proc", interval=0)
    return gpu


def test_sysfs_fake_xe_arc_with_a_client(tmp_path: Path) -> None:
    make_intel_card(
        tmp_path,
        "xe",
        {"name": "xe", "energy1_input": "5125483862", "energy1_label": "card", "energy2_input": "6254130495",
         "energy2_label": "pkg", "temp2_input": "44000", "temp2_label": "pkg", "temp3_input": "52000",
         "temp3_label": "vram", "power1_max": "190000000"},
        {"tile0/physical_vram_size_bytes": "17163091968"},
    )  # fmt: skip
    fake_process(tmp_path, 4242, {5: XE_FDINFO, 6: XE_FDINFO})  # the same client in two fds counts once
    gpu = probe_sysfs(tmp_path)
    assert (gpu["vendor"], gpu["source"], gpu["pci_bus_id"]) == ("intel", "sysfs", "0000:03:00.0")
    assert readings(gpu) == {
        "util_pct": 0.0,  # one sample's counters twice: no work in between
        "memory_used_mib": 23.43,
        "memory_total_mib": 16368.0,
        "temperature_c": 44.0,  # temp2, the package
        "power_w": 0.0,  # energy1 did not move over the interval
        "energy_j": 5125.484,
    }
    assert gpu["unknown"] == {}


def test_sysfs_fake_i915_arc_idle_says_why_for_what_it_lacks(tmp_path: Path) -> None:
    make_intel_card(tmp_path, "i915", {"name": "i915", "energy1_input": "123456789012", "power1_max": "190000000"})
    fake_process(tmp_path, 17, {})  # a process with no DRM fd: nobody has the card open
    gpu = probe_sysfs(tmp_path)
    assert readings(gpu) == {
        "util_pct": 0.0,
        "memory_used_mib": 0.0,
        "memory_total_mib": None,
        "temperature_c": None,
        "power_w": 0.0,
        "energy_j": 123456.789,
    }
    assert gpu["unknown"] == {
        "memory_total_mib": "the i915 driver exposes no local memory size in sysfs",
        "temperature_c": "the card's hwmon has no temperature sensor",
    }


def test_unknown_reasons_round_trip_and_are_checked() -> None:
    arc = GpuTelemetry(
        0, "intel", "Intel(R) Arc(TM) A770 Graphics", "sysfs", "0000:03:00.0", 12.5, 2048.0, None, None, 31.2,
        5125.5, (("memory_total_mib", "the i915 driver exposes no local memory size in sysfs"),),
    )  # fmt: skip
    node = NodeTelemetry("node0", 10.0, None, 4, None, None, (arc,), ())
    report = telemetry_to_json(node)
    assert report["gpus"][0]["unknown"] == {"memory_total_mib": "the i915 driver exposes no local memory size in sysfs"}
    assert parse_probe(json.dumps(report), "node0") == node
    assert arc.why_unknown("memory_total_mib") == "the i915 driver exposes no local memory size in sysfs"
    assert arc.why_unknown("util_pct") is None
    del report["gpus"][0]["unknown"]  # a report from before the probe gave reasons
    assert parse_probe(json.dumps(report), "node0").gpus[0].unknown == ()
    report["gpus"][0]["unknown"] = {"fan_rpm": "no fan"}
    with pytest.raises(ProbeError, match=r"gpus\[0\]\.unknown: expected readings and reasons or null"):
        parse_probe(json.dumps(report), "node0")

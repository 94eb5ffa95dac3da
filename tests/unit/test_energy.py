"""Energy counters. This VM exposes none, so the sysfs trees here are fake (said in the names); the code reads
them exactly as it reads /sys."""

from __future__ import annotations

from pathlib import Path

from runtime.energy import EnergyMeter, energy_meter, hwmon_gpu_meter, rapl_meter


def write(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")


def fake_rapl(root: Path) -> None:
    for zone, joules in (("intel-rapl:0", 100), ("intel-rapl:1", 50), ("intel-rapl:0:0", 999)):  # 0:0 is a subzone
        write(root / "class/powercap" / zone / "energy_uj", str(joules * 10**6))
        write(root / "class/powercap" / zone / "max_energy_range_uj", str(1000 * 10**6))


def test_rapl_sums_sockets_not_subzones_fake_sysfs(tmp_path: Path) -> None:
    fake_rapl(tmp_path)
    meter = rapl_meter(tmp_path)
    assert meter is not None and meter.source == "rapl:intel-rapl:0+intel-rapl:1"
    meter.start()
    write(tmp_path / "class/powercap/intel-rapl:0/energy_uj", str(130 * 10**6))
    write(tmp_path / "class/powercap/intel-rapl:0:0/energy_uj", str(5000 * 10**6))
    assert meter.joules() == 30


def test_rapl_counter_wraparound_fake_sysfs(tmp_path: Path) -> None:
    fake_rapl(tmp_path)
    meter = rapl_meter(tmp_path)
    meter.start()  # 150 J of a 2000 J range (two sockets)
    write(tmp_path / "class/powercap/intel-rapl:0/energy_uj", str(10 * 10**6))  # wrapped: 100 -> 1000 -> 10
    assert meter.joules() == 2000 - 90


def test_no_rapl_or_unreadable_rapl_is_none_fake_sysfs(tmp_path: Path) -> None:
    assert rapl_meter(tmp_path) is None
    write(tmp_path / "class/powercap/intel-rapl:0/energy_uj", "not a number")
    assert rapl_meter(tmp_path) is None


def test_intel_gpu_hwmon_counter_fake_sysfs(tmp_path: Path) -> None:
    counter = tmp_path / "class/drm/card0/device/hwmon/hwmon3/energy1_input"
    write(counter, str(7 * 10**6))
    meter = hwmon_gpu_meter(0, tmp_path)
    assert meter is not None and meter.source == "hwmon:card0"
    meter.start()
    write(counter, str(19 * 10**6))
    assert meter.joules() == 12
    assert hwmon_gpu_meter(1, tmp_path) is None


def test_only_local_rank_0_reports_a_shared_cpu_package() -> None:
    assert energy_meter("cpu", local_rank=1, device_index=0) is None


def test_this_machine_reports_a_counter_or_nothing() -> None:
    meter = energy_meter("cpu", local_rank=0, device_index=0)
    assert meter is None or isinstance(meter, EnergyMeter)
    if meter is not None:
        meter.start()
        assert meter.joules() >= 0

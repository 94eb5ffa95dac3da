"""Energy counters. This VM exposes none, so the sysfs trees here are fake (said in the names); the code reads
them exactly as it reads /sys."""

from __future__ import annotations

from pathlib import Path

from runtime.energy import Counter, EnergyMeter, energy_meter, hwmon_gpu_meter, rapl_meter

MJ = 10**6  # microjoules per joule
RANGE_J = 1000


def write(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")


def set_joules(root: Path, zone: str, joules: int) -> None:
    write(root / "class/powercap" / zone / "energy_uj", str(joules * MJ))


def fake_rapl(root: Path) -> None:
    """Two sockets and a subzone of the first (its energy is already in its package's)."""
    for zone, joules in (("intel-rapl:0", 100), ("intel-rapl:1", 50), ("intel-rapl:0:0", 999)):
        set_joules(root, zone, joules)
        write(root / "class/powercap" / zone / "max_energy_range_uj", str(RANGE_J * MJ))


def test_rapl_sums_sockets_not_subzones_fake_sysfs(tmp_path: Path) -> None:
    fake_rapl(tmp_path)
    meter = rapl_meter(tmp_path)
    assert meter is not None and meter.source == "rapl:intel-rapl:0+intel-rapl:1"
    meter.start()
    set_joules(tmp_path, "intel-rapl:0", 130)
    set_joules(tmp_path, "intel-rapl:1", 55)
    set_joules(tmp_path, "intel-rapl:0:0", 5000)
    assert meter.joules() == 35


def test_rapl_counter_wraparound_fake_sysfs(tmp_path: Path) -> None:
    set_joules(tmp_path, "intel-rapl:0", 900)
    write(tmp_path / "class/powercap/intel-rapl:0/max_energy_range_uj", str(RANGE_J * MJ))
    meter = rapl_meter(tmp_path)
    meter.start()
    set_joules(tmp_path, "intel-rapl:0", 20)  # 900 -> 1000 = 0 -> 20
    assert meter.joules() == 120


def test_rapl_wraparound_on_one_of_two_sockets_fake_sysfs(tmp_path: Path) -> None:
    fake_rapl(tmp_path)
    meter = rapl_meter(tmp_path)
    meter.start()  # socket 0 at 100 J, socket 1 at 50 J, each wrapping at 1000 J
    set_joules(tmp_path, "intel-rapl:0", 10)  # wrapped: +910 J
    set_joules(tmp_path, "intel-rapl:1", 60)  # +10 J
    assert meter.joules() == 920


def test_no_rapl_or_unreadable_rapl_is_none_fake_sysfs(tmp_path: Path) -> None:
    assert rapl_meter(tmp_path) is None
    (tmp_path / "class/powercap/intel-rapl:0").mkdir(parents=True)
    assert rapl_meter(tmp_path) is None  # a zone without its counter file
    write(tmp_path / "class/powercap/intel-rapl:0/energy_uj", "not a number")
    assert rapl_meter(tmp_path) is None


def test_one_unreadable_socket_makes_the_package_counter_none_fake_sysfs(tmp_path: Path) -> None:
    fake_rapl(tmp_path)
    write(tmp_path / "class/powercap/intel-rapl:1/energy_uj", "")
    assert rapl_meter(tmp_path) is None  # half the sockets would be an invented total


def test_intel_gpu_hwmon_counter_fake_sysfs(tmp_path: Path) -> None:
    counter = tmp_path / "class/drm/card0/device/hwmon/hwmon3/energy1_input"
    write(counter, str(7 * MJ))
    write(tmp_path / "class/drm/card0-DP-1/status", "connected")  # a connector, not a card
    meter = hwmon_gpu_meter(0, tmp_path)
    assert meter is not None and meter.source == "hwmon:card0"
    meter.start()
    write(counter, str(19 * MJ))
    assert meter.joules() == 12
    assert hwmon_gpu_meter(1, tmp_path) is None


def test_second_intel_gpu_fake_sysfs(tmp_path: Path) -> None:
    write(tmp_path / "class/drm/card0/device/hwmon/hwmon2/energy1_input", str(1 * MJ))
    write(tmp_path / "class/drm/card1/device/hwmon/hwmon5/energy1_input", str(2 * MJ))
    meter = hwmon_gpu_meter(1, tmp_path)
    assert meter is not None and meter.source == "hwmon:card1" and meter.counters[0].read_j() == 2
    assert hwmon_gpu_meter(2, tmp_path) is None


def test_gpus_are_numbered_as_numbers_fake_sysfs(tmp_path: Path) -> None:
    for card in (2, 10):
        write(tmp_path / f"class/drm/card{card}/device/hwmon/hwmon{card}/energy1_input", str(card * MJ))
    assert [hwmon_gpu_meter(i, tmp_path).source for i in range(2)] == ["hwmon:card2", "hwmon:card10"]


def test_gpu_without_hwmon_is_none_fake_sysfs(tmp_path: Path) -> None:
    (tmp_path / "class/drm/card0/device").mkdir(parents=True)
    assert hwmon_gpu_meter(0, tmp_path) is None
    write(tmp_path / "class/drm/card0/device/hwmon/hwmon0/energy1_input", "?")
    assert hwmon_gpu_meter(0, tmp_path) is None


def test_meter_without_wrap_reports_the_plain_delta() -> None:
    readings = iter([5.0, 12.5])
    meter = EnergyMeter("test", [Counter(lambda: next(readings))])
    meter.start()
    assert meter.joules() == 7.5


def test_only_local_rank_0_reports_a_shared_cpu_package() -> None:
    assert energy_meter("cpu", local_rank=1, device_index=0) is None


def test_this_machine_reports_a_counter_or_nothing() -> None:
    meter = energy_meter("cpu", local_rank=0, device_index=0)
    assert meter is None or isinstance(meter, EnergyMeter)
    if meter is not None:
        assert meter.source.startswith("rapl:")
        meter.start()
        assert meter.joules() >= 0

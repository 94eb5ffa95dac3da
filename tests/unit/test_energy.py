"""Energy counters. This VM exposes none, so the sysfs trees and the NVML module here are fake (said in the
names); the code reads them exactly as it reads /sys and nvidia-ml-py. Sockets summed, wraps mid-run corrected,
a counter that goes backwards named and null, and why a device has no counter."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path

import pytest

from runtime.energy import Counter, EnergyMeter, energy_fields, energy_meter, hwmon_gpu_meter, nvml_meter, rapl_meter

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
    assert isinstance(meter, EnergyMeter) and meter.source == "rapl:intel-rapl:0+intel-rapl:1" and meter.host
    meter.start()
    set_joules(tmp_path, "intel-rapl:0", 130)
    set_joules(tmp_path, "intel-rapl:1", 55)
    set_joules(tmp_path, "intel-rapl:0:0", 5000)
    assert meter.stop() == 35


def test_rapl_counter_wraparound_fake_sysfs(tmp_path: Path) -> None:
    set_joules(tmp_path, "intel-rapl:0", 900)
    write(tmp_path / "class/powercap/intel-rapl:0/max_energy_range_uj", str(RANGE_J * MJ))
    meter = rapl_meter(tmp_path)
    meter.start()
    set_joules(tmp_path, "intel-rapl:0", 20)  # 900 -> 1000 = 0 -> 20
    assert meter.stop() == 120


def test_rapl_wraparound_on_one_of_two_sockets_fake_sysfs(tmp_path: Path) -> None:
    fake_rapl(tmp_path)
    meter = rapl_meter(tmp_path)
    meter.start()  # socket 0 at 100 J, socket 1 at 50 J, each wrapping at 1000 J
    set_joules(tmp_path, "intel-rapl:0", 10)  # wrapped: +910 J
    set_joules(tmp_path, "intel-rapl:1", 60)  # +10 J
    assert meter.stop() == 920


def test_no_rapl_or_unreadable_rapl_says_why_fake_sysfs(tmp_path: Path) -> None:
    none = f"no energy counter on cpu: no RAPL package with an energy_uj under {tmp_path}/class/powercap"
    assert rapl_meter(tmp_path) == none
    (tmp_path / "class/powercap/intel-rapl:0").mkdir(parents=True)
    assert rapl_meter(tmp_path) == none  # a zone without its counter file
    write(tmp_path / "class/powercap/intel-rapl:0/energy_uj", "not a number")
    assert (
        rapl_meter(tmp_path) == "no energy counter on cpu: RAPL unreadable (could not convert string to float: "
        "'not a number')"
    )
    assert energy_fields(none) == {"energy_j": None, "host_energy_j": None, "energy_source": None, "energy_why": none}


def test_one_unreadable_socket_makes_the_package_counter_none_fake_sysfs(tmp_path: Path) -> None:
    fake_rapl(tmp_path)
    write(tmp_path / "class/powercap/intel-rapl:1/energy_uj", "")
    assert isinstance(rapl_meter(tmp_path), str)  # half the sockets would be an invented total


def test_intel_gpu_hwmon_counter_fake_sysfs(tmp_path: Path) -> None:
    counter = tmp_path / "class/drm/card0/device/hwmon/hwmon3/energy1_input"
    write(counter, str(7 * MJ))
    write(tmp_path / "class/drm/card0-DP-1/status", "connected")  # a connector, not a card
    meter = hwmon_gpu_meter(0, tmp_path)
    assert isinstance(meter, EnergyMeter) and meter.source == "hwmon:card0" and not meter.host
    meter.start()
    write(counter, str(19 * MJ))
    assert meter.stop() == 12
    assert hwmon_gpu_meter(1, tmp_path) == "no energy counter on xpu 1: 1 DRM card(s) with a hwmon energy1_input"


def test_second_intel_gpu_fake_sysfs(tmp_path: Path) -> None:
    write(tmp_path / "class/drm/card0/device/hwmon/hwmon2/energy1_input", str(1 * MJ))
    write(tmp_path / "class/drm/card1/device/hwmon/hwmon5/energy1_input", str(2 * MJ))
    meter = hwmon_gpu_meter(1, tmp_path)
    assert isinstance(meter, EnergyMeter) and meter.source == "hwmon:card1" and meter.counters[0].read_j() == 2
    assert isinstance(hwmon_gpu_meter(2, tmp_path), str)


def test_gpus_are_numbered_as_numbers_fake_sysfs(tmp_path: Path) -> None:
    for card in (2, 10):
        write(tmp_path / f"class/drm/card{card}/device/hwmon/hwmon{card}/energy1_input", str(card * MJ))
    assert [getattr(hwmon_gpu_meter(i, tmp_path), "source", None) for i in range(2)] == ["hwmon:card2", "hwmon:card10"]


def test_gpu_without_hwmon_is_none_fake_sysfs(tmp_path: Path) -> None:
    (tmp_path / "class/drm/card0/device").mkdir(parents=True)
    assert isinstance(hwmon_gpu_meter(0, tmp_path), str)
    write(tmp_path / "class/drm/card0/device/hwmon/hwmon0/energy1_input", "?")
    assert hwmon_gpu_meter(0, tmp_path) == (
        f"no energy counter on xpu 0: {tmp_path}/class/drm/card0/device/hwmon/hwmon0/energy1_input unreadable "
        "(could not convert string to float: '?')"
    )


def test_meter_without_wrap_reports_the_plain_delta() -> None:
    readings = iter([5.0, 12.5])
    meter = EnergyMeter("test", [Counter("test", lambda: next(readings))])
    meter.start()
    assert meter.stop() == 7.5


def test_only_local_rank_0_reports_a_shared_cpu_package() -> None:
    assert energy_meter("cpu", local_rank=1, device_index=0) is None
    assert energy_fields(None) == dict.fromkeys(("energy_j", "host_energy_j", "energy_source", "energy_why"))


def test_this_machine_reports_a_counter_or_nothing() -> None:
    meter = energy_meter("cpu", local_rank=0, device_index=0)
    assert isinstance(meter, str | EnergyMeter)
    if isinstance(meter, EnergyMeter):
        assert meter.source.startswith("rapl:")
        meter.start()
        assert (meter.stop() or 0) >= 0


def test_rapl_wraps_twice_in_a_run_read_between_fake_sysfs(tmp_path: Path) -> None:
    """Two wraps between start and stop: only the readings between keep the count right."""
    set_joules(tmp_path, "intel-rapl:0", 0)
    write(tmp_path / "class/powercap/intel-rapl:0/max_energy_range_uj", str(RANGE_J * MJ))
    meter = rapl_meter(tmp_path)
    assert isinstance(meter, EnergyMeter)
    meter.sample_s = 3600.0  # the sampler thread never wakes: the test reads in its place
    meter.start()
    for joules in (990, 5, 990, 5):  # up, wrapped, up, wrapped
        set_joules(tmp_path, "intel-rapl:0", joules)
        meter.sample()
    assert meter.stop() == 2 * RANGE_J + 5
    assert meter._sampler is not None and not meter._sampler.is_alive()  # started for a wrapping counter, stopped


def test_rapl_is_recorded_as_the_hosts_energy_fake_sysfs(tmp_path: Path) -> None:
    fake_rapl(tmp_path)
    meter = rapl_meter(tmp_path)
    assert isinstance(meter, EnergyMeter)
    meter.start()
    set_joules(tmp_path, "intel-rapl:0", 112)
    fields = energy_fields(meter)
    assert fields == {"energy_j": None, "host_energy_j": 12, "energy_source": meter.source, "energy_why": None}


def test_hwmon_counter_going_backwards_is_named_and_null_fake_sysfs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    counter = tmp_path / "class/drm/card1/device/hwmon/hwmon3/energy1_input"
    write(counter, str(9 * MJ))
    meter = hwmon_gpu_meter(0, tmp_path)
    assert isinstance(meter, EnergyMeter) and meter.source == "hwmon:card1" and not meter.host
    meter.start()
    write(counter, str(4 * MJ))  # no wrap range: a driver reset, not a rollover
    with caplog.at_level(logging.WARNING, logger="runtime"):
        fields = energy_fields(meter)
    why = "energy counter card1 went backwards (9.000 J -> 4.000 J) with no known wrap range: energy not reported"
    assert fields == {"energy_j": None, "host_energy_j": None, "energy_source": "hwmon:card1", "energy_why": why}
    assert why in caplog.text


class FakeNVMLError(Exception):
    pass


def fake_pynvml(millijoules: list[int], bus: str = "00000000:3b:00.0") -> types.ModuleType:
    """A stand-in for nvidia-ml-py: one GPU at `bus` whose energy counter reads `millijoules` in turn."""
    module = types.ModuleType("pynvml")
    readings = iter(millijoules)

    def handle_by_bus(wanted: bytes) -> str:
        if wanted.decode() != bus:
            raise FakeNVMLError("Not Found")
        return "handle"

    module.NVMLError = FakeNVMLError  # type: ignore[attr-defined]
    module.nvmlInit = lambda: None  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByPciBusId = handle_by_bus  # type: ignore[attr-defined]
    module.nvmlDeviceGetTotalEnergyConsumption = lambda handle: next(readings)  # type: ignore[attr-defined]
    return module


def test_nvml_counts_millijoules_fake_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([1_000, 5_000, 17_500]))  # probe, start, stop
    meter = nvml_meter("00000000:3b:00.0")
    assert isinstance(meter, EnergyMeter) and meter.source == "nvml:00000000:3b:00.0"
    meter.start()
    assert energy_fields(meter)["energy_j"] == pytest.approx(12.5)


def test_nvml_without_the_gpu_or_the_bindings_says_why_fake_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([0]))
    assert nvml_meter("00000000:af:00.0") == "no energy counter on cuda 00000000:af:00.0: NVML says Not Found"
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed: the import fails
    assert nvml_meter("00000000:3b:00.0") == (
        "no energy counter on cuda: nvidia-ml-py (pynvml) is not installed in the runtime"
    )

"""Energy counters, read at the start and end of a run: NVML on NVIDIA, hwmon on Intel GPUs, RAPL on CPUs.

Only cumulative hardware counters are used, never power integrated by sampling, and where a device exposes no
counter the result is None: an absent measurement is recorded as null, not estimated.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Counter:
    """One cumulative hardware counter in joules; `wrap_j` is where it rolls over (0: never)."""

    read_j: Callable[[], float]
    wrap_j: float = 0.0


@dataclass
class EnergyMeter:
    """The energy used between `start` and `joules`, summed over counters (CPU sockets), each corrected for
    its own rollover."""

    source: str
    counters: list[Counter]

    def start(self) -> None:
        self._begin = [c.read_j() for c in self.counters]

    def joules(self) -> float:
        total = 0.0
        for counter, begin in zip(self.counters, self._begin, strict=True):
            delta = counter.read_j() - begin
            total += delta + counter.wrap_j if delta < 0 and counter.wrap_j else delta
        return total


def _read_number(path: Path) -> float:
    return float(path.read_text().strip())


def rapl_meter(sysfs: Path = Path("/sys")) -> EnergyMeter | None:
    """Package energy of every CPU socket (RAPL, also exposed for AMD), summed."""
    packages = sorted(p for p in (sysfs / "class/powercap").glob("intel-rapl:[0-9]*") if p.name.count(":") == 1)
    readable = [p for p in packages if (p / "energy_uj").is_file()]
    try:
        for p in readable:
            _read_number(p / "energy_uj")  # may exist but be root-only
    except (OSError, ValueError):
        return None
    if not readable:
        return None

    def counter(package: Path) -> Counter:
        limit = package / "max_energy_range_uj"
        wrap = _read_number(limit) / 1e6 if limit.is_file() else 0.0
        return Counter(lambda: _read_number(package / "energy_uj") / 1e6, wrap)

    return EnergyMeter(f"rapl:{'+'.join(p.name for p in readable)}", [counter(p) for p in readable])


def hwmon_gpu_meter(index: int, sysfs: Path = Path("/sys")) -> EnergyMeter | None:
    """The `index`-th DRM card exposing a hwmon energy counter (Intel Arc: energy1_input, microjoules)."""
    counters = sorted(
        (sysfs / "class/drm").glob("card[0-9]*/device/hwmon/hwmon*/energy1_input"),
        key=lambda path: [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))],
    )  # card2 before card10
    if index >= len(counters):
        return None
    counter = counters[index]
    try:
        _read_number(counter)
    except (OSError, ValueError):
        return None
    card = counter.parts[counter.parts.index("drm") + 1]
    return EnergyMeter(f"hwmon:{card}", [Counter(lambda: _read_number(counter) / 1e6)])


def nvml_meter(device_index: int) -> EnergyMeter | None:
    """Total energy of one NVIDIA GPU since driver load (Volta and newer), via nvidia-ml-py if installed."""
    try:
        import pynvml
        import torch

        pynvml.nvmlInit()
        props = torch.cuda.get_device_properties(device_index)
        bus = f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
        handle = pynvml.nvmlDeviceGetHandleByPciBusId(bus.encode())
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception:
        return None
    return EnergyMeter(f"nvml:{bus}", [Counter(lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3)])


def energy_meter(device_type: str, local_rank: int, device_index: int) -> EnergyMeter | None:
    """This rank's counter. On a CPU the package is shared, so only local rank 0 reports it (no double count)."""
    if device_type == "cuda":
        return nvml_meter(device_index)
    if device_type == "xpu":
        return hwmon_gpu_meter(device_index)
    return rapl_meter() if local_rank == 0 else None

"""Energy counters, read while a run decodes: NVML on NVIDIA, hwmon on Intel GPUs, RAPL on CPUs.

Only cumulative hardware counters are used, never power integrated by sampling. A counter that rolls over (RAPL
wraps at max_energy_range_uj, within minutes at full load) is read every SAMPLE_S seconds while the meter runs,
so no interval spans more than one wrap; a counter that goes backwards with no known wrap range is named in the
rank's log and its energy is None, never negative. Where a device exposes no counter there is no meter but a
sentence saying why: an absent measurement is recorded as null with its reason, not estimated.

A CPU's package counter is the whole host's: only local rank 0 reads it and records it as the host's energy
(`EnergyMeter.host`); the collector splits it between the host's ranks by busy time (cockpit.sweep.collect).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("runtime")
SAMPLE_S = 10.0  # how often a wrapping counter is read: RAPL's shortest range (~65 kJ) lasts minutes even at 1 kW


@dataclass
class Counter:
    """One cumulative hardware counter in joules; `wrap_j` is where it rolls over (0: never)."""

    name: str
    read_j: Callable[[], float]
    wrap_j: float = 0.0


@dataclass
class EnergyMeter:
    """The energy used between `start` and `stop`, summed over counters (CPU sockets), each read at both ends
    and, where it wraps, every `sample_s` between, each interval corrected for its rollover."""

    source: str
    counters: list[Counter]
    host: bool = False  # the host's counter (a CPU package), not this rank's device's
    sample_s: float = SAMPLE_S
    problem: str | None = None  # why the energy is unknown after all: a counter went backwards
    _last: list[float] = field(default_factory=list, init=False, repr=False)
    _used: list[float] = field(default_factory=list, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _stopped: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _sampler: threading.Thread | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        self._last = [c.read_j() for c in self.counters]
        self._used = [0.0] * len(self.counters)
        if any(c.wrap_j for c in self.counters):
            self._sampler = threading.Thread(target=self._sample_until_stopped, name="energy-sampler", daemon=True)
            self._sampler.start()

    def _sample_until_stopped(self) -> None:
        while not self._stopped.wait(self.sample_s):
            self.sample()

    def sample(self) -> None:
        """Read every counter; add what each used since its last reading."""
        with self._lock:
            for i, counter in enumerate(self.counters):
                now = counter.read_j()
                delta = now - self._last[i]
                if delta < 0 and counter.wrap_j and delta + counter.wrap_j >= 0:
                    delta += counter.wrap_j
                elif delta < 0 and self.problem is None:
                    wrap = f"its wrap range {counter.wrap_j:,.1f} J" if counter.wrap_j else "no known wrap range"
                    self.problem = (
                        f"energy counter {counter.name} went backwards ({self._last[i]:,.3f} J -> {now:,.3f} J) "
                        f"with {wrap}: energy not reported"
                    )
                self._last[i] = now
                self._used[i] += delta

    def stop(self) -> float | None:
        """The joules used since `start`; None, with the problem logged, when a counter went backwards."""
        self._stopped.set()
        if self._sampler is not None:
            self._sampler.join()
        self.sample()
        if self.problem:
            log.warning("%s", self.problem)
            return None
        return sum(self._used)


def energy_fields(meter: EnergyMeter | str | None, passes: int = 1) -> dict[str, Any]:
    """A rank's energy as its metrics record it (runtime.contract.RankMetrics), the meter stopped: its device's
    joules or its host's over one of the `passes` it measured (their mean), the counter, or why there is none
    (None: another rank reads this host's counter)."""
    if not isinstance(meter, EnergyMeter):
        return {"energy_j": None, "host_energy_j": None, "energy_source": None, "energy_why": meter}
    joules = meter.stop()
    joules = None if joules is None else joules / passes
    return {
        "energy_j": None if meter.host else joules,
        "host_energy_j": joules if meter.host else None,
        "energy_source": meter.source,
        "energy_why": meter.problem,
    }


def _read_number(path: Path) -> float:
    return float(path.read_text().strip())


def rapl_meter(sysfs: Path = Path("/sys")) -> EnergyMeter | str:
    """Package energy of every CPU socket (RAPL, also exposed for AMD), summed; or why there is none."""
    powercap = sysfs / "class/powercap"
    packages = sorted(p for p in powercap.glob("intel-rapl:[0-9]*") if p.name.count(":") == 1)
    readable = [p for p in packages if (p / "energy_uj").is_file()]
    if not readable:
        return f"no energy counter on cpu: no RAPL package with an energy_uj under {powercap}"
    try:
        for p in readable:
            _read_number(p / "energy_uj")  # may exist but be root-only
    except PermissionError as e:
        return f"no energy counter on cpu without RAPL access: {e.filename} is root-only here"
    except (OSError, ValueError) as e:
        return f"no energy counter on cpu: RAPL unreadable ({e})"

    def counter(package: Path) -> Counter:
        limit = package / "max_energy_range_uj"
        wrap = _read_number(limit) / 1e6 if limit.is_file() else 0.0
        return Counter(package.name, lambda: _read_number(package / "energy_uj") / 1e6, wrap)

    return EnergyMeter(f"rapl:{'+'.join(p.name for p in readable)}", [counter(p) for p in readable], host=True)


def hwmon_gpu_meter(index: int, sysfs: Path = Path("/sys")) -> EnergyMeter | str:
    """The `index`-th DRM card exposing a hwmon energy counter (Intel Arc: energy1_input, microjoules)."""
    counters = sorted(
        (sysfs / "class/drm").glob("card[0-9]*/device/hwmon/hwmon*/energy1_input"),
        key=lambda path: [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))],
    )  # card2 before card10
    if index >= len(counters):
        return f"no energy counter on xpu {index}: {len(counters)} DRM card(s) with a hwmon energy1_input"
    counter = counters[index]
    try:
        _read_number(counter)
    except (OSError, ValueError) as e:
        return f"no energy counter on xpu {index}: {counter} unreadable ({e})"
    card = counter.parts[counter.parts.index("drm") + 1]
    return EnergyMeter(f"hwmon:{card}", [Counter(card, lambda: _read_number(counter) / 1e6)])


def nvml_meter(bus: str) -> EnergyMeter | str:
    """Total energy of the NVIDIA GPU at PCI address `bus` since driver load (Volta and newer), via nvidia-ml-py
    (the runtime's `cuda` extra)."""
    try:
        import pynvml
    except ImportError:
        return "no energy counter on cuda: nvidia-ml-py (pynvml) is not installed in the runtime"
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByPciBusId(bus.encode())
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except pynvml.NVMLError as e:
        return f"no energy counter on cuda {bus}: NVML says {e}"
    return EnergyMeter(f"nvml:{bus}", [Counter(bus, lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3)])


def cuda_bus(device_index: int) -> str:
    """The PCI address NVML knows a CUDA device by."""
    import torch

    props = torch.cuda.get_device_properties(device_index)
    return f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"


def energy_meter(device_type: str, local_rank: int, device_index: int) -> EnergyMeter | str | None:
    """This rank's counter, or why it has none. On a CPU the package is shared, so only local rank 0 reads it
    for the whole host (no double count) and the others get None."""
    if device_type == "cuda":
        return nvml_meter(cuda_bus(device_index))
    if device_type == "xpu":
        return hwmon_gpu_meter(device_index)
    return rapl_meter() if local_rank == 0 else None

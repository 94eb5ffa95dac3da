"""The device a rank runs on, and the facts about it its metrics report: which device, its model name, the
CPUs this process may use, and the peak memory it held.

Torch is imported inside the functions: `runtime.main` imports this module (through `runtime.rank`) and stays
quick to import for `--help` and `--dry-run`.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.schema import InputError

if TYPE_CHECKING:
    import torch


def pick_device(requested: str, local_rank: int) -> torch.device:
    """`requested` ("auto", "cuda", "xpu" or "cpu") made concrete; an accelerator is chosen by local rank."""
    import torch

    has_xpu = hasattr(torch, "xpu") and torch.xpu.is_available()
    kind = requested
    if requested == "auto":
        kind = "cuda" if torch.cuda.is_available() else "xpu" if has_xpu else "cpu"
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise InputError("device 'cuda' requested but no CUDA device is visible")
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if kind == "xpu":
        if not has_xpu:
            raise InputError("device 'xpu' requested but no XPU device is visible")
        index = local_rank % torch.xpu.device_count()
        torch.xpu.set_device(index)
        return torch.device("xpu", index)
    return torch.device("cpu")


def device_name(device: torch.device) -> str:
    """The device's model name: the GPU's, or the CPU's from /proc/cpuinfo."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "xpu":
        return torch.xpu.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def host_cpus() -> int:
    """CPUs this process may run on (a Slurm cpuset can give fewer than the host has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def peak_memory_bytes(device: torch.device) -> int:
    """The most memory this process has held: allocated on the accelerator, resident on a CPU."""
    import resource

    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    if device.type == "xpu":
        return int(torch.xpu.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def has_bf16(device: torch.device) -> bool:
    """Whether the device computes in bf16 natively (a CPU always can, if slowly)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "xpu":
        return torch.xpu.is_bf16_supported(including_emulation=False)
    return True


def compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype activations (and the weights left unquantized) run in: the precision's own; for weight-only
    int8/int4, fp32 on a CPU and bf16 on an accelerator, fp16 where it has no bf16. A precision the device
    cannot run is refused, naming what would."""
    import torch

    dense = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision in dense:
        if precision == "bf16" and not has_bf16(device):
            raise InputError(
                f"precision bf16: {device} ({device_name(device)}) has no bf16; use fp16, or int8/int4 "
                "(their activations run in fp16 there)"
            )
        return dense[precision]
    if device.type == "cpu":
        return torch.float32
    return torch.bfloat16 if has_bf16(device) else torch.float16

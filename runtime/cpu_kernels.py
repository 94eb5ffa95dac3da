"""The project's CPU kernels (runtime/kernels/<base>.cpp), each compiled on first use for the CPU it runs on:
gemv (fp32 matrix-vector, runtime.cpu_linear), qgemv (int8/int4 codes, runtime.quantize), decode_ops (the fused
one-token ops of runtime.decoder). Built like DeepSpeed's CPU ops (`-march=native`, into TORCH_EXTENSIONS_DIR);
where one cannot be built, the log says so once and PyTorch's operators do its work."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import platform
from pathlib import Path
from types import ModuleType

log = logging.getLogger("runtime")
KERNELS = Path(__file__).with_name("kernels")


def build_name(base: str = "gemv") -> str:
    """Kernel `base`'s extension name on this CPU: a build made with another CPU's `-march=native` could stop on
    an instruction this one lacks, so the name carries a digest of the architecture and its feature flags."""
    flags = ""
    with contextlib.suppress(OSError):
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
        flags = next((line for line in cpuinfo if line.startswith(("flags", "Features"))), "")
    digest = hashlib.sha256(f"{platform.machine()} {flags}".encode()).hexdigest()[:10]
    return f"runtime_{base}_{digest}"


@functools.cache
def compiled(base: str) -> ModuleType | None:
    """Kernel `base` compiled, or None where it cannot be built here (said once in the log: its layers go
    through PyTorch)."""
    from torch.utils.cpp_extension import load

    try:
        return load(
            name=build_name(base),
            sources=[str(KERNELS / f"{base}.cpp")],
            extra_cflags=["-O3", "-march=native", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
        )
    except (OSError, RuntimeError, ImportError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        log.warning("CPU kernel %s not built (%s): PyTorch's own operators do its work", base, reason)
        return None

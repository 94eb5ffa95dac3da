"""Command lines that start ranks of a runtime module on this machine, through the launchers a cluster uses.

`single` is one plain process; `torchrun` and `deepspeed` start `procs` ranks with a rendezvous on loopback.
The deepspeed launcher also sets LOCAL_SIZE, which selects DeepSpeed's shared-memory all-reduce on CPUs.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Literal

LocalLauncher = Literal["single", "torchrun", "deepspeed"]
PROJECT = Path(__file__).resolve().parents[1]
# variables an outer launch left behind would confuse the ranks we start
LAUNCH_VARS = {
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def local_command(launcher: LocalLauncher, procs: int, module: str, *args: str) -> list[str]:
    """`python -m module args` as `procs` ranks started by `launcher`."""
    bin_dir = Path(sys.executable).parent
    if launcher == "single":
        return [sys.executable, "-m", module, *args]
    if launcher == "torchrun":
        head = [str(bin_dir / "torchrun"), f"--nproc-per-node={procs}", f"--master-port={free_port()}", "-m"]
        return [*head, module, *args]
    head = [str(bin_dir / "deepspeed"), f"--num_gpus={procs}", f"--master_port={free_port()}", "--module"]
    return [*head, module, *args]


def local_env(**extra: str) -> dict[str, str]:
    """The environment for ranks started here: the project importable, no Hub access, no stale launch vars."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    pythonpath = os.pathsep.join(p for p in (str(PROJECT), env.get("PYTHONPATH")) if p)
    path = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return {**env, "PYTHONPATH": pythonpath, "HF_HUB_OFFLINE": "1", "PATH": path, **extra}

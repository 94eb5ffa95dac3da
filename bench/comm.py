"""Communication between two ranks on this machine: the runtime's microbenchmark under torchrun, giving alpha
(latency) and beta (bandwidth) per implementation. The peer is the process group's own all-reduce."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from bench.report import ratio_line, table
from runtime.local_launch import local_command, local_env


def run(quick: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-comm-") as tmp:
        out = Path(tmp) / "comm.json"
        command = local_command("torchrun", 2, "runtime.microbench", "comm", "--out", str(out))
        done = subprocess.run(command, env=local_env(), capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"runtime.microbench comm failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        figures = json.loads(out.read_text())
    results = {r["impl"]: r for r in figures["results"]}
    print(f"communication, 2 ranks on {figures['hosts'][0]}, {figures['device']}, backend {figures['backend']}:")
    sizes = figures["results"][0]["sizes"]
    small, large = sizes.index(4), len(sizes) - 1
    rows = [
        [
            name,
            f"{r['alpha_s'] * 1e6:.1f} us",
            f"{r['beta_Bps'] / 1e9:.2f} GB/s",
            f"{r['seconds'][small] * 1e6:.0f} us",
            f"{r['seconds'][large] * 1e3:.2f} ms",
        ]
        for name, r in results.items()
    ]
    print(table(["implementation", "alpha", "beta", "4 B", f"{sizes[large] >> 20} MiB"], rows))
    gloo = results.get(f"{figures['backend']}_all_reduce")
    shm = results.get("shm_all_reduce")
    if gloo and shm:
        speedup = gloo["seconds"][small] / shm["seconds"][small]
        print(ratio_line("shared-memory all-reduce, 4 B", speedup, f"{figures['backend']} all-reduce (faster)"))
        figures["shm_vs_process_group_small"] = speedup
    return figures

"""model: the model check a sweep makes before any job (cockpit.delivery.model), cheap (every file's size and mtime,
here and on the node) against the full one (`model verify --full`: every file hashed, here and on the node), on a
1 GB synthetic checkpoint (four 256 MB safetensors-sized shards and a config) in a temporary folder.

The node is this machine (`local`): the ssh pool runs the node's script here without ssh, so the figure is the
check's own work, python3 starting included, not the network's. That python3 is the system's (/usr/bin first), as a
node's is: a version manager's shim in front of it (pyenv's) would add 0.2 s a start that no node pays. Both read
from the page cache (a first full check warms it). The goal: the cheap check under 0.2 s per node, so a 16 GB
checkpoint never costs a sweep a full hash.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

from bench.report import ratio_line, table
from cockpit.config import ClusterSection, CockpitFile, ModelSection, PathsSection, Settings
from cockpit.delivery import model
from cockpit.nodes.inventory import Node
from cockpit.nodes.ssh import SshPool

SHARD_BYTES = 256 << 20
SHARDS = 4
BLOCK = os.urandom(16 << 20)  # each shard is this block repeated: the hash's work does not depend on the bytes
GOAL_S = 0.2


def _checkpoint(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}\n')
    for index in range(1, SHARDS + 1):
        with (folder / f"model-{index:05d}-of-{SHARDS:05d}.safetensors").open("wb") as shard:
            for _ in range(SHARD_BYTES // len(BLOCK)):
                shard.write(BLOCK)


async def _timed(pool: SshPool, node: Node, settings: Settings, full: bool) -> float:
    started = time.perf_counter()
    verdict = await model.check(pool, [node], settings, full=full)
    seconds = time.perf_counter() - started
    if not verdict.ok:
        raise RuntimeError(f"the model check failed on an unchanged copy:\n{verdict.summary()}")
    return seconds


async def _measure(root: Path, repeats: int) -> tuple[list[float], list[float]]:
    folder = root / "models" / "bench-llama"
    _checkpoint(folder)
    settings = Settings(
        CockpitFile(
            cluster=ClusterSection(scheduler="slurm"),
            paths=PathsSection(data_dir=str(root / "data")),
            model=ModelSection(path=str(folder)),
        ),
        root / "cockpit.toml",
    )
    node = Node("bench-node", "127.0.0.1", local=True)
    async with SshPool(root / "known_hosts") as pool:
        await model.check_pushed(pool, [node], settings, model.hash_here(settings))  # the push's record
        await _timed(pool, node, settings, full=True)  # warms the page cache
        cheap = [await _timed(pool, node, settings, full=False) for _ in range(repeats)]
        full = [await _timed(pool, node, settings, full=True) for _ in range(repeats)]
    return cheap, full


def run(quick: bool) -> dict:
    repeats = 3 if quick else 7
    path = f"/usr/bin{os.pathsep}{os.environ.get('PATH', '')}"
    with tempfile.TemporaryDirectory(prefix="cockpit-bench-model-") as temp, mock.patch.dict(os.environ, PATH=path):
        cheap, full = asyncio.run(_measure(Path(temp), repeats))
    cheap_s, full_s = statistics.median(cheap), statistics.median(full)
    size = SHARDS * SHARD_BYTES
    print(f"{SHARDS} shards, {size / 1e9:.2f} GB, one node (this machine), median of {repeats}")
    rows = [["cheap: sizes and mtimes", cheap_s, 0.0], ["full: every file hashed", full_s, 2 * size / 1e9]]
    print(table(["check (here, then the node)", "seconds", "GB hashed"], rows))
    verdict = "met" if cheap_s < GOAL_S else "NOT met"
    print(f"cheap check per node: {cheap_s * 1000:.0f} ms (goal < {GOAL_S * 1000:.0f} ms: {verdict})")
    speedup = full_s / cheap_s
    print(ratio_line("cheap check speed", speedup, "the full check"))
    return {"bytes": size, "cheap_s": cheap_s, "full_s": full_s, "speedup": speedup, "goal_met": cheap_s < GOAL_S}

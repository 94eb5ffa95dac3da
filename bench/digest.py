"""digest: hashing a runtime install as a node does before every sweep (cockpit.delivery.tree_digest), against
coreutils' `sha256sum` over the same files in the same run (`find -type f | sort | xargs sha256sum`).

The tree is torch's own package folder in this clone's .venv: most of a runtime build's bytes, in its real mix of
a few large shared libraries and thousands of small files. Both sides read from the page cache (a first pass
warms it). The goal: at least as fast as sha256sum, since the digest adds a listing and symlink targets to it.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path

from bench.report import ratio_line, table
from cockpit.delivery.tree_digest import digest_of, listing


def _tree() -> Path:
    import torch

    return Path(torch.__file__).parent


def _ours(tree: Path) -> tuple[float, int, int]:
    started = time.perf_counter()
    lines, total = listing(tree)
    digest_of(lines)
    return time.perf_counter() - started, len(lines), total


def _peer(tree: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        f"find {tree} -type f -not -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum > /dev/null",
        shell=True,
        check=True,
    )
    return time.perf_counter() - started


def run(quick: bool) -> dict:
    tree = _tree()
    _ours(tree)  # warm the page cache for both
    repeats = 2 if quick else 5
    ours, peer = [], []
    files = size = 0
    for _ in range(repeats):
        seconds, files, size = _ours(tree)
        ours.append(seconds)
        peer.append(_peer(tree))
    ours_s, peer_s = statistics.median(ours), statistics.median(peer)
    print(f"{tree}: {files:,} files, {size / 1e9:.2f} GB, median of {repeats}")
    rows = [["tree_digest", ours_s, size / ours_s / 1e9], ["sha256sum", peer_s, size / peer_s / 1e9]]
    print(table(["hasher", "seconds", "GB/s"], rows))
    speedup = peer_s / ours_s
    print(ratio_line("speed", speedup, "sha256sum", goal=1.0))
    return {"files": files, "bytes": size, "ours_s": ours_s, "sha256sum_s": peer_s, "speedup": speedup}

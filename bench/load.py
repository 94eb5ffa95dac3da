"""load: one pipeline stage's load of a sharded checkpoint (`runtime.checkpoint.load_stage`, stage 0 of 2: the
embedding and the first half of the layers) against a whole-model `AutoModelForCausalLM.from_pretrained` of the
same folder, the peer. The checkpoint is the llama-100m shape with random weights in bf16, saved once with
`save_pretrained` as several shards and an index under .cache/bench/. Both loads touch every page of every weight they
hold, so the bytes are really read and not only mapped.

Cold cache without root: before every load the checkpoint's files are dropped from the page cache with
posix_fadvise(DONTNEED), which evicts only those files' clean pages (nothing of anyone else's), so each load reads
from the disk (on a virtual machine, from whatever the host caches below it). Rounds are interleaved (ours, the
peer, ours, ...), after one warm-up of each, so both see the same machine; the figures are each side's median and
range, and the ratio of the medians. A stage reads its share of the bytes: expect about half.
"""

from __future__ import annotations

import gc
import mmap
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.report import RESULTS_DIR, table

SHAPE = "llama-100m"
SHARD_SIZE = "100MB"  # save_pretrained's max_shard_size: 4 files for the 320 MB of bf16 weights
FOLDER = RESULTS_DIR / f"{SHAPE}-bf16-sharded"
PAGE = mmap.PAGESIZE


def checkpoint_folder() -> Path:
    """The sharded checkpoint, made once (beside its final place, then renamed into it)."""
    if (FOLDER / "model.safetensors.index.json").is_file():
        return FOLDER
    from transformers import AutoModelForCausalLM

    from runtime.shapes import shape_config

    FOLDER.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{FOLDER.name}.", dir=FOLDER.parent))
    try:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(shape_config(SHAPE), dtype=torch.bfloat16)
        model.save_pretrained(staging, max_shard_size=SHARD_SIZE)
        shutil.rmtree(FOLDER, ignore_errors=True)
        staging.rename(FOLDER)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return FOLDER


def evict(folder: Path) -> None:
    """Drop the folder's files from the page cache (written back first: dirty pages would stay)."""
    for path in folder.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def touched_bytes(model: torch.nn.Module) -> int:
    """Read one element in every page of every weight the model holds (a weight still on its memory map is then
    read from the file; a copied one costs next to nothing); its bytes (tied weights once)."""
    params = {id(p): p for p in model.parameters()}.values()
    for param in params:
        param.reshape(-1)[:: PAGE // param.element_size()].sum(dtype=torch.float32).item()
    return sum(p.numel() * p.element_size() for p in params)


def stage_zero_of_two(folder: Path) -> int:
    from runtime.checkpoint import load_config, load_stage
    from runtime.topology import stage_layers

    config = load_config(folder)
    stage, _ = load_stage(folder, config, stage_layers(config.num_hidden_layers, 2, 0), first=True, last=False)
    return touched_bytes(stage.model)


def whole_model(folder: Path) -> int:
    from transformers import AutoModelForCausalLM

    return touched_bytes(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16))


def cold_load(load: Callable[[Path], int], folder: Path) -> tuple[float, int]:
    """Seconds and bytes of one load from a cold page cache (what it loaded is gone before the next)."""
    gc.collect()  # the previous load's maps closed, so their pages can go
    evict(folder)
    started = time.perf_counter()
    loaded = load(folder)
    return time.perf_counter() - started, loaded


def run(quick: bool) -> dict:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    rounds = 3 if quick else 7
    folder = checkpoint_folder()
    contenders = {"stage 0 of 2 (load_stage)": stage_zero_of_two, "whole model (from_pretrained)": whole_model}
    sizes = {name: cold_load(load, folder)[1] for name, load in contenders.items()}  # warm-up: imports, first calls
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, load in contenders.items():
            seconds[name].append(cold_load(load, folder)[0])
    files = sorted(folder.glob("*.safetensors"))
    on_disk = sum(f.stat().st_size for f in files)
    print(f"{SHAPE}, bf16, {len(files)} shards ({on_disk / 1e6:.0f} MB), page cache dropped for the files before")
    print(f"each load (posix_fadvise), {rounds} interleaved rounds:")
    rows = [
        [name, statistics.median(s), min(s), max(s), sizes[name] / 1e6, sizes[name] / on_disk]
        for name, s in seconds.items()
    ]
    print(table(["load", "median s", "min s", "max s", "MB held", "share"], rows))
    stage_s, whole_s = (statistics.median(s) for s in seconds.values())
    ratio = stage_s / whole_s
    print(f"a PP-2 stage loads in {ratio:.2f}x the time of a whole-model from_pretrained (expected about 0.5)")
    return {
        "shape": SHAPE,
        "dtype": "bf16",
        "shards": len(files),
        "checkpoint_bytes": on_disk,
        "cache": "cold (posix_fadvise DONTNEED on the checkpoint's files before each load)",
        "rounds": rounds,
        "stage_s": seconds["stage 0 of 2 (load_stage)"],
        "whole_s": seconds["whole model (from_pretrained)"],
        "stage_bytes": sizes["stage 0 of 2 (load_stage)"],
        "whole_bytes": sizes["whole model (from_pretrained)"],
        "ratio": ratio,
    }

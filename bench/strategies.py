"""Strategies on this machine: the runtime launched for real (random weights of a named shape, no checkpoint)
as a single process on one core (the peer: one node of a cluster whose nodes have this machine's cores each, as
distributed-llama's figures are taken), a single process on every core, TP=2 with DeepSpeed's shared-memory
all-reduce, TP=2 over gloo, and PP=2 with micro-batches. Figures are the result-owning rank's, from its metrics
file: tokens/s over the whole request, and the decode rate (the prompt's prefill left out: the median row's
latency less its time to first token, for the tokens after the first), which is what distributed-llama reports.
The goal: TP=2's decode at least 1.3x the one-core process's, its compute really halved."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.report import ratio_line, table
from runtime.local_launch import LocalLauncher, local_command, local_env

SHAPE = "llama-100m"
NEW_TOKENS = 32
PROMPT_TOKENS = 32


@dataclass(frozen=True)
class Variant:
    name: str
    launcher: LocalLauncher
    tp: int = 1
    pp: int = 1
    micro_batches: int | None = None
    one_core: bool = False  # pinned to the first CPU this process may use (the runtime then takes one thread)

    @property
    def world(self) -> int:
        return self.tp * self.pp


SINGLE = Variant("single process, one core", "single", one_core=True)
VARIANTS = [
    SINGLE,
    Variant("single process, every core", "single"),
    Variant("TP=2, shared-memory all-reduce", "deepspeed", tp=2),
    Variant("TP=2, gloo all-reduce", "torchrun", tp=2),
    Variant("PP=2, 2 micro-batches", "torchrun", pp=2, micro_batches=2),
]


def run_variant(variant: Variant, batch: int, batches: int, folder: Path) -> dict:
    """Launch one strategy on random weights and return the result owner's metrics."""
    config = {
        "strategy_id": f"bench_tp{variant.tp}_pp{variant.pp}_{variant.launcher}_b{batch}",
        "run_id": "bench",
        "model_name": SHAPE,
        "model_path": f"random:{SHAPE}",
        "prompt_df_path": "unused-in-random-mode",
        "output_root": str(folder),
        "num_nodes": 1,
        "gpus_per_node": variant.world,
        "tp_size": variant.tp,
        "pp_size": variant.pp,
        "batch_size": batch,
        "micro_batches": variant.micro_batches,
        "max_new_tokens": NEW_TOKENS,
        "precision": "fp32",
        "device": "cpu",
    }
    path = folder / "exp_config.json"
    path.write_text(json.dumps(config))
    args = ["--config", str(path), "--init", "random", "--shape", SHAPE]
    args += ["--prompt-tokens", str(PROMPT_TOKENS), "--prompts", str(batch * batches)]
    command = local_command(variant.launcher, variant.world, "runtime", *args)
    if variant.one_core:
        command = ["taskset", "--cpu-list", str(min(os.sched_getaffinity(0))), *command]
    done = subprocess.run(command, env=local_env(), capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{variant.name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    metrics = [json.loads(p.read_text()) for p in sorted((folder / "metrics").glob("metrics_rank_*.json"))]
    return max(metrics, key=lambda m: m["tokens_generated"])


def decode_rate(metrics: dict, batch: int) -> float:
    """Tokens/s after the first token: the median row's decode time shared by the batch's rows."""
    decode_s = (metrics["latency_ms"]["p50"] - metrics["ttft_ms"]["p50"]) / 1000
    return batch * (NEW_TOKENS - 1) / decode_s


def run(quick: bool) -> dict:
    variants = VARIANTS[:3] if quick else VARIANTS
    sizes = [1] if quick else [1, 4]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-strategies-") as tmp:
        for batch in sizes:
            for i, variant in enumerate(variants):
                folder = Path(tmp) / f"b{batch}-{i}"
                folder.mkdir()
                m = run_variant(variant, batch, batches=3, folder=folder)
                rates = {"tokens_per_s": m["tokens_per_s"], "decode_tokens_per_s": decode_rate(m, batch)}
                results.append({"variant": variant.name, "batch": batch, **rates})
    for r in results:
        peer = next(p for p in results if p["variant"] == SINGLE.name and p["batch"] == r["batch"])
        r["vs_single"] = r["decode_tokens_per_s"] / peer["decode_tokens_per_s"]
    print(
        f"strategies on this machine, {SHAPE} fp32 random weights, {PROMPT_TOKENS}-token prompts, "
        f"{NEW_TOKENS} new tokens, 3 batches each:"
    )
    rows = [
        [r["variant"], r["batch"], r["tokens_per_s"], r["decode_tokens_per_s"], f"{r['vs_single']:.2f}x"]
        for r in results
    ]
    print(table(["strategy", "batch", "tok/s", "decode tok/s", "decode vs single"], rows))
    tp_shm = next(r for r in results if r["variant"] == VARIANTS[2].name and r["batch"] == 1)
    print(ratio_line("TP=2 shared-memory, batch 1, decode", tp_shm["vs_single"], SINGLE.name, goal=1.3))
    return {"shape": SHAPE, "results": results, "tp2_shm_vs_single": tp_shm["vs_single"]}

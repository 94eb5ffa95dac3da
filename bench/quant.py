"""Weight-only quantization: single-rank decode tokens/s and resident weight bytes at fp32, int8 and int4 on the
100M-parameter Llama shape (random weights), batch 1, each precision's ratio to fp32 (the peer), same run.

On a CPU the quantized layers decode through runtime/kernels/qgemv.cpp, which reads the codes as held (1 byte a
weight for int8, half for int4, plus a group's fp32 scale), so fewer bytes also mean faster steps; the bytes are
what a card's memory has to hold."""

from __future__ import annotations

import statistics
import time

import torch

from bench.decode import NEW_TOKENS, PROMPT_TOKENS, prompts
from bench.report import ratio_line, table
from runtime.checkpoint import random_stage
from runtime.cpu_linear import can_use, use_gemv
from runtime.generate import DecodeSettings, Generator
from runtime.quantize import weight_bytes
from runtime.quantize_stage import default_group_size, quantize_stage
from runtime.shapes import shape_config

PRECISIONS = ("fp32", "int8", "int4")


def generator(shape: str, precision: str, device: torch.device) -> tuple[Generator, int, int]:
    """A whole-model generator at `precision` (fp32 activations), as a rank makes it (fp32 layers through the CPU
    kernel where it builds), its resident weight bytes and group size."""
    config = shape_config(shape)
    stage = random_stage(config, range(config.num_hidden_layers), True, True, torch.float32, str(device), seed=0)
    group = default_group_size(config)
    if precision != "fp32":
        quantize_stage(stage.model, precision, group, torch.float32, device)
    elif can_use(device, torch.float32):
        stage.model = use_gemv(stage.model, None)
    settings = DecodeSettings(device, torch.float32, eos_ids=set(), pad_id=0, max_new_tokens=NEW_TOKENS)
    return Generator.alone(stage, settings), weight_bytes(stage.model), group


def rates(shape: str, batch: int, device: torch.device, repeats: int) -> list[dict]:
    """Each precision's decode tokens/s over `repeats` warm runs taken in turns, and its weight bytes."""
    made = {p: generator(shape, p, device) for p in PRECISIONS}
    rows = prompts(made["fp32"][0].stage.config.vocab_size, batch)
    times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for generator_, _, _ in made.values():
        generator_.run(rows)  # warm-up
    for _ in range(repeats):
        for precision, (generator_, _, _) in made.items():
            start = time.perf_counter()
            generator_.run(rows)
            times[precision].append(time.perf_counter() - start)
    tokens = batch * NEW_TOKENS
    return [
        {
            "precision": p,
            "group_size": made[p][2] if p != "fp32" else None,
            "weight_bytes": made[p][1],
            "tokens_per_s": tokens / statistics.median(times[p]),
            "tokens_per_s_min": tokens / max(times[p]),
            "tokens_per_s_max": tokens / min(times[p]),
        }
        for p in PRECISIONS
    ]


def run(quick: bool) -> dict:
    shape, device = "llama-100m", torch.device("cpu")
    results = rates(shape, 1, device, repeats=3 if quick else 5)
    fp32 = results[0]
    for r in results:
        r["speed_vs_fp32"] = r["tokens_per_s"] / fp32["tokens_per_s"]
        r["bytes_vs_fp32"] = r["weight_bytes"] / fp32["weight_bytes"]
    print(f"quant, {shape}, batch 1, {PROMPT_TOKENS}-token prompt, {NEW_TOKENS} new tokens, fp32 activations:")
    rows = [
        [
            r["precision"],
            r["group_size"] or "-",
            f"{r['weight_bytes'] / 1e6:.0f}",
            r["tokens_per_s"],
            f"{r['tokens_per_s_min']:.3g}-{r['tokens_per_s_max']:.3g}",
            f"{r['speed_vs_fp32']:.2f}x",
            f"{r['bytes_vs_fp32']:.2f}x",
        ]
        for r in results
    ]
    print(table(["precision", "group", "weights MB", "tok/s (median)", "min-max", "speed/fp32", "bytes/fp32"], rows))
    for r in results[1:]:
        print(ratio_line(f"{r['precision']} decode speed", r["speed_vs_fp32"], "fp32"))
    return {"shape": shape, "cases": results}

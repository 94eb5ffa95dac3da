"""Single-rank decoding: the runtime's generation loop against Hugging Face `generate` (the peer), same weights,
same prompts, same batch, same number of new tokens, greedy, in one process. Tokens must agree exactly.

Ours runs as a rank does by default (the static-cache step, dense layers through the CPU kernel); the same loop on
HF's forward (`fast_decode = false`) is measured beside it, so the table shows what the fast path buys."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bench.report import RESULTS_DIR, ratio_line, table
from runtime.checkpoint import Stage
from runtime.microbench import synchronize

NEW_TOKENS = 32
PROMPT_TOKENS = 32
Tokens = list[list[int]]


@dataclass
class Case:
    shape: str  # a runtime shape name, or "tiny" for the built-in model
    batch: int


def build_stage(shape: str, dtype: torch.dtype, device: torch.device) -> Stage:
    """A whole model as one stage: the built-in tiny model from its checkpoint, or random weights of a shape."""
    from runtime.checkpoint import load_config, load_stage, random_stage
    from runtime.shapes import shape_config

    if shape == "tiny":
        from runtime.tiny_model import build_tiny_model

        folder = RESULTS_DIR / "tiny-llama"
        if not folder.exists():
            build_tiny_model(folder)
        config = load_config(folder)
        stage, _ = load_stage(folder, config, range(config.num_hidden_layers), True, True)
        stage.model = stage.model.to(device=device, dtype=dtype)
        return stage
    config = shape_config(shape)
    return random_stage(config, range(config.num_hidden_layers), True, True, dtype, str(device), seed=0)


def prompts(vocab: int, batch: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(batch)
    return torch.randint(4, vocab, (batch, PROMPT_TOKENS), generator=generator).tolist()


def best_times(fns: list[Callable[[], Tokens]], device: torch.device, repeats: int) -> list[tuple[float, Tokens]]:
    """Best time and output of each function, timed in turns (a, b, a, b, ...) so drift hits all alike."""
    outs = [fn() for fn in fns]  # warm-up
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            synchronize(device)
            start = time.perf_counter()
            outs[i] = fn()
            synchronize(device)
            best[i] = min(best[i], time.perf_counter() - start)
    return list(zip(best, outs, strict=True))


def fast_stage(shape: str, dtype: torch.dtype, device: torch.device) -> Stage:
    """`build_stage` prepared as a rank prepares it with `fast_decode` on: dense layers through the CPU kernel."""
    from runtime.cpu_linear import can_use, use_gemv

    stage = build_stage(shape, dtype, device)
    if can_use(device, dtype):
        stage.model = use_gemv(stage.model, None)
    return stage


def ours(
    stage: Stage, rows: list[list[int]], device: torch.device, dtype: torch.dtype, new_tokens: int, fast: bool = True
) -> Callable[[], Tokens]:
    from runtime.generate import DecodeSettings, Generator

    settings = DecodeSettings(device, dtype, eos_ids=set(), pad_id=0, max_new_tokens=new_tokens, static_cache=fast)
    generator = Generator.alone(stage, settings)
    return lambda: [r.tokens for r in generator.run(rows)]


def theirs(stage: Stage, rows: list[list[int]], device: torch.device, new_tokens: int) -> Callable[[], Tokens]:
    from transformers import GenerationConfig

    ids = torch.tensor(rows, device=device)
    config = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)

    @torch.inference_mode()
    def run() -> Tokens:
        out = stage.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
        return out[:, ids.shape[1] :].tolist()

    return run


def decode_rate(
    shape: str, batch: int, device: torch.device, dtype: torch.dtype, repeats: int, with_peer: bool = True
) -> dict:
    """Tokens/s of our loop (and, when `with_peer`, of the same loop on HF's forward and of HF generate) on one
    case, with exact-agreement check."""
    stage = fast_stage(shape, dtype, device)
    rows = prompts(stage.config.vocab_size, batch)
    contenders = [ours(stage, rows, device, dtype, NEW_TOKENS)]
    if with_peer:
        plain = build_stage(shape, dtype, device)  # same seed, same weights, plain layers
        contenders.append(ours(plain, rows, device, dtype, NEW_TOKENS, fast=False))
        contenders.append(theirs(plain, rows, device, NEW_TOKENS))
    timed = best_times(contenders, device, repeats)
    figures = {"shape": shape, "batch": batch, "dtype": str(dtype).removeprefix("torch."), "device": str(device)}
    ours_s, our_tokens = timed[0]
    figures["ours_tokens_per_s"] = batch * NEW_TOKENS / ours_s
    if with_peer:
        (plain_s, plain_tokens), (hf_s, hf_tokens) = timed[1:]
        figures["ours_hf_forward_tokens_per_s"] = batch * NEW_TOKENS / plain_s
        figures["hf_tokens_per_s"] = batch * NEW_TOKENS / hf_s
        figures["ratio"] = hf_s / ours_s
        figures["tokens_equal"] = our_tokens == hf_tokens == plain_tokens
    return figures


def run(quick: bool) -> dict:
    cases = [Case("tiny", 1), Case("llama-100m", 1)] + ([] if quick else [Case("tiny", 4), Case("llama-100m", 4)])
    device, dtype = torch.device("cpu"), torch.float32
    results = [decode_rate(c.shape, c.batch, device, dtype, repeats=3 if quick else 5) for c in cases]
    print(f"decode, {PROMPT_TOKENS}-token prompts, {NEW_TOKENS} new tokens, {dtype}, {device}, best of runs:")
    rows = [
        [
            r["shape"],
            r["batch"],
            r["hf_tokens_per_s"],
            r["ours_hf_forward_tokens_per_s"],
            r["ours_tokens_per_s"],
            f"{r['ratio']:.2f}x",
            r["tokens_equal"],
        ]
        for r in results
    ]
    headers = ["model", "batch", "HF generate tok/s", "ours, HF forward", "ours tok/s", "ours/HF", "same tokens"]
    print(table(headers, rows))
    worst = min(r["ratio"] for r in results)
    print(ratio_line("worst case, our loop", worst, "HF generate", goal=1.0))
    return {"cases": results, "worst_ratio": worst, "all_tokens_equal": all(r["tokens_equal"] for r in results)}

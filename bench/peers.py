"""The runtime's single-process decode against llama.cpp (through llama-cpp-python) on the same weights: the
random 100M-parameter Llama written as GGUF at f32, Q8_0 and Q4_0, batch 1, a 32-token prompt, 32 new tokens,
greedy, both engines on the same number of threads, warm, in interleaved rounds; decode tokens/s (prefill left
out), median and min-max, and the ratios ours / llama.cpp: ours fp32 against f32 (and Q8_0), ours int8 against
Q8_0, ours int4 against Q4_0. The quantized formats differ in what a weight costs to read, printed with the
ratios: llama.cpp's blocks of 32 weights carry one fp16 scale, ours groups of `default_group_size` one fp32 scale.
Needs the `bench` extra: pip install -e .[bench]

The greedy tokens at f32 are compared as a check on the conversion: the two engines sum in different orders, so
they may part after a few tokens on near-ties, but a wrong conversion parts from the first token."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench.decode import NEW_TOKENS, PROMPT_TOKENS, prompts
from bench.quant import generator
from bench.report import RESULTS_DIR, ratio_line, table
from runtime.generate import Generator
from runtime.quantize_stage import default_group_size

SHAPE = "llama-100m"
Decode = Callable[[list[int]], tuple[list[int], float]]  # prompt -> (greedy tokens, decode seconds)


def require_extra() -> None:
    """Fail in one line when the `bench` extra (llama-cpp-python, gguf) is not installed."""
    try:
        import gguf  # noqa: F401
        import llama_cpp  # noqa: F401
    except ImportError as err:
        raise RuntimeError(f"needs the bench extra ({err.name} is missing): pip install -e .[bench]") from None


def ours(generator_: Generator, threads: int) -> Decode:
    def run(row: list[int]) -> tuple[list[int], float]:
        torch.set_num_threads(threads)
        result = generator_.run([row])[0]
        return result.tokens, result.latency_s - result.ttft_s

    return run


def llama_cpp(path: Path, threads: int) -> Decode:
    """llama.cpp on one GGUF file: the prompt in one batch, then one token per step, greedy on its logits."""
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(path),
        n_ctx=PROMPT_TOKENS + NEW_TOKENS,
        n_batch=PROMPT_TOKENS,
        n_threads=threads,
        n_threads_batch=threads,
        logits_all=False,
        verbose=False,
    )

    vocab = llm.n_vocab()

    def greedy() -> int:  # from llama.cpp's own logits buffer: the wrapper keeps none without logits_all
        return int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(vocab,))))

    def run(row: list[int]) -> tuple[list[int], float]:
        llm.reset()
        llm._ctx.kv_cache_clear()  # the cache too (no public call): llama.cpp refuses positions that go back
        llm.eval(row)
        tokens = [greedy()]
        start = time.perf_counter()
        for _ in range(NEW_TOKENS - 1):
            llm.eval([tokens[-1]])
            tokens.append(greedy())
        return tokens, time.perf_counter() - start

    return run


def timed_rounds(contenders: dict[str, Decode], row: list[int], rounds: int) -> dict[str, dict]:
    """Each contender's decode tokens/s over `rounds` warm runs taken in turns, and its last tokens."""
    tokens = {name: decode(row)[0] for name, decode in contenders.items()}  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, decode in contenders.items():
            tokens[name], took = decode(row)
            seconds[name].append(took)
    steps = NEW_TOKENS - 1  # the first new token comes out of the prefill
    return {
        name: {
            "tokens_per_s": steps / statistics.median(s),
            "tokens_per_s_min": steps / max(s),
            "tokens_per_s_max": steps / min(s),
            "tokens": tokens[name],
        }
        for name, s in seconds.items()
    }


def agreeing_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(a))


# our precision -> the GGUF kinds it is measured against; the first is its match (the goal: at least as fast)
OURS_VS_PEER = {"fp32": ("f32", "Q8_0"), "int8": ("Q8_0",), "int4": ("Q4_0",)}


def bytes_per_weight(precision: str, group: int) -> float:
    """What our decode reads per weight of a matrix: the code, and its share of the group's fp32 scale."""
    bits = {"fp32": 32, "int8": 8, "int4": 4}[precision]
    return bits / 8 + (4 / group if precision != "fp32" else 0)


def gguf_bytes_per_weight(kind: str) -> float:
    import gguf

    if kind == "f32":
        return 4.0
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[kind]]
    return size / block


def run(quick: bool) -> dict:
    require_extra()
    from bench.to_gguf import GGUF_KINDS, write_gguf

    device, default_threads = torch.device("cpu"), torch.get_num_threads()
    thread_counts = sorted({1, default_threads})  # one thread: no barrier left waiting on a busy core
    load_before = os.getloadavg()
    made = {precision: generator(SHAPE, precision, device) for precision in OURS_VS_PEER}
    fp32 = made["fp32"][0]
    group = default_group_size(fp32.stage.config)
    folder = RESULTS_DIR / "peers"
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    files = {
        kind: write_gguf(fp32.stage.model, fp32.stage.config, folder / f"{SHAPE}-{kind}.gguf", kind)
        for kind in GGUF_KINDS
    }
    convert_s = time.perf_counter() - started
    contenders: dict[str, Decode] = {}
    for n in thread_counts:
        contenders |= {f"ours {precision}, {n}t": ours(made[precision][0], n) for precision in OURS_VS_PEER}
        contenders |= {f"llama.cpp {kind}, {n}t": llama_cpp(path, n) for kind, path in files.items()}
    row = prompts(fp32.stage.config.vocab_size, 1)[0]
    rounds = 3 if quick else 7
    results = timed_rounds(contenders, row, rounds)
    torch.set_num_threads(default_threads)
    load_after = os.getloadavg()
    rate = {name: r["tokens_per_s"] for name, r in results.items()}
    pairs = [
        (f"ours {precision}, {n}t", f"llama.cpp {kind}, {n}t", 1.0 if kind == kinds[0] else None)
        for n in thread_counts
        for precision, kinds in OURS_VS_PEER.items()
        for kind in kinds
    ]
    ratios = {f"{a} / {b}": rate[a] / rate[b] for a, b, _ in pairs}
    agree = agreeing_prefix(results["ours fp32, 1t"]["tokens"], results["llama.cpp f32, 1t"]["tokens"])
    print(
        f"peers, {SHAPE} (random weights), batch 1, {PROMPT_TOKENS}-token prompt, {NEW_TOKENS} new tokens, greedy, "
        f"decode only (prefill left out), {rounds} interleaved warm rounds, Nt = N threads:"
    )
    rows = [
        [name, r["tokens_per_s"], f"{r['tokens_per_s_min']:.3g}-{r['tokens_per_s_max']:.3g}"]
        for name, r in results.items()
    ]
    print(table(["engine", "decode tok/s (median)", "min-max"], rows))
    print(f"greedy tokens, ours fp32 vs llama.cpp f32 (1t): the first {agree} of {NEW_TOKENS} agree")
    print(f"load average (1 min): {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"GGUF written in {convert_s:.0f} s")
    read = {f"ours {p}": bytes_per_weight(p, group) for p in OURS_VS_PEER} | {
        f"llama.cpp {kind}": gguf_bytes_per_weight(kind) for kind in GGUF_KINDS
    }
    print(
        f"bytes read per matrix weight (ours: groups of {group}, fp32 scale; Q8_0/Q4_0: blocks of 32, fp16 scale): "
        + ", ".join(f"{name} {value:.4g}" for name, value in read.items())
    )
    for a, b, goal in pairs:
        print(ratio_line(a, ratios[f"{a} / {b}"], b, goal=goal))
    return {
        "shape": SHAPE,
        "rounds": rounds,
        "group_size": group,
        "bytes_per_weight": read,
        "engines": {name: {k: v for k, v in r.items() if k != "tokens"} for name, r in results.items()},
        "f32_tokens_agreeing": agree,
        "ratios": ratios,
        "load_average": {"before": load_before, "after": load_after},
        "convert_s": convert_s,
    }

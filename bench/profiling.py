"""What profiling costs a rank's decoding, in one process: the runtime's loop with profiling off (as every sweep
runs it unless asked), with its named ranges marked but no profiler running, and recorded by torch.profiler as a
profiled window is; HF `generate` alongside as the peer the decode benchmark names. Off must cost nothing
measurable: its hooks are timed on their own, per decode step, against the step itself."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from bench.decode import NEW_TOKENS, PROMPT_TOKENS, Tokens, best_times, build_stage, prompts, theirs
from bench.report import ratio_line, table
from runtime.checkpoint import Stage
from runtime.generate import NOTHING, DecodeSettings, Generator, Links, Timers
from runtime.topology import Topology
from runtime.trace_summary import STEP_RANGE

CPU = torch.device("cpu")
HOOK_GOAL = 0.01  # off: its hooks under 1% of a decode step


def loop(stage: Stage, rows: list[list[int]], mode: str) -> Callable[[], Tokens]:
    """The runtime's generation loop, profiling `off`, `marked` (ranges, no profiler) or `recorded`."""
    topo = Topology(1, 1, 1, 0)
    links = Links(topo, CPU, "none", Timers(enabled=True, marked=mode != "off"))

    def step_range(prefill: bool) -> AbstractContextManager[object]:
        return record_function(STEP_RANGE) if not prefill else NOTHING

    steps = step_range if mode != "off" else None
    settings = DecodeSettings(CPU, torch.float32, eos_ids=set(), pad_id=0, max_new_tokens=NEW_TOKENS)
    generator = Generator(stage, topo, links, settings, steps)
    if mode != "recorded":
        return lambda: [r.tokens for r in generator.run(rows)]

    def recorded() -> Tokens:
        with profile(activities=[ProfilerActivity.CPU]):
            return [r.tokens for r in generator.run(rows)]

    return recorded


def off_hooks_per_step(spans_per_step: int, repeats: int = 200_000) -> float:
    """Seconds the off hooks take per decode step: one step range and `spans_per_step` spans, entered and left."""
    timers, steps = Timers(enabled=True), (lambda prefill: NOTHING)
    start = time.perf_counter()
    for _ in range(repeats):
        with steps(False):
            for _ in range(spans_per_step):
                with timers.span("compute"):
                    pass
    return (time.perf_counter() - start) / repeats


def case(shape: str, batch: int, repeats: int) -> dict:
    stage = build_stage(shape, torch.float32, CPU)
    rows = prompts(stage.config.vocab_size, batch)
    modes = ("off", "marked", "recorded")
    timed = best_times([*(loop(stage, rows, m) for m in modes), theirs(stage, rows, CPU, NEW_TOKENS)], CPU, repeats)
    seconds = dict(zip([*modes, "hf"], (s for s, _ in timed), strict=True))
    same = all(tokens == timed[0][1] for _, tokens in timed)
    step_s = seconds["off"] / NEW_TOKENS
    hooks_s = off_hooks_per_step(spans_per_step=2)  # compute and sampling: a single stage marks no comm
    return {
        "shape": shape,
        "batch": batch,
        **{f"{mode}_tokens_per_s": batch * NEW_TOKENS / s for mode, s in seconds.items()},
        "off_vs_hf": seconds["hf"] / seconds["off"],
        "marked_vs_off": seconds["off"] / seconds["marked"],
        "recorded_vs_off": seconds["off"] / seconds["recorded"],
        "off_hooks_us_per_step": hooks_s * 1e6,
        "off_hooks_share_of_step": hooks_s / step_s,
        "tokens_equal": same,
    }


def run(quick: bool) -> dict:
    shapes = [("tiny", 1), ("llama-100m", 1)] + ([] if quick else [("tiny", 4)])
    results = [case(shape, batch, repeats=3 if quick else 5) for shape, batch in shapes]
    print(f"profiling, {PROMPT_TOKENS}-token prompts, {NEW_TOKENS} new tokens, fp32, cpu, best of runs (tok/s):")
    headers = ["model", "batch", "HF generate", "off", "ranges only", "recorded", "off/HF", "recorded/off", "same"]
    rows = [
        [
            r["shape"],
            r["batch"],
            r["hf_tokens_per_s"],
            r["off_tokens_per_s"],
            r["marked_tokens_per_s"],
            r["recorded_tokens_per_s"],
            f"{r['off_vs_hf']:.2f}x",
            f"{r['recorded_vs_off']:.2f}x",
            r["tokens_equal"],
        ]
        for r in results
    ]
    print(table(headers, rows))
    worst = max(r["off_hooks_share_of_step"] for r in results)
    hooks = max(r["off_hooks_us_per_step"] for r in results)
    verdict = "met" if worst < HOOK_GOAL else "NOT met"
    print(
        f"profiling off: its hooks take {hooks:.2f} us per decode step, at most {worst:.4%} of a step "
        f"(goal < {HOOK_GOAL:.0%}: {verdict})"
    )
    print(ratio_line("worst case, profiling off", min(r["off_vs_hf"] for r in results), "HF generate", goal=1.0))
    print(ratio_line("worst case, a recorded step", min(r["recorded_vs_off"] for r in results), "profiling off"))
    return {
        "cases": results,
        "off_hooks_worst_share": worst,
        "all_tokens_equal": all(r["tokens_equal"] for r in results),
    }

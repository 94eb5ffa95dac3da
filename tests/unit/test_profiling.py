"""Profiling: the trace summary on hand-made Chrome traces (every number checkable by hand), and the runtime's
step profiler recording the tiny model's decode steps for real, in one process."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from runtime.checkpoint import load_config, load_stage
from runtime.contract import PROFILE_RANGES, ExperimentConfig, ProfileSummary
from runtime.generate import DecodeSettings, Generator, Links, Timers
from runtime.profiling import WARMUP_STEPS, StepProfiler
from runtime.schema import InputError
from runtime.topology import Topology
from runtime.trace_summary import self_times, summarize
from tests.integration.runs import PROMPTS

CPU = torch.device("cpu")
MAIN, COMM_THREAD = 1, 2


def event(name: str, ts: float, dur: float, cat: str = "cpu_op", tid: int = MAIN) -> dict:
    return {"ph": "X", "cat": cat, "name": name, "pid": 7, "tid": tid, "ts": ts, "dur": dur}


def write_trace(path: Path, events: list[dict], **fields: str) -> Path:
    """A Chrome trace as torch writes one (`fields`: top-level keys such as host_name)."""
    path.write_text(json.dumps({**fields, "traceEvents": [{"ph": "M", "name": "process_name", "pid": 7}, *events]}))
    return path


def summary_of(path: Path) -> ProfileSummary:
    return summarize(path, strategy_id="s", run_id="r", rank=3, hostname="node1", trace="profiling/rank_3/t.json")


# two decode steps of 1000 us each; in step 1 compute (with an all-reduce inside) then sampling, 100 us apart;
# in step 2 a recv wait, compute, and 300 us at the end that no range covers
STEPS = [
    event("decode_step", 0, 1000, "user_annotation"),
    event("compute", 0, 600, "user_annotation"),
    event("aten::mm", 10, 400),
    event("aten::add", 20, 100),  # inside mm: mm's own time is 300
    event("all_reduce", 450, 100, "user_annotation"),
    event("sampling", 700, 300, "user_annotation"),
    event("aten::argmax", 710, 50),
    event("decode_step", 2000, 1000, "user_annotation"),
    event("send_recv", 2000, 200, "user_annotation"),
    event("compute", 2200, 500, "user_annotation"),
    event("aten::mm", 2210, 200),
]


def test_a_hand_made_trace_adds_up(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "t.json", [*STEPS, event("aten::mm", 5000, 900)])  # after the window: left out
    s = summary_of(trace)
    assert (s.rank, s.hostname, s.trace, s.steps, s.window_ms) == (3, "node1", "profiling/rank_3/t.json", 2, 2.0)
    assert s.ranges_ms == {"compute": 1.1, "all_reduce": 0.1, "send_recv": 0.2, "sampling": 0.3}
    assert s.comm_share == pytest.approx(0.3 / 2.0)
    # idle: 100 us between compute and sampling, 300 us at the end of step 2
    assert s.idle_share == pytest.approx(0.4 / 2.0)
    assert (s.gaps, s.longest_gap_ms) == (2, 0.3)
    assert s.device_busy_share is None  # no kernels: a CPU run
    top = [(op.name, op.calls, op.self_ms) for op in s.top_ops]
    assert top == [("aten::mm", 2, pytest.approx(0.5)), ("aten::add", 1, 0.1), ("aten::argmax", 1, 0.05)]
    assert s.top_ops[0].share == pytest.approx(0.25)


def test_device_kernels_are_the_top_operators_and_give_the_busy_share(tmp_path: Path) -> None:
    kernels = [event("gemm_kernel", 100, 300, "kernel", tid=COMM_THREAD), event("gemm_kernel", 300, 300, "kernel")]
    trace = write_trace(tmp_path / "t.json", [*STEPS, *kernels, event("nccl_allreduce", 2300, 100, "kernel")])
    s = summary_of(trace)
    assert s.device_busy_share == pytest.approx((500 + 100) / 2000)  # overlapping kernels count once
    assert [(op.name, op.calls) for op in s.top_ops] == [("gemm_kernel", 2), ("nccl_allreduce", 1)]


def test_self_time_nests_per_thread() -> None:
    from runtime.trace_summary import Event

    events = [
        Event("outer", "cpu_op", (1, 1), 0, 100),
        Event("inner", "cpu_op", (1, 1), 10, 30),
        Event("inner", "cpu_op", (1, 1), 50, 60),
        Event("other", "cpu_op", (1, 2), 10, 90),  # another thread: not outer's child
    ]
    assert self_times(events) == {"outer": (1, 70), "inner": (2, 30), "other": (1, 80)}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not a Chrome trace (not JSON"),
        ('{"traceEvents": 3}', "not a Chrome trace (no traceEvents list)"),
        ('{"traceEvents": []}', "no 'decode_step' ranges"),
    ],
)
def test_what_is_not_a_trace_of_decode_steps_is_named(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "t.json"
    path.write_text(content)
    with pytest.raises(InputError) as raised:
        summary_of(path)
    assert str(raised.value).startswith(f"{path}: ") and problem in str(raised.value)


def profiled_run(model: Path, out: Path, new_tokens: int, profile_steps: int = 4) -> tuple[StepProfiler, list]:
    """The tiny model decoding the test prompts in one process, as a profiled rank would."""
    cfg = ExperimentConfig(
        strategy_id="tiny_profiled",
        run_id="r",
        model_name="tiny-llama",
        model_path=str(model),
        prompt_df_path="unused",
        output_root=str(out),
        num_nodes=1,
        gpus_per_node=1,
        tp_size=1,
        pp_size=1,
        max_new_tokens=new_tokens,
        profiling_enabled=True,
        profile_steps=profile_steps,
    )
    config = load_config(model)
    stage, _ = load_stage(model, config, range(config.num_hidden_layers), first=True, last=True)
    tokenizer = AutoTokenizer.from_pretrained(model)
    topo = Topology(1, 1, 1, 0)
    links = Links(topo, CPU, "none", Timers(enabled=True, marked=True))
    profiler = StepProfiler(cfg, 0, "here", CPU, links.drain)
    settings = DecodeSettings(CPU, torch.float32, set(), tokenizer.pad_token_id, new_tokens)
    generator = Generator(stage, topo, links, settings, profiler.step)
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
    results = generator.run(prompts[:2]) + generator.run(prompts[2:])  # two batches: the window spans both
    profiler.finish()
    return profiler, results


def test_the_window_of_decode_steps_is_recorded_with_its_ranges(tiny_model_dir: Path, tmp_path: Path) -> None:
    profiler, results = profiled_run(tiny_model_dir, tmp_path, new_tokens=4, profile_steps=3)
    assert all(len(r.tokens) == 4 for r in results)
    trace = json.loads((tmp_path / "profiling/rank_0/torch.trace.json").read_text())
    names = [e["name"] for e in trace["traceEvents"] if e.get("ph") == "X"]
    # 3 decode steps per batch: the first batch's 2 are warm-up, then 1 + the second batch's first 2
    assert names.count("decode_step") == 3
    assert {"compute", "sampling"} <= set(names) and "aten::mm" in names
    written = ProfileSummary.load(tmp_path / "metrics/profile_rank_0.json")
    assert written == profiler.summary and written.steps == 3 and written.trace == "profiling/rank_0/torch.trace.json"
    assert set(written.ranges_ms) == set(PROFILE_RANGES) and written.ranges_ms["compute"] > 0
    assert written.comm_share == 0 and written.window_ms > 0 and written.top_ops


def test_a_run_that_ends_inside_the_window_keeps_what_it_recorded(tiny_model_dir: Path, tmp_path: Path) -> None:
    profiler, _ = profiled_run(tiny_model_dir, tmp_path, new_tokens=4, profile_steps=50)
    assert profiler.summary is not None and profiler.summary.steps == 2 * 3 - WARMUP_STEPS


def test_a_run_too_short_for_the_warm_up_says_so(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="runtime"):
        profiler, _ = profiled_run(tiny_model_dir, tmp_path, new_tokens=1)
    assert profiler.summary is None and not (tmp_path / "profiling").exists()
    assert "profiling: 0 decode step(s), none after the 2 warm-up steps: no trace" in caplog.text


def test_unprofiled_spans_are_nothing() -> None:
    timers = Timers(enabled=True)
    assert timers.span("compute") is timers.span("sampling")  # one shared null context: no profiler calls


def test_the_host_is_the_one_given_else_the_traces_own(tmp_path: Path) -> None:
    named = write_trace(tmp_path / "named.json", STEPS, host_name="node7")
    bare = write_trace(tmp_path / "bare.json", STEPS)
    common = {"strategy_id": "s", "run_id": "r", "rank": 0, "trace": "t.json"}
    assert summarize(named, hostname="node1", **common).hostname == "node1"
    assert summarize(named, **common).hostname == "node7"
    assert summarize(bare, **common).hostname == "?"

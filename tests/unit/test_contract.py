"""The contract: exp_config.json round trip, validation with clear errors, shard/progress/metrics schemas."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.contract import (
    ExperimentConfig,
    LinkFit,
    Percentiles,
    ProgressLine,
    RankMetrics,
    ShardRow,
    TimeSplit,
    dumps_line,
    loads,
)
from runtime.schema import InputError, SchemaError

BASE = {
    "strategy_id": "llama8b_pp2_tp1",
    "run_id": "run_20261123_120000",
    "model_name": "llama-3.1-8b",
    "model_path": "/models/llama8b",
    "prompt_df_path": "/exp/run_1/prompts.parquet",
    "output_root": "/exp/run_1/llama8b_pp2_tp1",
    "num_nodes": 2,
    "gpus_per_node": 1,
    "tp_size": 1,
    "pp_size": 2,
}


def config_text(**changes: object) -> str:
    data = {**BASE, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not ...})


def error_of(text: str) -> str:
    with pytest.raises(SchemaError) as err:
        ExperimentConfig.from_json(text, "run/exp_config.json")
    return str(err.value)


def test_defaults_fill_world_size_and_layout() -> None:
    cfg = ExperimentConfig.from_json(config_text())
    assert cfg.world_size == 2 and cfg.dp_size == 1
    assert cfg.shard_path(1) == Path("/exp/run_1/llama8b_pp2_tp1/outputs/shard_1.jsonl")
    assert cfg.metrics_path(0) == Path("/exp/run_1/llama8b_pp2_tp1/metrics/metrics_rank_0.json")
    assert cfg.progress_path(3).name == "progress_rank_3.jsonl"
    assert cfg.logs_path == Path("/exp/run_1/llama8b_pp2_tp1/logs")


def test_every_seed_field_is_present() -> None:
    names = {f.name for f in dataclasses.fields(ExperimentConfig)}
    seed_fields = {
        "strategy_id",
        "model_name",
        "model_path",
        "num_nodes",
        "gpus_per_node",
        "pp_size",
        "tp_size",
        "dp_size",
        "batch_size",
        "max_new_tokens",
        "precision",
        "profiling_enabled",
        "prompt_df_path",
        "output_root",
        "logs_dir",
        "profiling_dir",
        "run_id",
        "slurm_time_limit",
        "partition",
        "account",
        "container_image",
        "deepspeed_config_path",
        "world_size",
        "output_shard_pattern",
        "metrics_file",
    }
    assert seed_fields <= names


@given(
    tp=st.sampled_from([1, 2, 4]),
    pp=st.sampled_from([1, 2, 4]),
    dp=st.integers(1, 3),
    batch=st.integers(1, 64),
    precision=st.sampled_from(["fp32", "bf16", "fp16"]),
    profilers=st.lists(st.sampled_from(["torch", "nsys", "perf"]), max_size=3),
    partition=st.none() | st.text(min_size=1, max_size=12),
)
def test_json_round_trip(tp, pp, dp, batch, precision, profilers, partition) -> None:
    world = tp * pp * dp
    cfg = ExperimentConfig(
        **{**BASE, "num_nodes": world, "gpus_per_node": 1, "tp_size": tp, "pp_size": pp},
        dp_size=dp,
        batch_size=batch,
        precision=precision,
        profilers=tuple(profilers),
        partition=partition,
    )
    again = ExperimentConfig.from_json(cfg.to_json())
    assert again == cfg
    assert again.to_json() == cfg.to_json()


def test_load_resolves_relative_paths_against_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run" / "exp_config.json"
    path.parent.mkdir()
    path.write_text(config_text(model_path="../models/tiny", output_root=".", prompt_df_path="prompts.parquet"))
    cfg = ExperimentConfig.load(path)
    assert cfg.model_path == str(tmp_path / "models" / "tiny")
    assert cfg.output_root == str(path.parent)
    assert cfg.shard_path(0) == path.parent / "outputs" / "shard_0.jsonl"


def test_write_is_atomic_and_loadable(tmp_path: Path) -> None:
    cfg = ExperimentConfig.from_json(config_text())
    target = tmp_path / "deep" / "exp_config.json"
    cfg.write(target)
    assert ExperimentConfig.load(target) == cfg
    assert [p.name for p in target.parent.iterdir()] == ["exp_config.json"]  # no temporary left behind


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"world_size": 3}, "run/exp_config.json: world_size: expected pp_size*tp_size*dp_size = 2*1*1 = 2, got 3"),
        ({"tp_sise": 2}, "run/exp_config.json: tp_sise: unknown key (did you mean 'tp_size'?)"),
        ({"tp_size": 0, "world_size": 0}, "run/exp_config.json: tp_size: expected a positive integer, got 0"),
        ({"tp_size": "2"}, "run/exp_config.json: tp_size: expected integer, got '2'"),
        ({"tp_size": True}, "run/exp_config.json: tp_size: expected integer, got True"),
        ({"model_path": ...}, "run/exp_config.json: model_path: missing (expected string)"),
        ({"model_path": "  "}, "run/exp_config.json: model_path: expected a non-empty string"),
        (
            {"precision": "fp8"},
            "run/exp_config.json: precision: expected one of 'fp32', 'bf16', 'fp16', 'int8', 'int4', got 'fp8'",
        ),
        ({"profilers": ["torch", "vtune"]}, "run/exp_config.json: profilers[1]: expected one of"),
        ({"strategy_id": "tp 2/x"}, "run/exp_config.json: strategy_id: expected letters, digits"),
        ({"gpus_per_node": 2}, "run/exp_config.json: gpus_per_node: expected num_nodes*gpus_per_node = world_size"),
        ({"slurm_time_limit": "1h"}, "run/exp_config.json: slurm_time_limit: expected a Slurm time"),
        ({"output_shard_pattern": "shard.jsonl"}, "run/exp_config.json: output_shard_pattern: expected a relative"),
        ({"metrics_file": "m_{rank}_{node}.json"}, "run/exp_config.json: metrics_file: expected a relative path"),
        ({"partition": 5}, "run/exp_config.json: partition: expected string or null, got 5"),
    ],
)
def test_validation_names_the_file_and_key(changes: dict[str, object], expected: str) -> None:
    assert error_of(config_text(**changes)).startswith(expected)


def test_not_json_and_not_an_object() -> None:
    assert error_of('{"strategy_id": "x",\n  oops}') == (
        "run/exp_config.json: not valid JSON: Expecting property name enclosed in double quotes at line 2 column 3"
    )
    assert error_of("[1, 2]") == "run/exp_config.json: expected a table of keys, got [1, 2]"


def test_load_missing_and_non_utf8(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"exp_config\.json: no such file"):
        ExperimentConfig.load(tmp_path / "exp_config.json")
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"strategy_id": "\xff"}')
    with pytest.raises(InputError, match=r"bad.json: not UTF-8 text \(byte 17\)"):
        ExperimentConfig.load(bad)


ROW = ShardRow(
    prompt_id=7,
    variant="2k",
    strategy_id="llama8b_pp2_tp1",
    rank=1,
    completion='line one\nline "two" ✓',
    token_ids=[5, 9, 2],
    latency_ms=812.5,
    ttft_ms=95.25,
    tokens_generated=3,
    finish_reason="eos",
)


def test_shard_row_is_one_line_and_round_trips() -> None:
    line = dumps_line(ROW)
    assert line.endswith("\n") and line.count("\n") == 1
    assert "✓" in line  # UTF-8 kept readable, not escaped
    assert loads(ShardRow, line, "shard_1.jsonl:1") == ROW


def test_shard_row_errors_name_the_line() -> None:
    data = json.loads(dumps_line(ROW))
    with pytest.raises(SchemaError, match=r"^shard_1.jsonl:4: tokens_generated: expected len\(token_ids\) = 3, got 4$"):
        loads(ShardRow, json.dumps({**data, "tokens_generated": 4}), "shard_1.jsonl:4")
    with pytest.raises(SchemaError, match=r"^shard_1.jsonl:5: not valid JSON"):
        loads(ShardRow, '{"prompt_id": 7, "var', "shard_1.jsonl:5")
    with pytest.raises(SchemaError, match=r"^shard_1.jsonl:6: latency_ms: expected a non-negative number$"):
        loads(ShardRow, json.dumps({**data, "latency_ms": -1}), "shard_1.jsonl:6")


def test_progress_and_metrics_round_trip() -> None:
    progress = ProgressLine(rank=0, ts=1_763_900_000.5, phase="running", rows_written=4, rows_expected=40)
    assert loads(ProgressLine, dumps_line(progress), "p") == progress
    with pytest.raises(SchemaError, match="phase: expected one of 'starting'"):
        loads(ProgressLine, '{"rank": 0, "ts": 1.0, "phase": "sleeping"}', "p")
    metrics = RankMetrics(
        strategy_id="s",
        run_id="r",
        rank=0,
        world_size=2,
        tp_rank=0,
        pp_rank=0,
        dp_rank=0,
        hostname="node0",
        device="cpu",
        backend="gloo",
        precision="fp32",
        prompts=40,
        tokens_generated=640,
        wall_time_s=12.5,
        tokens_per_s=51.2,
        started_at="2026-11-23T12:00:00+00:00",
        finished_at="2026-11-23T12:00:12+00:00",
        latency_ms=Percentiles(p50=300.0, p95=410.0, p99=420.0, mean=310.0),
        time_split=TimeSplit(compute_s=9.0, comm_s=3.0, idle_s=0.5),
    )
    again = loads(RankMetrics, json.dumps(json.loads(dumps_line(metrics)), indent=2), "m")
    assert again == metrics
    assert again.energy_j is None and again.ttft_ms is None  # absent counters stay null, never invented
    # metrics from before the ranks recorded their interface still load; with it, it round-trips
    older = {k: v for k, v in json.loads(dumps_line(metrics)).items() if k not in ("comm_interface", "comm_address")}
    assert loads(RankMetrics, json.dumps(older), "m") == metrics and metrics.comm_interface is None
    fit = LinkFit("all_reduce", "gloo_all_reduce", 2, False, 1e-4, 1e8, interface="thunderbolt0")
    linked = dataclasses.replace(metrics, comm_interface="thunderbolt0", comm_address="10.99.0.10", links=(fit,))
    assert loads(RankMetrics, dumps_line(linked), "m") == linked

"""Exact greedy parity: every strategy, launched for real, gives the single-process HF `generate` tokens.

Local launchers on this machine (gloo, and DeepSpeed's shared-memory all-reduce for TP in one node); the
across-nodes strategies run through the real Slurm in test_runtime_slurm.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration import runs

pytestmark = pytest.mark.slow


def test_single_process(run_dir: Path, tiny_model_dir: Path, reference: dict[int, list[int]]) -> None:
    """Warmed up, then two timed passes: the shard holds the first's rows, the second repeats its tokens."""
    config = runs.write_config(run_dir, tiny_model_dir, "reference", repeats=2)
    done = runs.single(config)
    assert done.returncode == 0, runs.describe_failure(done)
    assert runs.shard_tokens(config) == reference
    (m,) = runs.metrics(config)
    tokens = sum(len(t) for t in reference.values())
    assert m["backend"] == "none" and m["tokens_generated"] == tokens
    assert m["warmup_s"] > 0 and m["repeat_mismatch"] is None
    assert [r["tokens"] for r in m["repeats"]] == [tokens, tokens]
    assert m["wall_time_s"] in [r["wall_s"] for r in m["repeats"]]  # the median pass's (lower middle of two)
    assert all(r["ttft_ms"] > 0 and r["itl_ms"] > 0 for r in m["repeats"])
    phases = [json.loads(line) for line in (config.parent / "progress/progress_rank_0.jsonl").read_text().splitlines()]
    assert [p["phase"] for p in phases[:3]] == ["starting", "loading", "warmup"]
    assert (phases[-1]["phase"], phases[-1]["rows_written"], phases[-1]["rows_expected"]) == ("done", 8, 8)
    assert {p["message"] for p in phases if p["phase"] == "running"} == {"repeat 1/2", "repeat 2/2"}
    runs.assert_holds_share(config, tiny_model_dir, 1.0)


def test_tp2_in_one_node_shared_memory(run_dir: Path, tiny_model_dir: Path, reference: dict[int, list[int]]) -> None:
    config = runs.write_config(run_dir, tiny_model_dir, "tiny_tp2_node", tp=2)
    before = set(Path("/dev/shm").glob("deepspeed_allreduce_buffer_*"))
    done = runs.deepspeed(config, 2)
    assert done.returncode == 0, runs.describe_failure(done)
    assert set(Path("/dev/shm").glob("deepspeed_allreduce_buffer_*")) <= before  # no 66 MB segment left behind
    assert "all-reduce via shared memory" in done.stdout + done.stderr
    assert runs.shard_tokens(config) == reference
    assert [m["tp_rank"] for m in runs.metrics(config)] == [0, 1]
    runs.assert_holds_share(config, tiny_model_dir, 0.5)
    assert all(m["time_split"]["comm_s"] > 0 for m in runs.metrics(config))  # the slices were summed
    assert [p.name for p in (config.parent / "outputs").iterdir()] == ["shard_0.jsonl"]  # one result owner


def test_pp2_with_micro_batches(run_dir: Path, tiny_model_dir: Path, reference: dict[int, list[int]]) -> None:
    config = runs.write_config(run_dir, tiny_model_dir, "tiny_pp2", pp=2, nodes=2, micro_batches=2)
    done = runs.torchrun(config, 2)
    assert done.returncode == 0, runs.describe_failure(done)
    assert runs.shard_tokens(config) == reference
    runs.assert_holds_share(config, tiny_model_dir, 0.5)
    first, last = runs.metrics(config)
    assert (first["pp_rank"], last["pp_rank"]) == (0, 1)
    assert last["prompts"] == 4 and first["time_split"]["idle_s"] > 0  # the first stage waits for tokens


def test_hybrid_tp2_x_pp2(run_dir: Path, tiny_model_dir: Path, reference: dict[int, list[int]]) -> None:
    config = runs.write_config(run_dir, tiny_model_dir, "tiny_pp2_tp2", tp=2, pp=2, nodes=2)
    done = runs.torchrun(config, 4)
    assert done.returncode == 0, runs.describe_failure(done)
    assert "all-reduce via process group" in done.stdout + done.stderr  # TP group is not the whole world
    assert runs.shard_tokens(config) == reference
    runs.assert_holds_share(config, tiny_model_dir, 0.25)
    ranks = [(m["rank"], m["pp_rank"], m["tp_rank"]) for m in runs.metrics(config)]
    assert ranks == [(0, 0, 0), (1, 0, 1), (2, 1, 0), (3, 1, 1)]
    assert all(m["time_split"]["comm_s"] > 0 for m in runs.metrics(config))


def test_data_parallel_replicas_split_prompts(
    run_dir: Path, tiny_model_dir: Path, reference: dict[int, list[int]]
) -> None:
    config = runs.write_config(run_dir, tiny_model_dir, "tiny_dp2", dp=2, batch_size=2)
    done = runs.torchrun(config, 2)
    assert done.returncode == 0, runs.describe_failure(done)
    # each replica decodes its share (rows 0,2 and 1,3), keeping prompt ids; batch makeup cannot flip a pick
    assert runs.shard_tokens(config) == reference
    shard0 = [json.loads(x)["prompt_id"] for x in (config.parent / "outputs/shard_0.jsonl").read_text().splitlines()]
    assert shard0 == [2, 0]  # its share (prompts 0 and 2), shortest first: batches of like lengths

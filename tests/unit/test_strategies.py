"""The sweep's strategies: their shapes, ids, configs and scheduler requests, consistent with the runtime."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cockpit.jobs.factory import deepspeed_args
from cockpit.sweep.strategies import STRATEGIES, SweepSettings, sweep_strategies
from runtime.contract import ExperimentConfig
from runtime.topology import Topology


def settings(tmp_path: Path, **changes: object) -> SweepSettings:
    fields = {
        "model_name": "llama-3.1-8b",
        "model_path": "/models/llama-3.1-8b",
        "model_tag": "llama8b",
        "run_id": "run_20261123T120000",
        "run_dir": tmp_path / "run_20261123T120000",
        "prompt_df_path": tmp_path / "run_20261123T120000" / "prompts.parquet",
        "nodes": 2,
        "gpus_per_node": 2,
        "partition": "gpu",
    }
    return SweepSettings(**{**fields, **changes})


def test_the_reference_and_four_strategies_of_a_2x2_cluster(tmp_path: Path) -> None:
    strategies = sweep_strategies(settings(tmp_path))
    shapes = {s.kind: (s.tp_size, s.pp_size, s.num_nodes, s.gpus_per_node) for s in strategies}
    assert shapes == {
        "reference": (1, 1, 1, 1),
        "tp_nodes": (2, 1, 2, 1),
        "pp_nodes": (1, 2, 2, 1),
        "tp_node": (2, 1, 1, 2),
        "hybrid": (2, 2, 2, 2),
    }
    ids = [s.strategy_id for s in strategies]
    assert ids == [
        "llama8b_pp1_tp1_n1",
        "llama8b_pp1_tp2_n2",
        "llama8b_pp2_tp1_n2",
        "llama8b_pp1_tp2_n1",
        "llama8b_pp2_tp2_n2",
    ]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    ("nodes", "gpus", "kinds"),
    [(1, 1, ["reference"]), (2, 1, ["reference", "tp_nodes", "pp_nodes"]), (1, 4, ["reference", "tp_node"])],
)
def test_only_what_the_cluster_shape_allows(tmp_path: Path, nodes: int, gpus: int, kinds: list[str]) -> None:
    assert [s.kind for s in sweep_strategies(settings(tmp_path, nodes=nodes, gpus_per_node=gpus))] == kinds


@pytest.mark.parametrize("kind", list(STRATEGIES))
def test_configs_are_valid_and_round_trip(tmp_path: Path, kind: str) -> None:
    strategy = STRATEGIES[kind](settings(tmp_path))
    config = strategy.config()
    config.check("test")
    assert ExperimentConfig.from_json(config.to_json()) == config
    assert config.world_size == config.num_nodes * config.gpus_per_node == strategy.world_size
    assert Path(config.output_root) == tmp_path / "run_20261123T120000" / strategy.strategy_id


@pytest.mark.parametrize("kind", list(STRATEGIES))
def test_result_ranks_are_the_runtimes_owners(tmp_path: Path, kind: str) -> None:
    s = STRATEGIES[kind](settings(tmp_path))
    owners = [r for r in range(s.world_size) if Topology(s.tp_size, s.pp_size, 1, r).owns_results]
    assert s.result_ranks() == owners


def test_scheduler_requests(tmp_path: Path) -> None:
    hybrid = STRATEGIES["hybrid"](settings(tmp_path))
    assert hybrid.slurm_constraints() == {
        "job-name": "llama8b_pp2_tp2_n2",
        "nodes": 2,
        "ntasks-per-node": 2,
        "time": "01:00:00",
        "gres": "gpu:2",
        "partition": "gpu",
    }
    assert deepspeed_args(hybrid.config()) == ["--num_nodes=2", "--num_gpus=2"]
    cpu = STRATEGIES["tp_nodes"](settings(tmp_path, device="cpu", partition=None))
    assert "gres" not in cpu.slurm_constraints() and "partition" not in cpu.slurm_constraints()
    assert all(s.expected_jobs() == 1 for s in sweep_strategies(settings(tmp_path)))


def test_retry_with_other_settings_keeps_the_strategy(tmp_path: Path) -> None:
    tp = STRATEGIES["tp_nodes"](settings(tmp_path, batch_size=8))
    smaller = tp.with_settings(batch_size=4)
    assert smaller.kind == "tp_nodes" and smaller.config().batch_size == 4 and tp.config().batch_size == 8


def test_postprocess_tags_and_orders_rows(tmp_path: Path) -> None:
    pp = STRATEGIES["pp_nodes"](settings(tmp_path))
    rows = pd.DataFrame({"prompt_id": [2, 1, 1], "variant": ["2k", "4k", "2k"], "completion": ["b", "c", "a"]})
    out = pp.postprocess(rows)
    assert list(out["completion"]) == ["a", "b", "c"]
    assert set(out["strategy"]) == {"llama8b_pp2_tp1_n2"} and set(out["pp_size"]) == {2}


def test_every_strategy_says_where_the_model_is_cut(tmp_path: Path) -> None:
    texts = [s.describe_topology() for s in sweep_strategies(settings(tmp_path))]
    assert len(set(texts)) == 5 and "all-reduces stay in the node" in texts[-1]

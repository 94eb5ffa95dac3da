"""ResultCollector on shards written as the runtime writes them, whole and damaged."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from cockpit.sweep.collect import RESULT_COLUMNS, ResultCollector, read_shard, strategy_energy
from cockpit.sweep.strategies import STRATEGIES, ParallelismStrategy, SweepSettings
from runtime.atomic import atomic_write_text
from runtime.contract import ShardRow, dumps_line
from runtime.trace_summary import summarize
from tests.unit.test_profiling import STEPS, write_trace

PROMPTS = pd.DataFrame({"prompt_id": [1, 2, 1, 2], "variant": ["2k", "2k", "4k", "4k"]})


def strategy(tmp_path: Path, kind: str) -> ParallelismStrategy:
    settings = SweepSettings(
        model_name="tiny-llama",
        model_path="/models/tiny",
        model_tag="tiny",
        run_id="run_1",
        run_dir=tmp_path,
        prompt_df_path=tmp_path / "prompts.parquet",
        nodes=2,
        gpus_per_node=2,
        device="cpu",
    )
    return STRATEGIES[kind](settings)


def rows(s: ParallelismStrategy, rank: int) -> list[str]:
    out = []
    for variant, prompt_id in zip(PROMPTS["variant"], PROMPTS["prompt_id"], strict=True):
        tokens = [prompt_id, 7, 8] if variant == "2k" else [prompt_id, 9]
        row = ShardRow(prompt_id, variant, s.strategy_id, rank, f"text {prompt_id}", tokens, 10.0 * prompt_id, 2.0, 0)
        out.append(dumps_line(ShardRow(**{**row.__dict__, "tokens_generated": len(tokens), "gpu_id": 0})))
    return out


def write_run(s: ParallelismStrategy, lines: list[str] | None = None, energy: bool = True) -> None:
    config = s.config()
    (rank,) = s.result_ranks()
    config.shard_path(rank).parent.mkdir(parents=True, exist_ok=True)
    config.shard_path(rank).write_text("".join(rows(s, rank) if lines is None else lines))
    config.metrics_path(0).parent.mkdir(parents=True, exist_ok=True)
    for r in range(s.world_size):
        metrics = {"wall_time_s": 2.0 + r, "device": "cpu", "load_s": 0.5, "energy_j": 4.0 if energy else None}
        config.metrics_path(r).write_text(json.dumps({**metrics, "energy_source": "rapl" if energy else None}))


def test_whole_strategy(tmp_path: Path) -> None:
    pp = strategy(tmp_path, "pp_nodes")
    write_run(pp)
    collector = ResultCollector(PROMPTS, tmp_path / "results", "1", "run_1")
    got = collector.collect(pp)
    assert not got.partial and got.problems == []
    assert list(got.rows.columns) == RESULT_COLUMNS
    assert got.rows[["variant", "prompt_id"]].values.tolist() == [["2k", 1], ["2k", 2], ["4k", 1], ["4k", 2]]
    assert set(got.rows["rank"]) == {1} and set(got.rows["strategy_kind"]) == {"pp_nodes"}
    assert got.rows["token_ids"].map(list).tolist() == [[1, 7, 8], [2, 7, 8], [1, 9], [2, 9]]
    assert got.metrics["tokens_generated"] == 10 and got.metrics["wall_time_s"] == 3.0  # slowest rank
    assert got.metrics["tokens_per_s"] == pytest.approx(10 / 3.0)
    assert got.metrics["energy_j"] == 8.0  # both ranks measured
    table = pq.read_table(collector.results_path).to_pandas()
    assert len(table) == 4 and list(table.columns) == RESULT_COLUMNS


def test_energy_unknown_unless_every_rank_measured(tmp_path: Path) -> None:
    tp = strategy(tmp_path, "tp_nodes")
    write_run(tp, energy=False)
    got = ResultCollector(PROMPTS, tmp_path / "results", "1", "run_1").collect(tp)
    assert got.metrics["energy_j"] is None and got.metrics["energy_source"] is None
    assert got.metrics["energy_why"] == "rank 0: no energy figure"


def cpu_rank(host: str, compute_s: float, host_energy_j: float | None = None, why: str | None = None) -> dict:
    """A CPU rank's metrics: its host's counter only where it is the host's local rank 0."""
    split = {"compute_s": compute_s, "comm_s": 1.0, "idle_s": 0.5}
    return {
        "hostname": host,
        "wall_time_s": 9.0,
        "time_split": split,
        "host_energy_j": host_energy_j,
        "energy_source": "rapl:intel-rapl:0" if host_energy_j is not None else None,
        "energy_why": why,
    }


def test_host_counters_split_over_2_hosts_x_2_ranks_by_busy_time() -> None:
    got = strategy_energy(
        [cpu_rank("node0", 3.0, 100.0), cpu_rank("node0", 1.0), cpu_rank("node1", 2.0, 60.0), cpu_rank("node1", 4.0)]
    )
    assert json.loads(got["rank_energy_j"]) == pytest.approx([75.0, 25.0, 20.0, 40.0])
    assert got["energy_j"] == pytest.approx(160.0)  # the hosts' measured joules: only the shares are estimated
    assert got["energy_estimated"] and got["energy_source"] == "rapl:intel-rapl:0" and got["energy_why"] is None


def test_one_rank_a_host_is_measured_not_estimated_and_wall_time_splits_without_time_splits() -> None:
    alone = strategy_energy([cpu_rank("node0", 3.0, 100.0), cpu_rank("node1", 1.0, 40.0)])
    assert alone["energy_j"] == 140.0 and not alone["energy_estimated"]
    ranks = [{**cpu_rank("node0", 0.0, 90.0), "time_split": None}, {**cpu_rank("node0", 0.0), "wall_time_s": 18.0}]
    assert json.loads(strategy_energy(ranks)["rank_energy_j"]) == pytest.approx([30.0, 60.0])  # 9 s and 18 s


def test_energy_names_the_first_uncovered_rank_and_its_hosts_reason() -> None:
    no_rapl = "no energy counter on cpu without RAPL access: /sys/class/powercap/intel-rapl:0/energy_uj is root-only"
    got = strategy_energy(
        [
            cpu_rank("node0", 3.0, 100.0),
            cpu_rank("node0", 1.0),
            cpu_rank("node1", 2.0, why=no_rapl),
            cpu_rank("node1", 4.0),
        ]
    )
    assert got["energy_j"] is None and got["energy_why"] == f"rank 2 on node1: {no_rapl}"
    assert json.loads(got["rank_energy_j"]) == pytest.approx([75.0, 25.0, None, None])
    assert strategy_energy([cpu_rank("node0", 3.0, 100.0), {}])["energy_why"] == "rank 1: wrote no metrics"


def test_torn_last_line_is_dropped_and_counted(tmp_path: Path) -> None:
    ref = strategy(tmp_path, "reference")
    lines = rows(ref, 0)
    write_run(ref, [*lines[:3], lines[3][:25]])
    got = ResultCollector(PROMPTS, tmp_path / "results", "1", "run_1").collect(ref)
    shard = ref.config().shard_path(0)
    assert len(got.rows) == 3 and got.partial
    assert got.problems[0] == f"{shard}:4: torn last line dropped (25 bytes, no newline)"
    assert got.problems[1] == "tiny_pp1_tp1_n1: 1 of 4 prompts have no row"


def test_bad_line_is_named_and_the_rest_kept(tmp_path: Path) -> None:
    ref = strategy(tmp_path, "reference")
    lines = rows(ref, 0)
    write_run(ref, [lines[0], "this is not json\n", *lines[1:]])
    got = ResultCollector(PROMPTS, tmp_path / "results", "1", "run_1").collect(ref)
    assert len(got.rows) == 4 and not got.partial  # every prompt still has its row
    assert len(got.problems) == 1 and got.problems[0].startswith(f"{ref.config().shard_path(0)}:2: not JSON")


def test_row_without_required_field(tmp_path: Path) -> None:
    ref = strategy(tmp_path, "reference")
    path = tmp_path / "shard.jsonl"
    broken = json.loads(rows(ref, 0)[1])
    del broken["completion"]
    path.write_text(rows(ref, 0)[0] + json.dumps(broken) + "\n")
    read = read_shard(path)
    assert read.table.num_rows == 1 and read.problems == [f"{path}:2: no completion, line dropped"]


def test_missing_shard_makes_the_strategy_partial(tmp_path: Path) -> None:
    hybrid = strategy(tmp_path, "hybrid")
    got = ResultCollector(PROMPTS, tmp_path / "results", "1", "run_1").collect(hybrid)
    assert got.partial and len(got.rows) == 0
    assert got.problems[0] == f"{hybrid.config().shard_path(2)}: missing (rank 2 owns results)"


def test_recollecting_replaces_and_a_new_collector_keeps_earlier_rows(tmp_path: Path) -> None:
    ref, tp = strategy(tmp_path, "reference"), strategy(tmp_path, "tp_nodes")
    write_run(ref)
    write_run(tp)
    first = ResultCollector(PROMPTS, tmp_path / "results", "1", "run_1")
    first.collect(ref)
    first.collect(ref)
    assert len(first.rows) == 4
    resumed = ResultCollector(PROMPTS, tmp_path / "results", "1", "run_1")  # a later process of the same run
    resumed.collect(tp)
    table = ResultCollector.load_rows(tmp_path / "results", "1")
    assert table.groupby("strategy").size().to_dict() == {"tiny_pp1_tp1_n1": 4, "tiny_pp1_tp2_n2": 4}
    assert ResultCollector.load_metrics(tmp_path / "results", "1")["strategy"].tolist() == [
        "tiny_pp1_tp1_n1",
        "tiny_pp1_tp2_n2",
    ]


def test_traces_of_every_rank_with_their_summaries(tmp_path: Path) -> None:
    pp = strategy(tmp_path, "pp_nodes")
    write_run(pp)
    config = pp.config()
    for rank in (0, 1):
        config.trace_path(rank).mkdir(parents=True)
        write_trace(config.trace_path(rank) / "torch.trace.json", STEPS, host_name=f"node{rank}")
    (config.trace_path(0) / "perf.data").write_bytes(b"PERFILE2")
    written = summarize(
        config.trace_path(0) / "torch.trace.json",
        strategy_id=pp.strategy_id,
        run_id="run_1",
        rank=0,
        hostname="node1",
        trace="profiling/rank_0/torch.trace.json",
    )
    atomic_write_text(config.profile_summary_path(0), dumps_line(written))  # rank 1 died before writing its own
    traces = list(ResultCollector.iter_traces([pp, strategy(tmp_path, "tp_nodes")]))
    assert [(t.rank, t.tool, t.bytes > 0) for t in traces] == [
        (0, "torch", True),
        (0, "perf", True),
        (1, "torch", True),
    ]
    assert traces[0].summary == written and traces[1].summary is None and traces[1].opens_with.startswith("perf report")
    made_here = traces[2].summary  # the host the trace names
    assert made_here.hostname == "node1" and made_here.comm_share == written.comm_share
    got = ResultCollector(PROMPTS, tmp_path / "results", "1", "run_1").collect(pp)
    # rank 1 owns the rows; its trace named relative to the run folder, which can move
    assert set(got.rows["trace_path"]) == {f"{pp.strategy_id}/profiling/rank_1/torch.trace.json"}
    assert got.metrics["profiled_ranks"] == 1 and got.metrics["profiled_comm_share"] == written.comm_share


def test_a_trace_that_cannot_be_read_is_named_not_fatal(tmp_path: Path) -> None:
    tp = strategy(tmp_path, "tp_nodes")
    path = tp.config().trace_path(1) / "torch.trace.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"traceEvents": [')  # the rank died while exporting
    (trace,) = ResultCollector.iter_traces([tp])
    assert trace.summary is None and trace.problem.startswith(f"{path}: not a Chrome trace")
    write_run(tp)
    assert ResultCollector(PROMPTS, tmp_path / "results", "1", "run_1").collect(tp).metrics["profiled_ranks"] == 0


def test_each_timed_pass_lasts_as_long_as_its_slowest_rank(tmp_path: Path) -> None:
    """A pipeline's two ranks, three passes: rank 1 owns the results; the pass's wall is the slower rank's."""
    pp = strategy(tmp_path, "pp_nodes")
    write_run(pp)
    config = pp.config()
    walls = {0: [2.0, 1.5, 3.0], 1: [1.0, 2.5, 2.0]}
    for rank, figures in walls.items():
        metrics = json.loads(config.metrics_path(rank).read_text())
        passes = [{"wall_s": w, "tokens": 10 * rank, "ttft_ms": 4.0 + i, "itl_ms": 1.0} for i, w in enumerate(figures)]
        metrics |= {"repeats": passes, "warmup_s": 0.25 * (rank + 1), "repeat_mismatch": None}
        config.metrics_path(rank).write_text(json.dumps(metrics))
    got = ResultCollector(PROMPTS, tmp_path / "results", "1", "run_1").collect(pp)
    assert json.loads(got.metrics["pass_tokens_per_s"]) == [5.0, 4.0, 10 / 3]  # walls 2.0, 2.5, 3.0
    assert json.loads(got.metrics["pass_ttft_ms"]) == [4.0, 5.0, 6.0]  # the result owner's alone
    assert got.metrics["wall_time_s"] == 2.5 and got.metrics["repeats"] == 3  # the median pass
    assert got.metrics["warmup_s"] == 0.5 and got.metrics["repeat_mismatch"] is None


def test_repeats_that_cannot_fit_the_time_limit_are_warned_with_the_estimate(tmp_path: Path) -> None:
    from dataclasses import replace

    from cockpit.sweep.pipeline import time_budget

    pp = strategy(tmp_path, "pp_nodes")
    measured = pd.DataFrame(
        [
            {"strategy": "tiny_ref", "wall_time_s": 500.0, "load_s": 40.0, "warmup_s": 20.0},
            {"strategy": "tiny_tp", "wall_time_s": 100.0, "load_s": 10.0, "warmup_s": None},
        ]
    )
    slow = replace(pp, settings=replace(pp.settings, repeats=7, slurm_time_limit="01:00:00"))
    assert time_budget(measured, slow) is None  # 60 s + 7 x 500 s = 3,560 s: within the hour
    tight = replace(slow, settings=replace(slow.settings, slurm_time_limit="30:00"))
    assert time_budget(measured, tight) == (
        "7 repeat(s) may not fit its time limit 30:00: at tiny_ref's measured speed (loading and warm-up 60 s, "
        "one pass 500 s) it needs about 3,560 s; lower [sweep] repeats or raise time_limit"
    )
    assert time_budget(None, tight) is None and time_budget(measured.iloc[:0], tight) is None  # nothing measured

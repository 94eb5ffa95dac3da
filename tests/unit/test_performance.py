"""A run's analysis against the performance model: the device fitted from the reference's batches, each
strategy predicted from its placement and its own link timings, and the reasons when nothing can be predicted."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from cockpit.analysis import performance_model as pm
from cockpit.analysis.bottlenecks import (
    WITHOUT_STRAGGLER,
    Batch,
    Performance,
    analyse,
    batches,
    fit_hardware,
    for_run,
    measured_split,
    timed_link,
)
from cockpit.analysis.summary import performance_markdown
from cockpit.sweep.strategies import SweepSettings
from runtime.model_shape import ModelShape

MODEL = pm.ModelCost(ModelShape(8192, 128, 352, 4, 8, 4, 16), bytes_per_element=4)
TRUE = pm.Hardware(decode=pm.Rate(1e-3, 5e9), prefill=pm.Rate(2e-3, 20e9), cpu_cores=None)
LINK = {"op": "all_reduce", "impl": "nccl_all_reduce", "ranks": 2, "intra_node": False, "alpha_s": 50e-6}
PROMPTS = {0: [300, 280, 260, 240], 1: [900, 880, 860, 840]}  # two batches of four, different widths
NEW_TOKENS = 16


def _settings(tmp_path: Path) -> SweepSettings:
    return SweepSettings("tiny", str(tmp_path / "model"), "tiny", "run_1", tmp_path / "run_1", tmp_path / "p.parquet")


def _rows(
    strategy: str, kind: str, where: pm.Placement, model: pm.ModelCost = MODEL, hw: pm.Hardware = TRUE
) -> pd.DataFrame:
    """Rows whose timings are exactly what the model says for TRUE hardware."""
    rows = []
    for batch, lengths in PROMPTS.items():
        times = pm.batch_time(model, hw, where, [lengths], NEW_TOKENS)
        for prompt_id, n in enumerate(lengths):
            rows.append(
                {
                    "strategy": strategy,
                    "strategy_kind": kind,
                    "batch_index": batch,
                    "variant": "2k",
                    "prompt_id": batch * 10 + prompt_id,
                    "prompt_tokens": n,
                    "tokens_generated": NEW_TOKENS,
                    "ttft_ms": times.prefill.total_s * 1e3,
                    "latency_ms": times.total.total_s * 1e3,
                }
            )
    return pd.DataFrame(rows)


def _metrics(strategy: str, kind: str, tp: int, rows: pd.DataFrame, links: list[dict]) -> dict:
    wall = rows.groupby("batch_index")["latency_ms"].max().sum() / 1e3
    return {
        "strategy": strategy,
        "strategy_kind": kind,
        "tp_size": tp,
        "pp_size": 1,
        "num_nodes": tp,
        "wall_time_s": wall,
        "device": "cuda:0",
        "device_name": "NVIDIA H100 80GB HBM3",
        "host_cpus": 16,
        "memory_bandwidth_Bps": None,
        "micro_batches": 1,
        "ranks_per_host": 1,
        "links": json.dumps(links),
        "compute_s": wall * 0.8,
        "comm_s": wall * 0.2,
        "idle_s": 0.0,
    }


def _run(model: pm.ModelCost = MODEL, hw: pm.Hardware = TRUE) -> tuple[pd.DataFrame, pd.DataFrame]:
    tp_link = pm.Link("nccl_all_reduce", 50e-6, 10e9)
    ref = _rows("tiny_pp1_tp1_n1", "reference", pm.Placement(1, 1), model, hw)
    tp = _rows("tiny_pp1_tp2_n2", "tp_nodes", pm.Placement(2, 1, tp_link=tp_link), model, hw)
    metrics = pd.DataFrame(
        [
            _metrics("tiny_pp1_tp1_n1", "reference", 1, ref, []),
            _metrics("tiny_pp1_tp2_n2", "tp_nodes", 2, tp, [{**LINK, "beta_Bps": 10e9}]),
        ]
    )
    return pd.concat([ref, tp], ignore_index=True), metrics


def test_fit_recovers_the_reference_device() -> None:
    ref = batches(_rows("r", "reference", pm.Placement(1, 1)), 1)
    assert [b.micro_batches for b in ref] == [[PROMPTS[0]], [PROMPTS[1]]]
    hw = fit_hardware(MODEL, ref, None)
    assert hw.prefill.overhead_s == pytest.approx(2e-3) and hw.prefill.per_s == pytest.approx(20e9)
    assert hw.decode.overhead_s == pytest.approx(1e-3) and hw.decode.per_s == pytest.approx(5e9)
    assert hw.decode.separated and hw.prefill.separated
    # one batch cannot tell overhead from rate: decode is taken at the probe's bandwidth, the rest is overhead
    alone = fit_hardware(MODEL, ref[:1], None, memory_bandwidth_Bps=50e9)
    assert not alone.decode.separated and alone.decode.per_s == 50e9 and alone.decode.overhead_s > 1e-3


def test_int8_passes_are_fitted_less_their_measured_dequantization_which_tp_splits(tmp_path: Path) -> None:
    """Each int8 pass dequantizes every weight the rank holds (1.79 M here, at 10 M/s: 179 ms, most of a pass):
    the reference's passes less that, at the rate its probe measured, give the same device as at fp32, and a
    TP-2 rank is predicted to dequantize half, as it does, so the strategy runs as modelled."""
    int8 = dataclasses.replace(MODEL, dequantizes=True)
    true = dataclasses.replace(TRUE, dequant_per_s=10e6)
    hw = fit_hardware(int8, batches(_rows("r", "reference", pm.Placement(1, 1), int8, true), 1), None, None, 10e6)
    assert hw.prefill.per_s == pytest.approx(20e9) and hw.decode.per_s == pytest.approx(5e9)
    assert hw.decode.overhead_s == pytest.approx(1e-3) and hw.dequant_per_s == 10e6
    half = pm.slot(int8, hw, pm.Placement(2, 1), "decode", batch=4, tokens=300).seconds[pm.DEQUANT]
    assert half == pytest.approx(int8.shape.quantized_params / 2 / 10e6)
    rows, metrics = _run(int8, true)
    metrics["dequant_weights_per_s"] = [10e6, None]  # the reference's probe
    perf = analyse(rows, metrics, _settings(tmp_path), int8)
    assert isinstance(perf, Performance) and "dequantizes 0.01 G weights/s" in perf.hardware
    tp = next(s for s in perf.strategies if s.kind == "tp_nodes")
    assert tp.ratio == pytest.approx(1.0) and tp.predicted.bottleneck == pm.DEQUANT
    assert "dequantization-bound" in tp.sentence and "0.89 M weights at 0.01 G/s each" in tp.sentence


def test_int8_decode_steps_through_the_cpu_kernel_dequantize_nothing(tmp_path: Path) -> None:
    """The reference says its one-token steps read the codes (runtime.quantize.decodes_from_codes): only its
    prefills are fitted less a dequantization, and a strategy's decode steps are predicted to pay none."""
    int8 = dataclasses.replace(MODEL, dequantizes=True)
    kernel = dataclasses.replace(int8, decode_dequantizes=False)
    true = dataclasses.replace(TRUE, dequant_per_s=10e6)
    assert pm.slot(kernel, true, pm.Placement(2, 1), "decode", batch=4, tokens=300).seconds[pm.DEQUANT] == 0
    assert pm.slot(kernel, true, pm.Placement(2, 1), "prefill", batch=4, tokens=300).seconds[pm.DEQUANT] > 0
    rows, metrics = _run(kernel, true)
    metrics["dequant_weights_per_s"] = [10e6, None]
    metrics["decode_dequantizes"] = [False, None]
    perf = analyse(rows, metrics, _settings(tmp_path), int8)  # as the settings make it: decode dequantizing
    assert isinstance(perf, Performance)
    tp = next(s for s in perf.strategies if s.kind == "tp_nodes")
    assert tp.ratio == pytest.approx(1.0) and tp.predicted.bottleneck != pm.DEQUANT


def test_batches_cut_micro_batches_as_the_runtime_does() -> None:
    (first, _) = batches(_rows("r", "reference", pm.Placement(1, 1)), 3)
    assert first.micro_batches == [[300, 280], [260], [240]]
    assert first.recut(2) == Batch([[300, 280], [260, 240]], first.new_tokens, first.ttft_s, first.latency_s)


def test_a_strategy_that_runs_as_modelled_has_ratio_one(tmp_path: Path) -> None:
    rows, metrics = _run()
    perf = analyse(rows, metrics, _settings(tmp_path), MODEL)
    assert not isinstance(perf, str) and perf.skipped == []
    by_kind = {s.kind: s for s in perf.strategies}
    assert by_kind["reference"].ratio == pytest.approx(1.0)
    assert by_kind["tp_nodes"].ratio == pytest.approx(1.0)
    assert by_kind["tp_nodes"].predicted.comm_share > 0 and by_kind["reference"].predicted.comm_share == 0
    assert by_kind["tp_nodes"].measured_split == pytest.approx({"compute_s": 0.8, "comm_s": 0.2, "idle_s": 0.0})
    assert "(eta 0% of 3,350.0 GB/s)" in perf.hardware  # 5 GB/s fitted against the table's H100 peak
    metrics["hostnames"] = '["gpu0"]'
    overridden = analyse(rows, metrics, _settings(tmp_path), MODEL, peaks={"gpu0": 10e9})
    assert not isinstance(overridden, str) and "(eta 50% of 10.0 GB/s)" in overridden.hardware  # the inventory's
    table = perf.table()
    assert list(table["strategy"]) == ["tiny_pp1_tp1_n1", "tiny_pp1_tp2_n2"]
    what_if = perf.what_if_table().set_index("strategy")
    assert what_if.loc["tiny_pp1_tp2_n2", "1 GbE x2"] < what_if.loc["tiny_pp1_tp2_n2", "USB4 (40 Gb/s) x2"]
    markdown = performance_markdown(perf)
    assert markdown.startswith("## Where the time goes") and "| tiny_pp1_tp2_n2 | " in markdown
    assert "- tiny_pp1_tp2_n2 (TP-2 across 2 nodes) is " in markdown


def test_no_reference_no_prediction(tmp_path: Path) -> None:
    rows, metrics = _run()
    keep = metrics["strategy_kind"] != "reference"
    reason = analyse(rows[rows["strategy_kind"] != "reference"], metrics[keep], _settings(tmp_path), MODEL)
    assert reason == "no prediction: the reference strategy is not collected, and the model is fitted to it"


def test_a_strategy_without_link_timings_is_skipped_by_name(tmp_path: Path) -> None:
    rows, metrics = _run()
    metrics.loc[metrics["strategy_kind"] == "tp_nodes", "links"] = "[]"
    perf = analyse(rows, metrics, _settings(tmp_path), MODEL)
    assert not isinstance(perf, str)
    assert [s.kind for s in perf.strategies] == ["reference"]
    assert perf.skipped == ["tiny_pp1_tp2_n2: no prediction, its ranks did not time their all_reduce"]


def test_a_missing_model_config_is_named(tmp_path: Path) -> None:
    rows, metrics = _run()
    reason = for_run(rows, metrics, _settings(tmp_path))
    assert (
        reason
        == f"no prediction: {tmp_path / 'model' / 'config.json'}: no such file (the model's shape is read from it)"
    )
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"hidden_size": 128}')
    assert str(for_run(rows, metrics, _settings(tmp_path))).startswith("no prediction: ")
    assert "no num_attention_heads (the model's shape needs it)" in str(for_run(rows, metrics, _settings(tmp_path)))


def test_the_split_comes_from_the_timers_else_from_the_profiled_window() -> None:
    timed = pd.Series({"wall_time_s": 4.0, "compute_s": 3.0, "comm_s": 0.5, "idle_s": 0.5, "profiled_comm_share": 0.9})
    assert measured_split(timed) == {"compute_s": 0.75, "comm_s": 0.125, "idle_s": 0.125}
    device = pd.Series({"wall_time_s": 4.0, "compute_s": None, "profiled_comm_share": 0.3, "profiled_idle_share": 0.1})
    assert measured_split(device) == pytest.approx({"compute_s": 0.6, "comm_s": 0.3, "idle_s": 0.1})
    assert measured_split(pd.Series({"wall_time_s": 4.0, "profiled_comm_share": float("nan")})) is None


def test_a_straggling_rank_adds_the_what_if_without_it(tmp_path: Path) -> None:
    """TP's rank 1 takes 1.6x rank 0's median forward step: the what-ifs gain the measured speed without it."""
    rows, metrics = _run()
    is_tp = metrics["strategy"] == "tiny_pp1_tp2_n2"
    per_rank = {
        "rank_stages": "[0, 0]",
        "rank_hosts": '["node0", "node1"]',
        "rank_step_ms": "[10.0, 16.0]",
        "rank_steps": "[40, 40]",
    }
    metrics = metrics.assign(**{k: [v if tp else None for tp in is_tp] for k, v in per_rank.items()})
    perf = analyse(rows, metrics, _settings(tmp_path), MODEL)
    assert not isinstance(perf, str)
    what_if = perf.what_if_table().set_index("strategy")[WITHOUT_STRAGGLER]
    tp = metrics[is_tp].iloc[0]
    excess_s = (16.0 - 10.0) / 1e3 * 40
    tokens = rows.loc[rows["strategy"] == "tiny_pp1_tp2_n2", "tokens_generated"].sum()
    assert what_if["tiny_pp1_tp2_n2"] == pytest.approx(tokens / (tp["wall_time_s"] - excess_s))
    assert math.isnan(what_if["tiny_pp1_tp1_n1"])  # one rank: nobody to straggle
    assert f"({WITHOUT_STRAGGLER}: measured, less the straggler's excess compute.)" in performance_markdown(perf)


def test_strategies_over_different_links_each_get_their_own_named_figures(tmp_path: Path) -> None:
    rows, metrics = _run()
    usb4 = {**LINK, "beta_Bps": 5e9, "interface": "thunderbolt0"}  # as the ranks record a link across hosts
    slow = {**LINK, "beta_Bps": 1e6, "interface": "eth0"}
    assert timed_link(usb4) == pm.Link("nccl_all_reduce over usb4 (thunderbolt0)", 50e-6, 5e9)
    assert timed_link({**LINK, "beta_Bps": 5e9}).name == "nccl_all_reduce"  # ranks from before the field
    metrics["links"] = metrics["links"].where(metrics["strategy_kind"] != "tp_nodes", json.dumps([usb4]))
    tp_rows = rows[rows["strategy_kind"] == "tp_nodes"].assign(strategy="tp_over_eth")
    over_eth = pd.DataFrame([_metrics("tp_over_eth", "tp_nodes", 2, tp_rows, [slow])])
    perf = analyse(pd.concat([rows, tp_rows]), pd.concat([metrics, over_eth]), _settings(tmp_path), MODEL)
    assert not isinstance(perf, str)
    by_name = {s.strategy: s.predicted.seconds[pm.BANDWIDTH] for s in perf.strategies}
    assert by_name["tp_over_eth"] == pytest.approx(5e3 * by_name["tiny_pp1_tp2_n2"])
    [sentence] = [s.sentence for s in perf.strategies if s.strategy == "tp_over_eth"]
    assert "activations by nccl_all_reduce over eth0 at 0.00 GB/s" in sentence

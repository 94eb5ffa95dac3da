"""The run summary: table values from a hand-built two-strategy run, the Markdown, the CSV and the plots; and the
same run with its single-device reference gone (a fake out-of-memory failure), judged by the strategies' majority."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from cockpit.analysis import performance_model as pm
from cockpit.analysis.bottlenecks import Performance, StrategyPerformance
from cockpit.analysis.correctness import choose_reference, divergences, evaluate, summarize
from cockpit.analysis.spread import spread
from cockpit.analysis.summary import RunSummary, between_nodes, format_cell

RUN = "run_20261123T120000"
REF, TP = "tiny_pp1_tp1_n1", "tiny_pp1_tp2_n2"
PP, TPN = "tiny_pp2_tp1_n2", "tiny_pp1_tp2_n1"
SHAPES = {
    REF: ("reference", 1, 1, 1),
    TP: ("tp_nodes", 2, 1, 2),
    PP: ("pp_nodes", 1, 2, 2),
    TPN: ("tp_node", 2, 1, 1),
}


def result(strategy: str, variant: str, prompt_id: int, latency: float, tokens: list[int], text: str) -> dict:
    kind, tp, pp, nodes = SHAPES[strategy]
    return {
        "run_id": RUN,
        "strategy": strategy,
        "strategy_kind": kind,
        "tp_size": tp,
        "pp_size": pp,
        "num_nodes": nodes,
        "variant": variant,
        "prompt_id": prompt_id,
        "rank": 0,
        "gpu_id": None,
        "completion": text,
        "token_ids": tokens,
        "tokens_generated": len(tokens),
        "prompt_tokens": {"2k": 1000, "4k": 3000}[variant] + 100 * prompt_id,
        "latency_ms": latency,
        "ttft_ms": latency / 10,
        "finish_reason": "length",
        "trace_path": None,
    }


def metric(strategy: str, elapsed_s: float, wall_time_s: float, energy_j: float | None, rss: int | None) -> dict:
    kind, tp, pp, nodes = SHAPES[strategy]
    return {
        "strategy": strategy,
        "strategy_kind": kind,
        "tp_size": tp,
        "pp_size": pp,
        "num_nodes": nodes,
        "world_size": tp * pp,
        "device": "cuda",
        "job_id": "42",
        "state": "COMPLETED",
        "elapsed_s": elapsed_s,
        "max_rss_bytes": rss,
        "wall_time_s": wall_time_s,
        "tokens_generated": 100,
        "tokens_per_s": 0.0,  # ignored: the summary recomputes it
        "prompts": 4,
        "energy_j": energy_j,
        "energy_source": "nvml" if energy_j is not None else None,
    }


def make_run(tp_last_tokens: list[int]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Reference: latencies 100-400 ms; TP: 50-80 ms; TP's last prompt has `tp_last_tokens` and a longer text."""
    results = pd.DataFrame(
        [
            result(REF, "2k", 0, 100.0, [1, 2, 3], "the cat sat"),
            result(REF, "2k", 1, 200.0, [4, 5, 6], "the cat sat"),
            result(REF, "4k", 0, 300.0, [7, 8, 9], "the cat sat"),
            result(REF, "4k", 1, 400.0, [1, 1, 1], "the cat sat"),
            result(TP, "2k", 0, 50.0, [1, 2, 3], "the cat sat"),
            result(TP, "2k", 1, 60.0, [4, 5, 6], "the cat sat"),
            result(TP, "4k", 0, 70.0, [7, 8, 9], "the cat sat"),
            result(TP, "4k", 1, 80.0, tp_last_tokens, "the cat sat down"),
        ]
    )
    baseline = pd.DataFrame(
        {
            "prompt_id": [0, 1, 0, 1],
            "variant": ["2k", "2k", "4k", "4k"],
            "prompt": ["a", "b", "c", "d"],
            "token_budget": [2048, 2048, 4096, 4096],
            "source_file": ["f"] * 4,
            "local_completion": ["the cat sat"] * 4,
            "local_latency_ms": [1.0] * 4,
            "status": ["done"] * 4,
        }
    )
    metrics = pd.DataFrame(
        [metric(TP, 1800.0, 4.0, None, None), metric(REF, 36.0, 10.0, 50.0, 3 * 2**30)]  # metrics out of order
    )
    summary = summarize(evaluate(results, baseline))
    return results, metrics, summary


def fake_out_of_memory_run() -> tuple[pd.DataFrame, pd.DataFrame]:
    """make_run's run as it is when the single-device reference runs out of memory (a fake: its job failed, so it
    left no rows and no metrics), with PP and TP in a node beside TP: PP's 4k prompt 1 parts from the other two
    at token 1. Tokens/s: TP 25, PP 20, TP in a node 12.5."""
    results, metrics, _ = make_run([1, 1, 1])
    tp = results[results["strategy"] == TP].assign(completion="the cat sat")
    parted = (PP, "4k", 1)
    extra = [
        result(s, r.variant, r.prompt_id, r.latency_ms + 10, [1, 9, 1], "the cat sat down")
        if (s, r.variant, r.prompt_id) == parted
        else result(s, r.variant, r.prompt_id, r.latency_ms + 10, r.token_ids, r.completion)
        for s in (PP, TPN)
        for r in tp.itertuples()
    ]
    more = pd.DataFrame([metric(PP, 40.0, 5.0, None, None), metric(TPN, 16.0, 8.0, None, None)])
    rows = pd.concat([tp, pd.DataFrame(extra)], ignore_index=True)
    return rows, pd.concat([metrics[metrics["strategy"] == TP], more], ignore_index=True)


@pytest.fixture
def diverging() -> RunSummary:
    return RunSummary(*make_run([1, 9, 1]), RUN)


@pytest.fixture
def exact() -> RunSummary:
    return RunSummary(*make_run([1, 1, 1]), RUN)


def test_table_values(diverging: RunSummary) -> None:
    table = diverging.table()
    assert table["strategy"].tolist() == [REF, TP]  # reference first although slower
    ref, tp = table.iloc[0], table.iloc[1]
    assert (tp["kind"], tp["tp"], tp["pp"], tp["nodes"], tp["gpus"]) == ("tp_nodes", 2, 1, 2, 2)
    assert ref["exact_match_rate"] == 1.0
    assert tp["exact_match_rate"] == 0.75
    assert ref["similarity"] == 1.0
    assert tp["similarity"] == pytest.approx((3 + (1 - 5 / 16)) / 4)  # "the cat sat down": 5 edits over 16
    assert (ref["latency_p50_ms"], ref["latency_p95_ms"], ref["ttft_p50_ms"]) == pytest.approx((250, 385, 25))
    assert (tp["latency_p50_ms"], tp["latency_p95_ms"]) == pytest.approx((65, 78.5))
    assert (tp["latency_p50_ms_2k"], tp["latency_p50_ms_4k"]) == pytest.approx((55, 75))
    assert (ref["tokens_per_s"], tp["tokens_per_s"]) == pytest.approx((10, 25))
    assert (ref["prompts_per_s"], tp["prompts_per_s"]) == pytest.approx((0.4, 1.0))
    assert (ref["gpu_hours"], tp["gpu_hours"]) == pytest.approx((0.01, 1.0))
    assert ref["energy_per_token_j"] == pytest.approx(0.5)  # 50 J over 100 tokens
    assert ref["tokens_per_kwh"] == pytest.approx(100 / (50 / 3.6e6))
    assert ref["avg_power_w"] == pytest.approx(5.0)  # 50 J over 10 s
    assert tp[["energy_per_token_j", "tokens_per_kwh", "avg_power_w"]].isna().all()
    assert (ref["speedup"], tp["speedup"]) == pytest.approx((1.0, 2.5))
    assert ref["max_rss_bytes"] == 3 * 2**30
    assert pd.isna(tp["max_rss_bytes"])


def test_markdown_names_the_run_and_the_winner(diverging: RunSummary, exact: RunSummary, tmp_path: Path) -> None:
    text = exact.to_markdown(tmp_path / "s.md").read_text()
    lines = text.splitlines()
    assert lines[0] == f"# Run summary: {RUN}"
    # one pass each: the fastest is named as such, not crowned
    assert text.splitlines()[2] == (
        "No winner named: one timed pass each gives no spread, so no lead can be told from noise ([sweep] repeats = 3)."
        f" Fastest measured: **{TP}** (tp_nodes, tp 2 x pp 1 on 2 node(s)): 25.0 tokens/s, 2.50x the reference's 10.0"
        " tokens/s, with every prompt's tokens identical to the reference."
    )
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 4  # header, separator, two strategies
    assert table[0].startswith("| strategy | kind | tp |")
    assert table[2].startswith(f"| {REF} | reference | 1 | 1 | 1 | 1 | 100.0% |")
    assert "| — |" in table[3]  # TP's energy per token is unknown
    assert "| 0.01 | 0.5 | 7,200,000 | 5.0 | 1.00x | 3.0 GiB |" in table[2]  # GPU-h, J/token, tok/kWh, W, ...
    # TP diverges on one prompt: the exact reference wins
    assert f"Winner: **{REF}**, the reference itself" in diverging.markdown()
    assert "75.0%" in diverging.markdown()


def test_csv_reloads(diverging: RunSummary, tmp_path: Path) -> None:
    frame = pd.read_csv(diverging.to_csv(tmp_path / "s.csv"))
    assert frame["strategy"].tolist() == [REF, TP]
    assert frame["gpu_hours"].tolist() == pytest.approx([0.01, 1.0])
    assert math.isnan(frame["energy_per_token_j"].iloc[1])
    assert list(frame.columns) == list(diverging.table().columns)


def test_plots_are_written_with_strategy_labels(diverging: RunSummary, tmp_path: Path) -> None:
    paths = diverging.build_plots(tmp_path / "plots", "20261123T120000")
    assert [p.name for p in paths] == [
        "latency_vs_correctness_run_20261123T120000.txt",
        "throughput_vs_length_run_20261123T120000.txt",
    ]
    for path in paths:
        text = path.read_text()
        assert REF in text and TP in text
        assert "\x1b" not in text
    assert "exact-match rate" in paths[0].read_text()
    assert "prompt tokens" in paths[1].read_text()
    assert paths[0].read_text() == diverging.latency_vs_correctness()  # deterministic


def test_write_all(exact: RunSummary, tmp_path: Path) -> None:
    paths = exact.write_all(tmp_path, "20261123T120000")
    assert {k: p.relative_to(tmp_path).as_posix() for k, p in paths.items()} == {
        "csv": "summary_run_20261123T120000.csv",
        "markdown": "summary_run_20261123T120000.md",
        "latency_vs_correctness": "plots/latency_vs_correctness_run_20261123T120000.txt",
        "throughput_vs_length": "plots/throughput_vs_length_run_20261123T120000.txt",
    }
    assert all(p.stat().st_size > 0 for p in paths.values())


def test_a_strategy_without_results_or_throughput_sorts_last(tmp_path: Path) -> None:
    results, metrics, summary = make_run([1, 1, 1])
    failed = pd.DataFrame([metric(PP, 18.0, 0.0, None, None)])  # wall time 0: no throughput
    report = RunSummary(results, pd.concat([metrics, failed], ignore_index=True), summary, RUN)
    table = report.table()
    assert table["strategy"].tolist() == [REF, TP, PP]
    last = table.iloc[2]
    assert last["gpu_hours"] == pytest.approx(0.01)
    assert last[["exact_match_rate", "latency_p50_ms", "tokens_per_s", "speedup"]].isna().all()
    assert f"| {PP} | pp_nodes | 1 | 2 | 2 | 2 | — | — |" in report.markdown()
    assert PP not in report.latency_vs_correctness()  # nothing to plot for it


def test_no_exact_strategy_with_throughput_means_no_winner() -> None:
    results, metrics, summary = make_run([1, 9, 1])
    report = RunSummary(results, metrics[metrics["strategy"] == TP], summary, RUN)
    assert report.winner().startswith("No winner")


def test_show_prints_both_plots(diverging: RunSummary, capsys: pytest.CaptureFixture[str]) -> None:
    diverging.show()
    out = capsys.readouterr().out
    assert "latency p50 vs exact match" in out and "throughput vs prompt length" in out


def test_markdown_says_where_each_rank_ran() -> None:
    results, metrics, summary = make_run([1, 1, 1])
    hosts = {TP: ["node0", "node1"], REF: ["node0"]}  # by rank, from each rank's metrics
    metrics = metrics.assign(rank_hosts=[json.dumps(hosts[s]) for s in metrics["strategy"]])
    placed = RunSummary(results, metrics, summary, RUN)
    assert placed.placement() == [(REF, "node0: 0", ""), (TP, "node0: 0; node1: 1", "TP across nodes")]
    assert "## Where each rank ran" in placed.markdown() and f"| {TP} | node0: 0; node1: 1 |" in placed.markdown()
    assert "## Where each rank ran" not in RunSummary(*make_run([1, 1, 1]), RUN).markdown()  # older runs: none
    # the interface the ranks' collectives used between the hosts, as the collector gathers it from their metrics
    interfaces = metrics["strategy"].map({TP: "thunderbolt0", REF: "lo"})
    over_usb4 = RunSummary(results, metrics.assign(comm_interfaces=interfaces), summary, RUN)
    assert over_usb4.placement()[1] == (TP, "node0: 0; node1: 1", "TP across nodes over usb4 (thunderbolt0)")
    assert f"| {TP} | node0: 0; node1: 1 | TP across nodes over usb4 (thunderbolt0) |" in over_usb4.markdown()


def test_markdown_puts_the_memory_estimate_beside_each_ranks_peak() -> None:
    """Peaks as the collector gathers them from the ranks' metrics; estimates as the manifest's memory plan has
    them. A rank with no metrics shows its estimate alone; an older run has neither and no section."""
    results, metrics, summary = make_run([1, 1, 1])
    peaks = {REF: [2 * 2**30], TP: [2**30, None]}
    metrics = metrics.assign(
        rank_peak_memory_bytes=[json.dumps(peaks[s]) for s in metrics["strategy"]],
        rank_hosts=[json.dumps(["node0", "node1"][: len(peaks[s])]) for s in metrics["strategy"]],
    )
    estimates = {REF: [int(1.6 * 2**30)], TP: [2**29, 2**29]}
    report = RunSummary(results, metrics, summary, RUN, estimates=estimates)
    assert report.memory_rows() == [
        (REF, "0", "node0", "1.6 GiB", "2.0 GiB", "1.25"),
        (TP, "0", "node0", "512.0 MiB", "1.0 GiB", "2.00"),
        (TP, "1", "node1", "512.0 MiB", "—", "—"),
    ]
    text = report.markdown()
    assert "## Memory: estimate vs peak" in text and f"| {REF} | 0 | node0 | 1.6 GiB | 2.0 GiB | 1.25 |" in text
    assert "## Memory" not in RunSummary(*make_run([1, 1, 1]), RUN).markdown()


def test_between_nodes_names_what_crosses_and_the_link() -> None:
    def said(tp: int, pp: int, per_host: int, hosts: int = 2, interfaces: str | None = "eth0") -> str:
        row = pd.Series({"tp_size": tp, "pp_size": pp, "ranks_per_host": per_host, "comm_interfaces": interfaces})
        return between_nodes(row, hosts)

    assert said(2, 1, 1) == "TP across nodes over eth0"
    assert said(1, 2, 1, interfaces="thunderbolt0") == "PP across nodes over usb4 (thunderbolt0)"
    assert said(2, 2, 2) == "PP across nodes over eth0"  # hybrid: TP inside each node
    assert said(2, 1, 2, hosts=1) == "" and said(1, 1, 1) == ""  # one host; replicas only
    assert said(2, 1, 1, interfaces=None) == "TP across nodes"  # ranks from before the field


def timed(
    metrics: pd.DataFrame, passes: dict[str, list[float]], mismatch: dict[str, str] | None = None
) -> pd.DataFrame:
    """The metrics with each strategy's timed passes (tokens/s per pass), as the collector writes them."""
    return metrics.assign(
        repeats=[len(passes[s]) for s in metrics["strategy"]],
        pass_tokens_per_s=[json.dumps(passes[s]) for s in metrics["strategy"]],
        pass_ttft_ms=[json.dumps([20.0, 22.0, 21.0][: len(passes[s])]) for s in metrics["strategy"]],
        pass_itl_ms=[json.dumps([5.0, 5.5, 5.2][: len(passes[s])]) for s in metrics["strategy"]],
        warmup_s=[1.25 for _ in metrics["strategy"]],
        repeat_mismatch=[(mismatch or {}).get(s) for s in metrics["strategy"]],
    )


def test_spread_of_the_passes() -> None:
    figures = spread([24.0, 26.0, 25.0])
    assert (figures.median, figures.minimum, figures.maximum, figures.passes) == (25.0, 24.0, 26.0, 3)
    assert 24.0 <= figures.low <= 25.0 <= figures.high <= 26.0 and spread([24.0, 26.0, 25.0]) == figures  # seeded
    once = spread([25.0, math.nan])
    assert not once.measured and once.interval() == "" and (once.low, once.high) == (25.0, 25.0)
    assert figures.overlaps(spread([25.9, 27.0, 28.0])) and not figures.overlaps(spread([26.5, 27.0, 28.0]))
    assert spread([]).passes == 0 and math.isnan(spread([]).median)


def test_the_table_gives_medians_over_passes_with_their_intervals() -> None:
    results, metrics, summary = make_run([1, 1, 1])
    report = RunSummary(results, timed(metrics, {REF: [9.0, 10.0, 11.0], TP: [24.0, 26.0, 25.0]}), summary, RUN)
    tp = report.table().set_index("strategy").loc[TP]
    assert (tp["tokens_per_s"], tp["tokens_per_s_min"], tp["tokens_per_s_max"], tp["repeats"]) == (25, 24, 26, 3)
    assert tp["ttft_p50_ms"] == 21.0 and tp["itl_ms"] == 5.2 and tp["warmup_s"] == 1.25  # passes, not rows
    assert tp["speedup"] == pytest.approx(2.5)
    row = next(line for line in report.markdown().splitlines() if line.startswith(f"| {TP} |"))
    interval = f"25.0 [{format_cell('tokens_per_s', tp['tokens_per_s_low'])}–"
    assert interval in row and "| 24.0–26.0 | 3 | 1.25 |" in row
    assert "beyond the noise of 3 repeats" in report.winner()


def test_a_lead_within_the_noise_names_no_winner() -> None:
    results, metrics, summary = make_run([1, 1, 1])
    close = RunSummary(results, timed(metrics, {REF: [9.0, 12.0, 10.0], TP: [9.5, 11.5, 10.5]}), summary, RUN)
    assert close.winner().startswith(f"No clear winner: **{TP}** (10.5 tokens/s, ")
    assert f"and **{REF}** (10.0, " in close.winner() and "indistinguishable at 3 repeats" in close.winner()
    once = RunSummary(results, timed(metrics, {REF: [10.0], TP: [25.0]}), summary, RUN)
    assert once.winner().startswith("No winner named: one timed pass each gives no spread")


def test_a_strategy_that_does_not_repeat_itself_cannot_win() -> None:
    results, metrics, summary = make_run([1, 1, 1])
    why = "repeat 2 differs from repeat 1 at prompt 1 (4k), token 2: greedy decoding must repeat exactly"
    flaky = RunSummary(results, timed(metrics, {REF: [10.0] * 3, TP: [25.0] * 3}, {TP: why}), summary, RUN)
    assert flaky.winner() == (
        f"Winner: **{REF}**, the reference itself, at 10.0 tokens/s: no strategy that matched it on every prompt "
        f"was faster. {TP} did not repeat itself: {why}."
    )


def predicted(strategy: str, seconds: float, measured_s: float) -> StrategyPerformance:
    """A strategy the performance model predicted to take `seconds` for 100 tokens; it took `measured_s`."""
    breakdown = pm.Breakdown({pm.COMPUTE: seconds})
    return StrategyPerformance(
        strategy, SHAPES[strategy][0], strategy, 100, breakdown, 0.1, measured_s, None, None, "", {}
    )


def test_a_lead_the_model_cannot_explain_is_not_ranked() -> None:
    """TP measured 2.4x its prediction (as a pipeline on the embedded default did): set aside, named."""
    results, metrics, summary = make_run([1, 1, 1])
    performance = Performance("cpu", [predicted(REF, 10.0, 10.0), predicted(TP, 9.6, 4.0)], [])
    report = RunSummary(results, metrics, summary, RUN, performance=performance)
    assert report.unexplained() == {TP: pytest.approx(2.4)}
    assert report.winner() == (
        f"Winner: **{REF}**, the reference itself, at 10.0 tokens/s: no strategy that matched it on every prompt was "
        f"faster. {TP} measured 2.40x its prediction: not ranked until explained."
    )
    explained = Performance("cpu", [predicted(REF, 10.0, 10.0), predicted(TP, 5.0, 4.0)], [])  # 1.25x
    assert f"Fastest measured: **{TP}**" in RunSummary(results, metrics, summary, RUN, performance=explained).winner()


def test_prefill_and_decode_are_led_apart() -> None:
    results, metrics, summary = make_run([1, 1, 1])
    metrics = timed(metrics, {REF: [10.0, 10.2, 9.8], TP: [25.0, 24.0, 26.0]}).assign(
        pass_prefill_tokens_per_s=[json.dumps([900.0, 950.0, 920.0]), json.dumps([300.0, 310.0, 290.0])],
        pass_decode_tokens_per_s=[json.dumps([30.0, 31.0, 29.0]), json.dumps([12.0, 11.0, 30.0])],
    )  # rows: TP, REF
    report = RunSummary(results, metrics, summary, RUN)
    prefill, decode = report.phase_leads()
    assert prefill == f"Prefill: **{TP}** leads at 920.0 tokens/s, ahead of {REF} beyond the noise of 3 repeats."
    assert decode.startswith(f"Decode: **{TP}** (30.0 tokens/s, ") and "indistinguishable at 3 repeats" in decode
    assert f"- {prefill}" in report.markdown()
    table = report.table().set_index("strategy")
    assert table.loc[REF, "prefill_tokens_per_s"] == 300.0 and table.loc[TP, "decode_tokens_per_s_high"] <= 31.0


def test_energy_section_says_what_the_figures_rest_on_or_why_there_are_none() -> None:
    results, metrics, summary = make_run([1, 1, 1])
    no_rapl = "rank 1 on node1: no energy counter on cpu without RAPL access: /sys/.../energy_uj is root-only"
    split = {
        "energy_j": 160.0,
        "energy_source": "rapl:intel-rapl:0",
        "energy_estimated": True,
        "rank_energy_j": json.dumps([75.0, 25.0, 20.0, 40.0]),
    }
    cpu = pd.DataFrame([{**metric(PP, 30.0, 8.0, None, None), **split}])
    metrics = pd.concat([metrics.assign(energy_why=[no_rapl, None]), cpu], ignore_index=True)
    report = RunSummary(results, metrics, summary, RUN)
    pp = report.table().set_index("strategy").loc[PP]
    assert (pp["energy_per_token_j"], pp["tokens_per_kwh"], pp["avg_power_w"]) == pytest.approx((1.6, 2.25e6, 20.0))
    assert report.energy_lines() == [
        f"{REF}: measured by nvml",
        f"{TP}: no energy figure ({no_rapl})",
        f"{PP}: rapl:intel-rapl:0, each host's counter split between its ranks by busy time; the total is measured, "
        "the shares (rank 0 75.00 J, rank 1 25.00 J, rank 2 20.00 J, rank 3 40.00 J) are an estimate",
    ]
    assert f"## Energy\n\n- {REF}: measured by nvml\n- {TP}: no energy figure" in report.markdown()


def test_a_fake_out_of_memory_reference_is_replaced_by_the_strategies_majority() -> None:
    rows, metrics = fake_out_of_memory_run()
    no_baseline = pd.DataFrame(columns=["prompt_id", "variant", "local_completion"])
    reference = choose_reference(rows, no_baseline, fate="the single-device run failed: OUT_OF_MEMORY")
    scores = evaluate(rows, no_baseline, reference)
    summary = RunSummary(
        rows, metrics, summarize(scores), RUN, reference=reference, divergences=divergences(scores, reference)
    )
    table = summary.table().set_index("strategy")
    assert table["tokens_per_s"].to_dict() == pytest.approx({TP: 25.0, PP: 20.0, TPN: 12.5})
    assert table["speedup"].isna().all()  # relative to nothing
    assert table["exact_match_rate"].to_dict() == {TP: 1.0, PP: 0.75, TPN: 1.0}
    text = summary.markdown()
    assert "reference: the strategies' majority (the single-device run failed: OUT_OF_MEMORY, no baseline)" in text
    assert f"- {PP} differs from the strategies' majority on 1 of 4 prompts; first: token 1 of 4k prompt 1" in text
    assert summary.winner() == (
        "No winner named: one timed pass each gives no spread, so no lead can be told from noise ([sweep] repeats = 3)."
        f" Fastest measured: **{TP}** (tp_nodes, tp 2 x pp 1 on 2 node(s)): 25.0 tokens/s, no reference throughput to "
        "compare, "
        "with every prompt's tokens identical to the strategies' majority."
    )
    assert f"| {TP} | tp_nodes | 2 | 1 | 2 | 2 | 100.0% | — |" in text
    assert "| — | — |" in text  # J/token and speedup unknown


def test_a_measurement_whose_interval_reaches_the_band_is_within_the_model() -> None:
    """2.4x its prediction at the median, but the passes' interval reaches down to 1.9x: within the model."""
    results, metrics, summary = make_run([1, 1, 1])
    spread_out = spread([19.8, 25.0, 26.0])  # tokens/s; predicted 100 tokens in 9.6 s, 10.4 tokens/s
    tp = dataclasses.replace(predicted(TP, 9.6, 4.0), measured_spread=spread_out)
    low, high = tp.ratio_interval
    assert low == pytest.approx(spread_out.low / (100 / 9.6)) and low < 2.0 < high and tp.explained
    report = RunSummary(
        results, metrics, summary, RUN, performance=Performance("cpu", [predicted(REF, 10, 10), tp], [])
    )
    assert report.unexplained() == {} and f"Fastest measured: **{TP}**" in report.winner()
    assert f"| 2.40 [{low:.2f}–{high:.2f}] |" in report.markdown()


def test_a_strategy_waiting_for_cpu_time_is_not_ranked() -> None:
    """4 ranks on 2 CPUs: the performance model leaves the waiting out, so its figure cannot crown it."""
    results, metrics, summary = make_run([1, 1, 1])
    crowded = dataclasses.replace(predicted(TP, 5.0, 4.0), oversubscribed=True)
    performance = Performance("cpu", [predicted(REF, 10.0, 10.0), crowded], [])
    assert RunSummary(results, metrics, summary, RUN, performance=performance).winner() == (
        f"Winner: **{REF}**, the reference itself, at 10.0 tokens/s: no strategy that matched it on every prompt was "
        f"faster. {TP} waits for CPU time (more busy ranks than its host's CPUs), which the performance model leaves "
        "out: not ranked."
    )

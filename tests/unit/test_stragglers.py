"""Stragglers from the collector's per-rank figures: a slow node named against its peers, with the what-if
without it; a slow rank among peers on its own host named by rank; none when the peers are within 15%."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cockpit.analysis import stragglers
from cockpit.analysis.summary import RunSummary
from tests.unit.test_report import RUN, TP, make_run


def figures(stages: list[int], hosts: list[str], compute_s: list[float], tp: int = 2) -> dict[str, object]:
    """A strategy's metrics row: every rank took 100 forward steps, the median one compute_s / 100; the pass took
    10 s for 200 tokens."""
    return {
        "strategy": "tiny_s",
        "tp_size": tp,
        "wall_time_s": 10.0,
        "tokens_generated": 200,
        "rank_stages": json.dumps(stages),
        "rank_hosts": json.dumps(hosts),
        "rank_step_ms": json.dumps([seconds * 10 for seconds in compute_s]),
        "rank_steps": json.dumps([100] * len(stages)),
    }


def test_a_slow_node_in_a_tp_group_is_named_with_the_what_if_without_it() -> None:
    found = stragglers.straggler(figures([0, 0], ["node0", "node1"], [4.0, 6.4]))
    assert found is not None and (found.rank, found.node, found.ratio) == (1, True, pytest.approx(1.6))
    # 2.4 s of excess compute: 200 tokens in 7.6 s
    assert found.sentence() == (
        "tiny_s: node1 is the straggler: its compute per step is 1.6x node0's; every TP all-reduce waits for it. "
        "Without it (every rank as fast as its peers' median): about 26.3 tokens/s instead of 20.0."
    )


def test_a_slow_rank_among_peers_on_its_host_is_named_by_rank() -> None:
    """TP 2 x PP 2, a node per stage: stages differ in work and are not compared with each other."""
    row = figures([0, 0, 1, 1], ["node0", "node0", "node1", "node1"], [2.0, 2.1, 5.0, 6.0])
    found = stragglers.straggler(row)
    assert found is not None and (found.rank, found.host, found.node) == (3, "node1", False)
    assert found.sentence().startswith("tiny_s: rank 3 (node1) is the straggler: its compute per step is 1.2x its")


def test_peers_within_the_threshold_or_alone_make_no_straggler() -> None:
    even = figures([0, 0], ["node0", "node1"], [4.0, 4.5])
    assert stragglers.straggler(even) is None and stragglers.compared(even)
    pipeline = figures([0, 1], ["node0", "node1"], [2.0, 9.0], tp=1)  # one rank per stage: nobody to compare
    assert stragglers.straggler(pipeline) is None and not stragglers.compared(pipeline)
    assert stragglers.straggler({"strategy": "old"}) is None  # collected before ranks counted their steps


def test_the_report_says_who_straggles_or_that_nobody_does() -> None:
    results, metrics, summary = make_run([1, 1, 1])

    def report(compute_s: list[float]) -> RunSummary:
        per_rank = pd.Series(figures([0, 0], ["node0", "node1"], compute_s)).drop(["strategy", "tp_size"])
        rows = metrics.assign(**{k: [v if s == TP else None for s in metrics["strategy"]] for k, v in per_rank.items()})
        return RunSummary(results, rows.assign(tokens_generated=metrics["tokens_generated"]), summary, RUN)

    slow = report([4.0, 6.4]).markdown()
    assert "## Stragglers" in slow and f"- {TP}: node1 is the straggler: its compute per step is 1.6x node0's" in slow
    assert (
        "- No straggler: every rank's compute per step is within 15% of its peers' median."
        in report([4.0, 4.2]).markdown()
    )

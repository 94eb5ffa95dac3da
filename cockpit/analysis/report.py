"""A run's report: its collected rows scored for correctness (per prompt, against the reference and the baseline),
the strategy table with the performance analysis, and the files `cluster report` writes under results/."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cockpit.analysis.bottlenecks import Performance, for_run
from cockpit.analysis.correctness import evaluate, reference_strategy, summarize
from cockpit.analysis.summary import RunSummary
from cockpit.errors import BadInput
from cockpit.sweep.collect import ResultCollector
from cockpit.sweep.plan import BASELINE_NAME, Sweep
from cockpit.sweep.prompt_table import load_prompt_table


@dataclass
class Scored:
    """A run's collected rows scored: per prompt against the reference and the baseline, and the strategy summary."""

    rows: pd.DataFrame
    scores: pd.DataFrame  # correctness.evaluate: one row per (strategy, variant, prompt_id)
    reference: str  # the reference strategy's id
    summary: RunSummary


def score_rows(
    rows: pd.DataFrame,
    metrics: pd.DataFrame,
    baseline: pd.DataFrame,
    run_id: str,
    performance: Performance | str | None = None,
) -> Scored:
    """Correctness per prompt and strategy, and the run summary, from the run's tables; reads and writes nothing."""
    scores = evaluate(rows, baseline)
    summary = RunSummary(rows, metrics, summarize(scores), run_id, performance=performance)
    return Scored(rows, scores, reference_strategy(rows), summary)


def score(sweep: Sweep, peaks: Mapping[str, float] | None = None) -> Scored:
    """A run's collected rows, metrics and baseline from disk, scored; writes nothing. BadInput before the first
    strategy is collected. `peaks`: host name -> peak memory bandwidth from the inventory, for the performance
    analysis."""
    rows = ResultCollector.load_rows(sweep.results_dir, sweep.stamp)
    if rows is None:
        raise BadInput(f"{sweep.run_dir}: no strategy has been collected yet (no results/run_{sweep.stamp}.parquet)")
    metrics = ResultCollector.load_metrics(sweep.results_dir, sweep.stamp)
    baseline_path = sweep.results_dir / BASELINE_NAME
    baseline = load_prompt_table(baseline_path if baseline_path.exists() else sweep.settings.prompt_df_path)
    performance = for_run(rows, metrics, sweep.settings, peaks)
    return score_rows(rows, metrics, baseline, sweep.settings.run_id, performance)


@dataclass
class Report:
    summary: RunSummary
    table: pd.DataFrame
    files: dict[str, Path]


def report(sweep: Sweep, peaks: Mapping[str, float] | None = None) -> Report:
    """Correctness per prompt and strategy, the strategy table and its plots, written under results/."""
    scored = score(sweep, peaks)
    ResultCollector.write_table(scored.scores, sweep.results_dir / f"correctness_run_{sweep.stamp}.parquet")
    files = scored.summary.write_all(sweep.results_dir, sweep.stamp)
    return Report(scored.summary, scored.summary.table(), files)

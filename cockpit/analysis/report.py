"""A run's report: its collected rows scored for correctness (per prompt, against the reference and the baseline),
the strategy table with the performance analysis, and the files `cluster report` writes under results/.

The reference is the single-device run; when it has no rows (out of memory is the usual reason) the run is still
reported: judged against the baseline endpoint when one is configured, else against the strategies' majority
(correctness.choose_reference), and the report says which and why."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cockpit.analysis.bottlenecks import Performance, for_run
from cockpit.analysis.correctness import (
    REFERENCE_KIND,
    Reference,
    choose_reference,
    divergences,
    evaluate,
    summarize,
    truth,
)
from cockpit.analysis.summary import RunSummary
from cockpit.errors import BadInput
from cockpit.jobs.records import ACTIVE_STATES
from cockpit.sweep.collect import ResultCollector
from cockpit.sweep.manifest import Manifest
from cockpit.sweep.plan import BASELINE_NAME, Sweep
from cockpit.sweep.prompt_table import load_prompt_table


@dataclass
class Scored:
    """A run's collected rows scored: per prompt against the reference and the baseline, and the strategy summary."""

    rows: pd.DataFrame
    scores: pd.DataFrame  # correctness.evaluate: one row per (strategy, variant, prompt_id)
    reference: Reference  # what the scores judge against, and why
    truth: pd.DataFrame  # correctness.truth: the reference's tokens and completion per prompt
    summary: RunSummary


def score_rows(
    rows: pd.DataFrame,
    metrics: pd.DataFrame,
    baseline: pd.DataFrame,
    run_id: str,
    performance: Performance | str | None = None,
    reference: Reference | None = None,
    estimates: Mapping[str, Sequence[int]] | None = None,
) -> Scored:
    """Correctness per prompt and strategy, and the run summary, from the run's tables; reads and writes nothing.
    `reference`: what to judge against (None: `choose_reference` with no endpoint); `estimates`: the memory plan's
    bytes per rank, by strategy, put beside each rank's peak."""
    reference = reference or choose_reference(rows, baseline)
    scores = evaluate(rows, baseline, reference)
    notes = divergences(scores, reference)
    summary = RunSummary(
        rows,
        metrics,
        summarize(scores),
        run_id,
        performance=performance,
        reference=reference,
        divergences=notes,
        estimates=estimates,
    )
    return Scored(rows, scores, reference, truth(rows, baseline, reference), summary)


def single_device_fate(manifest: Manifest) -> str:
    """Why the single-device run gives no reference, from the manifest: its job's error or state."""
    entry = next((e for e in manifest.strategies.values() if e.kind == REFERENCE_KIND), None)
    if entry is None:
        return "no single-device run"
    if entry.skipped and entry.memory is not None:
        return f"the single-device run was not submitted: {entry.memory.sentence}"
    error = entry.attempts[-1].error if entry.attempts else None
    if error or entry.status not in {*ACTIVE_STATES, "NOT_STARTED", "SUBMITTED", "COMPLETED"}:
        return f"the single-device run failed: {error or entry.status}"
    return f"the single-device run has no rows ({entry.status})"


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
    endpoint = sweep.manifest.baseline != "reference"  # an endpoint URL: its completions are a reference
    reference = choose_reference(rows, baseline, endpoint=endpoint, fate=single_device_fate(sweep.manifest))
    return score_rows(rows, metrics, baseline, sweep.settings.run_id, performance, reference, planned_peaks(sweep))


def planned_peaks(sweep: Sweep) -> dict[str, list[int]]:
    """The memory plan's estimate of each rank's peak, by strategy, from the manifest (none for a run planned
    before there was a memory plan)."""
    return {
        strategy_id: [rank.comparable_to_peak for rank in entry.memory.ranks]
        for strategy_id, entry in sweep.manifest.strategies.items()
        if entry.memory is not None and entry.memory.ranks
    }


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

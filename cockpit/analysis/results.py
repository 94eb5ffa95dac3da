"""A run's results as the cockpit shows them: the runs on disk, and one run's strategy table, plot data and
completions beside the reference's (the single-device run's, the baseline endpoint's or the strategies' majority's,
whichever the run was judged against). Computed as `cluster report` computes them (`report.score`), but nothing is
written; no Textual here."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cockpit.analysis.bottlenecks import Performance
from cockpit.analysis.correctness import KEY
from cockpit.analysis.report import Scored, score
from cockpit.analysis.summary import report_paths
from cockpit.errors import BAD_INPUT
from cockpit.sweep.collect import ResultCollector, TraceFile
from cockpit.sweep.manifest import MANIFEST_NAME, Manifest
from cockpit.sweep.plan import load


@dataclass(frozen=True)
class RunInfo:
    """One run folder, from its manifest alone."""

    run_id: str
    run_dir: Path
    state: str  # the manifest's state, or "unreadable: <reason>"
    backend: str
    strategies: int
    collected: int  # strategies whose rows are collected
    started_at: str | None  # when the run was planned; None when the manifest is unreadable
    has_results: bool  # some strategy's rows are collected: there is a table to show


@dataclass(frozen=True)
class CompletionPair:
    """One prompt's completion by a strategy beside the reference's, and where they part."""

    strategy: str
    variant: str
    prompt_id: int
    reference: str
    completion: str
    exact_match: bool
    first_divergence: int | None  # the first token index where the token ids differ
    divergence_char: int | None  # the first character offset where the texts differ; None when equal
    against: str = "the reference"  # whose completion `reference` is: correctness.Reference.label


@dataclass(frozen=True, eq=False)
class RunResults:
    """Everything the results screen shows for one run."""

    run_id: str
    run_dir: Path
    winner: str  # Markdown: the winner sentence, then the leads of prefill and decode and the stragglers, listed
    reference: str  # what correctness was judged against, and why: correctness.Reference.sentence
    table: pd.DataFrame  # RunSummary.table()
    latency_points: list[tuple[str, float, float]]  # (strategy, exact-match rate, latency p50 ms)
    throughput_curves: list[tuple[str, list[float], list[float]]]  # (strategy, prompt tokens, tokens/s)
    completions: list[CompletionPair]
    report_files: dict[str, Path]  # the summary and plots `cluster report` wrote, those on disk
    performance: Performance | str | None = None  # the strategies against the performance model, or why not
    traces: tuple[TraceFile, ...] = ()  # what the ranks' profilers left, by strategy and rank
    energy: tuple[str, ...] = ()  # RunSummary.energy_lines(): what each strategy's energy rests on, or why none


def divergence_char(reference: str, completion: str) -> int | None:
    """The first character offset where the two texts differ (the shorter length if one is a prefix of the
    other); None when they are equal."""
    common = os.path.commonprefix([reference, completion])  # noqa: RUF071 (characters are what is compared)
    return None if reference == completion else len(common)


def _run_info(run_dir: Path) -> RunInfo:
    try:
        manifest = Manifest.load(run_dir)
    except BAD_INPUT as err:
        return RunInfo(run_dir.name, run_dir, f"unreadable: {err}", "?", 0, 0, None, False)
    collected = sum(entry.collected for entry in manifest.strategies.values())
    return RunInfo(
        run_id=manifest.run_id,
        run_dir=run_dir,
        state=manifest.state,
        backend=manifest.backend,
        strategies=len(manifest.strategies),
        collected=collected,
        started_at=manifest.created_at,
        has_results=collected > 0,
    )


def list_runs(runs_dir: Path) -> list[RunInfo]:
    """Every run folder under `runs_dir` (those with a manifest), newest first; a manifest that cannot be read
    gives a run whose state says why."""
    folders = sorted((path.parent for path in runs_dir.glob(f"run_*/{MANIFEST_NAME}")), reverse=True)
    return [_run_info(folder) for folder in folders]


def completion_pairs(scored: Scored) -> list[CompletionPair]:
    """Every strategy's completion (the reference strategy's aside) beside the reference's for the same variant
    and prompt; a prompt with no reference (no majority) has none."""
    rows = scored.rows
    reference = scored.truth[["variant", "prompt_id", "reference_completion"]]
    others = rows.loc[rows["strategy"] != scored.reference.strategy, [*KEY, "completion"]]
    pairs = others.merge(reference.rename(columns={"reference_completion": "reference"}), on=["variant", "prompt_id"])
    pairs = pairs.merge(scored.scores[[*KEY, "exact_match", "first_divergence"]], on=KEY).sort_values(KEY)
    return [
        CompletionPair(
            strategy=str(row.strategy),
            variant=str(row.variant),
            prompt_id=int(row.prompt_id),
            reference=str(row.reference),
            completion=str(row.completion),
            exact_match=bool(row.exact_match),
            first_divergence=None if pd.isna(row.first_divergence) else int(row.first_divergence),
            divergence_char=divergence_char(str(row.reference), str(row.completion)),
            against=scored.reference.label,
        )
        for row in pairs.itertuples(index=False)
    ]


def run_results(
    run_dir: Path, scored: Scored, report_files: dict[str, Path], traces: tuple[TraceFile, ...] = ()
) -> RunResults:
    """What the results screen shows, from a scored run."""
    summary = scored.summary
    table = summary.table()
    return RunResults(
        run_id=summary.run_id,
        run_dir=run_dir,
        winner="\n".join(
            [
                summary.winner(table),
                *(f"- {line}" for line in [*summary.phase_leads(table), *summary.straggler_lines()]),
            ]
        ),
        reference=scored.reference.sentence,
        table=table,
        latency_points=summary.latency_points(),
        throughput_curves=summary.throughput_curves(),
        completions=completion_pairs(scored),
        report_files=report_files,
        performance=summary.performance,
        traces=traces,
        energy=tuple(summary.energy_lines(table)),
    )


def load_results(run_dir: Path, peaks: Mapping[str, float] | None = None) -> RunResults:
    """One run's results, read from its folder; writes nothing. BadInput naming the folder when nothing is
    collected yet or its manifest cannot be read. `peaks`: the inventory's memory bandwidths by host."""
    sweep = load(run_dir)
    files = report_paths(sweep.results_dir, sweep.stamp)
    traces = tuple(ResultCollector.iter_traces(sweep.strategies()))
    return run_results(sweep.run_dir, score(sweep, peaks), {k: p for k, p in files.items() if p.exists()}, traces)

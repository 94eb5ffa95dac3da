"""The run summary: one row per strategy joining correctness, latency, throughput and
cost, written as CSV and Markdown, plus two text plots (plotext) that need no terminal.

    summary_run_<stamp>.csv / .md                      the table; the Markdown names the winner and why, the
                                                       reference correctness was judged against and who differs
                                                       from it, what the energy figures rest on (or why there
                                                       are none), where each rank ran and which parallelism
                                                       crossed nodes over which link, and where the time goes
                                                       (performance.py)
    performance_run_<stamp>.csv, what_if_run_<stamp>.csv predicted against measured, and on other links
    plots/latency_vs_correctness_run_<stamp>.txt       latency p50 against exact-match rate, one point a strategy
    plots/throughput_vs_length_run_<stamp>.txt         tokens/s against prompt length, one line a strategy
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import pandas as pd
import plotext as plt

from cockpit.analysis import stragglers
from cockpit.analysis.bottlenecks import WITHOUT_STRAGGLER, Performance, StrategyPerformance
from cockpit.analysis.correctness import Reference, require_columns
from cockpit.analysis.performance_model import link_label
from cockpit.analysis.spread import Spread, json_list, spread
from cockpit.sweep import peers
from runtime.atomic import atomic_write_text

RESULT_COLUMNS = ("strategy", "strategy_kind", "variant", "latency_ms", "ttft_ms", "tokens_generated", "prompt_tokens")
METRIC_COLUMNS = (
    "strategy",
    "strategy_kind",
    "tp_size",
    "pp_size",
    "num_nodes",
    "world_size",
    "elapsed_s",
    "max_rss_bytes",
    "wall_time_s",
    "tokens_generated",
    "prompts",
    "energy_j",
)
SUMMARY_COLUMNS = ("strategy", "compared", "exact_matches", "scored", "mean_normalized_levenshtein")
PLOT_SIZE = (100, 30)
MARKERS = "ox+*#@%&$="
NAN = "—"
PLOTS_DIR = "plots"
Lead = Literal["alone", "beyond", "tie", "unknown"]  # how a strategy's lead stands against the noise
# measured on every timed pass (medians with spreads): the table's column -> the metrics' list of passes
PASS_COLUMNS = {
    "tokens_per_s": "pass_tokens_per_s",
    "ttft_p50_ms": "pass_ttft_ms",
    "itl_ms": "pass_itl_ms",
    "prefill_tokens_per_s": "pass_prefill_tokens_per_s",
    "decode_tokens_per_s": "pass_decode_tokens_per_s",
}
PASS_FIGURES = tuple(PASS_COLUMNS)
INTERVAL_COLUMNS = (
    *(f"{n}_{end}" for n in PASS_FIGURES for end in ("low", "high")),
    "tokens_per_s_min",
    "tokens_per_s_max",
)
PLOT_NAMES = ("latency_vs_correctness", "throughput_vs_length")
EXACT_MATCH_LIM = (-0.05, 1.05)  # the exact-match axis, with room for points at 0 and 1
JOULES_PER_KWH = 3.6e6
ENERGY_SECTION = "## Energy"
MEMORY_SECTION = "## Memory: estimate vs peak"
MEMORY_NUMERIC = [False, True, False, True, True, True]
MEMORY_NOTE = (
    "estimate: the memory plan's, made before the sweep submitted anything (cockpit.sweep.memory), as the rank's "
    "peak should read it (a GPU's context left out); peak: what the rank measured (resident on a CPU, allocated on "
    "a GPU)."
)


def _num(series: pd.Series) -> pd.Series:
    """As floats, NaN for None or anything not a number."""
    return pd.to_numeric(series, errors="coerce").astype("float64")


def _ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    """numerator / denominator, NaN where either is unknown or the denominator is not positive."""
    den = _num(denominator)
    return _num(numerator) / den.where(den > 0)


def human_bytes(value: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _small(value: float) -> str:
    return f"{value:,.2f}" if abs(value) >= 1 else f"{value:.3g}"


# Markdown: column -> (header, formatter); per-variant latency columns are added on the fly
FORMATS: dict[str, tuple[str, Callable[[float], str]]] = {
    "tp": ("tp", lambda v: f"{v:.0f}"),
    "pp": ("pp", lambda v: f"{v:.0f}"),
    "nodes": ("nodes", lambda v: f"{v:.0f}"),
    "gpus": ("gpus", lambda v: f"{v:.0f}"),
    "exact_match_rate": ("exact match", lambda v: f"{v:.1%}"),
    "similarity": ("similarity", lambda v: f"{v:.3f}"),
    "latency_p50_ms": ("p50 ms", lambda v: f"{v:,.1f}"),
    "latency_p95_ms": ("p95 ms", lambda v: f"{v:,.1f}"),
    "ttft_p50_ms": ("ttft p50 ms", lambda v: f"{v:,.1f}"),
    "tokens_per_s": ("tokens/s", lambda v: f"{v:,.1f}"),
    "itl_ms": ("ITL ms", lambda v: f"{v:,.2f}"),
    "prefill_tokens_per_s": ("prefill tok/s", lambda v: f"{v:,.1f}"),
    "decode_tokens_per_s": ("decode tok/s", lambda v: f"{v:,.1f}"),
    "repeats": ("passes", lambda v: f"{v:.0f}"),
    "warmup_s": ("warm-up s", lambda v: f"{v:,.2f}"),
    "prompts_per_s": ("prompts/s", lambda v: f"{v:,.2f}"),
    "gpu_hours": ("GPU-h", _small),
    "energy_per_token_j": ("J/token", _small),
    "tokens_per_kwh": ("tokens/kWh", lambda v: f"{v:,.0f}"),
    "avg_power_w": ("avg W", lambda v: f"{v:,.1f}"),
    "speedup": ("speedup", lambda v: f"{v:.2f}x"),
    "max_rss_bytes": ("max RSS", human_bytes),
}


def format_cell(column: str, value: object) -> str:
    """A table value as the summary shows it: NaN and None as '—', numbers in their column's format."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return NAN
    if column in FORMATS:
        return FORMATS[column][1](float(value))
    if column.startswith("latency_p50_ms_"):
        return f"{float(value):,.1f}"
    return str(value)


def pipe_table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[bool]) -> list[str]:
    """A Markdown pipe table, numeric columns right-aligned, '|' inside a cell escaped."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if right else "---" for right in numeric) + "|",
        *("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows),
    ]


PERFORMANCE_SECTION = "## Where the time goes"
PERFORMANCE_HEADER = (
    "strategy",
    "predicted tok/s",
    "measured tok/s",
    "measured/predicted",
    "predicted TTFT ms",
    "measured TTFT ms",
    "predicted comm",
    "measured compute/comm/idle",
    "bottleneck",
)


def _number(value: float | None, spec: str) -> str:
    return NAN if value is None or math.isnan(value) else format(value, spec)


def _interval(strategy: StrategyPerformance) -> str:
    """' [low–high]': the ratio at the ends of the measurement's 95% interval, where the passes gave one."""
    spread = strategy.measured_spread
    if spread is None or not spread.measured:
        return ""
    low, high = strategy.ratio_interval
    return f" [{low:.2f}–{high:.2f}]"


def performance_markdown(performance: Performance | str) -> str:
    """The summary's section on the performance model: the fitted device, predicted against measured per
    strategy, the bottleneck sentences and the what-ifs; or why there is no analysis."""
    if isinstance(performance, str):
        return f"{PERFORMANCE_SECTION}\n\n{performance}\n"
    rows = [
        [
            s.strategy,
            _number(s.predicted_tokens_per_s, ",.1f"),
            _number(s.measured_tokens_per_s, ",.1f"),
            _number(s.ratio, ".2f") + _interval(s),
            _number(s.predicted_ttft_s * 1e3, ",.1f"),
            _number(s.measured_ttft_s * 1e3 if s.measured_ttft_s is not None else None, ",.1f"),
            f"{s.predicted.comm_share:.0%}",
            "/".join(f"{v:.0%}" for v in s.measured_split.values()) if s.measured_split else NAN,
            s.predicted.bottleneck + (" (oversubscribed)" if s.oversubscribed else ""),
        ]
        for s in performance.strategies
    ]
    lines = [PERFORMANCE_SECTION, "", performance.hardware, ""]
    lines += pipe_table(PERFORMANCE_HEADER, rows, [False, *[True] * 7, False])
    lines += ["", *(f"- {s.sentence}" for s in performance.strategies), *(f"- {w}" for w in performance.skipped)]
    what_if = performance.what_if_table()
    if len(what_if):
        cells = [[str(r[0]), *(_number(v, ",.1f") for v in r[1:])] for r in what_if.itertuples(index=False)]
        lines += ["", "### What if: predicted tokens/s, each node a separate host like the reference's", ""]
        lines += (
            [f"({WITHOUT_STRAGGLER}: measured, less the straggler's excess compute.)", ""]
            if (WITHOUT_STRAGGLER in what_if.columns)
            else []
        )
        lines += pipe_table(list(what_if.columns), cells, [False, *[True] * (len(what_if.columns) - 1)])
    return "\n".join(lines) + "\n"


def _write_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    atomic_write_text(path, buffer.getvalue())
    return Path(path)


def _plot_path(out_dir: str | Path, name: str, suffix: str) -> Path:
    return Path(out_dir) / f"{name}_{suffix}.txt"


def report_paths(results_dir: str | Path, stamp: str) -> dict[str, Path]:
    """Where `RunSummary.write_all` puts run `stamp`'s CSV, Markdown and plots."""
    root = Path(results_dir)
    return {
        "csv": root / f"summary_run_{stamp}.csv",
        "markdown": root / f"summary_run_{stamp}.md",
        "performance": root / f"performance_run_{stamp}.csv",
        "what_if": root / f"what_if_run_{stamp}.csv",
        **{name: _plot_path(root / PLOTS_DIR, name, f"run_{stamp}") for name in PLOT_NAMES},
    }


def _header(column: str) -> str:
    if column in FORMATS:
        return FORMATS[column][0]
    if column.startswith("latency_p50_ms_"):
        return f"p50 ms {column.removeprefix('latency_p50_ms_')}"
    return column


class RunSummary:
    """One run's strategies side by side: correctness, latency, throughput, cost; as CSV, Markdown and plots."""

    def __init__(
        self,
        results: pd.DataFrame,
        metrics: pd.DataFrame,
        correctness_summary: pd.DataFrame,
        run_id: str,
        *,
        reference_kind: str = "reference",
        performance: Performance | str | None = None,
        reference: Reference | None = None,
        divergences: Sequence[str] = (),
        estimates: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        require_columns(results, RESULT_COLUMNS, "results")
        require_columns(metrics, METRIC_COLUMNS, "metrics")
        require_columns(correctness_summary, SUMMARY_COLUMNS, "correctness summary")
        numbers = ("latency_ms", "ttft_ms", "tokens_generated", "prompt_tokens")
        self.results = results.assign(**{c: _num(results[c]) for c in numbers})
        self.metrics, self.correctness = metrics, correctness_summary
        self.run_id, self.reference_kind = run_id, reference_kind
        self.performance = performance  # the strategies against the performance model, or why there is none
        self.reference, self.divergences = reference, divergences  # what correctness was judged against; who differs
        self.estimates = estimates or {}  # strategy -> the memory plan's bytes per rank, as its peak should read

    def _shapes(self) -> pd.DataFrame:
        shape = ["strategy", "strategy_kind", "tp_size", "pp_size", "num_nodes"]
        from_metrics = self.metrics[[*shape, "world_size"]].drop_duplicates("strategy")
        extra = self.results.loc[~self.results["strategy"].isin(from_metrics["strategy"])]
        extra = extra[[c for c in shape if c in extra]].drop_duplicates("strategy")
        if {"tp_size", "pp_size"} <= set(extra.columns):
            extra = extra.assign(world_size=extra["tp_size"] * extra["pp_size"])
        frame = pd.concat([from_metrics, extra], ignore_index=True) if len(extra) else from_metrics
        return frame.rename(
            columns={
                "strategy_kind": "kind",
                "tp_size": "tp",
                "pp_size": "pp",
                "num_nodes": "nodes",
                "world_size": "gpus",
            }
        )

    def _latency(self) -> pd.DataFrame:
        by_strategy = self.results.groupby("strategy")
        frame = pd.DataFrame(
            {
                "latency_p50_ms": by_strategy["latency_ms"].quantile(0.5),
                "latency_p95_ms": by_strategy["latency_ms"].quantile(0.95),
                "ttft_p50_ms": by_strategy["ttft_ms"].quantile(0.5),
            }
        )
        per_variant = self.results.groupby(["strategy", "variant"])["latency_ms"].quantile(0.5).unstack("variant")
        per_variant = per_variant.reindex(columns=sorted(per_variant.columns, key=str))
        per_variant.columns = [f"latency_p50_ms_{v}" for v in per_variant.columns]
        return frame.join(per_variant).astype("float64").reset_index()

    def _correctness(self) -> pd.DataFrame:
        c = self.correctness.assign(
            weighted=self.correctness["mean_normalized_levenshtein"].fillna(0) * self.correctness["scored"]
        )
        pooled = c.groupby("strategy")[["compared", "exact_matches", "scored", "weighted"]].sum()
        return pd.DataFrame(
            {
                "exact_match_rate": _ratio(pooled["exact_matches"], pooled["compared"]),
                "similarity": _ratio(pooled["weighted"], pooled["scored"]),
            }
        ).reset_index()

    def _performance(self) -> pd.DataFrame:
        m = self.metrics.drop_duplicates("strategy")
        return pd.DataFrame(
            {
                "strategy": m["strategy"],
                "tokens_per_s": _ratio(m["tokens_generated"], m["wall_time_s"]),
                "prompts_per_s": _ratio(m["prompts"], m["wall_time_s"]),
                "gpu_hours": _num(m["world_size"]) * _num(m["elapsed_s"]) / 3600,
                "energy_per_token_j": _ratio(m["energy_j"], m["tokens_generated"]),
                "tokens_per_kwh": _ratio(m["tokens_generated"], _num(m["energy_j"]) / JOULES_PER_KWH),
                "avg_power_w": _ratio(m["energy_j"], m["wall_time_s"]),
                "max_rss_bytes": _num(m["max_rss_bytes"]).round().astype("Int64"),
            }
        )

    @functools.cached_property
    def spreads(self) -> dict[str, dict[str, Spread]]:
        """strategy -> {each figure of PASS_COLUMNS: its spread over the strategy's timed passes}; {} for a
        strategy whose metrics have no pass figures (collected before the runtime repeated). Taken once."""
        out: dict[str, dict[str, Spread]] = {}
        for row in self.metrics.drop_duplicates("strategy").to_dict(orient="records"):
            passes = {name: json_list(row.get(column)) for name, column in PASS_COLUMNS.items()}
            out[str(row["strategy"])] = {n: spread(v) for n, v in passes.items() if v} if any(passes.values()) else {}
        return out

    def _passes(self) -> pd.DataFrame:
        """Per strategy: its passes, warm-up, and the median over passes of tokens/s, TTFT and ITL with each one's
        95% interval (`<figure>_low`, `_high`) and tokens/s's range; NaN where not measured."""
        rows = []
        for strategy, spreads in self.spreads.items():
            row: dict[str, object] = {"strategy": strategy}
            for name, figure in spreads.items():
                row |= {name: figure.median, f"{name}_low": figure.low, f"{name}_high": figure.high}
            if "tokens_per_s" in spreads:
                tps = spreads["tokens_per_s"]
                row |= {"repeats": tps.passes, "tokens_per_s_min": tps.minimum, "tokens_per_s_max": tps.maximum}
            rows.append(row)
        columns = ["strategy", "repeats", *(f"{n}{e}" for n in PASS_FIGURES for e in ("", "_low", "_high"))]
        frame = pd.DataFrame(rows).reindex(columns=[*columns, "tokens_per_s_min", "tokens_per_s_max"])
        warmup = self.metrics.drop_duplicates("strategy").set_index("strategy").get("warmup_s")
        frame["warmup_s"] = frame["strategy"].map(warmup) if warmup is not None else math.nan
        return frame.astype({c: "float64" for c in frame.columns if c != "strategy"})

    def table(self) -> pd.DataFrame:
        """One row per strategy, all variants pooled (plus p50 latency per variant); reference first, then fastest.
        Where the strategy's passes were timed, tokens/s and TTFT are their medians over the passes, with spreads."""
        frame = self._shapes()
        for part in (self._correctness(), self._latency(), self._performance()):
            frame = frame.merge(part, on="strategy", how="left")
        passes = self._passes()
        frame = frame.merge(passes, on="strategy", how="left", suffixes=("", "_passes"))
        for name in ("tokens_per_s", "ttft_p50_ms"):  # the passes' median where there are passes
            frame[name] = frame[f"{name}_passes"].fillna(frame[name])
        is_reference = frame["kind"] == self.reference_kind
        reference_tps = frame.loc[is_reference, "tokens_per_s"].dropna()
        base = float(reference_tps.iloc[0]) if len(reference_tps) == 1 and reference_tps.iloc[0] > 0 else math.nan
        frame["speedup"] = frame["tokens_per_s"] / base
        variants = [c for c in frame.columns if c.startswith("latency_p50_ms_")]
        order = [
            "strategy",
            "kind",
            "tp",
            "pp",
            "nodes",
            "gpus",
            "exact_match_rate",
            "similarity",
            "latency_p50_ms",
            "latency_p95_ms",
            "ttft_p50_ms",
            "ttft_p50_ms_low",
            "ttft_p50_ms_high",
            "itl_ms",
            "itl_ms_low",
            "itl_ms_high",
            *variants,
            "prefill_tokens_per_s",
            "prefill_tokens_per_s_low",
            "prefill_tokens_per_s_high",
            "decode_tokens_per_s",
            "decode_tokens_per_s_low",
            "decode_tokens_per_s_high",
            "tokens_per_s",
            "tokens_per_s_low",
            "tokens_per_s_high",
            "tokens_per_s_min",
            "tokens_per_s_max",
            "repeats",
            "warmup_s",
            "prompts_per_s",
            "gpu_hours",
            "energy_per_token_j",
            "tokens_per_kwh",
            "avg_power_w",
            "speedup",
            "max_rss_bytes",
        ]
        frame = frame.assign(_reference=is_reference).sort_values(
            ["_reference", "tokens_per_s", "strategy"], ascending=[False, False, True], na_position="last"
        )
        return frame[order].reset_index(drop=True)

    def repeat_mismatches(self) -> dict[str, str]:
        """strategy -> how a later timed pass failed to reproduce its first pass's tokens."""
        if "repeat_mismatch" not in self.metrics:
            return {}
        named = self.metrics.dropna(subset=["repeat_mismatch"]).drop_duplicates("strategy")
        return dict(zip(named["strategy"].astype(str), named["repeat_mismatch"].astype(str), strict=True))

    def unexplained(self) -> dict[str, float]:
        """strategy -> measured over predicted tokens/s, for each strategy the performance model does not explain
        (outside WITHIN_MODEL): its lead, or its lag, may be an artefact of how it was measured."""
        if not isinstance(self.performance, Performance):
            return {}
        return {s.strategy: s.ratio for s in self.performance.strategies if not s.explained and not math.isnan(s.ratio)}

    def _set_aside(self) -> tuple[dict[str, str], str]:
        """The strategies that cannot be ranked beyond correctness (a pass that did not repeat the first, more busy
        ranks than their host has CPUs, a measurement the model does not explain), and the sentences saying why."""
        aside = {s: f"{s} did not repeat itself: {why}." for s, why in sorted(self.repeat_mismatches().items())}
        if isinstance(self.performance, Performance):
            for strategy in sorted(s.strategy for s in self.performance.strategies if s.oversubscribed):
                aside.setdefault(
                    strategy,
                    f"{strategy} waits for CPU time (more busy ranks than its host's CPUs), which the performance "
                    "model leaves out: not ranked.",
                )
        for strategy, ratio in sorted(self.unexplained().items()):
            aside.setdefault(strategy, f"{strategy} measured {ratio:.2f}x its prediction: not ranked until explained.")
        return aside, "".join(f" {why}" for why in aside.values())

    def _contenders(self, table: pd.DataFrame, column: str) -> pd.DataFrame:
        """The strategies that reproduced the reference on every prompt, with a known `column` and not set
        aside, fastest first."""
        aside, _ = self._set_aside()
        ranked = (table["exact_match_rate"] == 1.0) & table[column].notna() & ~table["strategy"].isin(aside)
        return table[ranked].sort_values(column, ascending=False)

    def _lead(self, contenders: pd.DataFrame, figure: str) -> tuple[Lead, str]:
        """Whether the first contender's lead on `figure` stands out of the noise, and the words for it: a clause
        for the winner sentence (alone, beyond the noise), or a sentence (indistinguishable, or no spread)."""
        if len(contenders) < 2:
            return "alone", ""
        best, second = contenders.iloc[0], contenders.iloc[1]
        spreads = self.spreads
        a, b = (spreads.get(str(row["strategy"]), {}).get(figure) for row in (best, second))
        if a is None or b is None or not a.measured or not b.measured:
            return (
                "unknown",
                "one timed pass each gives no spread, so no lead can be told from noise ([sweep] repeats = 3)",
            )
        runs = min(a.passes, b.passes)
        if a.overlaps(b):
            return "tie", (
                f"**{best['strategy']}** ({a.median:,.1f} tokens/s, {a.interval()}) and **{second['strategy']}** "
                f"({b.median:,.1f}, {b.interval()}) are indistinguishable at {runs} repeats: "
                "their 95% intervals overlap"
            )
        return "beyond", f", ahead of {second['strategy']} beyond the noise of {runs} repeats"

    def winner(self, table: pd.DataFrame | None = None) -> str:
        """One sentence: the fastest strategy that reproduced the reference on every prompt (and its own first pass
        on every later one) and whose measurement the performance model explains, by how much, named only when
        its lead is beyond the noise of its passes; then why any strategy was set aside."""
        table = self.table() if table is None else table
        _, aside = self._set_aside()
        matched = self.reference.matched if self.reference else "every prompt's tokens identical to the reference"
        contenders = self._contenders(table, "tokens_per_s")
        if contenders.empty:
            return f"No winner: no strategy with a known throughput had {matched}.{aside}"
        lead, words = self._lead(contenders, "tokens_per_s")
        if lead == "tie":
            return f"No clear winner: {words}.{aside}"
        best = contenders.iloc[0]
        tps = f"{best['tokens_per_s']:,.1f} tokens/s"
        if best["kind"] == self.reference_kind:
            what = f"**{best['strategy']}**, the reference itself, at {tps}"
            beaten = "no strategy that matched it on every prompt was faster"
            if lead == "unknown":
                return f"No winner named: {words}. Fastest measured: {what}: {beaten}.{aside}"
            return f"Winner: {what}{words}: {beaten}.{aside}"
        shape = f"{best['kind']}, tp {best['tp']} x pp {best['pp']} on {best['nodes']} node(s)"
        reference = table.loc[table["kind"] == self.reference_kind, "tokens_per_s"].dropna()
        if math.isnan(best["speedup"]) or reference.empty:
            why = "no reference throughput to compare"
        else:
            why = f"{best['speedup']:.2f}x the reference's {reference.iloc[0]:,.1f} tokens/s"
        what = f"**{best['strategy']}** ({shape}): {tps}, {why}"
        if lead == "unknown":
            return f"No winner named: {words}. Fastest measured: {what}, with {matched}.{aside}"
        return f"Winner: {what}{words}, with {matched}.{aside}"

    def phase_leads(self, table: pd.DataFrame | None = None) -> list[str]:
        """Prefill and decode apart: which strategy leads each (as the winner sentence ranks them), where the
        passes measured the phase."""
        table = self.table() if table is None else table
        lines = []
        for figure, phase in (("prefill_tokens_per_s", "Prefill"), ("decode_tokens_per_s", "Decode")):
            contenders = self._contenders(table, figure)
            if contenders.empty:
                continue
            lead, words = self._lead(contenders, figure)
            best = f"**{contenders.iloc[0]['strategy']}** at {contenders.iloc[0][figure]:,.1f} tokens/s"
            if lead == "tie":
                lines.append(f"{phase}: {words}.")
            elif lead == "unknown":
                lines.append(f"{phase}: fastest measured {best}, one pass each: no lead told from noise.")
            else:
                lines.append(f"{phase}: {best.replace(' at ', ' leads at ', 1)}{words}.")
        return lines

    def straggler_lines(self) -> list[str]:
        """Each strategy's straggler in a sentence with the what-if without it; one line saying there is none
        where ranks could be compared; nothing where none could (one rank per stage, or no time split)."""
        rows = self.metrics.drop_duplicates("strategy").to_dict(orient="records")
        found = [found.sentence() for row in rows if (found := stragglers.straggler(row)) is not None]
        if found or not any(stragglers.compared(row) for row in rows):
            return found
        limit = f"{peers.THRESHOLD - 1:.0%}"
        return [f"No straggler: every rank's compute per step is within {limit} of its peers' median."]

    def to_csv(self, path: str | Path) -> Path:
        """The table as CSV (NaN as an empty field), written atomically."""
        return _write_csv(self.table(), path)

    def markdown(self) -> str:
        """The Markdown text: a header naming the run, the winner sentence, and the table as a pipe table (a
        figure timed on several passes with its 95% interval, tokens/s with its range too)."""
        table = self.table()
        columns = [c for c in table.columns if c not in INTERVAL_COLUMNS]
        at = columns.index("tokens_per_s") + 1
        header = [_header(c) for c in columns]
        header.insert(at, "tok/s min–max")
        numeric = [c in FORMATS or c.startswith("latency_p50_ms_") for c in columns]
        numeric.insert(at, True)
        rows = []
        for record in table.to_dict(orient="records"):
            timed = (record["repeats"] or 0) > 1  # NaN (no pass figures) is not above 1
            cells = [
                format_cell(c, record[c])
                + (f" [{format_cell(c, record[f'{c}_low'])}–{format_cell(c, record[f'{c}_high'])}]" if timed else "")
                if c in PASS_FIGURES
                else format_cell(c, record[c])
                for c in columns
            ]
            spanned = "tokens_per_s_min", "tokens_per_s_max"
            cells.insert(at, "–".join(format_cell("tokens_per_s", record[c]) for c in spanned) if timed else NAN)
            rows.append(cells)
        lines = [f"# Run summary: {self.run_id}", "", self.winner(table), ""]
        if self.reference is not None:
            lines += [self.reference.sentence, ""]
            lines += [*(f"- {line}" for line in self.divergences), ""] if self.divergences else []
        if leads := self.phase_leads(table):
            lines += [*(f"- {lead}" for lead in leads), ""]
        lines += pipe_table(header, rows, numeric)
        lines += ["", f"{NAN}: not measured or not applicable. [a–b]: the 95% bootstrap interval of the median over"]
        lines[-1] += " the timed passes; passes: how many (warm-up excluded)."
        if energy := self.energy_lines(table):
            lines += ["", ENERGY_SECTION, "", *(f"- {line}" for line in energy)]
        if straggling := self.straggler_lines():
            lines += ["", "## Stragglers", "", *(f"- {line}" for line in straggling)]
        if memory := self.memory_rows():
            lines += ["", MEMORY_SECTION, ""]
            lines += pipe_table(
                ["strategy", "rank", "host", "estimate", "peak", "peak/estimate"], memory, MEMORY_NUMERIC
            )
            lines += ["", MEMORY_NOTE]
        placement = self.placement()
        if placement:
            lines += ["", "## Where each rank ran", ""]
            lines += pipe_table(["strategy", "ranks by node", "between nodes"], placement, [False] * 3)
        if self.performance is not None:
            lines += ["", performance_markdown(self.performance)]
        return "\n".join(lines).rstrip("\n") + "\n"

    def energy_lines(self, table: pd.DataFrame | None = None) -> list[str]:
        """Per strategy in table order, what its energy figures rest on: the counters, that a host's counter was
        split between its ranks by busy time (an estimate, per rank), or why there is no figure."""
        if "energy_source" not in self.metrics:
            return []
        m = self.metrics.drop_duplicates("strategy").set_index("strategy")
        lines = []
        for strategy in (self.table() if table is None else table)["strategy"]:
            if strategy not in m.index:
                continue
            row = m.loc[strategy]
            why, source, estimated = row.get("energy_why"), row.get("energy_source"), row.get("energy_estimated")
            if pd.isna(row["energy_j"]):
                lines.append(f"{strategy}: no energy figure" + (f" ({why})" if isinstance(why, str) else ""))
            elif pd.notna(estimated) and bool(estimated):
                shares = ", ".join(
                    f"rank {rank} {_small(j)} J"
                    for rank, j in enumerate(json_list(row.get("rank_energy_j")))
                    if j is not None
                )
                lines.append(
                    f"{strategy}: {source}, each host's counter split between its ranks by busy time; the total is "
                    f"measured, the shares ({shares}) are an estimate"
                )
            elif isinstance(source, str):
                lines.append(f"{strategy}: measured by {source}")
        return lines

    def memory_rows(self) -> list[tuple[str, str, str, str, str, str]]:
        """(strategy, rank, host, estimate, peak, peak/estimate) per rank in table order: the memory plan's
        estimate beside the peak the rank measured, for the strategies with either."""
        by_strategy = self.metrics.drop_duplicates("strategy", keep="last").set_index("strategy")
        rows = []
        for strategy in self.table()["strategy"]:
            row = by_strategy.loc[strategy] if strategy in by_strategy.index else pd.Series()
            peaks, hosts = json_list(row.get("rank_peak_memory_bytes")), json_list(row.get("rank_hosts"))
            estimates = list(self.estimates.get(strategy, ()))
            for rank in range(max(len(peaks), len(estimates))):
                peak = peaks[rank] if rank < len(peaks) else None
                estimate = estimates[rank] if rank < len(estimates) else None
                host = hosts[rank] if rank < len(hosts) else None
                ratio = f"{peak / estimate:.2f}" if peak and estimate else NAN
                cells = [human_bytes(v) if v else NAN for v in (estimate, peak)]
                rows.append((strategy, str(rank), host or NAN, *cells, ratio))
        return rows

    def placement(self) -> list[tuple[str, str, str]]:
        """(strategy, `node0: 0, 1; node1: 2, 3`, what crosses nodes over which link) in table order, from the
        hosts and interfaces the ranks' metrics name."""
        if "rank_hosts" not in self.metrics:
            return []
        by_strategy = self.metrics.drop_duplicates("strategy", keep="last").set_index("strategy")
        rows = []
        for strategy in self.table()["strategy"]:
            by_host: dict[str, list[str]] = {}
            row = by_strategy.loc[strategy] if strategy in by_strategy.index else pd.Series()
            for rank, host in enumerate(json_list(row.get("rank_hosts"))):
                by_host.setdefault(host or "unknown", []).append(str(rank))
            if by_host:
                placed = "; ".join(f"{host}: {', '.join(ranks)}" for host, ranks in by_host.items())
                rows.append((strategy, placed, between_nodes(row, len(by_host))))
        return rows

    def to_markdown(self, path: str | Path) -> Path:
        """The Markdown summary, written atomically."""
        atomic_write_text(path, self.markdown())
        return Path(path)

    def _plot(
        self,
        title: str,
        xlabel: str,
        ylabel: str,
        series: list[tuple[str, list[float], list[float]]],
        xlim: tuple[float, float] | None = None,
    ) -> str:
        plt.clear_figure()
        plt.plotsize(*PLOT_SIZE)
        plt.theme("clear")
        if xlim:
            plt.xlim(*xlim)
        order = list(self.table()["strategy"])
        for label, xs, ys in series:
            marker = MARKERS[order.index(label) % len(MARKERS)]
            draw = plt.scatter if len(xs) == 1 else plt.plot
            draw(xs, ys, label=label, marker=marker)
        plt.title(title)
        plt.xlabel(xlabel)
        plt.ylabel(ylabel)
        text = plt.uncolorize(plt.build())
        plt.clear_figure()
        return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"

    def latency_points(self) -> list[tuple[str, float, float]]:
        """(strategy, exact-match rate, latency p50 ms) for every strategy with both, in table order."""
        table = self.table().dropna(subset=["exact_match_rate", "latency_p50_ms"])
        return [(r.strategy, float(r.exact_match_rate), float(r.latency_p50_ms)) for r in table.itertuples()]

    def throughput_curves(self) -> list[tuple[str, list[float], list[float]]]:
        """(strategy, prompt tokens, mean per-prompt tokens/s at that length) per strategy, in table order."""
        rows = self.results.assign(
            throughput=_ratio(self.results["tokens_generated"], self.results["latency_ms"] / 1000)
        ).dropna(subset=["throughput", "prompt_tokens"])
        curves = rows.groupby(["strategy", "prompt_tokens"])["throughput"].mean()
        series = []
        for strategy in self.table()["strategy"]:
            if strategy in curves.index.get_level_values("strategy"):
                curve = curves.loc[strategy].sort_index()
                series.append((strategy, [float(x) for x in curve.index], [float(y) for y in curve]))
        return series

    def latency_vs_correctness(self) -> str:
        """Text plot: latency p50 (ms) against exact-match rate, one labelled point per strategy."""
        series = [(strategy, [rate], [p50]) for strategy, rate, p50 in self.latency_points()]
        title = f"{self.run_id}: latency p50 vs exact match"
        return self._plot(title, "exact-match rate", "latency p50 (ms)", series, xlim=EXACT_MATCH_LIM)

    def throughput_vs_length(self) -> str:
        """Text plot: per-prompt tokens/s against prompt length (prompt_tokens), one line per strategy."""
        title = f"{self.run_id}: throughput vs prompt length"
        return self._plot(title, "prompt tokens", "tokens/s", self.throughput_curves())

    def build_plots(self, out_dir: str | Path, stamp: str | None = None) -> list[Path]:
        """Write both plots as .txt under `out_dir` (suffix `run_<stamp>`, else the run id); return their paths."""
        suffix = f"run_{stamp}" if stamp else self.run_id
        paths = []
        for name, text in zip(PLOT_NAMES, (self.latency_vs_correctness(), self.throughput_vs_length()), strict=True):
            path = _plot_path(out_dir, name, suffix)
            atomic_write_text(path, text)
            paths.append(path)
        return paths

    def show(self) -> None:
        """Print both plots to the terminal."""
        print(self.latency_vs_correctness())
        print(self.throughput_vs_length())

    def write_all(self, results_dir: str | Path, stamp: str) -> dict[str, Path]:
        """The CSV, the Markdown and both plots under `results_dir`, named for `stamp`; with a performance
        analysis, its table and what-ifs as CSV too."""
        paths = report_paths(results_dir, stamp)
        self.build_plots(Path(results_dir) / PLOTS_DIR, stamp)
        self.to_csv(paths["csv"])
        self.to_markdown(paths["markdown"])
        if isinstance(self.performance, Performance):
            _write_csv(self.performance.table(), paths["performance"])
            _write_csv(self.performance.what_if_table(), paths["what_if"])
        else:
            del paths["performance"], paths["what_if"]
        return paths


def between_nodes(metrics_row: pd.Series, hosts: int) -> str:
    """What of a strategy's traffic crosses nodes and over which link, from its metrics: `TP across nodes over
    usb4 (thunderbolt0)`; empty on one host, or when only replicas span the nodes."""
    if hosts <= 1:
        return ""
    tp, pp = int(metrics_row.get("tp_size") or 1), int(metrics_row.get("pp_size") or 1)
    per_host = int(metrics_row.get("ranks_per_host") or 1)
    crossing = [name for name, crosses in (("TP", tp > per_host), ("PP", pp > 1 and tp <= per_host)) if crosses]
    interfaces = metrics_row.get("comm_interfaces")
    over = f" over {', '.join(map(link_label, interfaces.split(',')))}" if isinstance(interfaces, str) else ""
    return f"{' and '.join(crossing)} across nodes{over}" if crossing else ""

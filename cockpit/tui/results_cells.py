"""The results screens' cells and texts, as pure functions of the results (rich renderables, no widgets): a run's
row, a strategy's summary and performance rows, a completion's match and where it parts from the reference, a
profiler output's row and what a rank's profile says."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from cockpit.analysis.bottlenecks import SPLIT_PARTS, WITHIN_MODEL, Performance
from cockpit.analysis.results import CompletionPair, RunInfo
from cockpit.analysis.summary import NAN, PASS_FIGURES, format_cell, human_bytes
from cockpit.sweep.collect import TraceFile, how_to_open
from runtime.contract import PROFILE_RANGES, ProfileSummary

RUN_COLUMNS = ("run", "state", "collected")
RUN_STYLE = {"completed": "green", "running": "yellow", "failed": "bold red", "cancelled": "dim", "planned": "dim"}
# RunSummary.table() column -> header
SUMMARY_COLUMNS = {
    "strategy": "strategy",
    "kind": "kind",
    "tp": "tp",
    "pp": "pp",
    "nodes": "nodes",
    "exact_match_rate": "exact match %",
    "similarity": "similarity",
    "latency_p50_ms": "p50 ms",
    "latency_p95_ms": "p95 ms",
    "ttft_p50_ms": "TTFT ms",
    "itl_ms": "ITL ms",
    "prefill_tokens_per_s": "prefill tok/s",
    "decode_tokens_per_s": "decode tok/s",
    "tokens_per_s": "tok/s",
    "energy_per_token_j": "J/token",
    "tokens_per_kwh": "tok/kWh",
    "avg_power_w": "W",
    "speedup": "speedup",
}
TEXT_COLUMNS = ("strategy", "kind")
COMPLETION_COLUMNS = ("strategy", "variant", "prompt", "match", "first divergence")
DIVERGED = "reverse red"
PERFORMANCE_COLUMNS = (
    "strategy",
    "pred tok/s",
    "meas tok/s",
    "meas/pred",
    "pred TTFT ms",
    "meas TTFT ms",
    "pred comm %",
    "compute/comm/idle %",
    "bottleneck",
)
WARNING = "bold yellow"
PROFILE_COLUMNS = (
    "strategy",
    "rank",
    "host",
    "tool",
    "steps",
    "window ms",
    "comm %",
    "idle %",
    "gaps · longest",
    "device busy %",
    "top operator",
    "size",
    "path",
)
PROFILE_KEYS = "enter: the rank's profile · c: copy its path"
TOP_OP_WIDTH = 40  # the profiles table's top-operator cells, cut with an ellipsis; the profile screen has them whole


def run_cells(run: RunInfo) -> tuple[Text, Text, str]:
    """A run's row: its id, its state (an unreadable manifest as 'unreadable'), strategies collected / all."""
    state = run.state.split(":", 1)[0]
    style = "bold red" if state == "unreadable" else RUN_STYLE.get(state, "")
    return Text(run.run_id), Text(state, style=style), f"{run.collected}/{run.strategies}"


def summary_cells(row: dict[str, Any]) -> tuple[Text, ...]:
    """One strategy of the table as the summary shows it, numbers right-aligned, unknowns as '—'; a figure timed
    on several passes as its median ± half its 95% interval."""

    def cell(column: str) -> str:
        text = format_cell(column, row[column])
        if column in PASS_FIGURES and (row.get("repeats") or 0) > 1:
            text += f" ±{format_cell(column, (row[f'{column}_high'] - row[f'{column}_low']) / 2)}"
        return text

    return tuple(Text(cell(c), justify="left" if c in TEXT_COLUMNS else "right") for c in SUMMARY_COLUMNS)


def energy_notes(lines: Iterable[str]) -> Text:
    """What each strategy's energy figures rest on, or why a strategy has none, a line each."""
    return Text("\n".join(f"energy · {line}" for line in lines))


def number_cell(value: float, spec: str = ",.1f", suffix: str = "", style: str = "") -> Text:
    """A number right-aligned, '—' when unknown."""
    return Text(NAN if math.isnan(value) else f"{value:{spec}}{suffix}", style=style, justify="right")


def performance_cells(row: dict[str, Any]) -> tuple[Text, ...]:
    """One strategy of `Performance.table()`: tokens/s and TTFT predicted and measured, their ratio (warning
    style outside WITHIN_MODEL), shares of time in percent, the bottleneck (marked when oversubscribed)."""
    ratio = row["ratio"]
    off = not math.isnan(ratio) and not WITHIN_MODEL[0] <= ratio <= WITHIN_MODEL[1]
    split = [row[f"measured_{part.removesuffix('_s')}_share"] for part in SPLIT_PARTS]
    bottleneck = Text(row["bottleneck"])
    if row["oversubscribed"]:
        bottleneck.append(" ⚠ oversubscribed", style=WARNING)
    return (
        Text(row["strategy"]),
        number_cell(row["predicted_tokens_per_s"]),
        number_cell(row["measured_tokens_per_s"]),
        number_cell(ratio, ".2f", "x", WARNING if off else ""),
        number_cell(row["predicted_ttft_ms"]),
        number_cell(row["measured_ttft_ms"]),
        number_cell(row["predicted_comm_share"] * 100, ".0f"),
        Text(NAN if any(math.isnan(v) for v in split) else "/".join(f"{v * 100:.0f}" for v in split), justify="right"),
        bottleneck,
    )


def bottleneck_lines(performance: Performance) -> Table:
    """Each strategy's bottleneck sentence, then why any strategy has no prediction, as a bulleted list."""
    lines = Table.grid(padding=(0, 1))
    lines.add_column(width=1)
    lines.add_column(ratio=1)
    for strategy in performance.strategies:
        lines.add_row("•", strategy.sentence)
    for why in performance.skipped:
        lines.add_row("•", Text(why, style="dim"))
    return lines


def completion_cells(pair: CompletionPair) -> tuple[str | Text, ...]:
    match = Text("✓", style="green") if pair.exact_match else Text("✗", style="bold red")
    if pair.first_divergence is None and pair.divergence_char is None:
        where = NAN
    else:
        token = NAN if pair.first_divergence is None else str(pair.first_divergence)
        char = NAN if pair.divergence_char is None else str(pair.divergence_char)
        where = f"token {token} · char {char}"
    return pair.strategy, pair.variant, str(pair.prompt_id), match, where


def divergence_line(pair: CompletionPair) -> str:
    """'first divergence at token N, character M', 'identical', or which of tokens and text agree."""
    if pair.first_divergence is None and pair.divergence_char is None:
        return "identical"
    token, char = pair.first_divergence, pair.divergence_char
    tokens = "tokens identical" if token is None else f"first divergence at token {token}"
    return f"{tokens}, {'text identical' if char is None else f'character {char}'}"


def trace_key(trace: TraceFile) -> str:
    return f"{trace.strategy_id}/{trace.rank}/{trace.tool}"


def percent_cell(share: float | None) -> Text:
    """A share of the window in percent, right-aligned; '—' when unknown (a device share on the CPU)."""
    return number_cell(math.nan if share is None else share * 100, ".0f")


def _gaps(summary: ProfileSummary) -> str:
    return f"{summary.gaps} · {summary.longest_gap_ms:.2f} ms" if summary.gaps else "0"


def trace_cells(trace: TraceFile, run_dir: Path) -> tuple[Text, ...]:
    """One profiler output's row: who wrote it, what its summary says ('—' without one: nsys, perf; a torch
    trace that could not be read shows why in the top-operator column, in warning style, cut to TOP_OP_WIDTH),
    its size and its path under the run folder."""
    summary = trace.summary
    who = (Text(trace.strategy_id), number_cell(trace.rank, "d"), Text(summary.hostname if summary else NAN))
    file = (Text(human_bytes(trace.bytes), justify="right"), Text(str(trace.path.relative_to(run_dir))))
    if summary is None:
        why = Text(trace.problem.removeprefix(f"{trace.path}: "), style=WARNING) if trace.problem else Text(NAN)
        why.truncate(TOP_OP_WIDTH, overflow="ellipsis")
        return (*who, Text(trace.tool), *(number_cell(math.nan) for _ in range(6)), why, *file)
    top = summary.top_ops[0] if summary.top_ops else None
    top_op = Text(f"{top.name} {top.share:.0%}" if top else NAN)
    top_op.truncate(TOP_OP_WIDTH, overflow="ellipsis")
    return (
        *who,
        Text(trace.tool),
        number_cell(summary.steps, "d"),
        number_cell(summary.window_ms),
        percent_cell(summary.comm_share),
        percent_cell(summary.idle_share),
        Text(_gaps(summary), justify="right"),
        percent_cell(summary.device_busy_share),
        top_op,
        *file,
    )


def viewers_lines(traces: Iterable[TraceFile]) -> str:
    """What opens each tool's files, a line for each tool present, then the tab's keys."""
    return "\n".join((*how_to_open(traces), PROFILE_KEYS))


def profile_title(trace: TraceFile) -> str:
    """'<strategy> · rank N · <host> · <tool>'."""
    host = trace.summary.hostname if trace.summary else NAN
    return f"{trace.strategy_id} · rank {trace.rank} · {host} · {trace.tool}"


def no_summary_line(trace: TraceFile) -> Text:
    """Why a trace has no summary: what reading it said (warning style), or that only torch traces have one."""
    if trace.problem:
        return Text(trace.problem, style=WARNING)
    return Text(f"no summary: the cockpit reads torch traces only; open this one with {trace.opens_with}")


def window_lines(summary: ProfileSummary) -> str:
    """The profiled window, and how the named ranges below nest."""
    step = summary.window_ms / summary.steps if summary.steps else math.nan
    return (
        f"window: {summary.steps} decode steps in {summary.window_ms:,.1f} ms ({step:,.1f} ms a step)\n"
        "time in the named ranges (all_reduce nests in compute, send_recv in sampling):"
    )


def ranges_table(summary: ProfileSummary) -> Table:
    """Time in each named range, in ms and percent of the window."""
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("range")
    table.add_column("ms", justify="right")
    table.add_column("% of window", justify="right")
    for name in PROFILE_RANGES:
        ms = summary.ranges_ms.get(name, math.nan)
        table.add_row(name, number_cell(ms), percent_cell(ms / summary.window_ms if summary.window_ms else math.nan))
    return table


def shares_lines(summary: ProfileSummary) -> str:
    """The comm share, the idle share with its gaps, the device's busy share."""
    share = summary.device_busy_share
    busy = f"{NAN} (no device kernels: a CPU run)" if share is None else f"{share:.0%}"
    return "\n".join(
        (
            f"comm: {summary.comm_share:.0%} of the window in all_reduce and send_recv",
            f"idle: {summary.idle_share:.0%} of the window outside every range, {summary.gaps} gaps of "
            f"{summary.gap_threshold_ms:g} ms or more, the longest {summary.longest_gap_ms:.2f} ms",
            f"device busy: {busy}",
        )
    )


def ops_table(summary: ProfileSummary) -> Table:
    """The operators with the most self time, most first."""
    table = Table(box=box.SIMPLE_HEAD, title="top operators by self time", title_justify="left")
    table.add_column("operator")
    for column in ("calls", "self ms", "share %"):
        table.add_column(column, justify="right")
    for op in summary.top_ops:
        table.add_row(Text(op.name), number_cell(op.calls, ",d"), number_cell(op.self_ms), percent_cell(op.share))
    return table


def marked(text: str, at: int | None) -> Text:
    """`text` with everything from character `at` on highlighted (a marker where it ends early)."""
    if at is None:
        return Text(text)
    out = Text(text[:at])
    out.append(text[at:] or "∎ ends here", style=DIVERGED)
    return out

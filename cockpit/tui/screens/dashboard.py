"""The dashboard: nodes and their GPUs, the job queue, and the active sweep rank by rank."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from cockpit.experiments.progress import SweepProgress
from cockpit.jobs.queue import QueueRow
from cockpit.tui.feeds import Feed
from cockpit.tui.node_board import COLUMNS as NODE_COLUMNS
from cockpit.tui.node_board import NodeBoard
from cockpit.tui.tables import sync_rows

if TYPE_CHECKING:
    from cockpit.tui.app import CockpitApp

QUEUE_COLUMNS = ("job", "name", "state", "nodes", "elapsed", "reason")
SWEEP_COLUMNS = ("strategy / rank", "state", "progress", "rows", "tok/s", "eta", "note")
STATE_STYLE = {"RUNNING": "green", "PENDING": "yellow", "COMPLETED": "dim green", "FAILED": "bold red"}
BAR_WIDTH = 20


def duration(seconds: float | None) -> str:
    """`1:02:03` / `2:03` like squeue's elapsed; '-' when unknown."""
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def bar(fraction: float) -> Text:
    filled = round(max(0.0, min(1.0, fraction)) * BAR_WIDTH)
    text = Text("█" * filled, style="green")
    text.append("░" * (BAR_WIDTH - filled), style="dim")
    text.append(f" {fraction * 100:3.0f}%")
    return text


def queue_rows(rows: Sequence[QueueRow]) -> list[tuple[str, tuple[str | Text, ...]]]:
    """Keyed rows of the queue table, keyed by job id."""
    return [
        (
            row.job_id,
            (
                row.job_id,
                row.name,
                Text(row.state, style=STATE_STYLE.get(row.state, "")),
                row.nodes or "-",
                duration(row.elapsed_s),
                row.reason or "",
            ),
        )
        for row in rows
    ]


def sweep_rows(progress: SweepProgress | None) -> list[tuple[str, tuple[str | Text, ...]]]:
    """A row per strategy, then one per rank that writes rows, keyed `strategy` and `strategy/rank`."""
    if progress is None:
        return []
    out: list[tuple[str, tuple[str | Text, ...]]] = []
    for strategy in progress.strategies:
        stalled = [r for r in strategy.ranks if r.stalled]
        out.append(
            (
                strategy.strategy_id,
                (
                    Text(strategy.strategy_id, style="bold"),
                    Text(strategy.status, style=STATE_STYLE.get(strategy.status, "")),
                    bar(strategy.fraction),
                    f"{strategy.rows_written}/{strategy.rows_expected}",
                    f"{strategy.tokens_per_s:.0f}" if strategy.tokens_per_s else "-",
                    duration(strategy.eta_s),
                    Text(f"⚠ {len(stalled)} rank(s) stalled", style="bold yellow") if stalled else "",
                ),
            )
        )
        for rank in strategy.ranks:
            out.append(
                (
                    f"{strategy.strategy_id}/{rank.rank}",
                    (
                        f"  rank {rank.rank}",
                        rank.phase,
                        bar(rank.fraction),
                        f"{rank.rows_written}/{rank.rows_expected}",
                        f"{rank.tokens_per_s:.0f}" if rank.tokens_per_s else "-",
                        duration(rank.eta_s),
                        Text(f"⚠ {rank.stall_reason}", style="bold yellow") if rank.stalled else "",
                    ),
                )
            )
    return out


def _table(table_id: str, columns: Sequence[str]) -> DataTable:
    table: DataTable = DataTable(id=table_id, cursor_type="row", zebra_stripes=True)
    for column in columns:
        table.add_column(column, key=column)
    return table


class DashboardScreen(Screen[None]):
    """Nodes, queue and sweep; the app feeds it, and it redraws only while it is the screen shown."""

    def compose(self) -> ComposeResult:
        yield Header(icon="◆")
        yield Static("Nodes", id="nodes-title", classes="panel-title")
        yield _table("nodes", NODE_COLUMNS)
        yield Static("Queue", id="queue-title", classes="panel-title")
        yield _table("queue", QUEUE_COLUMNS)
        yield Static("Sweep", id="sweep-title", classes="panel-title")
        yield _table("sweep", SWEEP_COLUMNS)
        yield Footer()

    def on_screen_resume(self) -> None:
        """Catch up on what came in while another screen was shown."""
        app = cast("CockpitApp", self.app)
        for name in app.feeds:
            app.show(name)

    def show_nodes(self, board: NodeBoard, feed: Feed) -> None:
        counts = board.counts()
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        left_out = sync_rows(self.query_one("#nodes", DataTable), board.rows())
        more = f" (first 2000 rows; {left_out} more)" if left_out else ""
        self.query_one("#nodes-title", Static).update(f"Nodes · {summary}{more}{feed.mark()}")

    def show_queue(self, feed: Feed[list[QueueRow]]) -> None:
        rows = feed.value or []
        left_out = sync_rows(self.query_one("#queue", DataTable), queue_rows(rows))
        running = sum(1 for row in rows if row.state == "RUNNING")
        more = f" (first 2000; {left_out} more)" if left_out else ""
        error = f" · {feed.error}" if feed.error else ""
        title = f"Queue · {len(rows)} job(s), {running} running{more}{feed.mark()}{error}"
        self.query_one("#queue-title", Static).update(title)

    def show_sweep(self, feed: Feed[SweepProgress | None]) -> None:
        progress = feed.value
        sync_rows(self.query_one("#sweep", DataTable), sweep_rows(progress))
        title = "Sweep · none running" if progress is None else f"Sweep · {progress.run_id} {progress.state}"
        self.query_one("#sweep-title", Static).update(f"{title}{feed.mark()}")

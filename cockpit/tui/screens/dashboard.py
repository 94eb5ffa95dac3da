"""The dashboard: nodes and their GPUs, the job queue, and the active sweep rank by rank."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from cockpit.jobs.queue import QueueRow
from cockpit.nodes.nodeset import fold
from cockpit.sweep.progress import SweepProgress
from cockpit.tui.feeds import Feed
from cockpit.tui.node_board import NodeBoard
from cockpit.tui.tables import matching, sync_rows

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
                        Text(f"  rank {rank.rank}"),
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
    """Nodes, queue and sweep, and the actions on them; the app feeds it, and it redraws only while shown."""

    BINDINGS = [
        Binding("space", "mark", "Mark node", show=False),
        Binding("w", "wake", "Wake"),
        Binding("W", "wake_all", "Wake all", show=False),
        Binding("c", "configure", "Configure"),
        Binding("r", "restart", "Restart"),
        Binding("d", "shutdown", "Shut down"),
        Binding("x", "cancel_job", "Cancel job"),
        Binding("f", "finished", "Finished jobs"),
        Binding("enter", "results", "Results"),
        Binding("slash", "filter", "Filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]
    ACTIONS = frozenset({"wake", "wake_all", "configure", "restart", "shutdown", "cancel_job"})

    def __init__(self) -> None:
        super().__init__()
        self.filter_text = ""
        self.finished: list[QueueRow] | None = None  # shown instead of the queue while not None
        self._queue_shown: tuple[object, ...] = ()

    @property
    def cockpit(self) -> CockpitApp:
        return cast("CockpitApp", self.app)

    def compose(self) -> ComposeResult:
        yield Header(icon="◆")
        yield Static("Nodes", id="nodes-title", classes="panel-title")
        yield _table("nodes", self.cockpit.board.columns)
        yield Static("", id="nodes-problems")
        yield Static("Queue", id="queue-title", classes="panel-title")
        yield _table("queue", QUEUE_COLUMNS)
        yield Static("Sweep", id="sweep-title", classes="panel-title")
        yield _table("sweep", SWEEP_COLUMNS)
        yield Input(placeholder="filter nodes, jobs and strategies (enter keeps it, escape clears)", id="filter")
        yield Footer()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """`--read-only` hides every action that changes something."""
        return not (action in self.ACTIONS and self.cockpit.read_only)

    def on_screen_resume(self) -> None:
        """Catch up on what came in while another screen was shown."""
        for name in self.cockpit.feeds:
            self.cockpit.show(name)

    # ---- rendering

    def _filter_note(self) -> str:
        return f" · filter {self.filter_text!r}" if self.filter_text else ""

    def show_nodes(self, board: NodeBoard, feed: Feed) -> None:
        counts = board.counts()
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        marked = f" · {len(board.marked)} marked" if board.marked else ""
        rows = matching(board.rows(), self.filter_text)
        left_out = sync_rows(self.query_one("#nodes", DataTable), rows)
        more = f" (first 2000 rows; {left_out} more)" if left_out else ""
        title = f"Nodes · {summary}{marked}{more}{self._filter_note()}{feed.mark()}"
        self.query_one("#nodes-title", Static).update(title)
        problems = board.problems()
        shown = " · ".join(f"{name}: {why}" for name, why in problems[:3])
        extra = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        line = self.query_one("#nodes-problems", Static)
        line.update(f"⚠ {shown}{extra}" if problems else "")
        line.display = bool(problems)

    def show_queue(self, feed: Feed[list[QueueRow]]) -> None:
        rows = self.jobs_shown()
        view = (rows, self.filter_text, feed.mark(), feed.error, self.finished is None)
        if view == self._queue_shown:
            return  # squeue said the same again: 2,000 unchanged rows are not worth rebuilding
        self._queue_shown = view
        left_out = sync_rows(self.query_one("#queue", DataTable), matching(queue_rows(rows), self.filter_text))
        more = f" (first 2000; {left_out} more)" if left_out else ""
        if self.finished is not None:
            title = f"Finished · {len(rows)} job(s) in the last hour (f: back to the queue){more}"
        else:
            running = sum(1 for row in rows if row.state == "RUNNING")
            error = f" · {feed.error}" if feed.error else ""
            title = f"Queue · {len(rows)} job(s), {running} running{more}{feed.mark()}{error}"
        self.query_one("#queue-title", Static).update(title + self._filter_note())

    def show_sweep(self, feed: Feed[SweepProgress | None]) -> None:
        progress = feed.value
        sync_rows(self.query_one("#sweep", DataTable), matching(sweep_rows(progress), self.filter_text))
        title = "Sweep · none running" if progress is None else f"Sweep · {progress.run_id} {progress.state}"
        self.query_one("#sweep-title", Static).update(f"{title}{feed.mark()}")

    # ---- what an action applies to

    def selected_nodes(self) -> list[str]:
        """The marked nodes, else the node under the nodes table's cursor."""
        board = self.cockpit.board
        if board.marked:
            return [name for name in board.names if name in board.marked]
        return self._cursor_node()

    def _cursor_node(self) -> list[str]:
        table = self.query_one("#nodes", DataTable)
        if not table.row_count:
            return []
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value or ""
        return [key.rsplit("/", 1)[0]]

    def jobs_shown(self) -> list[QueueRow]:
        """The queue's latest rows, or the finished jobs while those are shown."""
        return self.cockpit.feeds["queue"].value or [] if self.finished is None else self.finished

    def selected_job(self) -> QueueRow | None:
        table = self.query_one("#queue", DataTable)
        if not table.row_count:
            return None
        job_id = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((row for row in self.jobs_shown() if row.job_id == job_id), None)

    # ---- actions

    def action_mark(self) -> None:
        for name in self._cursor_node():
            self.cockpit.board.toggle_mark(name)
        self.cockpit.show("nodes")

    def action_wake(self) -> None:
        self.cockpit.wake(self.selected_nodes())

    def action_wake_all(self) -> None:
        self.cockpit.wake(list(self.cockpit.board.names))

    def action_configure(self) -> None:
        names = self.selected_nodes()
        detail = "runs the compute playbooks (ansible/compute.yml) on them through ansible-runner"
        self.cockpit.confirm(f"Configure {fold(names)}?", detail, names, self.cockpit.configure)

    def action_restart(self) -> None:
        names = self.selected_nodes()
        self.cockpit.confirm(f"Restart {fold(names)}?", "jobs running there are killed", names, self.cockpit.restart)

    def action_shutdown(self) -> None:
        names = self.selected_nodes()
        detail = "they come back with w (Wake-on-LAN)"
        self.cockpit.confirm(f"Shut down {fold(names)}?", detail, names, self.cockpit.shutdown)

    def action_cancel_job(self) -> None:
        job = self.selected_job()
        if job is None:
            self.notify("no job under the cursor", severity="warning")
            return
        self.cockpit.confirm(
            f"Cancel job {job.job_id} ({job.name})?", f"state {job.state}", [job.job_id], self.cockpit.cancel_job
        )

    def action_finished(self) -> None:
        if self.finished is not None:
            self.finished = None
            self.cockpit.show("queue")
        else:
            self.cockpit.load_finished()

    def action_results(self) -> None:
        progress = self.cockpit.feeds["sweep"].value
        self.cockpit.open_results(None if progress is None else progress.run_dir)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "sweep":
            self.action_results()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value, box.display = "", False
        self.query_one("#nodes", DataTable).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value
        for name in self.cockpit.feeds:
            self.cockpit.show(name)

    def on_input_submitted(self) -> None:
        self.query_one("#nodes", DataTable).focus()

"""The dashboard: nodes and their GPUs, the job queue, and the active sweep rank by rank.

It draws from what it is given (the node board and the feeds, which the app fills) and asks the app for every
action with a message (`WakeRequested`, `PowerRequested`, ..., `NodeViewRequested` for `enter` on a node,
`ShellRequested` for `S`). The app answers the same way: `PanelChanged` when a
panel's data has changed, `FinishedJobsLoaded` with the finished jobs. It redraws only while it is the screen shown,
and catches up when it is shown again."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from cockpit.jobs.queue import QueueRow
from cockpit.nodes.nodeset import fold
from cockpit.nodes.power import PowerAction
from cockpit.sweep.progress import SweepProgress
from cockpit.tui.feeds import Feed
from cockpit.tui.node_board import NodeBoard
from cockpit.tui.screens.confirm import ConfirmScreen
from cockpit.tui.tables import matching, sync_rows

Panel = Literal["nodes", "queue", "sweep"]
PANELS: tuple[Panel, ...] = ("nodes", "queue", "sweep")
QUEUE_COLUMNS = ("job", "name", "state", "nodes", "elapsed", "reason")
SWEEP_COLUMNS = ("strategy / rank", "state", "progress", "rows", "tok/s", "eta", "note")
STATE_STYLE = {"RUNNING": "green", "PENDING": "yellow", "COMPLETED": "dim green", "FAILED": "bold red"}
BAR_WIDTH = 20
NOTHING_SELECTED = "nothing selected: move the cursor to a row, or mark nodes with space"


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
        straggling = [r.rank for r in strategy.ranks if r.straggling]
        note = (
            f"⚠ {len(stalled)} rank(s) stalled"
            if stalled
            else f"⚠ rank {straggling[0]} straggling"
            if straggling
            else ""
        )
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
                    Text(note, style="bold yellow"),
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
                        Text(f"⚠ {rank.stall_reason or rank.straggling or ''}", style="bold yellow")
                        if rank.stalled or rank.straggling
                        else "",
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
    """Nodes, queue and sweep, and the actions on them: `board` and `feeds` are what it shows, kept current by the
    app; with `read_only` every action that changes something is hidden. `start_hint` takes the sweep panel's place
    while nothing runs and nothing is queued: what to do first."""

    BINDINGS = [  # the footer shows the main ones, the app's (s, o, ?, q) after them: 80 columns hold them all
        Binding("space", "mark", "Mark node", show=False),
        Binding("w", "wake", "Wake"),
        Binding("W", "wake_all", "Wake all", show=False),
        Binding("c", "configure", "Configure"),
        Binding("r", "restart", "Restart", show=False),
        Binding("d", "shutdown", "Shut down", show=False),
        Binding("x", "cancel_job", "Cancel job", show=False),
        Binding("f", "finished", "Finished jobs", show=False),
        Binding("l", "log", "Logs"),  # the queued job's output, or the sweep strategy's when its table has focus
        Binding("enter", "results", "Results", show=False),
        Binding("slash", "filter", "Filter", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("S", "shell", "ssh shell", show=False),
    ]
    ACTIONS = frozenset({"wake", "wake_all", "configure", "restart", "shutdown", "cancel_job", "shell"})

    # ---- what it asks the app for (they bubble up to the app, which handles them)

    class WakeRequested(Message):
        """Wake-on-LAN magic packets to `names`."""

        def __init__(self, names: list[str]) -> None:
            super().__init__()
            self.names = names

    class PowerRequested(Message):
        """Shut down (`off`) or restart (`reboot`) `names`; the user has confirmed it."""

        def __init__(self, action: PowerAction, names: list[str]) -> None:
            super().__init__()
            self.action = action
            self.names = names

    class ConfigureRequested(Message):
        """The compute playbooks on `names`, followed on the provisioning screen; the user has confirmed it."""

        def __init__(self, names: list[str]) -> None:
            super().__init__()
            self.names = names

    class JobCancelRequested(Message):
        """Cancel the job `job_id`; the user has confirmed it."""

        def __init__(self, job_id: str) -> None:
            super().__init__()
            self.job_id = job_id

    class JobLogRequested(Message):
        """The output of the job `job_id`, followed live."""

        def __init__(self, job_id: str) -> None:
            super().__init__()
            self.job_id = job_id

    class StrategyLogRequested(Message):
        """The output of a sweep strategy's latest job; `rank`: that rank's own log shown first."""

        def __init__(self, run_dir: Path, strategy_id: str, rank: str | None) -> None:
            super().__init__()
            self.run_dir = run_dir
            self.strategy_id = strategy_id
            self.rank = rank

    class FinishedJobsRequested(Message):
        """The jobs that ended lately, to show in place of the queue (the app answers with FinishedJobsLoaded)."""

    class ResultsRequested(Message):
        """The results screen, on the run `run_dir` (None: the newest run with results)."""

        def __init__(self, run_dir: Path | None) -> None:
            super().__init__()
            self.run_dir = run_dir

    class NodeViewRequested(Message):
        """The node view of `name` (`enter` on its row)."""

        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

    class ShellRequested(Message):
        """An ssh shell on the node `name`, in the terminal, the app suspended meanwhile (also from the node view)."""

        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

    # ---- what the app tells it (posted to it, they go no further)

    class PanelChanged(Message, bubble=False):
        """What `panel` shows has changed (a feed's new value, the board after an action): redraw it if shown."""

        def __init__(self, panel: Panel) -> None:
            super().__init__()
            self.panel = panel

    class FinishedJobsLoaded(Message, bubble=False):
        """The finished jobs asked for with FinishedJobsRequested."""

        def __init__(self, rows: list[QueueRow]) -> None:
            super().__init__()
            self.rows = rows

    def __init__(
        self, board: NodeBoard, feeds: Mapping[str, Feed[Any]], read_only: bool = False, start_hint: str = ""
    ) -> None:
        super().__init__()
        self.board = board
        self.feeds = feeds
        self.read_only = read_only
        self.start_hint = start_hint
        self.filter_text = ""
        self.finished: list[QueueRow] | None = None  # shown instead of the queue while not None
        self._queue_shown: tuple[object, ...] = ()

    def compose(self) -> ComposeResult:
        yield Header(icon="◆")
        yield Static("Nodes", id="nodes-title", classes="panel-title")
        yield _table("nodes", self.board.columns)
        yield Static("", id="nodes-problems")
        yield Static("Queue", id="queue-title", classes="panel-title")
        yield _table("queue", QUEUE_COLUMNS)
        yield Static("Sweep", id="sweep-title", classes="panel-title")
        yield _table("sweep", SWEEP_COLUMNS)
        yield Static(self.start_hint, id="sweep-hint")
        yield Input(placeholder="filter nodes, jobs and strategies (enter keeps it, escape clears)", id="filter")
        yield Footer()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """`--read-only` hides every action that changes something."""
        return not (action in self.ACTIONS and self.read_only)

    @on(PanelChanged)
    def _panel_changed(self, message: PanelChanged) -> None:
        if self.is_current:  # a hidden dashboard catches up when it is shown again
            self.show_panels(message.panel)

    @on(FinishedJobsLoaded)
    def _finished_loaded(self, message: FinishedJobsLoaded) -> None:
        self.finished = message.rows
        if self.is_current:
            self.show_panels("queue")

    def on_screen_resume(self) -> None:
        """Catch up on what came in while another screen was shown."""
        self.show_panels(*PANELS)

    # ---- rendering

    def show_panels(self, *panels: Panel) -> None:
        """Redraw `panels` from the board and the feeds, in one batch (keyed diffs: only changed cells)."""
        with self.app.batch_update():
            for panel in panels:
                if panel == "nodes":
                    self._show_nodes()
                elif panel == "queue":
                    self._show_queue()
                else:
                    self._show_sweep()
            if {"queue", "sweep"} & set(panels):
                self._show_hint()

    def _filter_note(self) -> str:
        return f" · filter {self.filter_text!r}" if self.filter_text else ""

    def _show_nodes(self) -> None:
        board = self.board
        counts = board.counts()
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        marked = f" · {len(board.marked)} marked" if board.marked else ""
        rows = matching(board.rows(), self.filter_text)
        left_out = sync_rows(self.query_one("#nodes", DataTable), rows)
        more = f" (first 2000 rows; {left_out} more)" if left_out else ""
        title = f"Nodes · {summary}{marked}{more}{self._filter_note()}{self.feeds['nodes'].mark()}"
        self.query_one("#nodes-title", Static).update(title)
        problems = board.problems()
        shown = " · ".join(f"{name}: {why}" for name, why in problems[:3])
        extra = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        line = self.query_one("#nodes-problems", Static)
        line.update(f"⚠ {shown}{extra}" if problems else "")
        line.display = bool(problems)

    def _show_queue(self) -> None:
        feed = self.feeds["queue"]
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

    def _show_sweep(self) -> None:
        feed = self.feeds["sweep"]
        progress: SweepProgress | None = feed.value
        sync_rows(self.query_one("#sweep", DataTable), matching(sweep_rows(progress), self.filter_text))
        title = "Sweep · none running" if progress is None else f"Sweep · {progress.run_id} {progress.state}"
        self.query_one("#sweep-title", Static).update(f"{title}{feed.mark()}")

    def _show_hint(self) -> None:
        """The start hint in the sweep table's place while no sweep has been seen and the queue is known empty."""
        queue = self.feeds["queue"]
        idle = self.feeds["sweep"].value is None and queue.polls > 0 and not queue.value and queue.error is None
        shown = idle and bool(self.start_hint)
        self.query_one("#sweep-hint", Static).display = shown
        self.query_one("#sweep", DataTable).display = not shown

    # ---- what an action applies to

    def selected_nodes(self) -> list[str]:
        """The marked nodes, else the node under the nodes table's cursor."""
        board = self.board
        if board.marked:
            return [name for name in board.names if name in board.marked]
        return self._cursor_node()

    def _cursor_node(self) -> list[str]:
        table = self.query_one("#nodes", DataTable)
        if not table.row_count:
            return []
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value or ""
        name = key.rsplit("/", 1)[0]
        return [name] if name in self.board.names else []  # an unknown host's row is no node to act on

    def jobs_shown(self) -> list[QueueRow]:
        """The queue's latest rows, or the finished jobs while those are shown."""
        return self.feeds["queue"].value or [] if self.finished is None else self.finished

    def selected_job(self) -> QueueRow | None:
        table = self.query_one("#queue", DataTable)
        if not table.row_count:
            return None
        job_id = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((row for row in self.jobs_shown() if row.job_id == job_id), None)

    # ---- actions

    def _ask(self, question: str, detail: str, request: Message) -> None:
        """Ask before an action that cannot be taken back; `request` goes to the app only on yes."""

        def answer(yes: bool | None) -> None:
            if yes:
                self.post_message(request)

        self.app.push_screen(ConfirmScreen(question, detail), answer)

    def _ask_for_nodes(self, verb: str, detail: str, request: Callable[[list[str]], Message]) -> None:
        """Ask before `verb` on the selected nodes; nothing is asked when none is selected."""
        names = self.selected_nodes()
        if not names:
            self.notify(NOTHING_SELECTED, severity="warning")
            return
        self._ask(f"{verb} {fold(names)}?", detail, request(names))

    def _wake(self, names: list[str]) -> None:
        if not names:
            self.notify(NOTHING_SELECTED, severity="warning")
            return
        self.post_message(self.WakeRequested(names))

    def action_mark(self) -> None:
        for name in self._cursor_node():
            self.board.toggle_mark(name)
        self.show_panels("nodes")

    def action_wake(self) -> None:
        self._wake(self.selected_nodes())

    def action_wake_all(self) -> None:
        self._wake(list(self.board.names))

    def action_configure(self) -> None:
        detail = "runs the compute playbooks (ansible/compute.yml) on them through ansible-runner"
        self._ask_for_nodes("Configure", detail, self.ConfigureRequested)

    def action_restart(self) -> None:
        self._ask_for_nodes(
            "Restart", "jobs running there are killed", lambda names: self.PowerRequested("reboot", names)
        )

    def action_shutdown(self) -> None:
        detail = "they come back with w (Wake-on-LAN)"
        self._ask_for_nodes("Shut down", detail, lambda names: self.PowerRequested("off", names))

    def action_cancel_job(self) -> None:
        job = self.selected_job()
        if job is None:
            self.notify("no job under the cursor", severity="warning")
            return
        self._ask(f"Cancel job {job.job_id} ({job.name})?", f"state {job.state}", self.JobCancelRequested(job.job_id))

    def action_finished(self) -> None:
        if self.finished is not None:
            self.finished = None
            self.show_panels("queue")
        else:
            self.post_message(self.FinishedJobsRequested())

    def action_log(self) -> None:
        """The output of the strategy under the sweep table's cursor when that table has focus, else of the job
        under the queue's."""
        sweep = self.query_one("#sweep", DataTable)
        progress: SweepProgress | None = self.feeds["sweep"].value
        if self.focused is sweep and sweep.row_count and progress is not None:
            key = sweep.coordinate_to_cell_key(sweep.cursor_coordinate).row_key.value or ""
            strategy_id, _, rank = key.partition("/")
            self.post_message(self.StrategyLogRequested(progress.run_dir, strategy_id, rank or None))
            return
        job = self.selected_job()
        if job is None:
            self.notify("no job under the cursor (tab to the sweep for a strategy's)", severity="warning")
            return
        self.post_message(self.JobLogRequested(job.job_id))

    def action_results(self) -> None:
        progress = self.feeds["sweep"].value
        self.post_message(self.ResultsRequested(None if progress is None else progress.run_dir))

    def action_shell(self) -> None:
        names = self._cursor_node()
        if not names:
            self.notify("no node under the cursor", severity="warning")
            return
        self.post_message(self.ShellRequested(names[0]))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """`enter`: on a strategy, the results; on a node, its own view."""
        if event.data_table.id == "sweep":
            self.action_results()
        elif event.data_table.id == "nodes":
            for name in self._cursor_node():
                self.post_message(self.NodeViewRequested(name))

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
        self.show_panels(*PANELS)

    def on_input_submitted(self) -> None:
        self.query_one("#nodes", DataTable).focus()

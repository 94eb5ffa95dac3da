"""The provisioning screen: a playbook run as it goes, a row per host (the task it is at, its ok / changed /
failed / unreachable / skipped counts) and a row per task result, with what a failure printed one key away.

A thread worker follows the run's blocking event stream and hands the events over in batches: it adds each to a
list and, while no take is scheduled, schedules one on the app's thread, which takes in all that came until then.
Leaving the screen leaves the run going; the worker follows it to its end and then says how it ended. Only the app
shutting down while the screen is up cancels the run: a run still going would keep the process alive."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Header, Static

from cockpit.nodes.nodeset import fold
from cockpit.provision.events import ProvisionEvent, failure_details
from cockpit.tui.provision_board import COUNTS, STOPPING, HostRow, ProvisionBoard, TaskRow
from cockpit.tui.screens.confirm import ConfirmScreen
from cockpit.tui.sources import ProvisionRun
from cockpit.tui.tables import sync_rows

# (column, width): cells of a host change in place, and an updated cell does not widen its column
HOST_COLUMNS = (("host", None), ("task", 44), ("ok", 4), ("changed", 7), ("failed", 6), ("unreachable", 11),
                ("skipped", 7), ("state", 11))  # fmt: skip
TASK_COLUMNS = (("play", None), ("task", None), ("host", None), ("status", None), ("time", None))
STYLE = {
    "ok": "green",
    "changed": "yellow",
    "failed": "bold red",
    "unreachable": "bold magenta",
    "skipped": "cyan",
    "ignored": "dim red",
    "running": "cyan",
    "waiting": "dim",
    "not run": "dim",
    "stopped": "yellow",
    "canceled": "yellow",
    "timeout": "yellow",
}


def host_cells(row: HostRow) -> tuple[str | Text, ...]:
    """The hosts table's cells for one host; a count is coloured when it is not zero, dim when it is."""
    counts = [(name, getattr(row, name)) for name in COUNTS]
    cells = [Text(str(n), style=STYLE[name] if n else "dim") for name, n in counts]
    return (row.host, row.task or "-", *cells, Text(row.state, style=STYLE.get(row.state, "")))


def task_cells(row: TaskRow) -> tuple[str | Text, ...]:
    """The tasks table's cells for one result."""
    duration = row.result.duration_s
    time = "" if duration is None else f"{duration:.1f} s"
    return (row.play, row.result.task, row.result.host, Text(row.label, style=STYLE.get(row.label, "")), time)


def _table(table_id: str, columns: Sequence[tuple[str, int | None]]) -> DataTable:
    table: DataTable = DataTable(id=table_id, cursor_type="row", zebra_stripes=True)
    for column, width in columns:
        table.add_column(column, key=column, width=width)
    return table


class FailureScreen(ModalScreen[None]):
    """What a failure left behind (or Ansible's own output), scrollable; escape, q or o closes it."""

    BINDINGS = [Binding("escape,q,o", "dismiss", "Close")]

    def __init__(self, heading: str, text: str) -> None:
        super().__init__()
        self.heading = heading
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical(id="failure-box"):
            yield Static(Text(self.heading), id="failure-title")
            with VerticalScroll(id="failure-scroll"):
                yield Static(Text(self.text), id="failure-text")
            yield Static("arrows scroll · escape closes", id="failure-hint")


class ProvisionScreen(Screen[None]):
    """Follows `run`, a playbook run on the hosts `names`, until it ends; enter or o on a red row shows why."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("o", "details", "Why it failed"),
        Binding("x", "cancel_run", "Cancel run"),
    ]

    def __init__(self, run: ProvisionRun, names: Sequence[str]) -> None:
        super().__init__()
        self.run = run
        self.names = list(names)
        self.board = ProvisionBoard(self.names)
        self._pending: list[ProvisionEvent] = []
        self._scheduled = False  # a take of what is pending is on its way
        self._lock = threading.Lock()

    @property
    def what(self) -> str:
        """The run in a few words: its playbook and its hosts."""
        return f"{self.run.playbook.name} on {fold(self.names) or 'no host'}"

    def compose(self) -> ComposeResult:
        yield Header(icon="◆")
        yield Static(id="provision-status", classes="panel-title")
        yield Static("Hosts", classes="panel-title")
        yield _table("hosts", HOST_COLUMNS)
        yield Static("Tasks", id="tasks-title", classes="panel-title")
        yield _table("tasks", TASK_COLUMNS)
        yield Footer()

    def on_mount(self) -> None:
        self._show()
        app = self.app
        self.run_worker(lambda: self._follow(app), name="provision", thread=True, exit_on_error=False)

    def on_unmount(self) -> None:
        if not self.app.is_running and self.board.running:
            self.run.cancel()

    def _follow(self, app: App) -> None:
        """In the worker thread: every event into the batch, then the run's end to the app's thread."""
        try:
            for event in self.run.events():
                with self._lock:
                    self._pending.append(event)
                    schedule, self._scheduled = not self._scheduled, True
                if schedule and app.is_running:
                    app.call_from_thread(self.call_later, self._take_batch)
        finally:
            if app.is_running:
                app.call_from_thread(self._ended, app)

    def _take_batch(self) -> None:
        with self._lock:
            batch, self._pending, self._scheduled = self._pending, [], False
        for event in batch:
            self.board.ingest(event)
        if batch:
            self._show()

    def _ended(self, app: App) -> None:
        self._take_batch()
        self.board.finish(self.run.status, self.run.rc)
        self._show()
        if self not in app.screen_stack:  # left while it ran: say how it ended
            failed = self.board.status != "successful" or bool(self.board.failures())
            app.notify(f"{self.what}: {self.board.state_line()}", severity="error" if failed else "information")

    def _show(self) -> None:
        """Bring the status line and both tables up to date with the board (keyed diffs, no rebuild)."""
        if not self.is_attached:
            return
        board = self.board
        status = self.query_one("#provision-status", Static)
        status.update(Text(f"Provisioning · {self.what} · {board.state_line()}"))
        ended_badly = not board.running and (board.status != "successful" or bool(board.failures()))
        status.set_class(ended_badly, "-failed")
        status.set_class(not board.running and not ended_badly, "-successful")
        sync_rows(self.query_one("#hosts", DataTable), [(key, host_cells(row)) for key, row in board.host_rows()])
        tasks = self.query_one("#tasks", DataTable)
        following = tasks.cursor_row >= tasks.row_count - 1  # the cursor on the last row follows new results
        rows = board.task_rows()
        left_out = sync_rows(tasks, [(row.key, task_cells(row)) for row in rows])
        if following and tasks.row_count:
            tasks.move_cursor(row=tasks.row_count - 1)
        more = f" (first {tasks.row_count}; {left_out} more)" if left_out else ""
        self.query_one("#tasks-title", Static).update(f"Tasks · {len(rows)} result(s){more}")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self._explain(event.data_table, event.row_key.value)

    def action_details(self) -> None:
        focused = self.focused
        table = focused if isinstance(focused, DataTable) else self.query_one("#tasks", DataTable)
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value if table.row_count else None
        self._explain(table, key)

    def _explain(self, table: DataTable, key: str | None) -> None:
        """Show the failure of the row `key` of `table`; or, when no result explains the run's failure, Ansible's
        own output."""
        result = None
        if key is not None:
            result = self.board.host_failure(key) if table.id == "hosts" else self.board.result(key)
        if result is not None and result.status in STOPPING:
            self.app.push_screen(FailureScreen(f"Failure · {result.host}", failure_details(result)))
        elif self.board.explained_by_output:
            output = self.run.output_tail() or "(Ansible printed nothing)"
            self.app.push_screen(FailureScreen(f"Ansible's output · {self.what}", output))
        elif key is not None:
            self.notify("nothing failed on this row")

    def action_back(self) -> None:
        if self.board.running:
            self.notify(f"{self.what} goes on in the background; you will be told how it ends")
        self.app.pop_screen()

    def action_cancel_run(self) -> None:
        if not self.board.running:
            self.notify(f"{self.what} has ended already")
            return

        def answer(yes: bool | None) -> None:
            if yes and self.board.running:
                self.run.cancel()
                self.notify(f"cancelling {self.what}")

        question = f"Cancel the run of {self.what}?"
        detail = "Ansible is stopped within about a second; the tasks under way on the nodes are cut off."
        self.app.push_screen(ConfirmScreen(question, detail), answer)

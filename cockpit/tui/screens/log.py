"""A job's output, followed like `tail -f`: `l` on a queued job or a sweep strategy opens it.

The source says where the job's logs are (its output, and each rank's own for a sweep's job: one tab each), then
reads the one shown: its end first (a 100 MB log opens at its last lines, never read whole), then what was
added, every `FOLLOW_S`, one read at a time, each in a worker with a timeout. ANSI colours are kept. A log that
is not there yet says why: the job is pending, or the node (or this machine) has not written it yet."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from functools import partial

from rich.cells import cell_len
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.screen import Screen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Footer, Header, Static, Tab, Tabs
from textual.worker import Worker

from cockpit.jobs.output import JobLogs, LogChunk
from cockpit.tui.sources import ClusterSource

MAX_LINES = 20_000  # lines kept on screen; older ones scroll away
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # an escape sequence: no width on screen


class AnsiLog(ScrollView, can_focus=True):
    """Log lines with their ANSI colours, each laid out only when it comes into view (a RichLog lays out every line
    as it is written: seconds for the thousands a log opens with); the end kept in view while `follow`."""

    def __init__(self, id: str) -> None:
        super().__init__(id=id)
        self.lines: list[str] = []
        self.follow = True
        self._strips: LRUCache[int, Strip] = LRUCache(1024)  # by line index since the last clear
        self._dropped = 0  # lines scrolled away since the last clear

    def clear(self) -> None:
        self.lines, self._dropped = [], 0
        self._strips.clear()
        self.virtual_size = Size(0, 0)
        self.scroll_to(0, 0, animate=False)

    def write(self, text: str) -> None:
        new = text.expandtabs().splitlines()
        self.lines += new
        if len(self.lines) > MAX_LINES:
            self._dropped += len(self.lines) - MAX_LINES
            del self.lines[: len(self.lines) - MAX_LINES]
        width = max((cell_len(ANSI.sub("", line)) for line in new), default=0)
        self.virtual_size = Size(max(self.virtual_size.width, width), len(self.lines))
        if self.follow:
            self.call_after_refresh(self.scroll_end, animate=False)
        self.refresh()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index, width = scroll_y + y, self.scrollable_content_region.width
        if index >= len(self.lines):
            return Strip.blank(width, self.rich_style)
        key = index + self._dropped
        strip = self._strips.get(key)
        if strip is None:
            text = Text.from_ansi(self.lines[index], style=self.rich_style, no_wrap=True, end="")
            strip = self._strips[key] = Strip(text.render(self.app.console))
        return strip.crop_extend(scroll_x, scroll_x + width, self.rich_style)


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 1e5 else f"{count / 1e3:.1f} kB"


class LogScreen(Screen[None]):
    """The logs `locate` names, read through `source`; the tab labelled `first` is shown first, if there is one."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("right_square_bracket", "next_log(1)", "Next log"),
        Binding("left_square_bracket", "next_log(-1)", "Previous log", show=False),
        Binding("f", "follow", "Follow on/off"),
    ]
    FOLLOW_S = 1.0
    READ_TIMEOUT_S = 10.0

    def __init__(
        self, source: ClusterSource, locate: Callable[[], Awaitable[JobLogs]], what: str, first: str | None = None
    ) -> None:
        super().__init__()
        self.source = source
        self.locate = locate
        self.what = what
        self.first = first
        self.logs: JobLogs | None = None
        self.shown = 0  # the index of the log shown
        self.read_at: int | None = None  # where its next read starts; None: at its end
        self.skipped = 0
        self.problem: str | None = None  # why the last read gave nothing
        self.reader: Worker[None] | None = None  # the read in flight, or the last one

    def compose(self) -> ComposeResult:
        yield Header(icon="◆")
        yield Static(self.what, id="log-title", classes="panel-title")
        yield Static("", id="log-status")
        yield AnsiLog(id="log")
        yield Footer()

    def on_mount(self) -> None:
        self.run_worker(self._locate(), group="log-locate", exit_on_error=False)
        self.set_interval(self.FOLLOW_S, self._follow)

    async def _locate(self) -> None:
        try:
            logs = await asyncio.wait_for(self.locate(), self.READ_TIMEOUT_S)
        except Exception as err:  # the source's failure is shown, never raised into the app
            self._say(f"{self.what}: {err}")
            return
        self.logs = logs
        self.query_one("#log-title", Static).update(logs.title)
        if not logs.logs:
            self._say(logs.pending or "no log")
            return
        labels = [log.label for log in logs.logs]
        self._open(labels.index(self.first) if self.first in labels else 0)  # read while the tabs are mounted
        if len(labels) > 1:  # a tab per log, only where there is a choice
            tabs = [Tab(label, id=f"log-{index}") for index, label in enumerate(labels)]
            await self.mount(Tabs(*tabs, active=f"log-{self.shown}", id="log-tabs"), after="#log-title")

    @on(Tabs.TabActivated, "#log-tabs")
    def _tab_activated(self, event: Tabs.TabActivated) -> None:
        if event.tab is not None and event.tab.id and (index := int(event.tab.id.removeprefix("log-"))) != self.shown:
            self._open(index)

    def _open(self, index: int) -> None:
        """Show log `index` from its end."""
        self.shown, self.read_at, self.skipped, self.problem = index, None, 0, None
        self.query_one("#log", AnsiLog).clear()
        self._read()

    def _follow(self) -> None:
        if self.logs and self.logs.logs and (self.reader is None or self.reader.is_finished):
            self._read()

    def _read(self) -> None:
        """Read the shown log on from `offset` (a read of another log still out is cancelled)."""
        self.reader = self.run_worker(
            partial(self._read_one, self.shown), group="log-read", exclusive=True, exit_on_error=False
        )

    async def _read_one(self, index: int) -> None:
        assert self.logs is not None
        log = self.logs.logs[index]
        try:
            chunk = await asyncio.wait_for(self.source.read_log(log, self.read_at), self.READ_TIMEOUT_S)
        except Exception as err:  # a node that does not answer, a file that cannot be read: said, tried again
            self.problem = str(err) or type(err).__name__
        else:
            if index == self.shown:  # not a read of a log since left
                self._show(chunk)
        self._show_status()

    def _show(self, chunk: LogChunk) -> None:
        assert self.logs is not None
        if chunk.missing:
            self.problem = self.logs.why_missing(self.logs.logs[self.shown])
            return
        self.problem = None
        self.read_at = chunk.offset
        self.skipped += chunk.skipped
        if chunk.text:
            self.query_one("#log", AnsiLog).write(chunk.text)

    def _show_status(self) -> None:
        assert self.logs is not None
        log = self.logs.logs[self.shown]
        parts = ["following" if self.query_one("#log", AnsiLog).follow else "not following (f)"]
        if self.problem:
            parts.append(f"⚠ {self.problem}")
        if self.skipped:
            parts.append(f"{_size(self.skipped)} before not shown")
        parts.append(f"{log.node}:{log.path}" if log.node else str(log.path))
        self._say(" · ".join(parts))

    def _say(self, line: str) -> None:
        self.query_one("#log-status", Static).update(Text(line))

    def action_next_log(self, step: int) -> None:
        if self.logs and len(self.logs.logs) > 1:
            self._open((self.shown + step) % len(self.logs.logs))
            for tabs in self.query("#log-tabs").results(Tabs):  # none until mounted
                tabs.active = f"log-{self.shown}"

    def action_follow(self) -> None:
        """Keep the end in view as lines come, or leave the view where it is (reading goes on)."""
        view = self.query_one("#log", AnsiLog)
        view.follow = not view.follow
        if view.follow:
            view.scroll_end(animate=False)
        if self.logs and self.logs.logs:
            self._show_status()

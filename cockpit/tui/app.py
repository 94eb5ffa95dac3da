"""The cockpit application: polls its sources in workers and shows them on the dashboard."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from textual.app import App
from textual.binding import Binding
from textual.screen import Screen

from cockpit.config import Settings
from cockpit.tui.feeds import Feed
from cockpit.tui.node_board import NodeBoard
from cockpit.tui.screens.dashboard import DashboardScreen
from cockpit.tui.screens.help import HelpScreen
from cockpit.tui.screens.info import InfoScreen
from cockpit.tui.sources import ClusterSource


class CockpitApp(App[None]):
    """The GPU cluster cockpit."""

    CSS_PATH = "cockpit.tcss"
    TITLE = "cockpit"
    BINDINGS = [
        Binding("question_mark", "help", "Help"),
        Binding("i", "info", "Cluster info"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        settings: Settings,
        source: ClusterSource,
        read_only: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.source = source
        self.read_only = read_only
        self.sub_title = f"cluster {settings.cluster.name} · {settings.cluster.scheduler} scheduler"
        refresh, ssh = settings.refresh, settings.ssh
        self.board = NodeBoard(source.node_names, clock=clock)
        self.feeds: dict[str, Feed[Any]] = {
            "nodes": Feed("nodes", source.nodes, refresh.nodes_s, ssh.connect_timeout_s + ssh.command_timeout_s, clock),
            "queue": Feed("queue", source.queue, refresh.squeue_s, 10.0, clock),
            "sweep": Feed("sweep", source.sweep, refresh.shards_s, 10.0, clock),
        }

    def get_default_screen(self) -> Screen:
        return DashboardScreen()

    def on_mount(self) -> None:
        for feed in self.feeds.values():
            self.poll(feed)
            self.set_interval(feed.interval_s, lambda feed=feed: self.poll(feed))

    async def on_unmount(self) -> None:
        await self.source.close()

    def poll(self, feed: Feed[Any]) -> None:
        """One poll of `feed` in a worker; skipped while the previous one is still out."""
        if not feed.in_flight:
            self.run_worker(self._poll(feed), group=feed.name, exit_on_error=False)

    async def _poll(self, feed: Feed[Any]) -> None:
        if await feed.poll():
            if feed.name == "nodes" and feed.error is None:
                self.board.ingest(feed.value or [])
            self.show(feed.name)

    def show(self, name: str) -> None:
        """Redraw one panel, if the dashboard is the screen shown (hidden screens are caught up on return)."""
        screen = self.screen
        if not isinstance(screen, DashboardScreen):
            return
        with self.batch_update():
            if name == "nodes":
                screen.show_nodes(self.board, self.feeds["nodes"])
            elif name == "queue":
                screen.show_queue(self.feeds["queue"])
            else:
                screen.show_sweep(self.feeds["sweep"])

    def action_help(self) -> None:
        keys = [(self.get_key_display(b), b.description) for b in self.BINDINGS if isinstance(b, Binding)]
        self.push_screen(HelpScreen(keys))

    def action_info(self) -> None:
        self.push_screen(InfoScreen(self.settings, self.read_only))

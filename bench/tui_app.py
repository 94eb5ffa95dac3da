"""python -m bench.tui_app --nodes N --gpus G --jobs J --ready FILE: the cockpit on the demo's cluster as a real
terminal app at the default refresh intervals, for bench/tui.py to start in a pseudo-terminal and measure from
outside. Once the dashboard's tables hold every node's and job's rows and that frame has been drawn, it writes
FILE: the CLOCK_MONOTONIC time then (comparable across processes) and the seconds since the app was built."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from textual.message import Message
from textual.widgets import DataTable

from cockpit.config import Settings
from cockpit.jobs.queue import QueueRow
from cockpit.sweep.progress import SweepProgress
from cockpit.tui.app import CockpitApp
from cockpit.tui.demo import DemoSource, demo_jobs, demo_sweep
from cockpit.tui.screens.dashboard import DashboardScreen
from cockpit.tui.tables import MAX_ROWS


def expected_rows(nodes: int, gpus: int, jobs: int) -> tuple[int, int]:
    """The nodes and queue tables' row counts once all data is in: a row per GPU (one for a node without)."""
    return nodes * max(gpus, 1), min(jobs, MAX_ROWS)


class SteadySource(DemoSource):
    """The demo's cluster with its queue and sweep as at their first poll (the demo moves them on): what the
    figures measure is every node's readings changing, while the rest stays as most of a real one does between
    polls."""

    def __init__(self, nodes: int, gpus: int, jobs: int) -> None:
        super().__init__(nodes=nodes, gpus=gpus, jobs=jobs)
        self.jobs = demo_jobs(jobs)

    async def queue(self) -> list[QueueRow]:
        return self.jobs

    async def sweep(self) -> SweepProgress | None:
        return demo_sweep(1)


class TimedApp(CockpitApp):
    """The cockpit, noting when its first complete dashboard has been drawn."""

    # Textual reads CSS_PATH beside the file of the class that sets it: point it back at the cockpit's own
    CSS_PATH = Path(sys.modules[CockpitApp.__module__].__file__ or "").with_name(str(CockpitApp.CSS_PATH))

    def __init__(self, source: SteadySource, rows: tuple[int, int], ready: Path) -> None:
        super().__init__(Settings(), source)
        self.built_at = time.monotonic()
        self.rows = rows
        self.ready = ready
        self.complete = False

    def on_mount(self) -> None:  # besides the cockpit's own
        self.dashboard.message_signal.subscribe(self, self._handled, immediate=True)

    def _handled(self, message: Message) -> None:
        """After each message the dashboard handled: is a redraw of a panel the one that completes it?"""
        if not isinstance(message, DashboardScreen.PanelChanged) or self.complete:
            return
        if any(feed.updated_at is None for feed in self.feeds.values()):
            return
        tables = (self.dashboard.query_one(f"#{table_id}", DataTable) for table_id in ("nodes", "queue"))
        if tuple(table.row_count for table in tables) == self.rows:
            self.complete = True
            self.call_after_refresh(self._report)

    def _report(self) -> None:
        now = time.monotonic()
        partial = self.ready.with_suffix(".partial")
        partial.write_text(f"{now} {now - self.built_at}\n")
        partial.rename(self.ready)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tui_app", description="The cockpit on the demo's cluster.")
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--gpus", type=int, required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--ready", type=Path, required=True, help="written once the full dashboard is drawn")
    args = parser.parse_args()
    source = SteadySource(nodes=args.nodes, gpus=args.gpus, jobs=args.jobs)
    TimedApp(source, expected_rows(args.nodes, args.gpus, args.jobs), args.ready).run()


if __name__ == "__main__":
    main()

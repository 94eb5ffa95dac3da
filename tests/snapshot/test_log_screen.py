"""The job output screen at 80x24 on the demo's simulated logs: a running sweep job's output with its ranks' tabs,
a rank picked, and a pending job's log that is not there yet."""

from __future__ import annotations

import pytest
from textual.pilot import Pilot
from textual.widgets import Static, Tabs

from cockpit.tui.screens.log import AnsiLog, LogScreen
from tests.snapshot.test_app_shell import fake_app, settle

SIZE = (80, 24)


@pytest.fixture(autouse=True)
def no_follow(monkeypatch: pytest.MonkeyPatch) -> None:
    """No timed reads: what a frame shows is what the keys pressed brought."""
    monkeypatch.setattr(LogScreen, "FOLLOW_S", 3600.0)


async def open_log(pilot: Pilot) -> None:
    await settle(pilot)
    await pilot.press("l")  # job 1000, running, under the queue's cursor
    await settle(pilot)


def test_log_snapshot(snap_compare) -> None:
    assert snap_compare(fake_app(), terminal_size=SIZE, run_before=open_log)


async def test_ranks_pending_and_follow() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_log(pilot)
        screen = app.screen
        assert isinstance(screen, LogScreen) and screen.query_one("#log-tabs", Tabs).active == "log-0"
        await pilot.press("right_square_bracket")
        await settle(pilot)
        view = screen.query_one("#log", AnsiLog)
        assert "[rank 0]" in view.lines[0] and "[rank 1]" not in "".join(view.lines)
        screen._follow()  # what the timer does: the next line comes
        await settle(pilot)
        assert len(view.lines) == 31
        await pilot.press("escape", "tab", "down")  # the queue, job 1001: pending
        await pilot.press("l")
        await settle(pilot)
        status = str(app.screen.query_one("#log-status", Static).render())
        assert "job 1001 is pending (Resources): its output starts when it runs" in status

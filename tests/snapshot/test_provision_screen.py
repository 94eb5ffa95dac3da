"""The provisioning screen on the demo's playbook run (node1 fails the last task): the run under way and ended, the
failure's details and the cancel question as snapshots, and its keys under a Pilot."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from cockpit.tui.demo import DemoProvisionRun
from cockpit.tui.screens.confirm import ConfirmScreen
from cockpit.tui.screens.dashboard import DashboardScreen
from cockpit.tui.screens.provision import FailureScreen, ProvisionScreen
from tests.snapshot.test_app_shell import COMMON, SIZE, fake_app, settle

NAMES = ["node0", "node1"]


async def wait_for(pilot: Pilot, check: Callable[[], bool], what: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)
    await pilot.pause()


async def show(pilot: Pilot, run: DemoProvisionRun) -> ProvisionScreen:
    """The dashboard settled, then the screen following `run`: held at its gate, or to the run's end."""
    await settle(pilot)
    screen = ProvisionScreen(run, NAMES)
    await pilot.app.push_screen(screen)
    if run.gate is None:
        await wait_for(pilot, lambda: not screen.board.running, "the run's end")
    else:
        await wait_for(pilot, lambda: screen.board.tasks_started == 3, "the run to reach its gate")
    return screen


def status_line(screen: ProvisionScreen) -> str:
    return str(screen.query_one("#provision-status", Static).render())


def test_running_snapshot(snap_compare) -> None:
    async def run_before(pilot: Pilot) -> None:
        await show(pilot, DemoProvisionRun(threading.Event()))

    assert snap_compare(fake_app(), terminal_size=SIZE, run_before=run_before)


def test_failed_snapshot(snap_compare) -> None:
    async def run_before(pilot: Pilot) -> None:
        await show(pilot, DemoProvisionRun())

    assert snap_compare(fake_app(), terminal_size=COMMON, run_before=run_before)


def test_failure_modal_snapshot(snap_compare) -> None:
    async def run_before(pilot: Pilot) -> None:
        await show(pilot, DemoProvisionRun())
        await pilot.press("down", "enter")  # node1's row of the hosts table
        await pilot.pause()

    assert snap_compare(fake_app(), terminal_size=SIZE, run_before=run_before)


def test_confirm_modal_snapshot(snap_compare) -> None:
    async def run_before(pilot: Pilot) -> None:
        await show(pilot, DemoProvisionRun(threading.Event()))
        await pilot.press("x")
        await pilot.pause()

    assert snap_compare(fake_app(), terminal_size=SIZE, run_before=run_before)


async def test_o_on_the_failed_row_shows_its_output_and_escape_goes_back() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await show(pilot, DemoProvisionRun())
        hosts = screen.query_one("#hosts", DataTable)
        assert [str(hosts.get_cell("node1", column)) for column in ("ok", "changed", "failed", "state")] == [
            "2", "1", "1", "failed"
        ]  # fmt: skip
        assert status_line(screen).endswith("failed (rc 2) · failed on node1: enter or o on a red row shows why")
        await pilot.press("tab")  # to the tasks table, its cursor on the last result: node1 failing the probe
        tasks = screen.query_one("#tasks", DataTable)
        assert screen.focused is tasks and tasks.cursor_row == tasks.row_count - 1 == 5
        await pilot.press("o")
        assert isinstance(app.screen, FailureScreen)
        text = str(app.screen.query_one("#failure-text", Static).render())
        assert "node1: failed in task 'Probe the fake GPU'" in text
        assert "rc: 3" in text and "no OpenCL platforms found" in text
        await pilot.press("escape")
        assert app.screen is screen
        await pilot.press("up", "o")  # node0's probe went fine: nothing to show
        assert app.screen is screen


async def test_enter_on_a_failed_host_shows_its_failure() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await show(pilot, DemoProvisionRun())
        await pilot.press("enter")  # node0: nothing failed
        assert app.screen is screen
        await pilot.press("down", "enter")
        assert isinstance(app.screen, FailureScreen)
        assert "no OpenCL platforms found" in str(app.screen.query_one("#failure-text", Static).render())
        await pilot.press("o")
        assert app.screen is screen


async def test_x_then_y_cancels_the_run() -> None:
    app = fake_app()
    run = DemoProvisionRun(threading.Event())
    async with app.run_test(size=SIZE) as pilot:
        screen = await show(pilot, run)
        assert status_line(screen).endswith("· running · Fake base configuration › Probe the fake GPU")
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        assert app.screen is screen and run.cancelled.is_set()
        await wait_for(pilot, lambda: not screen.board.running, "the run's end")
        assert status_line(screen).endswith("· canceled (rc 254)")
        hosts = screen.query_one("#hosts", DataTable)
        assert [str(hosts.get_cell(name, "state")) for name in NAMES] == ["canceled", "canceled"]
        await pilot.press("x")  # ended: nothing to cancel, nothing asked
        assert app.screen is screen


async def test_x_then_n_does_not_cancel_and_the_run_goes_on() -> None:
    app = fake_app()
    run = DemoProvisionRun(threading.Event())
    async with app.run_test(size=SIZE) as pilot:
        screen = await show(pilot, run)
        tasks = screen.query_one("#tasks", DataTable)
        keys = [key.value for key in tasks.rows]
        await pilot.press("x", "n")
        assert app.screen is screen and not run.cancelled.is_set()
        await pilot.press("x", "escape")
        assert app.screen is screen and not run.cancelled.is_set()
        assert run.gate is not None
        run.gate.set()
        await wait_for(pilot, lambda: not screen.board.running, "the run's end")
        assert not run.cancelled.is_set() and screen.board.status == "failed"
        assert [key.value for key in tasks.rows] == [*keys, "3/node0", "3/node1"]  # added to, not rebuilt


async def test_escape_leaves_the_run_going_and_its_end_is_told() -> None:
    app = fake_app()
    run = DemoProvisionRun(threading.Event())
    async with app.run_test(size=SIZE) as pilot:
        screen = await show(pilot, run)
        told: list[str] = []
        app.notify = lambda message, **_: told.append(message)  # type: ignore[method-assign]
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen) and not run.cancelled.is_set()
        assert told == ["fake_compute.yml on node[0-1] goes on in the background; you will be told how it ends"]
        assert run.gate is not None
        run.gate.set()
        await wait_for(pilot, lambda: len(told) == 2, "the end to be told")
        assert told[1] == (
            "fake_compute.yml on node[0-1]: failed (rc 2) · failed on node1: enter or o on a red row shows why"
        )
        assert screen.board.status == "failed" and not run.cancelled.is_set()


async def test_a_playbook_that_does_not_load_shows_ansibles_output() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await show(pilot, DemoProvisionRun(unparsable=True))
        assert status_line(screen).endswith("failed (rc 4) without any host result: o shows Ansible's output")
        await pilot.press("o")
        assert isinstance(app.screen, FailureScreen)
        assert "the role 'fake_missing_role' was not found" in str(
            app.screen.query_one("#failure-text", Static).render()
        )


async def test_quitting_while_it_runs_cancels_the_run() -> None:
    app = fake_app()
    run = DemoProvisionRun(threading.Event())
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot, run)
    assert run.cancelled.is_set()

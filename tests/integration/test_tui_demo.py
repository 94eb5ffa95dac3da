"""`cockpit --demo` under a Pilot, on the app `--demo` builds: it says it is a simulated cluster, shows its eight
nodes, moves on poll by poll (the sweep's rows, the GPUs' readings, the jobs' elapsed times), opens its runs on the
results screen, and records its actions and answers them as a demo; all of it without a configuration, a
connection or a process. And `--demo --web` serves the demo."""

from __future__ import annotations

import shlex
import socket
import subprocess
from collections.abc import Callable

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from cockpit.tui import main as cockpit_main
from cockpit.tui.app import CockpitApp
from cockpit.tui.demo import DemoSource
from cockpit.tui.screens.confirm import ConfirmScreen
from cockpit.tui.screens.dashboard import DashboardScreen
from cockpit.tui.screens.provision import ProvisionScreen
from cockpit.tui.screens.results import ResultsScreen
from cockpit.tui.web import app_command

SIZE = (120, 36)
TP = "tiny_pp1_tp2_n2"  # the strategy the demo's sweep is running when it starts


@pytest.fixture
def reached(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What tried to connect anywhere or start a process (and was refused): nothing, for the demo."""
    attempts: list[str] = []

    def refuse(what: str) -> Callable[..., None]:
        def refused(*args: object, **kwargs: object) -> None:
            attempts.append(f"{what}{args}")
            raise OSError(f"the demo may not {what}")

        return refused

    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect"))
    monkeypatch.setattr(subprocess, "Popen", refuse("start a process"))
    monkeypatch.setattr(cockpit_main, "load_settings", refuse("read a configuration"))
    return attempts


def demo_app(*options: str) -> CockpitApp:
    return cockpit_main.build_app(cockpit_main.build_parser().parse_args(["--demo", *options]))


async def settle(pilot: Pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def until(pilot: Pilot, check: Callable[[], bool], what: str) -> None:
    for _ in range(100):
        if check():
            return
        await settle(pilot)
    raise AssertionError(f"never came: {what}")


def cell(app: CockpitApp, table: str, row: str, column: str) -> str:
    return str(app.screen.query_one(f"#{table}", DataTable).get_cell(row, column))


def rows_written(app: CockpitApp) -> int:
    return int(cell(app, "sweep", TP, "rows").split("/")[0])


async def test_the_demo_is_a_live_simulated_cluster(reached: list[str]) -> None:
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.sub_title == "cluster demo (simulated) · slurm scheduler"
        nodes = app.screen.query_one("#nodes", DataTable)
        assert [key.value for key in nodes.rows] == [f"node{i}/0" for i in range(8)]
        assert str(app.screen.query_one("#nodes-title", Static).render()) == "Nodes · 8 up"
        assert cell(app, "nodes", "node3/0", "gpu") == "0 Arc A770"
        before = (rows_written(app), cell(app, "nodes", "node0/0", "util %"), cell(app, "queue", "1003", "elapsed"))
        assert cell(app, "sweep", f"{TP}/1", "note") == "⚠ no heartbeat for 42 s"
        for _ in range(4):  # the timers may poll too: the data only moves further
            for feed in app.feeds.values():
                app.poll(feed)
            await settle(pilot)
        written, util, elapsed = before
        assert rows_written(app) > written
        assert cell(app, "nodes", "node0/0", "util %") != util
        assert cell(app, "queue", "1003", "elapsed") > elapsed  # m:ss, under ten minutes: compares as text
        assert cell(app, "sweep", f"{TP}/1", "note") == ""  # the stalled rank caught up
        await pilot.press("o")
        await until(pilot, lambda: isinstance(app.screen, ResultsScreen) and bool(app.screen.cache), "the results")
        runs = app.screen.query_one("#runs", DataTable)
        assert runs.row_count == 4 and app.screen.query_one("#summary", DataTable).row_count == 3
    assert reached == []


async def test_the_demo_records_its_actions_and_answers_them_as_a_demo(reached: list[str]) -> None:
    app = demo_app()
    told: list[str] = []
    async with app.run_test(size=SIZE) as pilot:
        app.notify = lambda message, **_: told.append(message)  # type: ignore[method-assign]
        await settle(pilot)
        await pilot.press("w")  # node0, under the cursor
        await settle(pilot)
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(pilot)
        app.screen.query_one("#queue", DataTable).focus()
        await pilot.press("x", "y")  # job 1000, under the queue's cursor
        await settle(pilot)
        await pilot.press("s", "enter")  # the form as it comes: the quick look
        await settle(pilot)
        assert isinstance(app.screen, DashboardScreen)
        await pilot.press("c", "y")
        await until(pilot, lambda: isinstance(app.screen, ProvisionScreen), "the provisioning screen")
        screen = app.screen
        assert isinstance(screen, ProvisionScreen)
        await until(pilot, lambda: not screen.board.running, "the demo's playbook run to end")
        assert [row.host for _, row in screen.board.host_rows()] == ["node0"]  # the playbook ran on the node asked
    source = app.source
    assert isinstance(source, DemoSource)
    assert source.actions == [
        ("wake", "node0"),
        ("off", "node0"),
        ("cancel", "1000"),
        ("sweep", "max_new_tokens=8", "prompt_limit=1", "warmup_batches=0"),
        ("configure", "node0"),
    ]
    assert told == [
        "simulated wake (demo: no magic packet sent): node0",
        "simulated shutdown (demo: nothing sent): node0",
        "simulated cancel (demo: nothing sent) of job: 1000",
        "simulated start (demo: nothing runs) with max_new_tokens=8, prompt_limit=1, warmup_batches=0",
    ]
    assert reached == []


def test_demo_web_serves_the_demo(reached: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[str] = []
    monkeypatch.setattr("cockpit.tui.web.serve", lambda command, host, port: served.append(command))
    assert cockpit_main.main(["--demo", "--web", "--read-only"]) == 0
    (command,) = served
    assert shlex.split(command)[1:] == ["-m", "cockpit.tui.main", "--demo", "--read-only"]
    assert app_command(None, False, False) == shlex.join(shlex.split(command)[:3])  # no --config: none was read
    assert reached == []

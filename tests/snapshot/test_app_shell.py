"""The app at a fixed size on fixed data: the dashboard, the info screen and help as snapshots (some at the most
common terminal size), on the demo's simulated cluster and a fake clock, and the key bindings under a Pilot."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from cockpit.config import (
    CockpitFile,
    ModelSection,
    PathsSection,
    RefreshSection,
    RuntimeSection,
    Settings,
    WakeOnLanSection,
)
from cockpit.nodes.leases import Lease
from cockpit.tui.app import CockpitApp
from cockpit.tui.demo import DemoSource
from cockpit.tui.screens.dashboard import DashboardScreen
from cockpit.tui.screens.help import HelpScreen
from cockpit.tui.screens.info import InfoScreen

SIZE = (120, 36)
COMMON = (80, 24)  # the most common terminal size: every screen has a snapshot at it


STILL = RefreshSection(nodes_s=3600.0, squeue_s=3600.0, shards_s=3600.0)  # one poll each: a slow run sees no more


class FakeClock:
    """A clock that stands still, so ages and staleness marks are the same on every run."""

    def __call__(self) -> float:
        return 5000.0


def fixed_settings(
    model_path: str = "/nonexistent/models/tiny-llama", delivery: Literal["shared", "venv", "apptainer"] = "shared"
) -> Settings:
    """Settings that read nothing from this machine: every path absolute, the model absent."""
    file = CockpitFile(
        paths=PathsSection(data_dir="/srv/cockpit"),
        model=ModelSection(path=model_path),
        wake_on_lan=WakeOnLanSection(broadcast="10.77.0.255"),
        runtime=RuntimeSection(delivery=delivery),
        refresh=STILL,
    )
    return Settings(file, Path("/etc/cockpit/cockpit.toml"))


def fake_app(read_only: bool = False, **fleet: object) -> CockpitApp:
    source = DemoSource(**{"nodes": 3, "gpus": 2, "jobs": 5, "unreachable": ("node2",), **fleet})
    return CockpitApp(fixed_settings(), source, read_only=read_only, clock=FakeClock())


async def settle(pilot: Pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_dashboard_snapshot(snap_compare) -> None:
    assert snap_compare(fake_app(), terminal_size=SIZE, run_before=settle)


class IdleDemoSource(DemoSource):
    """The demo's cluster with no sweep ever run: what a fresh install shows."""

    async def sweep(self) -> None:
        return None


def test_empty_dashboard_snapshot(snap_compare) -> None:
    """A fresh install at 80x24 (the embedded default, nothing running or queued): the hint says what s starts and
    how long it takes, and the footer holds every key it shows."""
    embedded = Settings(fixed_settings().file)
    app = CockpitApp(embedded, IdleDemoSource(nodes=1, jobs=0), clock=FakeClock())
    assert snap_compare(app, terminal_size=(80, 24), run_before=settle)


def test_dashboard_unknown_host_snapshot(snap_compare) -> None:
    """A DHCP lease whose MAC is no node's: a row after the nodes, its address and DHCP name in the gpu column."""
    leases = (Lease("e2:b9:1a:61:30:9f", "192.168.1.146", "ubuntu", 1796353264),)
    assert snap_compare(fake_app(unknown_hosts=leases), terminal_size=SIZE, run_before=settle)


def test_dashboard_runtime_snapshot(snap_compare) -> None:
    """A venv delivery: node0 runs the build made here, node1 another one (marked ≠), node2 does not answer."""
    installed = {"node0": "0.1.0-3f2a9c1b7d4e", "node1": "0.1.0-0c55e1d2a9b7"}
    source = DemoSource(
        nodes=3, gpus=2, jobs=5, unreachable=("node2",), installed=installed, built="0.1.0-3f2a9c1b7d4e"
    )
    app = CockpitApp(fixed_settings(delivery="venv"), source, clock=FakeClock())
    assert snap_compare(app, terminal_size=SIZE, run_before=settle)


def test_info_snapshot(snap_compare) -> None:
    async def open_info(pilot: Pilot) -> None:
        await settle(pilot)
        await pilot.press("i")
        await settle(pilot)

    assert snap_compare(fake_app(read_only=True), terminal_size=COMMON, run_before=open_info)


def test_help_snapshot(snap_compare) -> None:
    async def open_help(pilot: Pilot) -> None:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(fake_app(), terminal_size=COMMON, run_before=open_help)  # the keys scroll in the box


async def test_model_status_comes_from_disk(tiny_model_dir: Path) -> None:
    app = CockpitApp(fixed_settings(model_path=str(tiny_model_dir)), DemoSource(), clock=FakeClock())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("i")
        await settle(pilot)
        table = app.screen.query_one("#overview", DataTable)
        assert table.get_cell("model", "value").startswith("tiny-llama: ready, ")
        assert table.get_cell("model", "value").endswith(" MiB")
        assert table.get_cell("model path", "value") == str(tiny_model_dir)


async def test_tables_update_by_keyed_diffs() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        nodes = app.screen.query_one("#nodes", DataTable)
        keys = [key.value for key in nodes.rows]
        assert keys == ["node0/0", "node0/1", "node1/0", "node1/1", "node2/-"]
        before = str(nodes.get_cell("node0/0", "util %"))
        app.poll(app.feeds["nodes"])  # the next tick: new readings, the same rows updated in place
        await settle(pilot)
        assert [key.value for key in nodes.rows] == keys
        assert str(nodes.get_cell("node0/0", "util %")) != before
        assert len(str(nodes.get_cell("node0/0", "util %")).split()[1]) == 2  # the sparkline grew
        queue = app.screen.query_one("#queue", DataTable)
        assert [key.value for key in queue.rows] == ["1000", "1001", "1002", "1003", "1004"]


async def test_a_node_that_lacks_the_model_is_marked() -> None:
    app = fake_app(lacking_model={"node1": "model differs"})
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        nodes = app.screen.query_one("#nodes", DataTable)
        assert str(nodes.get_cell("node0/0", "state")) == "up"
        assert str(nodes.get_cell("node1/0", "state")) == "up · model differs"
        problems = str(app.screen.query_one("#nodes-problems", Static).render())
        assert "node1: model differs" in problems


async def test_keys_help_info_and_quit() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        rows = app.screen.query_one("#help-keys", DataTable)
        actions = [rows.get_row_at(i)[1] for i in range(rows.row_count)]
        assert {"Help", "Cluster info", "Quit"} <= set(actions)
        await pilot.press("escape")
        await pilot.press("i")
        assert isinstance(app.screen, InfoScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0

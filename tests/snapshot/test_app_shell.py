"""The cockpit's frame: snapshots at a fixed size on fixed settings, and its key bindings under a Pilot."""

from __future__ import annotations

from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import DataTable

from cockpit.config import CockpitFile, ModelSection, PathsSection, Settings, WakeOnLanSection
from cockpit.tui.app import CockpitApp
from cockpit.tui.screens.help import HelpScreen

SIZE = (100, 24)


def fixed_settings(model_path: str = "/nonexistent/models/tiny-llama") -> Settings:
    """Settings that read nothing from this machine: every path absolute, the model absent."""
    file = CockpitFile(
        paths=PathsSection(data_dir="/srv/cockpit"),
        model=ModelSection(path=model_path),
        wake_on_lan=WakeOnLanSection(broadcast="10.77.0.255"),
    )
    return Settings(file, Path("/etc/cockpit/cockpit.toml"))


async def settle(pilot: Pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_shell_snapshot(snap_compare) -> None:
    assert snap_compare(CockpitApp(fixed_settings()), terminal_size=SIZE, run_before=settle)


def test_shell_read_only_snapshot(snap_compare) -> None:
    assert snap_compare(CockpitApp(fixed_settings(), read_only=True), terminal_size=SIZE, run_before=settle)


def test_help_snapshot(snap_compare) -> None:
    async def open_help(pilot: Pilot) -> None:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(CockpitApp(fixed_settings()), terminal_size=SIZE, run_before=open_help)


async def test_model_status_comes_from_disk(tiny_model_dir: Path) -> None:
    app = CockpitApp(fixed_settings(model_path=str(tiny_model_dir)))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.query_one("#overview", DataTable)
        assert table.get_cell("model", "value").startswith("tiny-llama: ready, ")
        assert table.get_cell("model", "value").endswith(" MiB")
        assert table.get_cell("model path", "value") == str(tiny_model_dir)


async def test_keys_help_and_quit() -> None:
    app = CockpitApp(fixed_settings())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        rows = app.screen.query_one("#help-keys", DataTable)
        assert [rows.get_row_at(i)[1] for i in range(rows.row_count)] == ["Help", "Quit"]
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0

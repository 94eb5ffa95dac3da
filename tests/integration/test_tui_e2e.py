"""End to end on the embedded default: a person starts a sweep from the app's form, watches it on the dashboard,
and reads its report on the results screen, which opens on its own when the sweep completes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static

from cockpit.config import load_settings
from cockpit.tui.app import CockpitApp
from cockpit.tui.screens.results import ResultsScreen
from cockpit.tui.sources import LiveSource
from tests.integration.test_tui_live import SIZE, wait_until

FORM = {"nodes": "2", "gpus_per_node": "1", "prompt_limit": "2", "max_new_tokens": "4"}


@pytest.mark.slow
@pytest.mark.usefixtures("isolated_home")
async def test_start_a_sweep_from_the_app_and_read_its_report(tiny_model_dir: Path) -> None:
    settings = load_settings()
    shutil.copytree(tiny_model_dir, settings.model_path)  # where the embedded default keeps its model
    app = CockpitApp(settings, LiveSource(settings))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        await pilot.pause()
        for name, value in FORM.items():
            app.screen.query_one(f"#field-{name}", Input).value = value
        await pilot.press("enter")
        sweep = app.feeds["sweep"]
        await wait_until(pilot, lambda: sweep.value is not None, 60, "the sweep on the dashboard")
        run = sweep.value
        assert run is not None
        assert [s.strategy_id for s in run.strategies] == ["tiny_pp1_tp1_n1", "tiny_pp1_tp2_n2", "tiny_pp2_tp1_n2"]
        await wait_until(
            pilot, lambda: sweep.value is not None and sweep.value.state not in ("planned", "running"), 540, "its end"
        )
        assert sweep.value.state == "completed", (run.run_dir / "sweep.log").read_text()[-3000:]
        await wait_until(pilot, lambda: isinstance(app.screen, ResultsScreen), 10, "the results screen")
        await pilot.pause()  # composed
        assert isinstance(app.screen, ResultsScreen) and app.screen.selected == run.run_dir
        summary = app.screen.query_one("#summary", DataTable)
        await wait_until(pilot, lambda: summary.row_count == 3, 60, "the report's three strategies")
        (shown,) = app.screen.cache.values()
        files = str(app.screen.query_one("#report-files", Static).render())
        assert f"results/summary_{run.run_id}.md" in files  # the sweep process wrote its report
        verdict = (run.run_dir / "results" / f"summary_{run.run_id}.md").read_text().splitlines()[2]
        assert shown.run_id == run.run_id and shown.winner.splitlines()[0] == verdict  # as the report says it

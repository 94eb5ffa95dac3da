"""Every action key under a Pilot, on the demo's simulated cluster (which only records what it is asked to do), the
confirmations of destructive ones, `--read-only`, the command palette, and snapshots of the modals and views."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Checkbox, DataTable, Input, Select, Static

from cockpit.config import ClusterSection, Settings, SweepSection
from cockpit.tui.app import CockpitApp
from cockpit.tui.demo import PP_TICKS, RUNNING_RUN, RUNS_DIR, TP_TICKS, DemoSource
from cockpit.tui.screens.confirm import ConfirmScreen
from cockpit.tui.screens.dashboard import DashboardScreen
from cockpit.tui.screens.provision import ProvisionScreen
from cockpit.tui.screens.results import ResultsScreen
from cockpit.tui.screens.sweep_form import SweepFormScreen, parse_overrides, start_hint
from tests.snapshot.test_app_shell import COMMON, SIZE, FakeClock, fake_app, fixed_settings, settle

TALL = (120, 50)  # the sweep form's tall layout: a line per strategy in its memory plan


def recorded(app: CockpitApp) -> list[tuple[str, ...]]:
    source = app.source
    assert isinstance(source, DemoSource)
    return source.actions


def title(app: CockpitApp, panel: str) -> str:
    return str(app.screen.query_one(f"#{panel}-title", Static).render())


async def press_and_settle(pilot: Pilot, *keys: str) -> None:
    await pilot.press(*keys)
    await settle(pilot)


async def test_wake_the_cursor_node_the_marked_ones_and_all() -> None:
    app = fake_app(unreachable=())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press_and_settle(pilot, "w")  # the cursor is on node0's first GPU row
        await press_and_settle(pilot, "space", "down", "down", "down", "down", "space", "w")  # node0 and node2
        assert "2 marked" in title(app, "nodes")
        await press_and_settle(pilot, "W")
        assert recorded(app) == [("wake", "node0"), ("wake", "node0", "node2"), ("wake", "node0", "node1", "node2")]
        assert app.board.state("node1") == "up"  # it answered on the poll after the wake


@pytest.mark.parametrize(("key", "expected"), [("d", ("off", "node0")), ("r", ("reboot", "node0"))])
async def test_power_actions_ask_first(key: str, expected: tuple[str, ...]) -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press_and_settle(pilot, key)
        assert isinstance(app.screen, ConfirmScreen)
        await press_and_settle(pilot, "n")
        assert isinstance(app.screen, DashboardScreen)
        assert recorded(app) == []
        await press_and_settle(pilot, key, "y")
        assert recorded(app) == [expected]


async def test_configure_asks_then_follows_the_run() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press_and_settle(pilot, "c")
        assert isinstance(app.screen, ConfirmScreen)
        await press_and_settle(pilot, "y")
        assert recorded(app) == [("configure", "node0")]
        assert isinstance(app.screen, ProvisionScreen)


async def test_cancel_the_job_under_the_cursor() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.screen.query_one("#queue", DataTable).focus()
        await press_and_settle(pilot, "down", "x")
        assert isinstance(app.screen, ConfirmScreen)
        await press_and_settle(pilot, "y")
        assert recorded(app) == [("cancel", "1001")]


async def test_finished_jobs_on_demand_and_back() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press_and_settle(pilot, "f")
        assert title(app, "queue").startswith("Finished · 3 job(s)")
        queue = app.screen.query_one("#queue", DataTable)
        assert {str(queue.get_cell(k, "state")) for k in queue.rows} == {"COMPLETED"}
        await press_and_settle(pilot, "f")
        assert title(app, "queue").startswith("Queue · 5 job(s)")


async def test_filter_narrows_every_table_and_escape_clears_it() -> None:
    app = fake_app(jobs=30)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"node1")
        await settle(pilot)
        nodes = app.screen.query_one("#nodes", DataTable)
        assert [k.value for k in nodes.rows] == ["node1/0", "node1/1"]
        queue = app.screen.query_one("#queue", DataTable)
        assert all("node1" in " ".join(map(str, queue.get_row(k))) for k in queue.rows)
        assert "filter 'node1'" in title(app, "nodes")
        await press_and_settle(pilot, "enter")  # keeps the filter, back to the tables
        assert app.screen.query_one("#filter", Input).value == "node1"
        await press_and_settle(pilot, "escape")
        assert len(nodes.rows) == 5


async def test_sweep_form_starts_a_sweep_with_the_changed_fields() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press_and_settle(pilot, "s")
        assert isinstance(app.screen, SweepFormScreen)
        field = app.screen.query_one("#field-prompt_limit", Input)
        field.value = "x"
        await press_and_settle(pilot, "enter")
        assert "prompt_limit: expected a whole number" in str(app.screen.query_one("#sweep-form-error").render())
        field.value = "2"
        await press_and_settle(pilot, "enter")
        assert isinstance(app.screen, DashboardScreen)
        assert recorded(app) == [("sweep", "prompt_limit=2")]
        await press_and_settle(pilot, "s")
        app.screen.query_one("#field-profile", Checkbox).value = True
        await press_and_settle(pilot, "enter")
        assert recorded(app)[-1] == ("sweep", "profile=True")
        await press_and_settle(pilot, "s")
        app.screen.query_one("#field-precision", Select).value = "int8"
        await press_and_settle(pilot, "enter")
        assert recorded(app)[-1] == ("sweep", "precision=int8")


def plan_said(app: CockpitApp) -> tuple[str, str]:
    """The sweep form's memory plan: its summary line and its per-strategy lines."""
    summary, lines = (app.screen.query_one(f"#sweep-form-plan{part}", Static) for part in ("", "-lines"))
    return str(summary.render()), str(lines.render())


async def test_the_forms_memory_plan_skips_what_cannot_fit_and_prefers_telemetry(tiny_model_dir: Path) -> None:
    """With `[cluster] device_memory_gib = 0.1` and no node answering, the form says before anything starts that
    the reference cannot fit, in the sweep's own sentence; once node0's telemetry is in, its figure is the one held
    against, and said so. On a tall terminal (each strategy a line) and on a short one (the summary alone)."""
    file = fixed_settings(model_path=str(tiny_model_dir)).file
    settings = Settings(dataclasses.replace(file, cluster=ClusterSection(device_memory_gib=0.1)), Path("/x.toml"))
    unanswered = CockpitApp(settings, DemoSource(nodes=1, unreachable=("node0",)), clock=FakeClock())
    async with unanswered.run_test(size=TALL) as pilot:
        await press_and_settle(pilot, "s")
        summary, lines = plan_said(unanswered)
        assert (
            summary == "memory plan: 5 skipped · this machine's host memory: 0.1 GiB, from [cluster] device_memory_gib"
        )
        assert re.fullmatch(
            r"single-device reference: needs \d+\.\d GiB, this machine's host memory has 0\.1 GiB: skipped; "
            r"use a smaller model",
            lines.splitlines()[0],
        )
    xpu = dataclasses.replace(settings.file, sweep=SweepSection(device="xpu"))
    answered = CockpitApp(Settings(xpu, Path("/x.toml")), DemoSource(nodes=1), clock=FakeClock())
    async with answered.run_test(size=COMMON) as pilot:
        await settle(pilot)
        await press_and_settle(pilot, "s")
        summary, _ = plan_said(answered)
        assert summary == "memory plan: 5 fit · node0's Arc A770: 16.0 GiB, from telemetry"
        assert not answered.screen.query_one("#sweep-form-plan-lines").display  # short: the summary alone


async def test_the_built_in_models_form_opens_on_the_quick_look_and_full_is_one_field_away() -> None:
    app = CockpitApp(Settings(fixed_settings().file), DemoSource(nodes=1), clock=FakeClock())  # the embedded default
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press_and_settle(pilot, "s", "enter")
        assert recorded(app) == [("sweep", "max_new_tokens=8", "prompt_limit=1", "warmup_batches=0")]
        await press_and_settle(pilot, "s")
        app.screen.query_one("#field-size", Select).value = "full"
        await settle(pilot)
        assert app.screen.query_one("#field-prompt_limit", Input).value == "0"
        await press_and_settle(pilot, "enter")
        assert recorded(app)[-1] == ("sweep",)


def test_start_hint_says_what_s_starts() -> None:
    embedded, configured = Settings(fixed_settings().file), fixed_settings()
    assert "the 4 parallelism strategies and the reference on the built-in model here" in start_hint(embedded, False)
    assert "on tiny-llama (local scheduler)" in start_hint(configured, False)
    assert "read-only: a sweep starts with `cluster sweep run`" in start_hint(configured, True)


async def test_results_open_when_the_sweep_the_form_started_completes() -> None:
    app = fake_app()
    source = app.source
    assert isinstance(source, DemoSource)

    async def sweep_poll(tick: int) -> None:
        source.ticks["sweep"] = tick - 1
        app.poll(app.feeds["sweep"])
        await settle(pilot)

    completed = TP_TICKS + PP_TICKS + 1  # the demo's sweep is completed from this poll on
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await sweep_poll(completed)
        assert isinstance(app.screen, DashboardScreen)  # a sweep this app did not start opens nothing
        await press_and_settle(pilot, "s", "enter")
        await sweep_poll(1)
        assert isinstance(app.screen, DashboardScreen)  # still running
        await sweep_poll(completed)
        assert isinstance(app.screen, ResultsScreen)
        assert app.screen.selected == RUNS_DIR / RUNNING_RUN
        await press_and_settle(pilot, "escape")
        await sweep_poll(completed)
        assert isinstance(app.screen, DashboardScreen)  # once


def test_parse_overrides_keeps_only_what_changed() -> None:
    defaults = fixed_settings().sweep
    values = {"nodes": "2", "prompt_limit": " 3 ", "time_limit": "00:10:00"}
    assert parse_overrides(values, defaults) == {"prompt_limit": 3, "time_limit": "00:10:00"}
    assert parse_overrides({"prompt_limit": "0"}, defaults) == {}
    with pytest.raises(ValueError, match="nodes: expected a whole number of at least 1, got '0'"):
        parse_overrides({"nodes": "0"}, defaults)


async def test_enter_on_the_sweep_and_o_open_results() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.screen.query_one("#sweep", DataTable).focus()
        await press_and_settle(pilot, "enter")
        assert isinstance(app.screen, ResultsScreen)
        await press_and_settle(pilot, "escape", "o")
        assert isinstance(app.screen, ResultsScreen)


async def test_read_only_disables_every_action() -> None:
    app = fake_app(read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for key in ("w", "W", "c", "r", "d", "s"):
            await press_and_settle(pilot, key)
            assert isinstance(app.screen, DashboardScreen), key
        app.screen.query_one("#queue", DataTable).focus()
        await press_and_settle(pilot, "x")
        assert isinstance(app.screen, DashboardScreen)
        assert recorded(app) == []
        await press_and_settle(pilot, "f")  # looking is still allowed
        assert title(app, "queue").startswith("Finished")
        assert "read-only" in app.sub_title


async def test_palette_runs_actions_and_hides_them_when_read_only() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p", *"Wake all nodes")
        await pilot.pause(0.5)
        await press_and_settle(pilot, "enter")
        assert recorded(app) == [("wake", "node0", "node1", "node2")]
    app = fake_app(read_only=True)
    async with app.run_test(size=SIZE):
        titles = [command.title for command in app.get_system_commands(app.screen)]
    assert "Open results" in titles and "Show finished jobs" in titles
    assert "Wake all nodes" not in titles and "Start a sweep" not in titles


async def test_help_lists_the_screens_keys() -> None:
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press_and_settle(pilot, "question_mark")
        rows = app.screen.query_one("#help-keys", DataTable)
        actions = [rows.get_row_at(i)[1] for i in range(rows.row_count)]
        for wanted in ("Wake", "Configure", "Shut down", "Cancel job", "Filter", "Sweep", "Results", "Quit"):
            assert wanted in actions
        groups = [str(key) for key, action in (rows.get_row_at(i) for i in range(rows.row_count)) if not action]
        assert groups == ["Dashboard", "Everywhere", "General", "Tables"]  # the cockpit's first, the cursor keys last


def test_confirm_snapshot(snap_compare) -> None:
    async def ask(pilot: Pilot) -> None:
        await settle(pilot)
        await press_and_settle(pilot, "space", "down", "down", "space", "d")

    assert snap_compare(fake_app(), terminal_size=COMMON, run_before=ask)


def test_sweep_form_snapshot(snap_compare) -> None:
    """24 lines: each field, the box and the buttons take one, so Start stays in view."""

    async def open_form(pilot: Pilot) -> None:
        await settle(pilot)
        await press_and_settle(pilot, "s")

    assert snap_compare(fake_app(), terminal_size=COMMON, run_before=open_form)


def test_filtered_finished_snapshot(snap_compare) -> None:
    async def narrow(pilot: Pilot) -> None:
        await settle(pilot)
        await press_and_settle(pilot, "f", "slash", *"100")

    assert snap_compare(fake_app(), terminal_size=COMMON, run_before=narrow)


def test_small_terminal_snapshot(snap_compare) -> None:
    """60x20: cramped, but every panel is still there and says what it holds."""
    assert snap_compare(fake_app(), terminal_size=(60, 20), run_before=settle)


class HungQueueSource(DemoSource):
    """A demo cluster whose squeue never answers."""

    async def queue(self) -> list:
        await asyncio.sleep(3600)
        return []


async def test_a_hung_queue_is_marked_while_the_rest_stays_live() -> None:
    app = CockpitApp(fixed_settings(), HungQueueSource(nodes=2, failing=("node1",)), clock=FakeClock())
    app.feeds["queue"].timeout_s = 0.2
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert title(app, "queue") == "Queue · 0 job(s), 0 running ⚠ no data yet · queue: no answer within 0.2 s"
        assert len(app.screen.query_one("#nodes", DataTable).rows) == 2
        assert str(app.screen.query_one("#nodes-problems", Static).render()) == (
            "⚠ node1: probe output is not JSON: 'Segmentation fault'"
        )
        assert app.board.state("node1") == "failing"

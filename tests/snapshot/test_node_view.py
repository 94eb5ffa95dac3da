"""A node's own view: a snapshot at 80x24 on fake telemetry recorded for the test (two GPUs over five minutes, one
with a reading it cannot give), `enter` and `S` from the dashboard and the view under a Pilot, and its lines."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from cockpit.config import ClusterSection, RefreshSection, Settings
from cockpit.jobs.queue import QueueRow
from cockpit.nodes.telemetry import GpuTelemetry, NodeSample, NodeTelemetry
from cockpit.tui.app import CockpitApp
from cockpit.tui.demo import DemoSource
from cockpit.tui.screens.dashboard import DashboardScreen
from cockpit.tui.screens.node import NodeScreen, gpu_line, runs_on, thinned
from tests.snapshot.test_app_shell import fake_app, fixed_settings, settle

SMALL = (80, 24)
POLL_S = 2.0


class SteppingClock:
    """A clock the test moves by hand, one poll interval at a time."""

    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class FakeGpuWithReasons(GpuTelemetry):
    """A GPU reading as the probe gives one where a driver does not expose a figure: why, by field."""

    unknown: dict[str, str] = field(default_factory=dict)


def fake_recorded_sample(poll: int) -> NodeSample:
    """node0's fake telemetry at `poll` (2 s apart): idle for a minute, then a job whose load swings; GPU 1's
    driver gives no power reading. Poll 100 gets no answer."""
    if poll == 100:
        return NodeSample("node0", None, "no answer within 5 s (connect timeout)", None)
    busy = poll >= 30
    util = 55 + 40 * math.sin(poll / 9) if busy else 2.0
    gpus = tuple(
        FakeGpuWithReasons(
            index=g,
            vendor="intel",
            name="Intel(R) Arc(TM) A770 Graphics",
            source="sysfs",
            pci_bus_id=f"0000:{3 + g:02x}:00.0",
            util_pct=round(max(0.0, util - 15 * g), 1),
            memory_used_mib=(9000.0 + 100 * g if busy else 300.0),
            memory_total_mib=16288.0,
            temperature_c=round(38 + (util - 2) * 0.4 + g, 1),
            power_w=round(35 + util * 1.6, 1) if g == 0 else None,
            energy_j=None,
            unknown={} if g == 0 else {"power_w": "i915 hwmon has no power1_input"},
        )
        for g in range(2)
    )
    telemetry = NodeTelemetry("node0", 7200.0, (1.2, 0.9, 0.5), 16, 65536.0, 40960.0, gpus, ())
    return NodeSample("node0", telemetry, None, 1.0 + poll % 3)


def node_app(clock: SteppingClock) -> CockpitApp:
    """The demo's cluster on Slurm, its feeds polled once (the test feeds the board itself)."""
    base = fixed_settings()
    file = replace(base.file, cluster=ClusterSection(scheduler="slurm"), refresh=RefreshSection(3600, 3600, 3600))
    return CockpitApp(Settings(file, base.source), DemoSource(nodes=3, gpus=2, jobs=5), clock=clock)


async def open_recorded_node(pilot: Pilot, clock: SteppingClock) -> None:
    """Five minutes of the fake recording into the board, then `enter` on node0's row."""
    await settle(pilot)
    pilot.app.board.trace.clear()  # the recording in place of the demo's own first poll
    for poll in range(150):
        clock.now += POLL_S
        pilot.app.board.ingest([fake_recorded_sample(poll)])
    await pilot.press("enter")
    await settle(pilot)


def test_node_view_on_fake_recorded_telemetry_snapshot(snap_compare) -> None:
    clock = SteppingClock()
    assert snap_compare(node_app(clock), terminal_size=SMALL, run_before=lambda p: open_recorded_node(p, clock))


async def test_enter_on_a_node_opens_its_view_which_follows_the_polls_and_s_asks_for_a_shell() -> None:
    app = fake_app()
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot)
        nodes = app.screen.query_one("#nodes", DataTable)
        nodes.move_cursor(row=nodes.get_row_index("node1/1"))
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, NodeScreen) and app.screen.node == "node1"
        facts = app.screen.query_one("#node-facts", Static)
        before, polled = str(facts.render()), len(app.board.trace["node1", 0])
        assert before.startswith("node1 · up") and "jobs: 1000 llama8b_pp2_tp1_n2_0 RUNNING" in before
        app.poll(app.feeds["nodes"])  # the dashboard's next poll: the view shows its readings
        await settle(pilot)
        assert str(facts.render()) != before
        assert len(app.board.trace["node1", 0]) > polled
        await pilot.press("S")  # the demo's nodes are simulated: said, no shell
        await settle(pilot)
        assert [n.message for n in app._notifications] == [
            "node1 is simulated (demo): there is no machine to open a shell on"
        ]
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, DashboardScreen)


async def test_read_only_hides_the_shell() -> None:
    app = fake_app(read_only=True)
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot)
        assert not app.screen.check_action("shell", ())
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, NodeScreen) and not app.screen.check_action("shell", ())
        assert "S" not in app.screen.active_bindings


def test_a_gpu_line_says_which_figure_is_unknown_and_why() -> None:
    sample = fake_recorded_sample(40)
    assert sample.telemetry is not None
    first, second = (str(gpu_line(gpu)) for gpu in sample.telemetry.gpus)
    assert first.startswith("gpu 0 Intel Arc A770 Graphics (sysfs): util ")
    assert first.endswith(" W") and "unknown" not in first
    assert second.endswith("· power unknown (i915 hwmon has no power1_input)")
    bare = GpuTelemetry(0, "intel", None, "sysfs", None, None, None, 16288.0, None, 35.0, None)  # no reasons given
    assert str(gpu_line(bare)) == "gpu 0 intel (sysfs): util unknown · memory unknown · temperature unknown · 35 W"


def test_a_job_runs_on_the_nodes_its_list_names() -> None:
    row = QueueRow("7", "sweep", None, "RUNNING", None, "node[0-1,4],gpu3", 10.0, None, None, None)
    assert [runs_on(row, name) for name in ("node0", "node4", "gpu3", "node2")] == [True, True, True, False]
    assert not runs_on(replace(row, nodes=None), "node0")
    assert runs_on(replace(row, nodes="odd[name,node0"), "node0")  # unreadable: the names between its commas


def test_long_lines_are_thinned_to_runs_averaged_from_the_latest() -> None:
    points = [(float(t), float(t % 2)) for t in range(7)]
    assert thinned(points, most=7) == points
    assert thinned(points, most=3) == [(0.0, 0.0), (2.0, 2 / 3), (5.0, 1 / 3)]

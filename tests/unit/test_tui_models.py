"""The dashboard's headless models: feeds (one poll in flight, timeout, last good value kept and marked stale),
the node board (states, staleness, sparklines, each node's runtime build), driven by a fake clock, and where the
live source finds the runtime builds."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from cockpit.config import CockpitFile, PathsSection, RuntimeSection, Settings
from cockpit.delivery.verify import current_manifest_path
from cockpit.nodes.telemetry import GpuTelemetry, NodeSample, NodeTelemetry, RuntimeBuild
from cockpit.tui.feeds import Feed
from cockpit.tui.node_board import COLUMNS, NodeBoard, sparkline
from cockpit.tui.sources import LiveSource
from runtime.contract import BuildManifest


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_feed_keeps_the_last_good_value_and_marks_it_stale() -> None:
    clock = FakeClock()
    answers: list[object] = [["a"], RuntimeError("squeue: connection refused")]

    async def fetch() -> list[str]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    feed: Feed[list[str]] = Feed("queue", fetch, interval_s=3, timeout_s=1, clock=clock)
    assert feed.mark() == "" and not feed.stale  # nothing yet, nothing failed
    assert await feed.poll() and feed.value == ["a"] and not feed.stale
    clock.now += 4
    assert await feed.poll()
    assert feed.value == ["a"] and feed.error == "queue: squeue: connection refused"
    assert feed.stale and feed.mark() == " ⚠ stale 4 s"


async def test_feed_times_out_and_never_runs_two_polls_at_once() -> None:
    release = asyncio.Event()
    calls = 0

    async def slow() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return calls

    feed: Feed[int] = Feed("nodes", slow, interval_s=2, timeout_s=5)
    first = asyncio.create_task(feed.poll())
    await asyncio.sleep(0)
    assert feed.in_flight and not await feed.poll()  # the second poll is skipped, not queued
    release.set()
    assert await first and feed.value == 1 and calls == 1

    async def hung() -> int:
        await asyncio.sleep(60)
        return 0

    stuck: Feed[int] = Feed("nodes", hung, interval_s=2, timeout_s=0.05)
    assert await stuck.poll() and stuck.error == "nodes: no answer within 0.05 s" and not stuck.in_flight


def telemetry(util: float | None) -> NodeTelemetry:
    gpu = GpuTelemetry(0, "intel", "Arc A770", "xpu-smi", None, util, 2048.0, 16384.0, 55.0, 120.0, None)
    return NodeTelemetry("node0", 3600.0, (0.5, 0.4, 0.3), 16, 32768.0, 16384.0, (gpu,), ())


def test_node_board_states_staleness_and_sparklines() -> None:
    clock = FakeClock()
    board = NodeBoard(["node0", "node1"], clock=clock)
    assert board.state("node0") == "unknown"
    for util in (10.0, 50.0, 100.0):
        board.ingest([NodeSample("node0", telemetry(util), None, 3.0), NodeSample("node1", None, "no answer", None)])
        clock.now += 2
    assert (board.state("node0"), board.state("node1")) == ("up", "unreachable")
    rows = dict(board.rows())
    assert list(rows) == ["node0/0", "node1/-"]
    assert str(rows["node0/0"][6]) == "100 ▁▅█" and str(rows["node0/0"][7]) == "2.0/16.0"
    assert str(rows["node0/0"][4]) == "16.0/32.0"

    board.ingest([NodeSample("node0", None, "no answer within 5 s (connect timeout)", None)])
    clock.now += 10
    rows = dict(board.rows())
    assert str(rows["node0/0"][1]) == "unreachable ⚠ 12 s"  # since it last answered
    assert str(rows["node0/0"][5]) == "0 Arc A770" and rows["node0/0"][5].style == "dim"  # last values, dimmed

    board.expect(["node1"], "waking")
    assert board.state("node1") == "waking"
    board.ingest([NodeSample("node1", telemetry(0.0), None, 4.0)])
    assert board.state("node1") == "up" and "node1" not in board.expected
    assert board.counts() == {"unreachable": 1, "up": 1}


def test_node_board_keeps_bounded_readings_and_repeated_failures_once() -> None:
    clock = FakeClock()
    board = NodeBoard(["node0"], history=3, clock=clock)
    for util in (10.0, None, 30.0, 40.0):
        board.ingest([NodeSample("node0", telemetry(util), None, 3.0)])
        clock.now += 2
    assert [(t, gpu.util_pct) for t, gpu in board.trace["node0", 0]] == [(1002.0, None), (1004.0, 30.0), (1006.0, 40.0)]
    assert board.recent_util("node0", 0) == [30.0, 40.0] and board.recent_util("node9", 0) == []
    for error in ("no answer within 5 s (connect timeout)",) * 3 + ("connection refused on port 22",):
        board.ingest([NodeSample("node0", None, error, None)])
        clock.now += 2
    first, latest = board.failures["node0"]
    assert (first.error, first.first_at, first.last_at, first.times) == ("no answer within 5 s (connect timeout)",
                                                                          1008.0, 1012.0, 3)  # fmt: skip
    assert (latest.error, latest.times) == ("connection refused on port 22", 1)


def test_a_node_answering_garbage_is_failing_with_its_reason_and_marks_toggle() -> None:
    board = NodeBoard(["node0", "node1", "node2"], clock=FakeClock())
    board.ingest([
        NodeSample("node0", telemetry(5.0), None, 3.0),
        NodeSample("node1", None, "node1: probe output is not JSON: 'garbage'", 4.0),  # it answered: a round trip
        NodeSample("node2", None, "no answer within 5 s (connect timeout)", None),
    ])  # fmt: skip
    assert [board.state(n) for n in board.names] == ["up", "failing", "unreachable"]
    assert board.problems() == [
        ("node1", "probe output is not JSON: 'garbage'"),
        ("node2", "no answer within 5 s (connect timeout)"),
    ]
    board.toggle_mark("node1")
    assert dict(board.rows())["node1/-"][0].style == "bold reverse yellow"
    board.toggle_mark("node1")
    assert dict(board.rows())["node1/-"][0].style == "bold" and not board.marked


def test_a_node_slurm_runs_no_job_on_is_marked_with_why() -> None:
    board = NodeBoard(["node0", "node1"], clock=FakeClock())
    board.ingest([
        NodeSample("node0", telemetry(5.0), None, 3.0),
        NodeSample("node1", telemetry(5.0), None, 3.0, slurm_problem="drained (fan failed)"),
    ])  # fmt: skip
    rows = dict(board.rows())
    assert (str(rows["node0/0"][1]), str(rows["node1/0"][1])) == ("up", "up · drained")
    assert board.problems() == [("node1", "Slurm: drained (fan failed)")]
    assert board.counts() == {"up": 2}


def with_build(util: float, build: RuntimeBuild) -> NodeTelemetry:
    return replace(telemetry(util), runtime=build)


def runtime_cells(board: NodeBoard) -> dict[str, tuple[str, str]]:
    """Per row key, the runtime cell's text and its mark's style ("" without a mark)."""
    column = board.columns.index("runtime")
    cells = {key: row[column] for key, row in board.rows()}
    return {key: (str(cell), str(cell.spans[-1].style) if cell.spans else "") for key, cell in cells.items()}


def test_runtime_column_only_where_a_delivery_is_configured() -> None:
    assert NodeBoard(["node0"]).columns == COLUMNS
    board = NodeBoard(["node0"], runtime=True)
    assert board.columns == (*COLUMNS[:5], "runtime", *COLUMNS[5:])
    gpu = telemetry(5.0).gpus[0]
    board.ingest(
        [NodeSample("node0", replace(with_build(5.0, RuntimeBuild("b1", "xpu", None)), gpus=(gpu, gpu)), None, 3.0)]
    )
    first, second = (cells for _, cells in board.rows())
    assert len(first) == len(second) == len(board.columns)
    assert str(first[5]) == "b1" and second[5] == ""  # a node column: on the node's first row only


def test_runtime_cells_mark_a_build_that_is_not_the_one_built_here() -> None:
    board = NodeBoard(["node0", "node1", "node2", "node3", "node4"], clock=FakeClock(), runtime=True)
    board.ingest([
        NodeSample("node0", with_build(5.0, RuntimeBuild("0.1.0-aaaa", "xpu", None)), None, 3.0),
        NodeSample("node1", with_build(5.0, RuntimeBuild("0.1.0-bbbb", "xpu", None)), None, 3.0),
        NodeSample("node2", with_build(5.0, RuntimeBuild(None, None, "no build installed")), None, 3.0),
        NodeSample("node3", with_build(5.0, RuntimeBuild(None, None, "runtime: JSONDecodeError: x")), None, 3.0),
        NodeSample("node4", None, "no answer within 5 s (connect timeout)", None),
    ])  # fmt: skip
    assert runtime_cells(board) == {  # nothing to compare with until the build here is read: no marks
        "node0/0": ("0.1.0-aaaa", ""),
        "node1/0": ("0.1.0-bbbb", ""),
        "node2/0": ("missing", ""),
        "node3/0": ("unreadable", ""),
        "node4/-": ("-", ""),
    }
    board.set_control_build("0.1.0-aaaa")
    assert runtime_cells(board) == {
        "node0/0": ("0.1.0-aaaa", ""),
        "node1/0": ("0.1.0-bbbb ≠", "bold yellow"),
        "node2/0": ("missing ≠", "bold yellow"),
        "node3/0": ("unreadable ≠", "bold yellow"),
        "node4/-": ("-", ""),  # never answered: nothing known
    }
    board.set_control_build(None)
    assert runtime_cells(board)["node0/0"] == ("0.1.0-aaaa · none built here", "yellow")
    board.set_control_build("0.1.0-aaaa")
    board.ingest([NodeSample("node1", None, "no answer within 5 s (connect timeout)", None)])
    cell = dict(board.rows())["node1/0"][5]
    assert str(cell) == "0.1.0-bbbb ≠" and cell.style == "dim"  # the last build it reported, dimmed


def test_current_manifest_path_by_delivery() -> None:
    assert current_manifest_path(RuntimeSection()) is None
    venv = RuntimeSection(delivery="venv", install_root="/opt/cockpit/runtime")
    assert current_manifest_path(venv) == "/opt/cockpit/runtime/current/build_manifest.json"
    assert (
        current_manifest_path(RuntimeSection(delivery="apptainer", image_dir="/srv/images"))
        == "/srv/images/current.json"
    )
    assert current_manifest_path(RuntimeSection(delivery="apptainer")) is None  # no image_dir: nowhere to look


@pytest.fixture
def venv_settings(tmp_path: Path) -> Settings:
    file = CockpitFile(paths=PathsSection(data_dir=str(tmp_path)), runtime=RuntimeSection(delivery="venv"))
    return Settings(file, tmp_path / "cockpit.toml")


async def test_live_source_reads_the_build_made_here_and_tolerates_none(venv_settings: Settings) -> None:
    source = LiveSource(venv_settings)
    try:
        assert source.manifest == "/opt/cockpit/runtime/current/build_manifest.json"
        assert await source.runtime_build() is None  # nothing built yet
        folder = venv_settings.runtime_build_dir / "venv-cpu"
        folder.mkdir(parents=True)
        (folder / "build_manifest.json").write_text("{torn")
        assert await source.runtime_build() is None  # a corrupt build is no build to compare with
        digest = "sha256:" + "3f2a9c1b7d4e" + "0" * 52
        build_id = BuildManifest.make_id("0.1.0", digest)
        BuildManifest(build_id, "0.1.0", None, "3.11.9", "2.13.0", "0.19.8", "5.23.0", "cpu", "venv", digest,
                      "2026-11-23T10:15:00+00:00").write(folder / "build_manifest.json")  # fmt: skip
        assert await source.runtime_build() == "0.1.0-3f2a9c1b7d4e"
    finally:
        await source.close()


def test_sparkline_scale() -> None:
    assert sparkline([0, 25, 50, 75, 100]) == "▁▃▅▇█"
    assert sparkline(list(range(100)), width=3) == "███"


def test_cells_that_differ_only_in_style_are_not_the_same() -> None:
    from rich.text import Text

    from cockpit.tui.tables import same

    assert same(Text("node0", style="bold"), Text("node0", style="bold"))
    assert not same(Text("node0", style="bold"), Text("node0", style="bold reverse yellow"))
    assert not same("1", 1) and same("-", "-")


def test_the_models_and_the_demo_load_no_textual() -> None:
    """The boards, the results' cells and the demo's cluster are tested headless: none of them may need textual."""
    modules = ("node_board", "provision_board", "results_cells", "demo", "feeds", "sources")
    probe = f"import sys\nimport {', '.join(f'cockpit.tui.{m}' for m in modules)}\nprint('textual' in sys.modules)"
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=repo, capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "False"

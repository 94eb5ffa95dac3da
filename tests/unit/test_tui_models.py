"""The dashboard's headless models: feeds (one poll in flight, timeout, last good value kept and marked stale) and
the node board (states, staleness, sparklines), driven by a fake clock."""

from __future__ import annotations

import asyncio

from cockpit.nodes.telemetry import GpuTelemetry, NodeSample, NodeTelemetry
from cockpit.tui.feeds import Feed
from cockpit.tui.node_board import NodeBoard, sparkline


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


def test_sparkline_scale() -> None:
    assert sparkline([0, 25, 50, 75, 100]) == "▁▃▅▇█"
    assert sparkline(list(range(100)), width=3) == "███"


def test_cells_that_differ_only_in_style_are_not_the_same() -> None:
    from rich.text import Text

    from cockpit.tui.tables import same

    assert same(Text("node0", style="bold"), Text("node0", style="bold"))
    assert not same(Text("node0", style="bold"), Text("node0", style="bold reverse yellow"))
    assert not same("1", 1) and same("-", "-")

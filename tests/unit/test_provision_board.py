"""The provisioning screen's model: a playbook run's events folded into host rows, task rows and a state line."""

from __future__ import annotations

import threading

from cockpit.provision.events import (
    HostResult,
    HostStats,
    PlayStarted,
    ProvisionEvent,
    Recap,
    ResultStatus,
    TaskStarted,
)
from cockpit.tui.demo import PLAY, TASKS, DemoProvisionRun, playbook_events
from cockpit.tui.provision_board import HostRow, ProvisionBoard

EVENTS = playbook_events(("node0", "node1"))  # node1 fails the last task
HOLD_RUNNING = len(EVENTS) - 3  # where a gated run holds: the last task started, neither host's result of it in


def result(host: str, task: str, status: ResultStatus, ignored: bool = False) -> HostResult:
    return HostResult(host, task, status, "", None, None, "", "", ignored, None)


def stats(ok: int = 0, changed: int = 0, failed: int = 0, unreachable: int = 0, rescued: int = 0) -> HostStats:
    return HostStats(ok, changed, failed, unreachable, skipped=0, rescued=rescued, ignored=0)


def board_after(*events: ProvisionEvent, hosts: tuple[str, ...] = ("node0", "node1")) -> ProvisionBoard:
    board = ProvisionBoard(hosts)
    for event in events:
        board.ingest(event)
    return board


def hosts(board: ProvisionBoard) -> dict[str, HostRow]:
    return dict(board.host_rows())


def test_hosts_wait_until_the_first_task_starts() -> None:
    board = board_after(PlayStarted(PLAY))
    assert hosts(board)["node0"] == HostRow("node0", "", 0, 0, 0, 0, 0, "waiting")
    assert board.running and board.state_line() == "running"
    assert board.task_rows() == []


def test_the_demo_run_held_midway_counts_live() -> None:
    board = board_after(*EVENTS[:HOLD_RUNNING])
    assert isinstance(EVENTS[HOLD_RUNNING - 1], TaskStarted)  # held with the last task started
    rows = hosts(board)
    assert rows["node0"] == HostRow("node0", TASKS[2], ok=2, changed=1, failed=0, unreachable=0, skipped=0,
                                    state="running")  # fmt: skip
    assert rows["node1"].state == "running" and rows["node1"].ok == 2
    assert [row.key for row in board.task_rows()] == ["1/node0", "1/node1", "2/node0", "2/node1"]
    assert [row.label for row in board.task_rows()] == ["ok", "ok", "changed", "changed"]
    assert board.state_line() == f"running · {PLAY} › {TASKS[2]}"
    assert board.failures() == []


def test_the_demo_run_to_its_end_takes_the_recaps_counts_and_points_at_the_failure() -> None:
    board = board_after(*EVENTS)
    board.finish("failed", 2)
    rows = hosts(board)
    assert rows["node0"] == HostRow("node0", TASKS[2], 3, 1, 0, 0, 0, "ok")
    assert rows["node1"] == HostRow("node1", TASKS[2], 2, 1, 1, 0, 0, "failed")
    failed = board.result("3/node1")
    assert failed is not None and failed.status == "failed" and failed.stderr == "no OpenCL platforms found"
    assert board.host_failure("node1") is failed and board.failures() == [failed]
    assert board.host_failure("node0") is None and board.host_failure("node9") is None
    assert board.result("3/node0") is not None and board.result("9/node0") is None
    assert not board.running and not board.explained_by_output
    assert board.state_line() == "failed (rc 2) · failed on node1: enter or o on a red row shows why"


def test_a_failed_host_stays_at_the_task_it_failed() -> None:
    board = board_after(
        TaskStarted(PLAY, "Ping", None),
        result("node0", "Ping", "ok"),
        result("node1", "Ping", "unreachable"),
        TaskStarted(PLAY, "Read the hostname", None),
    )
    rows = hosts(board)
    assert (rows["node0"].task, rows["node0"].state) == ("Read the hostname", "running")
    assert (rows["node1"].task, rows["node1"].state, rows["node1"].unreachable) == ("Ping", "unreachable", 1)
    assert board.host_failure("node1") == result("node1", "Ping", "unreachable")


def test_an_ignored_failure_counts_as_ok_and_stops_nothing() -> None:
    board = board_after(TaskStarted(PLAY, "Try", None), result("node0", "Try", "failed", ignored=True))
    assert hosts(board)["node0"] == HostRow("node0", "Try", 1, 0, 0, 0, 0, "running")
    assert board.task_rows()[0].label == "ignored"
    assert board.host_failure("node0") is None and board.failures() == []


def test_skipped_results_count_and_unknown_hosts_join_in_order() -> None:
    board = board_after(TaskStarted(PLAY, "Maybe", None), result("node2", "Maybe", "skipped"))
    assert list(hosts(board)) == ["node0", "node1", "node2"]
    assert hosts(board)["node2"].skipped == 1


def test_a_task_name_seen_again_and_handlers_get_rows_of_their_own() -> None:
    board = board_after(
        TaskStarted("First play", "Gather facts", None),
        result("node0", "Gather facts", "ok"),
        PlayStarted("Second play"),
        TaskStarted("Second play", "Gather facts", None),
        result("node0", "Gather facts", "ok"),
        result("node0", "Restart the service", "changed"),  # a handler: no task start comes before it
        hosts=("node0",),
    )
    assert [(row.key, row.play) for row in board.task_rows()] == [
        ("1/node0", "First play"),
        ("2/node0", "Second play"),
        ("3/node0", "Second play"),
    ]
    assert hosts(board)["node0"].ok == 3 and hosts(board)["node0"].changed == 1


def test_a_rescued_failure_is_no_failure_once_the_recap_says_so() -> None:
    board = board_after(
        TaskStarted(PLAY, "Risky", None),
        result("node0", "Risky", "failed"),
        Recap({"node0": stats(ok=1, rescued=1)}),
        hosts=("node0",),
    )
    board.finish("successful", 0)
    assert hosts(board)["node0"].state == "ok" and hosts(board)["node0"].failed == 0
    assert board.failures() == [] and board.state_line() == "successful (rc 0)"


def test_hosts_the_recap_leaves_out_did_not_run_and_no_match_is_said() -> None:
    board = board_after(TaskStarted(PLAY, "Ping", None), Recap({}))
    board.finish("successful", 0)
    assert (hosts(board)["node0"].state, hosts(board)["node0"].task) == ("not run", "")
    assert board.state_line() == "successful (rc 0) · no host matched"


def test_a_playbook_that_does_not_load_is_explained_by_the_output() -> None:
    board = ProvisionBoard(["node0"])
    board.finish("failed", 4)
    assert board.explained_by_output
    assert board.state_line() == "failed (rc 4) without any host result: o shows Ansible's output"
    assert hosts(board)["node0"].state == "stopped"


def test_a_failed_run_with_no_failed_task_is_explained_by_the_output() -> None:
    board = board_after(TaskStarted(PLAY, "Ping", None), result("node0", "Ping", "ok"))
    board.finish("failed", 1)
    assert board.state_line() == "failed (rc 1) with no failed task: o shows Ansible's output"


def test_a_canceled_run_says_so_per_host() -> None:
    board = board_after(*EVENTS[:HOLD_RUNNING])
    board.finish("canceled", 254)
    assert {row.state for row in hosts(board).values()} == {"canceled"}
    assert board.state_line() == "canceled (rc 254)" and not board.explained_by_output


def test_the_demo_run_holds_at_its_gate_until_cancelled() -> None:
    run = DemoProvisionRun(threading.Event())
    events = run.events()
    assert [next(events) for _ in range(HOLD_RUNNING)] == list(EVENTS[:HOLD_RUNNING])
    assert run.status == "running" and run.rc is None
    run.cancel()
    assert list(events) == [] and (run.status, run.rc) == ("canceled", 254)
    assert run.cancelled.is_set()


def test_the_demo_runs_end_and_output() -> None:
    run = DemoProvisionRun()
    assert list(run.events()) == list(EVENTS) and (run.status, run.rc) == ("failed", 2)
    assert run.output_tail(2).splitlines()[0].startswith("node0 ")
    broken = DemoProvisionRun(unparsable=True)
    assert list(broken.events()) == [] and (broken.status, broken.rc) == ("failed", 4)
    assert "fake_missing_role" in broken.output_tail()

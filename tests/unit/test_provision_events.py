"""ansible-runner's event dicts (as captured from real runs, trimmed) into progress objects and CLI lines."""

from __future__ import annotations

from typing import Any

from cockpit.provision.events import (
    HostResult,
    HostStats,
    PlayStarted,
    Recap,
    TaskStarted,
    describe,
    event_from_runner,
    failure_details,
)

PLAYBOOK = {"playbook": "/srv/cockpit/ansible/compute.yml", "playbook_uuid": "5b5be6a6-ac1e-407e-a4df-abf04ae4412a"}
PLAY = {**PLAYBOOK, "play": "Base configuration of the compute nodes", "play_pattern": "compute"}
CENSORED = "the output has been hidden due to the fact that 'no_log: true' was specified for this result"


def raw(event: str, stdout: str = "", **event_data: Any) -> dict[str, Any]:
    return {
        "uuid": "bc41229a-b7af-42a3-8044-98d97827b4c4",
        "counter": 7,
        "stdout": stdout,
        "start_line": 6,
        "end_line": 7,
        "runner_ident": "artifacts",
        "event": event,
        "pid": 12034,
        "created": "2026-11-23T17:44:02.151028+00:00",
        "parent_uuid": "02fc0000-0001-c503-d4eb-00000000000c",
        "event_data": event_data,
    }


def task(name: str, action: str = "ansible.builtin.command", line: int = 5) -> dict[str, Any]:
    return {**PLAY, "task": name, "task_action": action, "task_args": "", "task_path": f"/srv/site.yml:{line}"}


def result(event: str, host: str, name: str, res: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    data = {**task(name), "host": host, "remote_addr": host, "duration": 1.248493, "event_loop": None, **extra}
    if res is not None:
        data["res"] = res
    return raw(event, **data)


def command_res(cmd: list[str] | str, rc: int, stdout: str = "", stderr: str = "", **extra: Any) -> dict[str, Any]:
    return {
        "changed": False,
        "stdout": stdout,
        "stderr": stderr,
        "rc": rc,
        "cmd": cmd,
        "delta": "0:00:00.004108",
        "msg": "non-zero return code" if rc else "",
        "invocation": {"module_args": {"_raw_params": "...", "_uses_shell": isinstance(cmd, str)}},
        "stdout_lines": stdout.splitlines(),
        "stderr_lines": stderr.splitlines(),
        "_ansible_no_log": False,
        **extra,
    }


def test_play_and_task_starts() -> None:
    play = raw("playbook_on_play_start", "PLAY [Base configuration of the compute nodes] ***", **PLAY)
    assert event_from_runner(play) == PlayStarted("Base configuration of the compute nodes")
    start = raw(
        "playbook_on_task_start",
        **task("Gather facts", "ansible.builtin.setup", 6),
        role="node_base",
        name="node_base : Gather facts",
        is_conditional=False,
    )
    assert event_from_runner(start) == TaskStarted(PLAY["play"], "Gather facts", "/srv/site.yml:6")


def test_ok_and_changed() -> None:
    ok = event_from_runner(result("runner_on_ok", "node0", "Gather facts", {"ansible_facts": {}, "changed": False}))
    assert isinstance(ok, HostResult)
    assert (ok.host, ok.task, ok.status, ok.ignored, ok.duration_s) == ("node0", "Gather facts", "ok", False, 1.248493)
    template = {"dest": "/var/lib/cockpit/node.json", "changed": True, "mode": "0644", "_ansible_no_log": False}
    changed = event_from_runner(result("runner_on_ok", "node1", "Write node.json", template))
    assert isinstance(changed, HostResult) and changed.status == "changed"
    assert describe(changed) == "node1      changed     Write node.json"


def test_failed_command_keeps_what_debugging_needs() -> None:
    res = command_res(["sh", "-c", 'echo out; echo "no such thing" >&2; exit 3'], 3, "out", "no such thing")
    failed = event_from_runner(result("runner_on_failed", "node0", "Fail a command", res, ignore_errors=None))
    assert isinstance(failed, HostResult)
    assert (failed.status, failed.rc, failed.stdout, failed.stderr) == ("failed", 3, "out", "no such thing")
    assert failed.command == "sh -c 'echo out; echo \"no such thing\" >&2; exit 3'"
    assert not failed.ignored
    assert describe(failed) == "node0      failed      Fail a command: non-zero return code"
    assert failure_details(failed).splitlines() == [
        "node0: failed in task 'Fail a command'",
        "  command: sh -c 'echo out; echo \"no such thing\" >&2; exit 3'",
        "  rc: 3",
        "  msg: non-zero return code",
        "  stderr:",
        "    no such thing",
        "  stdout:",
        "    out",
    ]


def test_shell_command_and_long_output_tail() -> None:
    stderr = "\n".join(f"E: line {n}" for n in range(1, 31))
    res = command_res("apt-get install -y clinfo | tee /tmp/log", 100, stderr=stderr)
    failed = event_from_runner(result("runner_on_failed", "node1", "Install", res, ignore_errors=None))
    assert isinstance(failed, HostResult) and failed.command == "apt-get install -y clinfo | tee /tmp/log"
    details = failure_details(failed)
    assert "(last 20 of 30 lines)" in details and "E: line 30" in details and "E: line 10\n" not in details
    assert "stdout" not in details  # empty output is left out


def test_ignored_failure() -> None:
    res = command_res(["false"], 1)
    ignored = event_from_runner(result("runner_on_failed", "node1", "Probe", res, ignore_errors=True))
    assert isinstance(ignored, HostResult) and ignored.status == "failed" and ignored.ignored
    assert describe(ignored) == "node1      ignored     Probe: non-zero return code"
    assert failure_details(ignored).startswith("node1: failed in task 'Probe' (ignored)")


def test_unreachable() -> None:
    msg = (
        "Task failed: Failed to connect to the host via ssh: ssh: connect to host 10.77.0.99 port 22: "
        "Connection timed out"
    )
    res = {"unreachable": True, "exception": "(traceback unavailable)", "msg": msg, "changed": False}
    gone = event_from_runner(result("runner_on_unreachable", "ghost", "Ping", res))
    assert isinstance(gone, HostResult)
    assert (gone.status, gone.message, gone.command, gone.rc) == ("unreachable", msg, None, None)
    assert describe(gone) == f"ghost      unreachable Ping: {msg}"
    assert failure_details(gone) == f"ghost: unreachable in task 'Ping'\n  msg: {msg}"


def test_skipped_has_no_res() -> None:
    skipped = event_from_runner(result("runner_on_skipped", "node1", "Only on node0"))
    assert isinstance(skipped, HostResult) and (skipped.status, skipped.message) == ("skipped", "")


def test_fail_module_message_over_several_lines() -> None:
    res = {"msg": "it broke\nsee the log", "changed": False, "_ansible_no_log": False}
    failed = event_from_runner(result("runner_on_failed", "node0", "Check", res, ignore_errors=None))
    assert isinstance(failed, HostResult) and failed.command is None
    assert describe(failed) == "node0      failed      Check: it broke"
    assert failure_details(failed) == "node0: failed in task 'Check'\n  msg: it broke\n    see the log"


def test_module_crash_output() -> None:
    res = {
        "module_stdout": "",
        "module_stderr": "/bin/sh: 1: /usr/bin/python3: not found\n",
        "msg": "The module failed to execute correctly, you probably need to set the interpreter.",
        "rc": 127,
        "changed": False,
    }
    failed = event_from_runner(result("runner_on_failed", "node0", "Gather facts", res, ignore_errors=None))
    assert isinstance(failed, HostResult) and failed.rc == 127
    assert "python3: not found" in failed.stderr and "python3: not found" in failure_details(failed)


def test_no_log_results_stay_censored() -> None:
    secret = {"censored": CENSORED, "changed": True}
    failed = event_from_runner(result("runner_on_failed", "node1", "Set password", secret, ignore_errors=None))
    assert isinstance(failed, HostResult)
    assert (failed.message, failed.command, failed.stdout, failed.stderr) == (CENSORED, None, "", "")
    ok = event_from_runner(result("runner_on_ok", "node1", "Set password", {"censored": CENSORED}))
    assert isinstance(ok, HostResult) and ok.status == "ok"
    assert "hunter2" not in failure_details(failed)


def test_loop_items_fold_into_the_task_result() -> None:
    item_ok = command_res(["echo", "a"], 0, "a", item="a", ansible_loop_var="item", _ansible_item_label="a")
    assert event_from_runner(result("runner_item_on_ok", "node1", "Loop", item_ok)) is None
    assert event_from_runner(result("runner_item_on_failed", "node1", "Loop", item_ok)) is None
    item_failed = command_res(["sh", "-c", "echo 2 >&2; exit 2"], 2, stderr="2", failed=True, item=2)
    res = {
        "results": [{**item_ok, "failed": False}, {**item_failed, "_ansible_item_label": 2}],
        "changed": True,
        "msg": "One or more items failed",
    }
    failed = event_from_runner(result("runner_on_failed", "node1", "Loop", res, ignore_errors=None))
    assert isinstance(failed, HostResult) and failed.status == "failed"
    assert (failed.command, failed.rc, failed.stderr) == ("sh -c 'echo 2 >&2; exit 2'", 2, "2")
    assert failed.message == "One or more items failed (item 2: non-zero return code)"
    all_ok = {"results": [{**item_ok, "changed": True, "failed": False}], "changed": True, "msg": "All items completed"}
    changed = event_from_runner(result("runner_on_ok", "node1", "Loop", all_ok))
    assert isinstance(changed, HostResult) and (changed.status, changed.command) == ("changed", None)


def test_stats_become_the_recap() -> None:
    stats = raw(
        "playbook_on_stats",
        **PLAYBOOK,
        changed={"node1": 1},
        dark={"ghost": 1},
        failures={"node0": 1},
        ignored={"node1": 1},
        ok={"node1": 3},
        processed={"node1": 1, "ghost": 1, "node0": 1},
        rescued={},
        skipped={"node1": 1, "ghost": 1},
        artifact_data={},
    )
    recap = event_from_runner(stats)
    assert recap == Recap(
        {
            "ghost": HostStats(ok=0, changed=0, failed=0, unreachable=1, skipped=1, rescued=0, ignored=0),
            "node0": HostStats(ok=0, changed=0, failed=1, unreachable=0, skipped=0, rescued=0, ignored=0),
            "node1": HostStats(ok=3, changed=1, failed=0, unreachable=0, skipped=1, rescued=0, ignored=1),
        }
    )
    assert describe(recap) == (
        "recap  ghost ok=0 unreachable=1 skipped=1 | node0 ok=0 failed=1 | node1 ok=3 changed=1 skipped=1 ignored=1"
    )


def test_no_hosts_matched() -> None:
    empty = {key: {} for key in ("changed", "dark", "failures", "ignored", "ok", "processed", "rescued", "skipped")}
    recap = event_from_runner(raw("playbook_on_stats", **PLAYBOOK, **empty))
    assert recap == Recap({})
    assert describe(recap) == "recap  no hosts matched"


def test_other_events_are_left_out() -> None:
    for event in ("playbook_on_start", "runner_on_start", "verbose", "playbook_on_no_hosts_matched", "runner_retry"):
        assert event_from_runner(raw(event, **task("x"))) is None
    assert event_from_runner({"event": "verbose", "stdout": "[WARNING]: ...", "counter": 1}) is None


def test_task_start_has_no_line_of_its_own() -> None:
    assert describe(TaskStarted("play", "Gather facts", None)) is None
    assert describe(PlayStarted("Base")) == "play  Base"

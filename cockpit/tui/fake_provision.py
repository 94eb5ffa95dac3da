"""A fake playbook run for snapshots and tests: a fixed sequence of events on node0 and node1, in the shape
`PlaybookRun` reports, where node1 fails the last task. It can hold before an event until a gate opens, so that a
run under way can be shown. Nothing here touches the machine or the network."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from cockpit.provision.events import (
    HostResult,
    HostStats,
    PlayStarted,
    ProvisionEvent,
    Recap,
    ResultStatus,
    TaskStarted,
)

PLAY = "Fake base configuration"
TASKS = ("Gather facts", "Install the fake GPU driver", "Probe the fake GPU")
PROBE = "sh -c 'echo probing; echo \"no OpenCL platforms found\" >&2; exit 3'"
WAIT_S = 0.05  # how often a held run looks whether it was cancelled


def _result(
    host: str,
    task: str,
    status: ResultStatus,
    duration_s: float,
    *,
    message: str = "",
    command: str | None = None,
    rc: int | None = None,
    stdout: str = "",
    stderr: str = "",
) -> HostResult:
    return HostResult(host, task, status, message, command, rc, stdout, stderr, False, duration_s)


FAKE_EVENTS: tuple[ProvisionEvent, ...] = (
    PlayStarted(PLAY),
    TaskStarted(PLAY, TASKS[0], "/srv/fake/ansible/fake_compute.yml:6"),
    _result("node0", TASKS[0], "ok", 1.2),
    _result("node1", TASKS[0], "ok", 1.4),
    TaskStarted(PLAY, TASKS[1], "/srv/fake/ansible/fake_compute.yml:9"),
    _result("node0", TASKS[1], "changed", 12.5),
    _result("node1", TASKS[1], "changed", 13.1),
    TaskStarted(PLAY, TASKS[2], "/srv/fake/ansible/fake_compute.yml:13"),
    _result("node0", TASKS[2], "ok", 0.4, command=PROBE, rc=0, stdout="probing\n1 GPU found"),
    _result(
        "node1",
        TASKS[2],
        "failed",
        0.3,
        message="non-zero return code",
        command=PROBE,
        rc=3,
        stdout="probing",
        stderr="no OpenCL platforms found",
    ),
    Recap(
        {
            "node0": HostStats(ok=3, changed=1, failed=0, unreachable=0, skipped=0, rescued=0, ignored=0),
            "node1": HostStats(ok=2, changed=1, failed=1, unreachable=0, skipped=0, rescued=0, ignored=0),
        }
    ),
)
HOLD_RUNNING = 8  # where a gated run holds: the last task started, none of its results in
FAKE_OUTPUT = """\
PLAY [Fake base configuration] *************************************************
TASK [Probe the fake GPU] ******************************************************
ok: [node0]
fatal: [node1]: FAILED! => {"changed": false, "rc": 3, "stderr": "no OpenCL platforms found"}
PLAY RECAP *********************************************************************
node0                      : ok=3    changed=1    unreachable=0    failed=0
node1                      : ok=2    changed=1    unreachable=0    failed=1"""
UNPARSABLE_OUTPUT = """\
ERROR! the role 'fake_missing_role' was not found in /srv/fake/ansible/roles

The error appears to be in '/srv/fake/ansible/fake_compute.yml': line 4, column 7"""


class FakeProvisionRun:
    """A fake run of `fake_compute.yml` following `ProvisionRun`. With a `gate`, it holds after `hold_at` events
    until the gate is set (or the run is cancelled). `unparsable` makes it a playbook that does not load: no
    events, status failed, the reason only in the output. `cancel` is recorded in `cancelled`."""

    def __init__(
        self, gate: threading.Event | None = None, hold_at: int = HOLD_RUNNING, unparsable: bool = False
    ) -> None:
        self.playbook = Path("/srv/fake/ansible/fake_compute.yml")
        self.gate = gate
        self.hold_at = hold_at
        self.unparsable = unparsable
        self.cancelled = threading.Event()
        self._status = "running"
        self._rc: int | None = None

    def events(self) -> Iterator[ProvisionEvent]:
        """The fixed events, holding at the gate; what is left is dropped once cancelled."""
        for number, event in enumerate(() if self.unparsable else FAKE_EVENTS):
            if number == self.hold_at and self.gate is not None:
                while not (self.gate.wait(WAIT_S) or self.cancelled.is_set()):
                    pass
            if self.cancelled.is_set():
                break
            yield event
        if self.cancelled.is_set():
            self._status, self._rc = "canceled", 254
        else:
            self._status, self._rc = "failed", 4 if self.unparsable else 2

    def cancel(self) -> None:
        self.cancelled.set()

    @property
    def status(self) -> str:
        return self._status

    @property
    def rc(self) -> int | None:
        return self._rc

    def output_tail(self, lines: int = 20) -> str:
        text = UNPARSABLE_OUTPUT if self.unparsable else FAKE_OUTPUT
        return "\n".join(text.splitlines()[-lines:])

"""What the provisioning screen shows of a playbook run, with no UI: its events folded into a row per host (the
task it is at, its counts, its state) and a row per task result, and the run's state in a line.

Counts are live until the recap arrives, then the recap's. Live counts follow Ansible's own rules, so the recap
seldom changes them: `ok` counts the changed results too, and a failure that `ignore_errors` let pass counts as ok.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from cockpit.nodes.nodeset import fold
from cockpit.provision.events import HostResult, HostStats, PlayStarted, ProvisionEvent, Recap, TaskStarted

ACTIVE = ("pending", "running")  # the run statuses of a run that has not ended
STOPPING = ("failed", "unreachable")  # the results after which Ansible runs no more tasks on a host
COUNTS = ("ok", "changed", "failed", "unreachable", "skipped")


@dataclass(frozen=True)
class HostRow:
    """One host's line: the task it is at or stopped at, its counts and its state."""

    host: str
    task: str
    ok: int
    changed: int
    failed: int
    unreachable: int
    skipped: int
    state: str  # waiting, running, ok, failed, unreachable, not run, or how the run ended (canceled, timeout)


@dataclass(frozen=True)
class TaskRow:
    """One task's result on one host, in the play it ran in."""

    key: str  # "<number of the task in the run>/<host>"
    play: str
    result: HostResult

    @property
    def label(self) -> str:
        """The result's status, or "ignored" for a failure the task let pass."""
        return "ignored" if self.result.ignored else self.result.status


@dataclass
class _Host:
    task: str = ""
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    stopped_by: HostResult | None = None  # the failure after which Ansible ran nothing more on the host


class ProvisionBoard:
    """The state of one playbook run, built from its events in order; `finish` records how the run ended."""

    def __init__(self, hosts: Iterable[str] = ()) -> None:
        self._hosts: dict[str, _Host] = {name: _Host() for name in hosts}
        self._rows: dict[str, TaskRow] = {}
        self._task_numbers: dict[str, int] = {}  # task name -> the number of its latest start
        self.tasks_started = 0
        self.play = ""
        self.task = ""
        self.recap: Recap | None = None
        self.status = "running"
        self.rc: int | None = None

    def ingest(self, event: ProvisionEvent) -> None:
        """Take in one event of the run."""
        if isinstance(event, PlayStarted):
            self.play, self.task = event.play, ""
        elif isinstance(event, TaskStarted):
            self.play, self.task = event.play or self.play, event.task
            self._start_task(event.task)
            for host in self._hosts.values():
                if host.stopped_by is None:
                    host.task = event.task
        elif isinstance(event, HostResult):
            self._add_result(event)
        else:
            self.recap = event
            for name in event.hosts:
                self._hosts.setdefault(name, _Host())

    def _start_task(self, task: str) -> int:
        self.tasks_started += 1
        self._task_numbers[task] = self.tasks_started
        return self.tasks_started

    def _add_result(self, result: HostResult) -> None:
        # a handler's results come without a task start (the events leave handler starts out)
        number = self._task_numbers.get(result.task) or self._start_task(result.task)
        key = f"{number}/{result.host}"
        self._rows[key] = TaskRow(key, self.play, result)
        host = self._hosts.setdefault(result.host, _Host())
        host.task = result.task
        counts = host.counts
        if result.status == "changed":
            counts["ok"] += 1
            counts["changed"] += 1
        elif result.ignored:
            counts["ok"] += 1
        else:
            counts[result.status] += 1
        if result.status in STOPPING and not result.ignored and host.stopped_by is None:
            host.stopped_by = result

    def finish(self, status: str, rc: int | None) -> None:
        """The run has ended with `status` (successful, failed, canceled, timeout) and exit status `rc`."""
        self.status, self.rc = status, rc

    @property
    def running(self) -> bool:
        return self.status in ACTIVE

    def host_rows(self) -> list[tuple[str, HostRow]]:
        """A row per host, keyed by host name, in order of first appearance (the hosts given first)."""
        return [(name, self._host_row(name, host)) for name, host in self._hosts.items()]

    def _host_row(self, name: str, host: _Host) -> HostRow:
        stats: HostStats | None = None if self.recap is None else self.recap.hosts.get(name)
        counts = host.counts if stats is None else {key: getattr(stats, key) for key in COUNTS}
        if counts["unreachable"]:
            state = "unreachable"
        elif counts["failed"]:
            state = "failed"
        elif self.recap is not None:
            state = "ok" if stats is not None else "not run"  # the play's hosts did not include it
        elif self.running:
            state = "running" if host.task else "waiting"
        else:
            state = self.status if self.status in ("canceled", "timeout") else "stopped"
        return HostRow(name, "" if state == "not run" else host.task, state=state, **counts)

    def task_rows(self) -> list[TaskRow]:
        """A row per task result, in the order the results came."""
        return list(self._rows.values())

    def result(self, key: str) -> HostResult | None:
        """The result of the task row `key`."""
        row = self._rows.get(key)
        return None if row is None else row.result

    def host_failure(self, host: str) -> HostResult | None:
        """The failed or unreachable result that stopped `host`, if one did."""
        known = self._hosts.get(host)
        return None if known is None else known.stopped_by

    def failures(self) -> list[HostResult]:
        """The results that stopped a host, host by host; once the recap is in, only for the hosts it counts a
        failure for (a block's rescue can undo one)."""
        recap = None if self.recap is None else self.recap.hosts
        return [
            host.stopped_by
            for name, host in self._hosts.items()
            if host.stopped_by is not None
            and (recap is None or name not in recap or recap[name].failed or recap[name].unreachable)
        ]

    @property
    def explained_by_output(self) -> bool:
        """The run failed and no task result says why (a playbook that does not parse, a role not found): only
        Ansible's own output does."""
        return self.status == "failed" and not self.failures()

    def state_line(self) -> str:
        """The run's state in a few words: running and where, or how it ended and where to look."""
        if self.running:
            return f"running · {self.play} › {self.task}" if self.task else "running"
        ended = self.status if self.rc is None else f"{self.status} (rc {self.rc})"
        failures = self.failures()
        if failures:
            hosts = fold(result.host for result in failures)
            return f"{ended} · failed on {hosts}: enter or o on a red row shows why"
        if self.explained_by_output:
            why = "with no failed task" if self._rows else "without any host result"
            return f"{ended} {why}: o shows Ansible's output"
        if self.recap is not None and not self.recap.hosts:
            return f"{ended} · no host matched"
        return ended

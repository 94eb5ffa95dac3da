"""What a playbook run reports, as small immutable objects: ansible-runner's event dicts, turned into plays,
tasks, per-host results and the recap, with one-line and multi-line renderings for the CLI.

Loops are folded: the per-item events (`runner_item_on_*`) are dropped and the task's final `runner_on_*` result,
which Ansible aggregates over the items, is the one HostResult; a failed loop takes its command, exit status and
output from its first failed item. Results of `no_log` tasks arrive censored from Ansible and stay so.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, Literal

ResultStatus = Literal["ok", "changed", "failed", "unreachable", "skipped"]

TAIL_LINES = 20
HOST_WIDTH = 10
STATUS_WIDTH = 11


@dataclass(frozen=True)
class PlayStarted:
    play: str


@dataclass(frozen=True)
class TaskStarted:
    play: str
    task: str
    path: str | None  # "file.yml:line" of the task's definition


@dataclass(frozen=True)
class HostResult:
    """One task's outcome on one host."""

    host: str
    task: str
    status: ResultStatus
    message: str
    command: str | None  # the command line, for command-like modules
    rc: int | None
    stdout: str
    stderr: str
    ignored: bool  # a failure the task's `ignore_errors` let pass
    duration_s: float | None


@dataclass(frozen=True)
class HostStats:
    """A host's line of the play recap; as in Ansible's own, `ok` counts the changed tasks too."""

    ok: int
    changed: int
    failed: int
    unreachable: int
    skipped: int
    rescued: int
    ignored: int


@dataclass(frozen=True)
class Recap:
    """The run's last event; no hosts at all means the playbook's host patterns matched none."""

    hosts: dict[str, HostStats]


ProvisionEvent = PlayStarted | TaskStarted | HostResult | Recap

_RESULT_EVENTS: dict[str, ResultStatus] = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}
# HostStats field -> the key of playbook_on_stats that counts it
_STATS_KEYS = {
    "ok": "ok",
    "changed": "changed",
    "failed": "failures",
    "unreachable": "dark",
    "skipped": "skipped",
    "rescued": "rescued",
    "ignored": "ignored",
}


def _command_line(cmd: object) -> str | None:
    if isinstance(cmd, list):
        return shlex.join(str(part) for part in cmd)
    return cmd if isinstance(cmd, str) and cmd else None


def _text(value: object) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def _host_result(kind: str, data: dict[str, Any]) -> HostResult:
    res: dict[str, Any] = data.get("res") or {}
    status = _RESULT_EVENTS[kind]
    if status == "ok" and res.get("changed"):
        status = "changed"
    message = _text(res.get("msg") or res.get("censored") or res.get("skip_reason"))
    detail = res
    failed_items = [item for item in res.get("results") or [] if isinstance(item, dict) and item.get("failed")]
    if failed_items:
        detail = failed_items[0]
        item_message = _text(detail.get("msg") or detail.get("censored"))
        message = f"{message} (item {detail.get('_ansible_item_label', detail.get('item'))}: {item_message})"
    rc = detail.get("rc")
    return HostResult(
        host=data.get("host", "?"),
        task=data.get("task", ""),
        status=status,
        message=message,
        command=_command_line(detail.get("cmd")),
        rc=rc if isinstance(rc, int) else None,
        # a module that crashed (no python on the node, a traceback) reports its output as module_*
        stdout=_text(detail.get("stdout") or detail.get("module_stdout")),
        stderr=_text(detail.get("stderr") or detail.get("module_stderr")),
        ignored=status == "failed" and bool(data.get("ignore_errors")),
        duration_s=data.get("duration"),
    )


def _recap(data: dict[str, Any]) -> Recap:
    names: set[str] = set(data.get("processed") or {})
    for key in _STATS_KEYS.values():
        names.update(data.get(key) or {})
    return Recap(
        {
            name: HostStats(**{field: (data.get(key) or {}).get(name, 0) for field, key in _STATS_KEYS.items()})
            for name in sorted(names)
        }
    )


def event_from_runner(raw: dict[str, Any]) -> ProvisionEvent | None:
    """The ProvisionEvent for one ansible-runner event dict; None for the events this module leaves out."""
    kind = raw.get("event", "")
    data: dict[str, Any] = raw.get("event_data") or {}
    if kind == "playbook_on_play_start":
        return PlayStarted(data.get("play") or data.get("name", ""))
    if kind == "playbook_on_task_start":
        return TaskStarted(data.get("play", ""), data.get("task", ""), data.get("task_path"))
    if kind in _RESULT_EVENTS:
        return _host_result(kind, data)
    if kind == "playbook_on_stats":
        return _recap(data)
    return None


def describe(event: ProvisionEvent) -> str | None:
    """One line for the CLI, or None for a task's start (the host lines that follow name the task)."""
    if isinstance(event, PlayStarted):
        return f"play  {event.play}"
    if isinstance(event, HostResult):
        label = "ignored" if event.ignored else event.status
        line = f"{event.host:<{HOST_WIDTH}} {label:<{STATUS_WIDTH}} {event.task}"
        if event.status in ("failed", "unreachable") and event.message:
            line += f": {event.message.splitlines()[0]}"
        return line
    if isinstance(event, Recap):
        if not event.hosts:
            return "recap  no hosts matched"
        parts = []
        for host, stats in event.hosts.items():
            counts = [f"{field}={n}" for field in _STATS_KEYS if (n := getattr(stats, field)) or field == "ok"]
            parts.append(f"{host} {' '.join(counts)}")
        return "recap  " + " | ".join(parts)
    return None


def _tail(text: str, lines: int = TAIL_LINES) -> list[str]:
    kept = text.rstrip("\n").splitlines()
    head = [f"(last {lines} of {len(kept)} lines)"] if len(kept) > lines else []
    return head + kept[-lines:]


def failure_details(result: HostResult) -> str:
    """Everything about a failed or unreachable result needed to debug it, over several lines."""
    lines = [f"{result.host}: {result.status} in task {result.task!r}" + (" (ignored)" if result.ignored else "")]
    if result.command is not None:
        lines.append(f"  command: {result.command}")
    if result.rc is not None:
        lines.append(f"  rc: {result.rc}")
    if result.message:
        first, *rest = result.message.splitlines()
        lines += [f"  msg: {first}", *(f"    {line}" for line in rest)]
    for name, text in (("stderr", result.stderr), ("stdout", result.stdout)):
        if text.strip():
            lines.append(f"  {name}:")
            lines += [f"    {line}" for line in _tail(text)]
    return "\n".join(lines)

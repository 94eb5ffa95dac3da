"""What a torch.profiler Chrome trace says about a rank, in a few numbers: `summarize(trace) -> ProfileSummary`.

The window is the profiled decode steps (the runtime's `decode_step` ranges, on the decoding thread). Inside it:
time in each named range (runtime.contract.PROFILE_RANGES), the communication share, the idle gaps on the
decoding thread between ranges (host overhead: Python, scheduling), how busy the device was, and the operators
with the most self time (device kernels when there are any, else CPU operators). Pure Python, no torch: the
cockpit can summarize a trace a node wrote as well as the node can.
"""

from __future__ import annotations

import bisect
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from runtime.contract import COMM_RANGES, PROFILE_RANGES, OpTime, ProfileSummary
from runtime.schema import InputError

STEP_RANGE = "decode_step"
DEVICE_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")
GAP_THRESHOLD_MS = 0.05  # idle stretches shorter than this are the cost of a Python line, not a gap
TOP_OPS = 10

Interval = tuple[float, float]  # start, end in microseconds


@dataclass(frozen=True)
class Event:
    name: str
    category: str
    thread: tuple[object, object]  # (pid, tid)
    start: float
    end: float


def read_trace(path: Path) -> tuple[list[Event], str | None]:
    """The complete ('X') events of a Chrome trace and the host it names (torch writes `host_name`); an
    InputError naming the file when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a Chrome trace (not JSON: {err})") from None
    raw = data.get("traceEvents") if isinstance(data, dict) else data
    if not isinstance(raw, list):
        raise InputError(f"{path}: not a Chrome trace (no traceEvents list)")
    events = [
        Event(str(e["name"]), str(e.get("cat", "")), (e.get("pid"), e.get("tid")), e["ts"], e["ts"] + e["dur"])
        for e in raw
        if isinstance(e, dict) and e.get("ph") == "X" and isinstance(e.get("ts"), int | float) and "dur" in e
    ]
    host = data.get("host_name") if isinstance(data, dict) else None
    return events, host if isinstance(host, str) and host else None


def union(intervals: Iterable[Interval]) -> list[Interval]:
    """Overlapping intervals merged, in order."""
    merged: list[list[float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def clipped(intervals: Iterable[Interval], window: list[Interval]) -> float:
    """Microseconds of `intervals` (merged) inside `window` (merged)."""
    total = 0.0
    for start, end in union(intervals):
        for w_start, w_end in window:
            total += max(0.0, min(end, w_end) - max(start, w_start))
    return total


def self_times(events: list[Event]) -> dict[str, tuple[int, float]]:
    """Per operator name: calls and summed self time (its duration less its direct children's), per thread."""
    by_thread: dict[tuple[object, object], list[Event]] = defaultdict(list)
    for event in events:
        by_thread[event.thread].append(event)
    calls: dict[str, int] = defaultdict(int)
    own: dict[str, float] = defaultdict(float)
    for thread_events in by_thread.values():
        stack: list[Event] = []  # the events open at this point, outermost first
        for event in sorted(thread_events, key=lambda e: (e.start, -e.end)):
            while stack and stack[-1].end <= event.start:
                stack.pop()
            if stack:  # a direct child: its time is not its parent's own
                own[stack[-1].name] -= min(event.end, stack[-1].end) - event.start
            calls[event.name] += 1
            own[event.name] += event.end - event.start
            stack.append(event)
    return {name: (calls[name], own[name]) for name in calls}


def gaps(window: list[Interval], busy: list[Interval]) -> list[float]:
    """Lengths of the stretches of `window` that no `busy` interval covers."""
    out = []
    for w_start, w_end in window:
        cursor = w_start
        for start, end in busy:
            if end <= cursor or start >= w_end:
                continue
            if start > cursor:
                out.append(start - cursor)
            cursor = max(cursor, end)
        if cursor < w_end:
            out.append(w_end - cursor)
    return out


def summarize(
    path: Path, *, strategy_id: str, run_id: str, rank: int, trace: str, hostname: str | None = None
) -> ProfileSummary:
    """The summary of one rank's trace (`trace` is how the summary names it: relative to the output root); the host
    is `hostname`, else the one the trace names, else '?'."""
    events, host = read_trace(path)
    steps = [e for e in events if e.name == STEP_RANGE]
    if not steps:
        raise InputError(f"{path}: no {STEP_RANGE!r} ranges: not a trace of the runtime's decode steps")
    main_thread = steps[0].thread
    window = union((e.start, e.end) for e in steps if e.thread == main_thread)
    window_us = sum(end - start for start, end in window)
    starts = [start for start, _ in window]

    def inside(event: Event) -> bool:
        at = bisect.bisect_right(starts, event.start) - 1
        return at >= 0 and event.start < window[at][1]

    ranges = {name: [(e.start, e.end) for e in events if e.name == name and inside(e)] for name in PROFILE_RANGES}
    ranges_us = {name: clipped(spans, window) for name, spans in ranges.items()}
    comm_us = clipped([span for name in COMM_RANGES for span in ranges[name]], window)
    busy = union((e.start, e.end) for e in events if e.thread == main_thread and e.name in PROFILE_RANGES and inside(e))
    idle = gaps(window, busy)
    threshold_us = GAP_THRESHOLD_MS * 1000
    device = [e for e in events if e.category in DEVICE_CATEGORIES and inside(e)]
    operators = device or [e for e in events if e.category == "cpu_op" and inside(e)]
    top = sorted(self_times(operators).items(), key=lambda item: -item[1][1])[:TOP_OPS]
    share = (lambda us: us / window_us) if window_us else (lambda us: 0.0)
    return ProfileSummary(
        strategy_id=strategy_id,
        run_id=run_id,
        rank=rank,
        hostname=hostname or host or "?",
        trace=trace,
        steps=len(window),
        window_ms=window_us / 1000,
        ranges_ms={name: us / 1000 for name, us in ranges_us.items()},
        comm_share=share(comm_us),
        idle_share=share(sum(idle)),
        gaps=sum(1 for g in idle if g >= threshold_us),
        gap_threshold_ms=GAP_THRESHOLD_MS,
        longest_gap_ms=max(idle, default=0.0) / 1000,
        device_busy_share=share(clipped(((e.start, e.end) for e in device), window)) if device else None,
        top_ops=tuple(OpTime(name, calls, us / 1000, share(us)) for name, (calls, us) in top),
    )

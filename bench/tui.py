"""tui: the cockpit on a large cluster from the data seam (the demo's cluster: 64 nodes x 2 GPUs, 2,000 queued
jobs), beside the same figures for an empty cluster (no nodes, no jobs) taken in the same run. Issue 6's goals, for
the large one: first paint <= 1 s, a full dashboard refresh <= 50 ms, idle CPU at the default intervals <= 3% of one
core.

first paint:  the app as a real terminal app (python -m bench.tui_app) in a 160x50 pseudo-terminal, from the spawn
              of its process to the first frame that holds every node's and job's row drawn: the interpreter's start
              and the imports included. Also the part from the app built to that frame.
refresh:      in the headless app (App.run_test, 160x50, its own timers off): a poll of the three feeds (the demo
              makes the data: every node's readings change each tick, the queue and the sweep stay as they were, as
              most of a real one's do between polls; the board takes the samples), then the dashboard's
              `show_panels` of the three panels, and the wall time from there to the next frame rendered. Textual
              draws at most 60 frames a second, so up to ~17 ms of that is waiting for the frame; its CPU time is
              given too.
idle CPU:     the terminal app left polling at the default intervals (nodes 2 s, queue 3 s, sweep 2 s) and drawing
              into its pseudo-terminal: its CPU time (every thread, user + system, from /proc/PID/stat) over a
              window, as % of one core; the bytes it wrote to the terminal meanwhile are counted too.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

from textual.widgets import DataTable

from bench.report import table
from bench.tui_app import SteadySource, expected_rows
from cockpit.config import CockpitFile, RefreshSection, Settings
from cockpit.tui.app import CockpitApp
from cockpit.tui.screens.dashboard import PANELS

ROOT = Path(__file__).resolve().parents[1]
SIZE = (160, 50)  # columns, lines
FLEETS = {"big": (64, 2, 2000), "empty": (0, 1, 0)}  # nodes, GPUs per node, queued jobs
LABELS = {"big": "64 nodes x 2 GPUs, 2,000 jobs", "empty": "empty cluster"}


class TerminalApp:
    """`python -m bench.tui_app` in a pseudo-terminal of SIZE; what it writes there is read and counted on a
    thread, as a terminal would. Leaving quits it with `q`, and kills it (by its PID) if it does not go."""

    def __init__(self, fleet: tuple[int, int, int], ready: Path) -> None:
        self.fleet = fleet
        self.ready = ready
        self.written = 0
        self.tail = b""

    def __enter__(self) -> TerminalApp:
        nodes, gpus, jobs = self.fleet
        self.master, replica = pty.openpty()
        fcntl.ioctl(replica, termios.TIOCSWINSZ, struct.pack("HHHH", SIZE[1], SIZE[0], 0, 0))
        command = [sys.executable, "-m", "bench.tui_app", "--nodes", str(nodes), "--gpus", str(gpus)]
        command += ["--jobs", str(jobs), "--ready", str(self.ready)]
        env = {**os.environ, "TERM": "xterm-256color"}
        self.spawned_at = time.monotonic()
        self.process = subprocess.Popen(
            command, stdin=replica, stdout=replica, stderr=replica, cwd=ROOT, env=env, start_new_session=True
        )
        os.close(replica)
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()
        return self

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the app's side of the terminal is closed
                return
            if not chunk:
                return
            self.written += len(chunk)
            self.tail = (self.tail + chunk)[-4000:]

    def painted(self, timeout_s: float = 60.0) -> tuple[float, float]:
        """Seconds from the spawn to the full dashboard drawn, and the part of them from the app built."""
        deadline = time.monotonic() + timeout_s
        while not self.ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                said = self.tail.decode(errors="replace")[-800:]
                raise RuntimeError(f"the app never drew its full dashboard (exit {self.process.poll()}): {said}")
            time.sleep(0.005)
        drawn_at, from_built = (float(word) for word in self.ready.read_text().split())
        return drawn_at - self.spawned_at, from_built

    def cpu_s(self) -> float:
        """The app's CPU seconds so far: utime + stime of all its threads."""
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            os.write(self.master, b"q")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.reader.join(timeout=2)
        os.close(self.master)


def terminal_runs(fleet: tuple[int, int, int], starts: int, settle_s: float, window_s: float) -> dict[str, float]:
    """`starts` cold starts of the terminal app (first paint, median); the first one then also left idle."""
    first, from_built, idle = [], [], {}
    with tempfile.TemporaryDirectory(prefix="bench-tui-") as tmp:
        for start in range(starts):
            with TerminalApp(fleet, Path(tmp) / f"ready-{start}") as app:
                total, own = app.painted()
                first.append(total)
                from_built.append(own)
                if start == 0:
                    time.sleep(settle_s)  # past the first frames' work
                    cpu, written, began = app.cpu_s(), app.written, time.monotonic()
                    time.sleep(window_s)
                    wall = time.monotonic() - began
                    idle = {
                        "idle_cpu_pct": (app.cpu_s() - cpu) / wall * 100,
                        "terminal_kb_per_s": (app.written - written) / wall / 1024,
                    }
    return {"first_paint_s": statistics.median(first), "first_paint_from_app_s": statistics.median(from_built), **idle}


async def refreshes(fleet: tuple[int, int, int], count: int) -> dict[str, float]:
    """`count` full refreshes of the headless dashboard, each after a poll that changed every node's readings."""
    nodes, gpus, jobs = fleet
    settings = Settings(CockpitFile(refresh=RefreshSection(3600.0, 3600.0, 3600.0)))  # only these polls
    app = CockpitApp(settings, SteadySource(nodes=nodes, gpus=gpus, jobs=jobs))
    polls, shows, walls, cpus = [], [], [], []
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        for _ in range(count):
            started = time.perf_counter()
            for feed in app.feeds.values():
                await feed.poll()
            app.board.ingest(app.feeds["nodes"].value or [])
            polled, cpu = time.perf_counter(), time.process_time()
            app.dashboard.show_panels(*PANELS)
            shown = time.perf_counter()
            drawn = asyncio.Event()
            app.call_after_refresh(drawn.set)
            await drawn.wait()
            polls.append(polled - started)
            shows.append(shown - polled)
            walls.append(time.perf_counter() - polled)
            cpus.append(time.process_time() - cpu)
        rows = tuple(app.screen.query_one(f"#{name}", DataTable).row_count for name in ("nodes", "queue"))
    if rows != expected_rows(nodes, gpus, jobs):
        raise RuntimeError(f"the dashboard shows {rows} node and job rows, not {expected_rows(nodes, gpus, jobs)}")
    med = statistics.median
    return {
        "poll_ms": med(polls) * 1000,
        "show_ms": med(shows) * 1000,
        "refresh_ms": med(walls) * 1000,
        "refresh_p95_ms": statistics.quantiles(walls, n=20)[-1] * 1000,
        "refresh_cpu_ms": med(cpus) * 1000,
    }


def run(quick: bool) -> dict:
    starts, settle_s, window_s, count = (1, 1.0, 8.0, 20) if quick else (3, 2.0, 20.0, 60)
    figures: dict[str, float | int | None] = {"cores": os.cpu_count(), "idle_window_s": window_s, "refreshes": count}
    for name, fleet in FLEETS.items():
        measured = {**asyncio.run(refreshes(fleet, count)), **terminal_runs(fleet, starts, settle_s, window_s)}
        figures.update({f"{name}_{key}": value for key, value in measured.items()})
    rows = [
        ("first_paint_s", "first paint s (spawn to full dashboard drawn)", 1.0),
        ("first_paint_from_app_s", "  of which from the app built, s", None),
        ("poll_ms", "poll of the 3 feeds ms (demo data + board)", None),
        ("show_ms", "show_panels of the 3 panels ms", None),
        ("refresh_ms", "full refresh ms (show to frame drawn), median", None),
        ("refresh_p95_ms", "full refresh ms, p95", 50.0),
        ("refresh_cpu_ms", "full refresh CPU ms, median", None),
        ("idle_cpu_pct", "idle CPU % of one core (pty app)", 3.0),
        ("terminal_kb_per_s", "written to the terminal, idle, KiB/s", None),
    ]
    printed = []
    for key, what, goal in rows:
        big, empty = figures[f"big_{key}"], figures[f"empty_{key}"]
        figures[f"{key}_ratio"] = big / empty if empty else None
        verdict = "-" if goal is None else f"<= {goal:g}: {'met' if big <= goal else 'NOT met'}"
        ratio = "-" if figures[f"{key}_ratio"] is None else f"{figures[f'{key}_ratio']:.2f}x"
        printed.append([what, big, empty, ratio, verdict])
    print(table(["", LABELS["big"], LABELS["empty"], "big / empty", "goal (big)"], printed))
    print(
        f"  first paint and idle CPU: the app in a {SIZE[0]}x{SIZE[1]} pseudo-terminal (median of {starts} start(s); "
        f"idle over {window_s:g} s after {settle_s:g} s); refresh: the headless app, {count} refreshes; "
        f"{figures['cores']} cores here"
    )
    return figures

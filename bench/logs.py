"""logs: opening a 100 MB job log in the cockpit (`l`), against `tail -n 1000` of the same file. Issue 25's goal:
the first screen in under 0.3 s.

first screen: in the headless app (App.run_test, 80x24), from the log screen pushed to the first frame drawn after
              its first lines are in the view: locating the log, reading its end (the last 256 KiB, never the
              whole file), ANSI colours parsed, the lines laid out.
tail:         `tail -n 1000 FILE > /dev/null`, the process's wall time, spawn included.

The file: a million runtime log lines of ~100 bytes, every level coloured as a terminal would show it.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.report import table
from cockpit.config import Settings
from cockpit.jobs.output import JobLog, JobLogs, LogChunk, read_log
from cockpit.tui.app import CockpitApp
from cockpit.tui.demo import DemoSource
from cockpit.tui.screens.log import AnsiLog, LogScreen

SIZE_MB = 100
GOAL_S = 0.3


class FileSource(DemoSource):
    """The demo's empty cluster whose one job's output is `path`, read as the live source reads it here."""

    def __init__(self, path: Path) -> None:
        super().__init__(nodes=0, jobs=0)
        self.path = path

    async def job_logs(self, job_id: str) -> JobLogs:
        return JobLogs(f"job {job_id}", (JobLog("output", self.path),))

    async def read_log(self, log: JobLog, offset: int | None) -> LogChunk:
        return await asyncio.to_thread(read_log, log.path, offset)


def write_log(path: Path) -> None:
    line = (
        "2026-11-23 10:15:{s:02d},{ms:03d} [rank {r}] \x1b[32mINFO\x1b[0m batch {b}: 32 tokens in 52 ms ({t} tok/s)\n"
    )
    with path.open("w") as out:
        batch = 0
        while out.tell() < SIZE_MB * 1_000_000:
            out.write(
                "".join(
                    line.format(s=b % 60, ms=b % 1000, r=b % 2, b=b, t=600 + b % 50)
                    for b in range(batch, batch + 10_000)
                )
            )
            batch += 10_000


async def first_screens(path: Path, count: int) -> list[float]:
    app = CockpitApp(Settings(), FileSource(path))
    times = []
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        for _ in range(count):
            started = time.perf_counter()
            screen = LogScreen(app.source, lambda: app.source.job_logs("1"), "job 1")
            await app.push_screen(screen)
            while not screen.query_one("#log", AnsiLog).lines:
                await asyncio.sleep(0.001)
            drawn = asyncio.Event()
            app.call_after_refresh(drawn.set)
            await drawn.wait()
            times.append(time.perf_counter() - started)
            await app.pop_screen()
    return times


def tails(path: Path, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        subprocess.run(["tail", "-n", "1000", str(path)], stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - started)
    return times


def run(quick: bool) -> dict:
    count = 3 if quick else 10
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "slurm-1.out"
        write_log(path)
        size = path.stat().st_size
        ours, peer = statistics.median(asyncio.run(first_screens(path, count))), statistics.median(tails(path, count))
    figures = {"log_bytes": size, "first_screen_s": ours, "tail_n_1000_s": peer, "ratio": ours / peer}
    verdict = f"<= {GOAL_S:g}: {'met' if ours <= GOAL_S else 'NOT met'}"
    print(table(["", "seconds", "goal"], [["first screen of the log (l)", ours, verdict], ["tail -n 1000", peer, "-"]]))
    print(f"  first screen / tail -n 1000: {ours / peer:.2f}x; a {size / 1e6:.0f} MB log, median of {count}")
    return figures

"""The files a rank writes as it goes: shard rows and progress lines (appended, one whole line per write,
flushed), and its metrics at the end (atomically). A reader never sees a half-written line from a live rank."""

from __future__ import annotations

import os
import time
from pathlib import Path

from runtime.atomic import atomic_write_text
from runtime.contract import ExperimentConfig, Phase, ProgressLine, RankMetrics, ShardRow, dumps_line, loads
from runtime.schema import InputError


class _LineLog:
    """An append-only JSON-lines file, started empty for this attempt."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)

    def append(self, lines: list[str]) -> None:
        os.write(self.fd, "".join(lines).encode("utf-8"))  # one write: whole lines or nothing
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


class RankOutputs:
    """This rank's shard (if it owns results), progress and metrics files."""

    def __init__(self, config: ExperimentConfig, rank: int, owns_results: bool, rows_expected: int) -> None:
        self.config, self.rank = config, rank
        self.rows_expected = rows_expected if owns_results else 0
        self.rows_written = 0
        self.tokens = 0
        self.running_since: float | None = None  # tokens/s counts decoding time, not loading
        self.progress_log = _LineLog(config.progress_path(rank))
        self.shard = _LineLog(config.shard_path(rank)) if owns_results else None

    def progress(self, phase: Phase, message: str | None = None, compute_ms_per_step: float | None = None) -> None:
        now = time.time()
        if phase == "running" and self.running_since is None:
            self.running_since = now
        elapsed = now - self.running_since if self.running_since else 0.0
        line = ProgressLine(
            rank=self.rank,
            ts=now,
            phase=phase,
            rows_written=self.rows_written,
            rows_expected=self.rows_expected,
            tokens_generated=self.tokens,
            tokens_per_s=self.tokens / elapsed if elapsed > 0 else 0.0,
            message=message,
            compute_ms_per_step=compute_ms_per_step,
        )
        self.progress_log.append([dumps_line(line)])

    def write_rows(self, rows: list[ShardRow]) -> None:
        assert self.shard is not None, "only result-owning ranks write shard rows"
        self.shard.append([dumps_line(r) for r in rows])
        self.count(rows)

    def count(self, rows: list[ShardRow]) -> None:
        """Rows decoded, in the progress the dashboard follows (a repeat's rows are counted, not written again)."""
        self.rows_written += len(rows)
        self.tokens += sum(r.tokens_generated for r in rows)

    def write_metrics(self, metrics: RankMetrics) -> None:
        atomic_write_text(self.config.metrics_path(self.rank), dumps_line(metrics))

    def close(self) -> None:
        self.progress_log.close()
        if self.shard is not None:
            self.shard.close()


def last_progress(path: Path) -> ProgressLine | None:
    """A rank's latest heartbeat (the last whole line of its progress file), or None if it has none yet."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4096))
            tail = handle.read()
    except FileNotFoundError:
        return None
    lines = tail.split(b"\n")[:-1]  # a line without its newline is still being written
    if not lines:
        return None
    try:
        return loads(ProgressLine, lines[-1].decode("utf-8"), str(path))
    except (InputError, UnicodeDecodeError):
        return None

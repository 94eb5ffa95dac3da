"""Printing and keeping benchmark figures: aligned tables for people, JSON under .cache/bench for the record."""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path

from runtime.atomic import atomic_write_text

RESULTS_DIR = Path(__file__).resolve().parents[1] / ".cache" / "bench"


def table(headers: list[str], rows: list[list[object]]) -> str:
    cells = [headers, *[[f"{c:.3g}" if isinstance(c, float) else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def ratio_line(what: str, value: float, peer: str, goal: float | None = None) -> str:
    verdict = ""
    if goal is not None:
        verdict = f"  (goal >= {goal:.2f}x: {'met' if value >= goal else 'NOT met'})"
    return f"{what}: {value:.2f}x {peer}{verdict}"


def save(name: str, figures: dict) -> Path:
    """Write the figures with where and when they were taken; returns the file."""
    import torch

    record = {
        "benchmark": name,
        "taken_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"node": platform.node(), "arch": platform.machine(), "torch": torch.__version__},
        **figures,
    }
    path = RESULTS_DIR / f"{name}.json"
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path

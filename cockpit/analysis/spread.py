"""How far a measurement can be trusted: the median of a strategy's timed passes, their range, and a 95% bootstrap
interval of the median; two strategies whose intervals overlap cannot be told apart at that many passes.

The bootstrap resamples the passes with replacement (a fixed seed: the same figures give the same interval) and
takes the 2.5th and 97.5th percentiles of the resampled medians. With three passes it is close to their range; it
narrows as passes are added. One pass has no spread: its interval is the point itself, and `measured` says so.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
RESAMPLES = 2000
SEED = 0


@dataclass(frozen=True)
class Spread:
    """The passes' median, minimum, maximum and the bootstrap interval of the median; NaN with no passes."""

    median: float
    low: float  # the interval's ends
    high: float
    minimum: float
    maximum: float
    passes: int

    @property
    def measured(self) -> bool:
        """Whether there is a spread to speak of: two passes or more."""
        return self.passes > 1

    def overlaps(self, other: Spread) -> bool:
        """Whether the two intervals share a value: the difference of the medians is within the noise."""
        return self.low <= other.high and other.low <= self.high

    def interval(self, spec: str = ",.1f") -> str:
        """'25.1-28.0', or '' without a spread."""
        return f"{self.low:{spec}}–{self.high:{spec}}" if self.measured else ""


NO_PASSES = Spread(math.nan, math.nan, math.nan, math.nan, math.nan, 0)


def spread(values: Sequence[float]) -> Spread:
    """The spread of one figure over a strategy's passes (NaNs left out)."""
    known = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not known:
        return NO_PASSES
    middle = statistics.median(known)
    if len(known) == 1:
        return Spread(middle, middle, middle, middle, middle, 1)
    samples = np.random.default_rng(SEED).choice(known, size=(RESAMPLES, len(known)), replace=True)
    low, high = np.quantile(np.median(samples, axis=1), [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Spread(middle, float(low), float(high), min(known), max(known), len(known))


def json_list(cell: object) -> list:
    """The list a JSON column of the metrics table holds (the passes' figures, the ranks' hosts); [] for a cell
    that is missing (None, or NaN where the table joins strategies collected before the column existed)."""
    return json.loads(cell) if isinstance(cell, str) and cell else []

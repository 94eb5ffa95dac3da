"""Ranks against the peers that do the same work (the ranks of one pipeline stage: a TP group and the replicas of
it): the slowest one's figure over the median of the others. Above THRESHOLD it is a straggler, which every
collective of its group waits for. The dashboard applies it live to the ranks' heartbeats, the report to their
metrics (cockpit.analysis.stragglers)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping

THRESHOLD = 1.15  # a rank's compute per step over its peers' median above which it is a straggler


def slowest(per_rank: Mapping[int, float]) -> tuple[int, float] | None:
    """The rank with the largest figure and that figure over the median of the others'; None for fewer than two
    ranks or peers that took no time."""
    if len(per_rank) < 2:
        return None
    rank = max(per_rank, key=lambda r: per_rank[r])
    median = statistics.median(v for r, v in per_rank.items() if r != rank)
    return (rank, per_rank[rank] / median) if median > 0 else None


def straggling(per_rank: Mapping[int, float], stage_of: Mapping[int, int]) -> tuple[int, float] | None:
    """Among peers (ranks of one stage), the rank that straggles most and its ratio, when above THRESHOLD."""
    stages: dict[int, dict[int, float]] = {}
    for rank, value in per_rank.items():
        stages.setdefault(stage_of[rank], {})[rank] = value
    found = [found for group in stages.values() if (found := slowest(group)) is not None]
    worst = max(found, key=lambda f: f[1], default=None)
    return worst if worst is not None and worst[1] > THRESHOLD else None

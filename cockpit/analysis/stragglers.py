"""Stragglers: a rank, or a node, slower than the peers that do the same work, which every collective waits for.

Ranks of one pipeline stage (a TP group, and the data-parallel replicas of it) do the same work per forward step,
so their compute per step (the median forward step of a timed pass, runtime.contract.TimeSplit) should match. The
slowest is a straggler when it is more than cockpit.sweep.peers.THRESHOLD above the median of its peers. When its
host runs none of its peers, the node is named: "node1 is the straggler". A TP group's all-reduce waits for its
slowest rank at every layer, and a sweep for its slowest replica, so without the straggler (every rank as fast as
the median of its peers) the strategy would take its wall time less the straggler's excess compute: the what-if.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cockpit.analysis.spread import json_list
from cockpit.sweep import peers


@dataclass(frozen=True)
class Straggler:
    """The slowest rank of a strategy's slowest group of peers, against their median."""

    strategy: str
    rank: int
    host: str | None
    node: bool  # its host runs none of its peers: the node is the straggler
    ratio: float  # its compute per step over its peers' median
    peers: tuple[str, ...]  # the peers' hosts
    tokens_per_s: float | None  # as measured, and without the straggler's excess compute
    without_tokens_per_s: float | None
    waits: str  # what waits for it

    def sentence(self) -> str:
        who = f"{self.host} is the straggler" if self.node else f"rank {self.rank} ({self.host}) is the straggler"
        than = f"{'/'.join(sorted(set(self.peers)))}'s" if self.node else "its peers' median"
        text = f"{self.strategy}: {who}: its compute per step is {self.ratio:.1f}x {than}; {self.waits}."
        if self.tokens_per_s and self.without_tokens_per_s:
            text += (
                f" Without it (every rank as fast as its peers' median): about {self.without_tokens_per_s:,.1f} "
                f"tokens/s instead of {self.tokens_per_s:,.1f}."
            )
        return text


def _lists(row: Mapping[str, Any], *columns: str) -> list[list[Any]] | None:
    values = [json_list(row.get(column)) for column in columns]
    return values if values[0] and all(len(v) == len(values[0]) for v in values) else None


def straggler(row: Mapping[str, Any]) -> Straggler | None:
    """The strategy's straggler (a metrics row as the collector writes it), or None: no peers to compare, or
    every rank within THRESHOLD of its peers."""
    lists = _lists(row, "rank_stages", "rank_hosts", "rank_step_ms", "rank_steps")
    if lists is None:
        return None
    stages, hosts, step_ms, steps = lists
    known = [r for r in range(len(stages)) if stages[r] is not None and step_ms[r] is not None and steps[r]]
    found = peers.straggling({r: step_ms[r] for r in known}, {r: stages[r] for r in known})
    if found is None:
        return None
    rank, ratio = found
    others = [r for r in known if stages[r] == stages[rank] and r != rank]
    excess_s = step_ms[rank] * (1 - 1 / ratio) / 1e3 * steps[rank]  # beyond its peers' median, step_ms / ratio
    wall, tokens = row.get("wall_time_s"), row.get("tokens_generated")
    tps = tokens / wall if wall and tokens else None
    without = tokens / (wall - excess_s) if tps and wall > excess_s else None
    waits = "every TP all-reduce waits for it" if int(row.get("tp_size") or 1) > 1 else "the run waits for it"
    node = hosts[rank] is not None and all(hosts[r] != hosts[rank] for r in others)
    peer_hosts = tuple(str(hosts[r]) for r in others)
    return Straggler(str(row["strategy"]), rank, hosts[rank], node, ratio, peer_hosts, tps, without, waits)


def compared(row: Mapping[str, Any]) -> bool:
    """Whether the strategy has peers whose compute per step can be compared (some stage with two ranks)."""
    lists = _lists(row, "rank_stages", "rank_step_ms")
    if lists is None:
        return False
    stages = [stage for stage, step_ms in zip(*lists, strict=True) if stage is not None and step_ms is not None]
    return len(stages) > len(set(stages))

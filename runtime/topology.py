"""Where each rank sits: its TP, PP and DP coordinates, its groups, and its stage's layers. Pure Python.

Ranks are laid out TP-innermost, then PP, then DP: rank = (dp * pp_size + pp) * tp_size + tp. With a scheduler
that packs consecutive ranks on a node, a TP group therefore stays inside a node whenever tp_size divides the
GPUs per node (hybrid TP-in-node x PP-across-nodes), and spans nodes when it cannot (TP across nodes).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topology:
    tp_size: int
    pp_size: int
    dp_size: int
    rank: int

    def __post_init__(self) -> None:
        if min(self.tp_size, self.pp_size, self.dp_size) < 1:
            raise ValueError(f"sizes must be positive: tp={self.tp_size} pp={self.pp_size} dp={self.dp_size}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside world of {self.world_size}")

    @property
    def world_size(self) -> int:
        return self.tp_size * self.pp_size * self.dp_size

    @property
    def tp_rank(self) -> int:
        return self.rank % self.tp_size

    @property
    def pp_rank(self) -> int:
        return self.rank // self.tp_size % self.pp_size

    @property
    def dp_rank(self) -> int:
        return self.rank // (self.tp_size * self.pp_size)

    def rank_of(self, tp: int, pp: int, dp: int) -> int:
        return (dp * self.pp_size + pp) * self.tp_size + tp

    @property
    def tp_group(self) -> list[int]:
        """Ranks holding the other slices of this rank's layers."""
        return [self.rank_of(t, self.pp_rank, self.dp_rank) for t in range(self.tp_size)]

    @property
    def pp_group(self) -> list[int]:
        """This rank's pipeline: one rank per stage, same TP slice, same replica."""
        return [self.rank_of(self.tp_rank, p, self.dp_rank) for p in range(self.pp_size)]

    @property
    def dp_group(self) -> list[int]:
        return [self.rank_of(self.tp_rank, self.pp_rank, d) for d in range(self.dp_size)]

    def all_tp_groups(self) -> list[list[int]]:
        """Every TP group, in the order every rank must create them (new_group is collective)."""
        return [
            [self.rank_of(t, p, d) for t in range(self.tp_size)]
            for d in range(self.dp_size)
            for p in range(self.pp_size)
        ]

    @property
    def is_first_stage(self) -> bool:
        return self.pp_rank == 0

    @property
    def is_last_stage(self) -> bool:
        return self.pp_rank == self.pp_size - 1

    @property
    def prev_stage_rank(self) -> int | None:
        return None if self.is_first_stage else self.rank_of(self.tp_rank, self.pp_rank - 1, self.dp_rank)

    @property
    def next_stage_rank(self) -> int | None:
        return None if self.is_last_stage else self.rank_of(self.tp_rank, self.pp_rank + 1, self.dp_rank)

    @property
    def first_stage_rank(self) -> int:
        return self.rank_of(self.tp_rank, 0, self.dp_rank)

    @property
    def last_stage_rank(self) -> int:
        return self.rank_of(self.tp_rank, self.pp_size - 1, self.dp_rank)

    @property
    def owns_results(self) -> bool:
        """One rank per replica writes results: the last stage's first TP slice, which sees every token."""
        return self.is_last_stage and self.tp_rank == 0

    def result_ranks(self) -> list[int]:
        return [self.rank_of(0, self.pp_size - 1, d) for d in range(self.dp_size)]

    def describe(self) -> str:
        return (
            f"rank {self.rank}/{self.world_size}: tp {self.tp_rank}/{self.tp_size} pp {self.pp_rank}/{self.pp_size} "
            f"dp {self.dp_rank}/{self.dp_size}"
        )


def stage_layers(num_layers: int, pp_size: int, stage: int) -> range:
    """Layers of one pipeline stage: contiguous, sizes differ by at most one, extras on the earlier stages
    (the last stage also carries the norm and the LM head)."""
    if not 1 <= pp_size <= num_layers:
        raise ValueError(f"pp_size {pp_size} must be between 1 and the model's {num_layers} layers")
    base, extra = divmod(num_layers, pp_size)
    start = stage * base + min(stage, extra)
    return range(start, start + base + (1 if stage < extra else 0))

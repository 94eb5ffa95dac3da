"""Rank layout (TP innermost, then PP, then DP), groups and stage layer ranges."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.topology import Topology, stage_layers


def test_coordinates_and_groups_of_a_2x2x2_world() -> None:
    topos = [Topology(2, 2, 2, r) for r in range(8)]
    assert [(t.tp_rank, t.pp_rank, t.dp_rank) for t in topos] == [
        (0, 0, 0),
        (1, 0, 0),
        (0, 1, 0),
        (1, 1, 0),
        (0, 0, 1),
        (1, 0, 1),
        (0, 1, 1),
        (1, 1, 1),
    ]
    t = topos[6]  # tp 0, pp 1, dp 1
    assert t.tp_group == [6, 7] and t.pp_group == [4, 6] and t.dp_group == [2, 6]
    assert t.all_tp_groups() == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert (t.prev_stage_rank, t.next_stage_rank, t.first_stage_rank, t.last_stage_rank) == (4, None, 4, 6)
    assert [r for r in range(8) if topos[r].owns_results] == [2, 6] == t.result_ranks()


def test_first_stage_has_no_previous() -> None:
    t = Topology(1, 3, 1, 0)
    assert t.is_first_stage and not t.is_last_stage and t.prev_stage_rank is None and t.next_stage_rank == 1


@pytest.mark.parametrize(("sizes", "rank"), [((0, 1, 1), 0), ((2, 1, 1), 2), ((1, 1, 1), -1)])
def test_bad_sizes_and_ranks_are_refused(sizes: tuple[int, int, int], rank: int) -> None:
    with pytest.raises(ValueError):
        Topology(*sizes, rank)


@given(st.integers(1, 80).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n))))
def test_stage_layers_cover_every_layer_once_balanced(case: tuple[int, int]) -> None:
    layers, stages = case
    ranges = [stage_layers(layers, stages, s) for s in range(stages)]
    assert [i for r in ranges for i in r] == list(range(layers))
    sizes = [len(r) for r in ranges]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("stages", [0, 5])
def test_stage_layers_refuse_impossible_splits(stages: int) -> None:
    with pytest.raises(ValueError, match="between 1 and the model's 4 layers"):
        stage_layers(4, stages, 0)

"""Rank layout (TP innermost, then PP, then DP), groups and stage layer ranges."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.topology import Topology, stage_layers

WORLD = [Topology(2, 2, 2, r) for r in range(8)]


def test_coordinates_of_every_rank_of_a_2x2x2_world() -> None:
    assert [(t.tp_rank, t.pp_rank, t.dp_rank) for t in WORLD] == [
        (0, 0, 0),
        (1, 0, 0),
        (0, 1, 0),
        (1, 1, 0),
        (0, 0, 1),
        (1, 0, 1),
        (0, 1, 1),
        (1, 1, 1),
    ]
    for t in WORLD:
        assert t.world_size == 8
        assert t.rank == (t.dp_rank * 2 + t.pp_rank) * 2 + t.tp_rank == t.rank_of(t.tp_rank, t.pp_rank, t.dp_rank)


def test_groups_of_a_2x2x2_world() -> None:
    t = WORLD[6]  # tp 0, pp 1, dp 1
    assert t.tp_group == [6, 7] and t.pp_group == [4, 6] and t.dp_group == [2, 6]
    for t in WORLD:
        for group in (t.tp_group, t.pp_group, t.dp_group):
            assert t.rank in group and len(group) == 2
        assert all(WORLD[r].tp_group == t.tp_group for r in t.tp_group)
        assert all(WORLD[r].pp_group == t.pp_group for r in t.pp_group)
        assert all(WORLD[r].dp_group == t.dp_group for r in t.dp_group)
        assert t.all_tp_groups() == [[0, 1], [2, 3], [4, 5], [6, 7]]  # same order on every rank


def test_stage_neighbours_of_a_2x2x2_world() -> None:
    assert [(t.prev_stage_rank, t.next_stage_rank) for t in WORLD] == [
        (None, 2),
        (None, 3),
        (0, None),
        (1, None),
        (None, 6),
        (None, 7),
        (4, None),
        (5, None),
    ]
    assert [(t.first_stage_rank, t.last_stage_rank) for t in WORLD] == [
        (0, 2),
        (1, 3),
        (0, 2),
        (1, 3),
        (4, 6),
        (5, 7),
        (4, 6),
        (5, 7),
    ]
    assert [t.is_first_stage for t in WORLD] == [True, True, False, False] * 2
    assert [t.is_last_stage for t in WORLD] == [False, False, True, True] * 2


def test_one_result_owner_per_replica() -> None:
    owners = [t.rank for t in WORLD if t.owns_results]
    assert owners == [2, 6]  # last stage, tp 0, of each replica
    assert {WORLD[r].dp_rank for r in owners} == {0, 1}
    assert all(t.result_ranks() == owners for t in WORLD)


def test_a_three_stage_pipeline() -> None:
    first, middle, last = (Topology(1, 3, 1, r) for r in range(3))
    assert first.is_first_stage and not first.is_last_stage and first.prev_stage_rank is None
    assert (middle.prev_stage_rank, middle.next_stage_rank) == (0, 2)
    assert not (middle.is_first_stage or middle.is_last_stage or middle.owns_results)
    assert last.next_stage_rank is None and last.owns_results


def test_describe() -> None:
    assert WORLD[5].describe() == "rank 5/8: tp 1/2 pp 0/2 dp 1/2"


@pytest.mark.parametrize(
    ("sizes", "rank"),
    [((0, 1, 1), 0), ((1, 0, 1), 0), ((1, 1, 0), 0), ((1, -1, 1), 0), ((2, 1, 1), 2), ((1, 1, 1), -1)],
)
def test_bad_sizes_and_ranks_are_refused(sizes: tuple[int, int, int], rank: int) -> None:
    with pytest.raises(ValueError, match=r"sizes must be positive|outside world"):
        Topology(*sizes, rank)


@given(st.integers(1, 80).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n))))
def test_stage_layers_cover_every_layer_once_balanced(case: tuple[int, int]) -> None:
    layers, stages = case
    ranges = [stage_layers(layers, stages, s) for s in range(stages)]
    assert all(r.step == 1 and len(r) >= 1 for r in ranges)
    assert [i for r in ranges for i in r] == list(range(layers))  # contiguous, in order, each layer once
    sizes = [len(r) for r in ranges]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)  # extras on earlier stages


def test_stage_layers_example() -> None:
    assert [stage_layers(10, 4, s) for s in range(4)] == [range(0, 3), range(3, 6), range(6, 8), range(8, 10)]


@pytest.mark.parametrize("stages", [0, -1, 5])
def test_stage_layers_refuse_impossible_splits(stages: int) -> None:
    with pytest.raises(ValueError, match=f"pp_size {stages} must be between 1 and the model's 4 layers"):
        stage_layers(4, stages, 0)

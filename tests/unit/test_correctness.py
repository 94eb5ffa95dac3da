"""Correctness scoring: token agreement with the reference strategy, text similarity with the baseline."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from rapidfuzz import fuzz
from rapidfuzz.distance import Levenshtein

from cockpit.analysis.correctness import (
    MAJORITY,
    PromptScore,
    Reference,
    choose_reference,
    divergences,
    evaluate,
    score_prompt,
    summarize,
    truth,
)
from cockpit.errors import BadInput

REF, TP = "tiny_pp1_tp1_n1", "tiny_pp1_tp2_n2"
PP, HY = "tiny_pp2_tp1_n2", "tiny_pp2_tp2_n2"


def row(strategy: str, kind: str, variant: str, prompt_id: int, tokens: list[int], completion: str) -> dict:
    return {
        "run_id": "run_20261123T120000",
        "strategy": strategy,
        "strategy_kind": kind,
        "variant": variant,
        "prompt_id": prompt_id,
        "completion": completion,
        "token_ids": tokens,
        "tokens_generated": len(tokens),
    }


def baseline(completions: dict[tuple[str, int], str | None]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"prompt_id": pid, "variant": variant, "prompt": f"p{pid}", "local_completion": text, "status": "done"}
            for (variant, pid), text in completions.items()
        ],
        columns=["prompt_id", "variant", "prompt", "local_completion", "status"],
    )


@pytest.fixture
def results() -> pd.DataFrame:
    return pd.DataFrame(
        [
            row(REF, "reference", "2k", 0, [1, 2, 3], "the cat sat"),
            row(REF, "reference", "2k", 1, [4, 5, 6], "a dog ran"),
            row(TP, "tp_nodes", "2k", 0, [1, 2, 3], "the cat sat"),
            row(TP, "tp_nodes", "2k", 1, [4, 9, 6, 7], "a dog ran far"),
        ]
    )


@pytest.mark.parametrize(
    ("tokens", "reference", "exact", "divergence"),
    [
        ([1, 2, 3], [1, 2, 3], True, None),
        ([], [], True, None),
        ([9, 2, 3], [1, 2, 3], False, 0),
        ([1, 2, 9, 4], [1, 2, 3, 4], False, 2),
        ([1, 2], [1, 2, 3, 4], False, 2),
        ([1, 2, 3, 4, 5], [1, 2, 3], False, 3),
    ],
)
def test_exact_match_and_first_divergence(tokens, reference, exact, divergence) -> None:
    score = score_prompt(tokens, reference, "x", None)
    assert score.exact_match is exact
    assert score.first_divergence == divergence


def test_identical_text_is_fully_similar() -> None:
    score = score_prompt([1], [1], "the cat sat", "the cat sat")
    assert score == PromptScore(True, None, 100.0, 100.0, 1.0)


def test_similarity_matches_rapidfuzz_on_known_strings() -> None:
    score = score_prompt([1], [1], "kitten", "sitting")
    # Levenshtein distance 3 over the longer length 7; InDel distance 5 over the summed length 13
    assert score.normalized_levenshtein == pytest.approx(1 - 3 / 7)
    assert score.ratio == pytest.approx(100 * (1 - 5 / 13))
    assert score.ratio == pytest.approx(fuzz.ratio("kitten", "sitting"))
    assert score.normalized_levenshtein == pytest.approx(Levenshtein.normalized_similarity("kitten", "sitting"))
    reordered = score_prompt([1], [1], "sat the cat", "the cat sat")
    assert reordered.token_set_ratio == 100.0
    assert reordered.ratio < 100.0


def test_no_baseline_completion_gives_no_similarity() -> None:
    score = score_prompt([1, 2], [1, 3], "text", None)
    assert (score.exact_match, score.first_divergence) == (False, 1)
    assert (score.ratio, score.token_set_ratio, score.normalized_levenshtein) == (None, None, None)


def test_evaluate_scores_every_row_and_keeps_the_reference(results: pd.DataFrame) -> None:
    base = baseline({("2k", 0): "the cat sat", ("2k", 1): None})
    scores = evaluate(results, base)
    assert len(scores) == 4
    by = scores.set_index(["strategy", "prompt_id"])
    assert bool(by.loc[(REF, 0), "exact_match"]) and bool(by.loc[(REF, 1), "exact_match"])
    assert bool(by.loc[(TP, 0), "exact_match"])
    assert not bool(by.loc[(TP, 1), "exact_match"])
    assert by.loc[(TP, 1), "first_divergence"] == 1
    assert pd.isna(by.loc[(TP, 0), "first_divergence"])
    assert by.loc[(TP, 0), "normalized_levenshtein"] == 1.0
    assert math.isnan(by.loc[(TP, 1), "ratio"])  # no baseline completion for prompt 1
    assert by.loc[(TP, 1), "tokens_generated"] == 4
    assert by.loc[(TP, 1), "strategy_kind"] == "tp_nodes"
    assert not scores["reference_missing"].any()


def test_evaluate_accepts_numpy_token_arrays(results: pd.DataFrame) -> None:
    results = results.assign(token_ids=[np.array(t, dtype=np.int64) for t in results["token_ids"]])
    scores = evaluate(results, baseline({}))
    assert scores["exact_match"].tolist() == [True, True, True, False]


def test_a_prompt_without_a_reference_row_is_flagged(results: pd.DataFrame) -> None:
    extra = pd.DataFrame([row(TP, "tp_nodes", "4k", 0, [1, 2], "the cat")])
    scores = evaluate(pd.concat([results, extra]), baseline({("2k", 0): "x", ("4k", 0): "the cat"}))
    flagged = scores[scores["reference_missing"]]
    assert flagged[["strategy", "variant", "prompt_id"]].values.tolist() == [[TP, "4k", 0]]
    assert pd.isna(flagged["exact_match"].iloc[0])
    assert pd.isna(flagged["first_divergence"].iloc[0])
    assert flagged["normalized_levenshtein"].iloc[0] == 1.0  # the baseline is still compared


def test_without_a_reference_strategy_the_strategies_majority_is_the_truth() -> None:
    results = pd.DataFrame(
        [
            row(TP, "tp_nodes", "2k", 0, [1, 2, 3], "the cat sat"),
            row(PP, "pp_nodes", "2k", 0, [1, 2, 3], "the cat sat"),
            row(HY, "hybrid", "2k", 0, [1, 2, 3], "the cat sat"),
            row(TP, "tp_nodes", "2k", 1, [4, 5, 6], "a dog ran"),
            row(PP, "pp_nodes", "2k", 1, [4, 9, 6], "a dig ran"),
            row(HY, "hybrid", "2k", 1, [4, 5, 6], "a dog ran"),
            row(TP, "tp_nodes", "2k", 2, [1], "x"),
            row(PP, "pp_nodes", "2k", 2, [2], "y"),  # two of three ran it and disagree: no majority
        ]
    )
    reference = choose_reference(results, baseline({}))
    assert reference == Reference(MAJORITY, None, "no single-device run, no baseline")
    assert reference.sentence == "reference: the strategies' majority (no single-device run, no baseline)"
    assert truth(results, baseline({}), reference).values.tolist() == [
        ["2k", 0, [1, 2, 3], "the cat sat"],
        ["2k", 1, [4, 5, 6], "a dog ran"],
    ]
    scores = evaluate(results, baseline({}), reference)
    by = scores.set_index(["strategy", "prompt_id"])
    assert by.loc[(PP, 1), "first_divergence"] == 1 and not by.loc[(PP, 1), "exact_match"]
    assert by.loc[[(TP, 0), (TP, 1), (HY, 0), (HY, 1), (PP, 0)], "exact_match"].all()
    assert by.loc[[(TP, 2), (PP, 2)], "reference_missing"].all()
    assert divergences(scores, reference) == [
        f"{PP} differs from the strategies' majority on 1 of 2 prompts; first: token 1 of 2k prompt 1",
        "1 prompt(s) have nothing from the strategies' majority to compare against",
    ]


def test_an_endpoint_baseline_is_the_truth_by_text_when_the_single_device_run_has_none() -> None:
    results = pd.DataFrame(
        [row(TP, "tp_nodes", "2k", 0, [1, 2], "the cat sat"), row(TP, "tp_nodes", "2k", 1, [3, 4], "a dog ran far")]
    )
    base = baseline({("2k", 0): "the cat sat", ("2k", 1): "a dog ran"})
    reference = choose_reference(results, base, endpoint=True, fate="the single-device run failed: OUT_OF_MEMORY")
    assert reference.sentence == "reference: the baseline endpoint (the single-device run failed: OUT_OF_MEMORY)"
    scores = evaluate(results, base, reference).set_index("prompt_id")
    assert scores["exact_match"].tolist() == [True, False]  # the text, exactly: the endpoint gives no token ids
    assert scores["first_divergence"].isna().all()
    assert scores.loc[1, "normalized_levenshtein"] == pytest.approx(
        Levenshtein.normalized_similarity("a dog ran far", "a dog ran")
    )
    assert divergences(evaluate(results, base, reference), reference) == [
        f"{TP} differs from the baseline endpoint on 1 of 2 prompts; first: text, 2k prompt 1"
    ]
    empty = baseline({("2k", 0): None})
    assert (
        choose_reference(results, empty, endpoint=True).why
        == "no single-device run, the baseline endpoint gave no completion"
    )


def test_a_partial_reference_judges_the_prompts_it_has(results: pd.DataFrame) -> None:
    partial = results.drop(index=1)  # the reference's prompt 1 is missing
    reference = choose_reference(partial, baseline({}))
    assert (
        reference.sentence == f"reference: {REF} (the single-device run, 1 of 2 prompts: the others are not compared)"
    )
    assert evaluate(partial, baseline({}), reference)["reference_missing"].tolist() == [False, False, True]


def test_two_reference_strategies_are_an_input_error(results: pd.DataFrame) -> None:
    other = results.assign(
        strategy=results["strategy"].where(results["strategy"] == TP, "tiny_other"), strategy_kind="reference"
    )
    with pytest.raises(BadInput, match=r"run_20261123T120000: more than one 'reference' strategy"):
        evaluate(other, baseline({}))


def test_duplicate_result_rows_are_an_input_error(results: pd.DataFrame) -> None:
    with pytest.raises(BadInput, match="duplicate rows"):
        evaluate(pd.concat([results, results.iloc[[3]]]), baseline({}))


def test_summarize_rates_and_divergences(results: pd.DataFrame) -> None:
    more = pd.DataFrame(
        [
            row(REF, "reference", "2k", 2, [1, 1, 1, 1, 1], "x"),
            row(TP, "tp_nodes", "2k", 2, [1, 1, 1, 2, 1], "x"),
            row(TP, "tp_nodes", "4k", 0, [1], "y"),  # no reference row
        ]
    )
    scores = evaluate(
        pd.concat([results, more]), baseline({("2k", 0): "the cat sat", ("2k", 1): "a dog ran", ("2k", 2): "x"})
    )
    summary = summarize(scores).set_index(["strategy", "variant"])
    assert summary.index.tolist() == [(REF, "2k"), (TP, "2k"), (TP, "4k")]
    ref, tp, missing = summary.loc[(REF, "2k")], summary.loc[(TP, "2k")], summary.loc[(TP, "4k")]
    assert (ref["prompts"], ref["exact_match_rate"], ref["diverging"]) == (3, 1.0, 0)
    assert math.isnan(ref["mean_first_divergence"]) and math.isnan(ref["min_first_divergence"])
    assert ref["mean_normalized_levenshtein"] == 1.0
    assert (tp["prompts"], tp["compared"], tp["exact_matches"]) == (3, 3, 1)
    assert tp["exact_match_rate"] == pytest.approx(1 / 3)
    assert (tp["mean_first_divergence"], tp["min_first_divergence"]) == (2.0, 1.0)  # diverged at 1 and 3
    expected = (1.0 + Levenshtein.normalized_similarity("a dog ran far", "a dog ran") + 1.0) / 3
    assert tp["mean_normalized_levenshtein"] == pytest.approx(expected)
    assert tp["mean_ratio"] == pytest.approx((100 + fuzz.ratio("a dog ran far", "a dog ran") + 100) / 3)
    assert (missing["prompts"], missing["compared"], missing["scored"]) == (1, 0, 0)
    assert math.isnan(missing["exact_match_rate"]) and math.isnan(missing["mean_normalized_levenshtein"])

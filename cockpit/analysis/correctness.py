"""Correctness of a sweep: every strategy's greedy tokens against the reference strategy's,
and its text against the baseline completion of the prompt table.

    exact_match          the token ids equal the reference's for the same (variant, prompt)
    first_divergence     the first token index where they differ (None when equal)
    ratio, token_set     rapidfuzz similarities (0-100) of the completion to the baseline's `local_completion`
    normalized_lev.      normalized Levenshtein similarity (0-1) to the same
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import pandas as pd
from rapidfuzz import fuzz
from rapidfuzz.distance import Levenshtein

from cockpit.errors import BadInput
from runtime.contract import first_divergence

REFERENCE_KIND = "reference"  # the strategy kind whose tokens are the truth
KEY = ["strategy", "variant", "prompt_id"]
RESULT_COLUMNS = ("strategy", "strategy_kind", "variant", "prompt_id", "completion", "token_ids", "tokens_generated")
BASELINE_COLUMNS = ("prompt_id", "variant", "local_completion")
SCORE_FIELDS = ("exact_match", "first_divergence", "ratio", "token_set_ratio", "normalized_levenshtein")
SUMMARY_COLUMNS = (
    "strategy",
    "strategy_kind",
    "variant",
    "prompts",
    "compared",  # prompts with a reference row
    "exact_matches",
    "exact_match_rate",
    "diverging",
    "mean_first_divergence",
    "min_first_divergence",
    "scored",  # prompts with a baseline completion
    "mean_ratio",
    "mean_token_set_ratio",
    "mean_normalized_levenshtein",
)


@dataclass(frozen=True)
class PromptScore:
    """How one strategy's output for one prompt compares with the reference tokens and the baseline text."""

    exact_match: bool
    first_divergence: int | None
    ratio: float | None
    token_set_ratio: float | None
    normalized_levenshtein: float | None


def require_columns(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """Raise BadInput naming the columns `frame` lacks."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise BadInput(f"{what}: missing columns {', '.join(missing)}")


def _is_missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _token_list(value: Iterable[int] | None) -> list[int]:
    return [] if _is_missing(value) else [int(t) for t in value]


def score_prompt(
    tokens: Sequence[int],
    reference_tokens: Sequence[int],
    completion: str,
    baseline_completion: str | None,
) -> PromptScore:
    """Token agreement with the reference, text similarity with the baseline (None without a baseline)."""
    tokens, reference_tokens = list(tokens), list(reference_tokens)
    divergence = first_divergence(tokens, reference_tokens)
    if _is_missing(baseline_completion):
        ratio = token_set = normalized = None
    else:
        text = "" if _is_missing(completion) else str(completion)
        ratio = float(fuzz.ratio(text, baseline_completion))
        token_set = float(fuzz.token_set_ratio(text, baseline_completion))
        normalized = float(Levenshtein.normalized_similarity(text, baseline_completion))
    return PromptScore(divergence is None, divergence, ratio, token_set, normalized)


def reference_strategy(results: pd.DataFrame) -> str:
    """The one strategy of the reference kind; BadInput when there is none or more than one."""
    references = sorted(results.loc[results["strategy_kind"] == REFERENCE_KIND, "strategy"].unique())
    if len(references) == 1:
        return str(references[0])
    runs = ", ".join(sorted(map(str, results["run_id"].unique()))) if "run_id" in results else "?"
    present = ", ".join(sorted(map(str, results["strategy"].unique()))) or "none"
    if not references:
        raise BadInput(f"run {runs or '?'}: no '{REFERENCE_KIND}' strategy to compare against; strategies: {present}")
    raise BadInput(f"run {runs}: more than one '{REFERENCE_KIND}' strategy: {', '.join(references)}")


def evaluate(results: pd.DataFrame, baseline: pd.DataFrame) -> pd.DataFrame:
    """One row per (strategy, variant, prompt_id): the score fields, tokens_generated and `reference_missing`."""
    require_columns(results, RESULT_COLUMNS, "results")
    require_columns(baseline, BASELINE_COLUMNS, "baseline")
    for frame, key, what in ((results, KEY, "results"), (baseline, ["variant", "prompt_id"], "baseline")):
        duplicated = frame[frame.duplicated(key, keep=False)]
        if not duplicated.empty:
            first = duplicated.iloc[0]
            raise BadInput(f"{what}: duplicate rows for {', '.join(f'{k}={first[k]}' for k in key)}")
    reference = reference_strategy(results)
    truth = results.loc[results["strategy"] == reference, ["variant", "prompt_id", "token_ids"]].rename(
        columns={"token_ids": "reference_token_ids"}
    )
    texts = baseline[["variant", "prompt_id", "local_completion"]]
    merged = results.merge(truth, on=["variant", "prompt_id"], how="left", indicator="reference_row")
    merged = merged.merge(texts, on=["variant", "prompt_id"], how="left")
    rows = []
    for row in merged.itertuples(index=False):
        missing = row.reference_row == "left_only"
        score = score_prompt(
            _token_list(row.token_ids),
            _token_list(None if missing else row.reference_token_ids),
            row.completion,
            None if _is_missing(row.local_completion) else str(row.local_completion),
        )
        fields = asdict(score)
        if missing:
            fields.update(exact_match=pd.NA, first_divergence=pd.NA)
        rows.append({**fields, "reference_missing": missing})
    scores = pd.DataFrame(rows, columns=[*SCORE_FIELDS, "reference_missing"], index=merged.index)
    leading = [c for c in ("run_id", "strategy", "strategy_kind", "variant", "prompt_id") if c in merged]
    out = pd.concat([merged[[*leading, "tokens_generated"]], scores], axis=1)
    out = out.astype(
        {
            "exact_match": "boolean",
            "first_divergence": "Int64",
            "ratio": "float64",
            "token_set_ratio": "float64",
            "normalized_levenshtein": "float64",
            "reference_missing": "bool",
        }
    )
    return out.sort_values(KEY, kind="stable").reset_index(drop=True)


def summarize(scores: pd.DataFrame) -> pd.DataFrame:
    """Per (strategy, variant): prompts, exact-match rate, divergence positions and mean similarities."""
    require_columns(scores, [*KEY, "strategy_kind", *SCORE_FIELDS], "scores")
    rows = []
    for (strategy, variant), group in scores.groupby(["strategy", "variant"], sort=True):
        compared = group["exact_match"].dropna()
        diverging = group["first_divergence"].dropna().astype(float)
        scored = group["normalized_levenshtein"].notna()
        rows.append(
            {
                "strategy": strategy,
                "strategy_kind": group["strategy_kind"].iloc[0],
                "variant": variant,
                "prompts": len(group),
                "compared": len(compared),
                "exact_matches": int(compared.sum()),
                "exact_match_rate": float(compared.mean()) if len(compared) else math.nan,
                "diverging": len(diverging),
                "mean_first_divergence": float(diverging.mean()) if len(diverging) else math.nan,
                "min_first_divergence": float(diverging.min()) if len(diverging) else math.nan,
                "scored": int(scored.sum()),
                "mean_ratio": float(group["ratio"].mean()),
                "mean_token_set_ratio": float(group["token_set_ratio"].mean()),
                "mean_normalized_levenshtein": float(group["normalized_levenshtein"].mean()),
            }
        )
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))

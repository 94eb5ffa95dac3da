"""Correctness of a sweep: every strategy's greedy tokens against the reference's, and its text against the
baseline completion of the prompt table.

The reference (`choose_reference`) is the single-device strategy when it has rows; else the baseline endpoint's
completions when one is configured (text only: compared exactly); else the strategies' majority, per prompt the
token ids that more than half of the strategies with a row produced (at least two of them; none: not compared).

    exact_match          the token ids (the text, against the endpoint) equal the reference's for the same prompt
    first_divergence     the first token index where they differ (None when equal or compared by text)
    ratio, token_set     rapidfuzz similarities (0-100) of the completion to the baseline's `local_completion`
    normalized_lev.      normalized Levenshtein similarity (0-1) to the same
"""

from __future__ import annotations

import math
from collections import Counter
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


def _text(value: object) -> str:
    return "" if _is_missing(value) else str(value)


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
        text = _text(completion)
        ratio = float(fuzz.ratio(text, baseline_completion))
        token_set = float(fuzz.token_set_ratio(text, baseline_completion))
        normalized = float(Levenshtein.normalized_similarity(text, baseline_completion))
    return PromptScore(divergence is None, divergence, ratio, token_set, normalized)


SINGLE_DEVICE, BASELINE, MAJORITY = "single-device", "baseline", "majority"  # what a reference can be
NAMES = {SINGLE_DEVICE: "the reference", BASELINE: "the baseline endpoint", MAJORITY: "the strategies' majority"}


@dataclass(frozen=True)
class Reference:
    """What a run's completions are judged against, and why that one."""

    source: str  # SINGLE_DEVICE, BASELINE or MAJORITY
    strategy: str | None = None  # the single-device strategy, when it is the reference
    why: str = "the single-device run"  # for the others: what became of the single-device run, and of a baseline

    @property
    def label(self) -> str:
        """'tiny_pp1_tp1_n1', 'the baseline endpoint' or "the strategies' majority"."""
        return str(self.strategy) if self.source == SINGLE_DEVICE else NAMES[self.source]

    @property
    def sentence(self) -> str:
        """'reference: <label> (<why>)', as the report and the results screen say it."""
        return f"reference: {self.label} ({self.why})"

    @property
    def matched(self) -> str:
        """What a strategy that reproduced the reference on every prompt has, for the winner sentence."""
        if self.source == BASELINE:
            return "every prompt's text identical to the baseline endpoint's"
        return f"every prompt's tokens identical to {NAMES[self.source]}"


def choose_reference(
    results: pd.DataFrame, baseline: pd.DataFrame, *, endpoint: bool = False, fate: str = "no single-device run"
) -> Reference:
    """The single-device strategy when it has rows (a partial one judges the prompts it has); else the baseline
    when `endpoint` (its completions come from an endpoint, not from the single-device run) and it has any; else
    the strategies' majority. `fate`: why the single-device run has no rows. BadInput for two single-device
    strategies."""
    references = sorted(results.loc[results["strategy_kind"] == REFERENCE_KIND, "strategy"].unique())
    if len(references) > 1:
        runs = ", ".join(sorted(map(str, results["run_id"].unique()))) if "run_id" in results else "?"
        raise BadInput(f"run {runs}: more than one '{REFERENCE_KIND}' strategy: {', '.join(references)}")
    if references:
        prompts = results[["variant", "prompt_id"]].drop_duplicates()
        have = int((results["strategy"] == references[0]).sum())
        partial = f", {have} of {len(prompts)} prompts: the others are not compared" if have < len(prompts) else ""
        return Reference(SINGLE_DEVICE, str(references[0]), f"the single-device run{partial}")
    if endpoint and baseline["local_completion"].notna().any():
        return Reference(BASELINE, why=fate)
    without = "the baseline endpoint gave no completion" if endpoint else "no baseline"
    return Reference(MAJORITY, why=f"{fate}, {without}")


TRUTH_COLUMNS = ["variant", "prompt_id", "reference_token_ids", "reference_completion"]


def truth(results: pd.DataFrame, baseline: pd.DataFrame, reference: Reference) -> pd.DataFrame:
    """Per prompt (variant, prompt_id): the reference's token ids (None from the endpoint: text only) and its
    completion. A prompt without one (not run by the single-device strategy, no majority) has no row."""
    if reference.source == SINGLE_DEVICE:
        rows = results[results["strategy"] == reference.strategy]
        return rows.rename(columns={"token_ids": "reference_token_ids", "completion": "reference_completion"})[
            TRUTH_COLUMNS
        ]
    if reference.source == BASELINE:
        texts = baseline[baseline["local_completion"].notna()]
        return texts.assign(reference_token_ids=None, reference_completion=texts["local_completion"])[TRUTH_COLUMNS]
    agreed = []
    for (variant, prompt_id), group in results.sort_values("strategy").groupby(["variant", "prompt_id"]):
        votes = [tuple(_token_list(tokens)) for tokens in group["token_ids"]]
        tokens, count = Counter(votes).most_common(1)[0]
        if count >= 2 and 2 * count > len(votes):
            agreed.append((variant, prompt_id, list(tokens), group["completion"].iloc[votes.index(tokens)]))
    return pd.DataFrame(agreed, columns=TRUTH_COLUMNS)


def evaluate(results: pd.DataFrame, baseline: pd.DataFrame, reference: Reference | None = None) -> pd.DataFrame:
    """One row per (strategy, variant, prompt_id): the score fields, tokens_generated and `reference_missing`.
    `reference`: what to judge against (None: `choose_reference` with no endpoint)."""
    require_columns(results, RESULT_COLUMNS, "results")
    require_columns(baseline, BASELINE_COLUMNS, "baseline")
    for frame, key, what in ((results, KEY, "results"), (baseline, ["variant", "prompt_id"], "baseline")):
        duplicated = frame[frame.duplicated(key, keep=False)]
        if not duplicated.empty:
            first = duplicated.iloc[0]
            raise BadInput(f"{what}: duplicate rows for {', '.join(f'{k}={first[k]}' for k in key)}")
    reference = reference or choose_reference(results, baseline)
    texts = baseline[["variant", "prompt_id", "local_completion"]]
    merged = results.merge(
        truth(results, baseline, reference), on=["variant", "prompt_id"], how="left", indicator="reference_row"
    )
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
        elif reference.source == BASELINE:  # the endpoint's text is all there is
            fields.update(exact_match=_text(row.completion) == row.reference_completion, first_divergence=pd.NA)
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


def divergences(scores: pd.DataFrame, reference: Reference) -> list[str]:
    """A sentence per strategy that differs from the reference on some prompt (on how many, and its earliest
    divergence), and one for the prompts with no reference to compare against."""
    lines = []
    for strategy, group in scores.groupby("strategy", sort=True):
        differ = group[group["exact_match"].eq(False).fillna(False)]
        if differ.empty:
            continue
        first = differ.sort_values(["first_divergence", "variant", "prompt_id"], na_position="last").iloc[0]
        where = f"{first['variant']} prompt {first['prompt_id']}"
        at = f"text, {where}" if pd.isna(first["first_divergence"]) else f"token {first['first_divergence']} of {where}"
        compared = int(group["exact_match"].notna().sum())
        lines.append(f"{strategy} differs from {reference.label} on {len(differ)} of {compared} prompts; first: {at}")
    unjudged = scores.loc[scores["reference_missing"], ["variant", "prompt_id"]].drop_duplicates()
    if len(unjudged):
        lines.append(f"{len(unjudged)} prompt(s) have nothing from {reference.label} to compare against")
    return lines


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

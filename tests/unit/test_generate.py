"""The greedy loop in one process against HF `generate`: left padding, EOS mid-batch, max_new_tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from runtime.checkpoint import Stage, load_config, load_stage
from runtime.generate import DecodeSettings, Generator, RowResult, left_pad
from runtime.prompts import split_evenly
from tests.integration import runs
from tests.integration.runs import PROMPTS

NEW_TOKENS = 12
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def stage(tiny_model_dir: Path) -> Stage:
    config = load_config(tiny_model_dir)
    loaded, _ = load_stage(tiny_model_dir, config, range(config.num_hidden_layers), first=True, last=True)
    return loaded


@pytest.fixture(scope="module")
def prompt_ids(tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
    return [tokenizer(p)["input_ids"] for p in PROMPTS]


def ours(
    stage: Stage, prompts: list[list[int]], eos: set[int], pad: int, new_tokens: int = NEW_TOKENS, micro: int = 1
) -> list[RowResult]:
    settings = DecodeSettings(CPU, torch.float32, eos, pad, new_tokens, micro_batches=micro)
    return Generator.alone(stage, settings).run(prompts)


def theirs(model_dir: Path, tokenizer: PreTrainedTokenizerBase, eos: int) -> list[list[int]]:
    """HF generate with `eos` as the end of sequence, rows cut after their first EOS (HF pads finished rows)."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    out = model.generate(
        **batch, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id
    )
    rows = out[:, batch["input_ids"].shape[1] :].tolist()
    return [row[: row.index(eos) + 1] if eos in row else row for row in rows]


def test_the_tokenizer_pads_on_the_left(tokenizer: PreTrainedTokenizerBase) -> None:
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id is not None
    assert len({len(tokenizer(p)["input_ids"]) for p in PROMPTS}) == len(PROMPTS)  # padding really happens


@pytest.mark.parametrize("micro", [1, 2, 4])
def test_greedy_tokens_equal_hf_generate(
    tiny_model_dir: Path, tokenizer: PreTrainedTokenizerBase, stage: Stage, prompt_ids: list[list[int]], micro: int
) -> None:
    expected = runs.hf_reference(tiny_model_dir, PROMPTS, NEW_TOKENS, batch_size=len(PROMPTS))
    results = ours(stage, prompt_ids, {tokenizer.eos_token_id}, tokenizer.pad_token_id, micro=micro)
    assert [r.tokens for r in results] == [expected[i] for i in range(len(PROMPTS))]
    for row, result in zip(expected.values(), results, strict=True):
        assert result.finish_reason == ("eos" if row[-1] == tokenizer.eos_token_id else "length")
    assert all(r.latency_s >= r.ttft_s > 0 for r in results)


def mid_run_token(rows: list[list[int]]) -> int:
    """A token prompt 0 first produces at its 4th step or later, and some other row never produces."""
    for pos in range(3, NEW_TOKENS - 1):
        token = rows[0][pos]
        if token not in rows[0][:pos] and any(token not in row for row in rows[1:]):
            return token
    raise AssertionError(f"no suitable token in {rows}")


def test_eos_mid_batch_stops_that_row_only(
    tiny_model_dir: Path, tokenizer: PreTrainedTokenizerBase, stage: Stage, prompt_ids: list[list[int]]
) -> None:
    free_run = theirs(tiny_model_dir, tokenizer, tokenizer.eos_token_id)
    eos = mid_run_token(free_run)
    stop = free_run[0].index(eos) + 1
    expected = theirs(tiny_model_dir, tokenizer, eos)
    assert len(expected[0]) == stop < NEW_TOKENS  # the reference itself stops there
    results = ours(stage, prompt_ids, {eos}, tokenizer.pad_token_id)
    assert [r.tokens for r in results] == expected
    assert results[0].finish_reason == "eos" and results[0].tokens[-1] == eos and len(results[0].tokens) == stop
    reasons = ["eos" if eos in row else "length" for row in expected]
    assert [r.finish_reason for r in results] == reasons and "length" in reasons
    assert all(len(r.tokens) == NEW_TOKENS for r in results if r.finish_reason == "length")
    assert results[0].latency_s <= max(r.latency_s for r in results)


def test_every_row_at_eos_ends_the_batch_early(
    tokenizer: PreTrainedTokenizerBase, stage: Stage, prompt_ids: list[list[int]]
) -> None:
    free = ours(stage, prompt_ids, set(), tokenizer.pad_token_id)
    firsts = {r.tokens[0] for r in free}
    results = ours(stage, prompt_ids, firsts, tokenizer.pad_token_id)
    assert [r.tokens for r in results] == [[r.tokens[0]] for r in free]
    assert {r.finish_reason for r in results} == {"eos"}


def test_one_new_token(tokenizer: PreTrainedTokenizerBase, stage: Stage, prompt_ids: list[list[int]]) -> None:
    full = ours(stage, prompt_ids, set(), tokenizer.pad_token_id)
    one = ours(stage, prompt_ids, set(), tokenizer.pad_token_id, new_tokens=1)
    assert [r.tokens for r in one] == [r.tokens[:1] for r in full]
    assert {r.finish_reason for r in one} == {"length"} and all(r.latency_s == r.ttft_s for r in one)


def test_left_pad() -> None:
    ids, mask = left_pad([[5, 6, 7], [8], [9, 10]], pad_id=0, device=CPU)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 9, 10]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    assert ids.dtype == mask.dtype == torch.long
    ids, mask = left_pad([[4, 4]], pad_id=3, device=CPU)
    assert ids.tolist() == [[4, 4]] and mask.tolist() == [[1, 1]]
    ids, mask = left_pad([[4, 4]], pad_id=3, device=CPU, width=4)  # a micro-batch as wide as its batch
    assert ids.tolist() == [[3, 3, 4, 4]] and mask.tolist() == [[0, 0, 1, 1]]


def test_split_evenly() -> None:
    assert split_evenly([1, 2, 3, 4, 5], 2) == [[1, 2, 3], [4, 5]]
    assert split_evenly([1, 2, 3, 4, 5, 6, 7], 3) == [[1, 2, 3], [4, 5], [6, 7]]
    assert split_evenly([1, 2], 2) == [[1], [2]]
    assert split_evenly([1], 3) == [[1]]  # no empty micro-batches
    assert split_evenly([], 2) == []


def test_a_pass_that_does_not_repeat_the_first_is_named_and_its_figures_are_medians() -> None:
    from runtime.contract import RepeatFigures, ShardRow
    from runtime.rank import Decoded, Rank

    def row(prompt_id: int, tokens: list[int], latency_ms: float, ttft_ms: float, batch: int = 0) -> ShardRow:
        return ShardRow(prompt_id, "2k", "s", 0, "", tokens, latency_ms, ttft_ms, len(tokens), 100, batch)

    first = [row(0, [5, 6, 7], 30.0, 10.0), row(1, [8], 12.0, 12.0), row(2, [1, 2], 25.0, 15.0, batch=1)]
    assert Rank.mismatch(1, first, first) is None
    again = [first[0], row(1, [8], 12.0, 12.0), row(2, [1, 3], 25.0, 15.0)]
    assert Rank.mismatch(2, first, again) == (
        "repeat 3 differs from repeat 1 at prompt 2 (2k), token 1: greedy decoding must repeat exactly"
    )
    # inter-token gaps (30-10)/2 = 10 and (25-15)/1 = 10; the one-token row has none
    # prefill: batch 0 until its last first token (12 ms), batch 1 (15 ms)
    assert Rank.pass_figures(2.0, first) == RepeatFigures(2.0, 6, 12.0, 10.0, 3, 300, prefill_s=0.027)
    passes = Decoded([RepeatFigures(3.0), RepeatFigures(1.0), RepeatFigures(2.0), RepeatFigures(4.0)])
    assert passes.median_pass.wall_s == 2.0  # the lower middle of an even count: a pass that happened

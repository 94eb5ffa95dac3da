"""Weight-only int8/int4, every strategy launched for real: each gives the tokens of the quantized single
device exactly (groups never straddle a TP slice, so every rank's slice quantizes to the whole's numbers), and the
quantized reference gives what HF `generate` gives with the same quantization applied to its linears.

int8 on the built-in model; int4 on a second shape (other widths, grouped-query heads, its own group size)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration import runs

pytestmark = pytest.mark.slow

NEW_TOKENS = 6
STRATEGIES = {  # name -> (layout, launcher, processes, share of the weights each rank holds)
    "tp2_node": ({"tp": 2}, runs.deepspeed, 2, 0.5),
    "pp2": ({"pp": 2, "nodes": 2}, runs.torchrun, 2, 0.5),
    "hybrid": ({"tp": 2, "pp": 2, "nodes": 2}, runs.torchrun, 4, 0.25),
}


@pytest.fixture(scope="module")
def second_shape(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A second random Llama with the built-in tokenizer: hidden 96, 6 heads over 2 key/value heads, MLP 256."""
    from transformers import AutoTokenizer

    from runtime.tiny_model import TinyShape, build_model

    out = tmp_path_factory.mktemp("models") / "tiny-96"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    shape = TinyShape(hidden_size=96, intermediate_size=256, num_attention_heads=6, num_key_value_heads=2)
    tokenizer.save_pretrained(out)
    build_model(tokenizer, shape, seed=1).save_pretrained(out, safe_serialization=True)
    return out


def quantized_reference(run_dir: Path, model: Path, precision: str) -> tuple[dict[int, list[int]], int]:
    """The single-device run at `precision`: its tokens (checked against HF `generate` quantized alike) and the
    weight bytes it held."""
    config = runs.write_config(run_dir, model, f"reference_{precision}", precision=precision, max_new_tokens=NEW_TOKENS)
    done = runs.single(config)
    assert done.returncode == 0, runs.describe_failure(done)
    tokens = runs.shard_tokens(config)
    assert tokens == runs.hf_reference(model, runs.PROMPTS, NEW_TOKENS, batch_size=4, precision=precision)
    (m,) = runs.metrics(config)
    assert m["precision"] == precision and m["quant_group_size"] > 0
    return tokens, m["weight_bytes"]


def check_strategies(run_dir: Path, model: Path, precision: str, names: list[str]) -> None:
    reference, whole = quantized_reference(run_dir, model, precision)
    group = None
    for name in names:
        layout, launch, procs, share = STRATEGIES[name]
        config = runs.write_config(
            run_dir, model, f"{name}_{precision}", precision=precision, max_new_tokens=NEW_TOKENS, **layout
        )
        done = launch(config, procs)
        assert done.returncode == 0, runs.describe_failure(done)
        assert runs.shard_tokens(config) == reference, name
        runs.assert_holds_share(config, model, share, whole)
        groups = {m["quant_group_size"] for m in runs.metrics(config)}
        assert len(groups) == 1 and group in (None, *groups), f"{name}: group sizes {groups}"
        group = groups.pop()


def test_int8_every_strategy_matches_the_quantized_reference(run_dir: Path, tiny_model_dir: Path) -> None:
    check_strategies(run_dir, tiny_model_dir, "int8", ["tp2_node", "pp2", "hybrid"])


def test_int4_on_a_second_shape(run_dir: Path, second_shape: Path) -> None:
    check_strategies(run_dir, second_shape, "int4", ["tp2_node", "hybrid"])

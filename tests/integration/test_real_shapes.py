"""Real checkpoint shapes in every parallel strategy: exact greedy parity with single-process HF `generate`.

Two random models with tiny dimensions and the config fields of the real families, the features combined so two
models cover them all:
- Llama 3.1-style: grouped-query attention (8 query heads, 2 key/value heads), `rope_type: llama3` scaling,
  untied embeddings, saved as sharded safetensors with a `model.safetensors.index.json`;
- Mistral-style: a sliding window (8 tokens, shorter than the longer prompts, so it changes the tokens), tied
  embeddings, a head_dim that is not hidden_size / heads (as in Mistral NeMo).
Both have 8,195 entries in their vocabulary (the built-in tokenizer's 8,192 and three more, as real checkpoints pad
theirs), which does not divide by the TP size. Weights use the wide initialiser (runtime/tiny_model.py says why).
The Mistral-style model runs at int4 weight-only (the quantization's second shape: each rank quantizes its own
slice), against HF `generate` with the same quantization applied to its linears; the built-in model's int8 runs
in every strategy in the local sweep test.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration import runs

pytestmark = pytest.mark.slow

VOCAB = 8195
NEW_TOKENS = 8
TINY = {"hidden_size": 128, "intermediate_size": 352, "num_hidden_layers": 4, "initializer_range": 0.2}


def llama31_like(vocab: dict[str, int]) -> object:
    from transformers import LlamaConfig, LlamaForCausalLM

    rope = {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,  # small, so the scaling reaches more of the tiny head's frequencies
    }
    config = LlamaConfig(
        **TINY, **vocab, num_attention_heads=8, num_key_value_heads=2, rope_parameters=rope, tie_word_embeddings=False
    )
    return LlamaForCausalLM(config)


def mistral_like(vocab: dict[str, int]) -> object:
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        **TINY, **vocab, num_attention_heads=8, num_key_value_heads=4, head_dim=32, sliding_window=8,
        tie_word_embeddings=True,
    )  # fmt: skip
    return MistralForCausalLM(config)


@dataclass(frozen=True)
class Shape:
    build: Callable[[dict[str, int]], object]
    max_shard_size: str | None  # save_pretrained's: several files and an index when set
    precision: str


SHAPES = {"llama3.1": Shape(llama31_like, "1MB", "fp32"), "mistral": Shape(mistral_like, None, "int4")}


@dataclass(frozen=True)
class Checkpoint:
    name: str
    path: Path
    reference: dict[int, list[int]]


def save_checkpoint(name: str, tokenizer_dir: Path, out: Path) -> Path:
    """A random model of the shape, seeded, saved with the built-in tokenizer copied in."""
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    shape = SHAPES[name]
    torch.manual_seed(1)
    model = shape.build({"vocab_size": VOCAB, "pad_token_id": tokenizer.pad_token_id, **ids})
    kwargs = {"max_shard_size": shape.max_shard_size} if shape.max_shard_size else {}
    model.save_pretrained(out, **kwargs)
    for file in tokenizer_dir.glob("tokenizer*"):
        shutil.copy(file, out)
    return out


@pytest.fixture(scope="module", params=list(SHAPES))
def checkpoint(request: pytest.FixtureRequest, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    path = save_checkpoint(request.param, tiny_model_dir, tmp_path_factory.mktemp("shapes") / request.param)
    precision = SHAPES[request.param].precision
    reference = runs.hf_reference(path, runs.PROMPTS, max_new_tokens=NEW_TOKENS, batch_size=4, precision=precision)
    return Checkpoint(request.param, path, reference)


def test_the_checkpoints_have_the_shapes_they_claim(checkpoint: Checkpoint) -> None:
    """The features really are in play: the parity below would prove less if a field had been dropped."""
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(checkpoint.path)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint.path)
    assert config.vocab_size == VOCAB and VOCAB % 2 and len(tokenizer) < VOCAB
    if checkpoint.name == "llama3.1":
        assert len(list(checkpoint.path.glob("model-*-of-*.safetensors"))) > 2
        assert (checkpoint.path / "model.safetensors.index.json").is_file()
        assert config.rope_parameters["rope_type"] == "llama3" and not config.tie_word_embeddings
        assert config.num_key_value_heads < config.num_attention_heads
    else:
        longest = max(len(tokenizer(prompt)["input_ids"]) for prompt in runs.PROMPTS)
        assert config.sliding_window < longest and config.tie_word_embeddings
        assert config.head_dim * config.num_attention_heads != config.hidden_size


STRATEGIES = {
    "tp2": ({"tp": 2}, 2),
    "pp2": ({"pp": 2, "nodes": 2, "micro_batches": 2}, 2),
    "tp2_pp2": ({"tp": 2, "pp": 2, "nodes": 2}, 4),
}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_strategy_matches_hf_generate(run_dir: Path, checkpoint: Checkpoint, strategy: str) -> None:
    layout, procs = STRATEGIES[strategy]
    precision = SHAPES[checkpoint.name].precision
    config = runs.write_config(
        run_dir, checkpoint.path, f"{checkpoint.name}_{strategy}", max_new_tokens=NEW_TOKENS, precision=precision,
        **layout,
    )  # fmt: skip
    done = runs.torchrun(config, procs, "--skip-calibration")
    assert done.returncode == 0, runs.describe_failure(done)
    assert runs.shard_tokens(config) == checkpoint.reference
    assert {m["precision"] for m in runs.metrics(config)} == {precision}

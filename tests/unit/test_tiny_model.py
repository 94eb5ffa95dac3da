"""The built-in small model: built offline, loadable like a real checkpoint, deterministic, parity-worthy."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from runtime.tiny_model import build_tiny_model  # noqa: E402 - after the importorskip guards

PROMPTS = [
    "The control node boots the others",
    "Tensor parallelism cuts every weight matrix into slices and adds the partial results",
    "Hi",
    "rank 3 of 4: stage 1, slice 1; temperature 67 C and power 142 W measured at the wall",
]


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path):
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return tokenizer, model


def test_checkpoint_layout(tiny_model_dir: Path) -> None:
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 4
    assert config["num_attention_heads"] % 4 == 0 and config["num_key_value_heads"] % 4 == 0  # TP up to 4
    assert (tiny_model_dir / "model.safetensors").stat().st_mode & 0o044 == 0o044  # readable by other users


def test_build_is_deterministic(tiny_model_dir: Path, tmp_path: Path) -> None:
    again = build_tiny_model(tmp_path / "again")
    assert digests(again) == digests(tiny_model_dir)


def test_tokenizer_round_trips_any_text(loaded) -> None:
    tokenizer, _ = loaded
    text = 'Zürich 東京 ✓ "quoted"\n\ttab and emoji 🚀 and bytes \x01'
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.padding_side == "left"
    messages = [{"role": "user", "content": "hi"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == "user: hi\nassistant:"


def test_greedy_picks_are_far_from_ties(loaded) -> None:
    """Parity tests are meaningful only if reordered float32 sums cannot flip an argmax."""
    tokenizer, model = loaded
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=24, do_sample=False, output_scores=True, return_dict_in_generate=True)
    scores = torch.stack(out.scores)  # steps x batch x vocab
    top2 = scores.topk(2, dim=-1).values
    relative_gap = (top2[..., 0] - top2[..., 1]) / top2[..., 0].abs().clamp(min=1.0)
    # float32 rounding of a reordered 128-term dot product is ~1e-6 relative: demand 100x that everywhere
    assert relative_gap.min().item() > 1e-4
    # and the model is not degenerate: different prompts continue differently
    continuations = {tuple(row.tolist()) for row in out.sequences[:, batch["input_ids"].shape[1] :]}
    assert len(continuations) == len(PROMPTS)

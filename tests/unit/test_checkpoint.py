"""Loading one pipeline stage: only its tensors are read, and stages composed are the whole model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from runtime.checkpoint import check_divisible, load_config, load_stage, random_stage
from runtime.schema import InputError
from runtime.shapes import shape_config


def layer_of(name: str) -> int | None:
    return int(name.split(".")[2]) if name.startswith("model.layers.") else None


def test_each_stage_reads_only_its_own_tensors(tiny_model_dir: Path) -> None:
    config = load_config(tiny_model_dir)
    _, first = load_stage(tiny_model_dir, config, range(0, 2), first=True, last=False)
    _, last = load_stage(tiny_model_dir, config, range(2, 4), first=False, last=True)
    assert {layer_of(n) for n in first.read} == {0, 1, None}
    assert {n for n in first.read if layer_of(n) is None} == {"model.embed_tokens.weight"}
    assert {layer_of(n) for n in last.read} == {2, 3, None}
    assert {n for n in last.read if layer_of(n) is None} == {"model.norm.weight", "lm_head.weight"}
    assert len(first.read) == len(set(first.read))  # each tensor read once


def test_stages_composed_are_the_whole_model(tiny_model_dir: Path) -> None:
    config = load_config(tiny_model_dir)
    first, _ = load_stage(tiny_model_dir, config, range(0, 1), first=True, last=False)
    last, _ = load_stage(tiny_model_dir, config, range(1, 4), first=False, last=True)
    whole = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([[5, 17, 42, 99, 3]])
    with torch.inference_mode():
        hidden = first.model.model(input_ids=ids).last_hidden_state
        logits = last.model.lm_head(last.model.model(inputs_embeds=hidden).last_hidden_state)
        torch.testing.assert_close(logits, whole(ids).logits, rtol=1e-5, atol=1e-5)


def test_tp_must_divide_the_heads_and_pp_fit_the_layers(tiny_model_dir: Path) -> None:
    config = load_config(tiny_model_dir)
    check_divisible(config, 4, 4)
    with pytest.raises(InputError, match="tp_size 3 does not divide the model's 8 attention heads and 4 key/value"):
        check_divisible(config, 3, 1)
    with pytest.raises(InputError, match="pp_size 5 exceeds the model's 4 layers"):
        check_divisible(config, 1, 5)


def copy_model(tiny_model_dir: Path, to: Path) -> Path:
    shutil.copytree(tiny_model_dir, to)
    return to


def test_missing_folder_or_config(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=f"{tmp_path}: no config.json"):
        load_config(tmp_path)


def test_truncated_weights_file_is_named(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = copy_model(tiny_model_dir, tmp_path / "model")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4])
    with pytest.raises(InputError, match=f"{weights}: not a readable safetensors file"):
        load_stage(model, load_config(model), range(0, 4), True, True)


def test_index_naming_a_missing_shard(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = copy_model(tiny_model_dir, tmp_path / "model")
    (model / "model.safetensors").rename(model / "model-00001-of-00002.safetensors")
    with safe_open(model / "model-00001-of-00002.safetensors", "pt") as weights:
        weight_map = dict.fromkeys(weights.keys(), "model-00001-of-00002.safetensors")
    weight_map["model.norm.weight"] = "model-00002-of-00002.safetensors"
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    config = load_config(model)
    load_stage(model, config, range(0, 2), first=True, last=False)  # this stage never needs the missing file
    with pytest.raises(InputError, match=r"model-00002-of-00002.safetensors: missing .* for model.norm.weight"):
        load_stage(model, config, range(2, 4), first=False, last=True)


def test_random_stage_builds_only_its_layers() -> None:
    config = shape_config("llama-100m")
    stage = random_stage(config, range(4, 8), first=False, last=True, dtype=torch.float32, device="cpu", seed=0)
    assert len(stage.model.model.layers) == 4 and stage.model.model.embed_tokens is None
    assert stage.config.num_hidden_layers == 4

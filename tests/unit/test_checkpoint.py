"""Loading one pipeline stage: only its tensors are read, and stages composed are the whole model."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from runtime.checkpoint import Checkpoint, check_divisible, load_config, load_stage, random_stage
from runtime.model_shape import ModelShape
from runtime.schema import InputError
from runtime.shapes import shape_config
from runtime.topology import stage_layers

LAYERS = 4  # the tiny model's


def layer_of(name: str) -> int | None:
    return int(name.split(".")[2]) if name.startswith("model.layers.") else None


def test_each_stage_of_two_reads_only_its_own_tensors(tiny_model_dir: Path) -> None:
    config = load_config(tiny_model_dir)
    _, first = load_stage(tiny_model_dir, config, stage_layers(LAYERS, 2, 0), first=True, last=False)
    _, last = load_stage(tiny_model_dir, config, stage_layers(LAYERS, 2, 1), first=False, last=True)
    assert {layer_of(n) for n in first.read} == {0, 1, None}
    assert {n for n in first.read if layer_of(n) is None} == {"model.embed_tokens.weight"}
    assert {layer_of(n) for n in last.read} == {2, 3, None}
    assert {n for n in last.read if layer_of(n) is None} == {"model.norm.weight", "lm_head.weight"}
    assert len(first.read) == len(set(first.read)) and len(last.read) == len(set(last.read))  # each read once
    with safe_open(tiny_model_dir / "model.safetensors", "pt") as weights:
        assert sorted(first.read + last.read) == sorted(weights.keys())  # together: the whole checkpoint


def test_a_middle_stage_holds_only_its_layers(tiny_model_dir: Path) -> None:
    config = load_config(tiny_model_dir)
    layers = stage_layers(LAYERS, 3, 1)
    assert layers == range(2, 3)
    stage, checkpoint = load_stage(tiny_model_dir, config, layers, first=False, last=False)
    assert {layer_of(n) for n in checkpoint.read} == {2}
    assert stage.model.model.embed_tokens is None and stage.model.lm_head is None
    assert isinstance(stage.model.model.norm, torch.nn.Identity)
    assert stage.config.num_hidden_layers == 1 and config.num_hidden_layers == LAYERS
    with safe_open(tiny_model_dir / "model.safetensors", "pt") as weights:
        for name, tensor in stage.model.state_dict().items():
            source = name.replace("model.layers.0.", "model.layers.2.")
            torch.testing.assert_close(tensor, weights.get_tensor(source), rtol=0, atol=0)


def test_stage_weights_keep_the_stored_dtype_on_the_cpu(tiny_model_dir: Path) -> None:
    config = load_config(tiny_model_dir)
    stage, _ = load_stage(tiny_model_dir, config, range(LAYERS), first=True, last=True)
    params = list(stage.model.parameters())
    assert {p.dtype for p in params} == {torch.float32} and {p.device.type for p in params} == {"cpu"}
    assert not any(p.requires_grad for p in params) and not stage.model.training


@pytest.mark.parametrize("split", [1, 3])
def test_stages_composed_are_the_whole_model(tiny_model_dir: Path, split: int) -> None:
    config = load_config(tiny_model_dir)
    first, _ = load_stage(tiny_model_dir, config, range(0, split), first=True, last=False)
    last, _ = load_stage(tiny_model_dir, config, range(split, LAYERS), first=False, last=True)
    whole = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([[5, 17, 42, 99, 3, 250], [1, 2, 3, 4, 5, 6]])
    with torch.inference_mode():
        hidden = first.model.model(input_ids=ids).last_hidden_state
        out = last.model.model(inputs_embeds=hidden).last_hidden_state
        expected = whole(ids, output_hidden_states=True)
        torch.testing.assert_close(out, expected.hidden_states[-1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(last.model.lm_head(out), expected.logits, rtol=1e-5, atol=1e-5)


def test_tp_must_divide_the_heads_and_pp_fit_the_layers(tiny_model_dir: Path) -> None:
    config = load_config(tiny_model_dir)
    check_divisible(config, 4, 4)
    with pytest.raises(InputError, match="tp_size 3 does not divide the model's 8 attention heads and 4 key/value"):
        check_divisible(config, 3, 1)
    with pytest.raises(InputError, match="tp_size 8 does not divide"):
        check_divisible(config, 8, 1)  # divides the 8 query heads, not the 4 key/value heads
    with pytest.raises(InputError, match="pp_size 5 exceeds the model's 4 layers"):
        check_divisible(config, 1, 5)


def copy_model(tiny_model_dir: Path, to: Path) -> Path:
    shutil.copytree(tiny_model_dir, to)
    return to


def test_missing_folder_or_config(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(InputError, match=re.escape(f"{missing}: no config.json")):
        load_config(missing)
    with pytest.raises(InputError, match=re.escape(f"{tmp_path}: no config.json")):
        load_config(tmp_path)


def test_missing_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = copy_model(tiny_model_dir, tmp_path / "model")
    (model / "model.safetensors").unlink()
    with pytest.raises(InputError, match=re.escape(f"{model}: no model.safetensors or model.safetensors.index")):
        load_stage(model, load_config(model), range(LAYERS), True, True)


def test_truncated_header_is_named(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = copy_model(tiny_model_dir, tmp_path / "model")
    weights = model / "model.safetensors"
    os.truncate(weights, 4)
    with pytest.raises(InputError, match=re.escape(f"{weights}: not a readable safetensors file")):
        Checkpoint(model)


def test_truncated_tensor_data_is_named(tiny_model_dir: Path, tmp_path: Path) -> None:
    """What an interrupted copy leaves: the header intact, the data cut short."""
    model = copy_model(tiny_model_dir, tmp_path / "model")
    weights = model / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    with pytest.raises(InputError, match=re.escape(f"{weights}: cut short: tensor ")):
        load_stage(model, load_config(model), range(LAYERS), True, True)


def shard(tiny_model_dir: Path, to: Path) -> tuple[Path, Path]:
    """The tiny model as two shards and an index, as save_pretrained writes a big one: the embedding and layers 0-1
    in the first file, the rest in the second."""
    from safetensors.torch import save_file

    model = copy_model(tiny_model_dir, to)
    (model / "model.safetensors").unlink()
    files = model / "model-00001-of-00002.safetensors", model / "model-00002-of-00002.safetensors"
    with safe_open(tiny_model_dir / "model.safetensors", "pt") as weights:
        tensors = {name: weights.get_tensor(name) for name in weights.keys()}  # noqa: SIM118 (not a dict)
    in_first = {n for n in tensors if n == "model.embed_tokens.weight" or layer_of(n) in (0, 1)}
    weight_map = {n: (files[0] if n in in_first else files[1]).name for n in tensors}
    for file in files:
        save_file({n: t for n, t in tensors.items() if weight_map[n] == file.name}, file, metadata={"format": "pt"})
    (model / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return files


def test_a_sharded_checkpoint_loads_as_the_single_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    first, second = shard(tiny_model_dir, tmp_path / "model")
    config = load_config(tiny_model_dir)
    for layers, is_first, is_last in ((range(0, 2), True, False), (range(2, 4), False, True)):
        sharded, read = load_stage(first.parent, config, layers, is_first, is_last)
        single, _ = load_stage(tiny_model_dir, config, layers, is_first, is_last)
        assert sharded.model.state_dict().keys() == single.model.state_dict().keys()
        for name, tensor in single.model.state_dict().items():
            torch.testing.assert_close(sharded.model.state_dict()[name], tensor, rtol=0, atol=0)
        assert {read.file_of[n] for n in read.read} == {first if is_first else second}  # only its own shard


def test_an_index_naming_a_missing_shard_fails_up_front(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Checked when the checkpoint is opened, so the stage whose layers are all in the first shard fails too."""
    _, second = shard(tiny_model_dir, tmp_path / "model")
    second.unlink()
    config = load_config(second.parent)
    message = f"{second}: missing, though model.safetensors.index.json lists it for 20 tensor(s) (lm_head.weight, ..."
    with pytest.raises(InputError, match=re.escape(message)):
        load_stage(second.parent, config, range(0, 2), first=True, last=False)


def test_an_index_naming_a_tensor_its_shard_lacks(tiny_model_dir: Path, tmp_path: Path) -> None:
    first, _ = shard(tiny_model_dir, tmp_path / "model")
    index = first.parent / "model.safetensors.index.json"
    layout = json.loads(index.read_text())
    layout["weight_map"]["model.norm.weight"] = first.name  # it is in the second file
    index.write_text(json.dumps(layout))
    with pytest.raises(InputError, match=re.escape(f"{first}: holds no tensor model.norm.weight (1 of the 20 ")):
        Checkpoint(first.parent)


@pytest.mark.parametrize("text", ["{not json", '{"metadata": {}}', '{"weight_map": {"lm_head.weight": 3}}'])
def test_an_unreadable_index_is_named(tiny_model_dir: Path, tmp_path: Path, text: str) -> None:
    first, _ = shard(tiny_model_dir, tmp_path / "model")
    index = first.parent / "model.safetensors.index.json"
    index.write_text(text)
    with pytest.raises(InputError, match=re.escape(f"{index}: ")):
        Checkpoint(first.parent)


def test_a_config_that_does_not_match_the_weights(tiny_model_dir: Path) -> None:
    config = copy.deepcopy(load_config(tiny_model_dir))
    config.intermediate_size = 64
    with pytest.raises(InputError, match=r"tensor model\.layers\.0\.mlp\.\w+\.weight has shape .* implies"):
        load_stage(tiny_model_dir, config, range(0, 1), True, False)
    config = copy.deepcopy(load_config(tiny_model_dir))
    config.num_hidden_layers = LAYERS + 1
    with pytest.raises(InputError, match=rf"tensor model\.layers\.{LAYERS}\.\S+ is missing from the checkpoint"):
        load_stage(tiny_model_dir, config, range(LAYERS, LAYERS + 1), False, True)


@pytest.mark.parametrize("stage", [0, 1])
def test_random_stage_builds_only_its_layers(stage: int) -> None:
    config = shape_config("llama-100m")
    layers = stage_layers(config.num_hidden_layers, 2, stage)
    built = random_stage(config, layers, stage == 0, stage == 1, dtype=torch.float32, device="meta", seed=0)
    assert len(built.model.model.layers) == 4 and built.config.num_hidden_layers == 4
    assert (built.model.model.embed_tokens is None) == (stage == 1)
    assert (built.model.lm_head is None) == (stage == 0)
    params = sum(p.numel() for p in built.model.parameters())
    # half the layers plus the embedding (first) or the final norm and head (last)
    norm = 0 if stage == 0 else config.hidden_size
    weights = ModelShape.from_config(built.config.to_dict()).weight_bytes_per_token(1)
    assert params == weights - config.hidden_size + norm
    whole = random_stage(config, range(8), True, True, dtype=torch.float32, device="meta", seed=0)
    assert 0.49 < params / sum(p.numel() for p in whole.model.parameters()) < 0.51


def test_random_stage_is_real_and_seeded() -> None:
    config = shape_config("llama-100m")
    config.vocab_size, config.intermediate_size = 256, 64
    a, b = (random_stage(config, range(0, 1), True, False, torch.bfloat16, "cpu", seed=7) for _ in range(2))
    weight_a, weight_b = (s.model.model.layers[0].mlp.up_proj.weight for s in (a, b))
    assert weight_a.dtype == torch.bfloat16 and weight_a.device.type == "cpu" and weight_a.std() > 0
    torch.testing.assert_close(weight_a, weight_b, rtol=0, atol=0)

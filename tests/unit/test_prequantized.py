"""Pre-quantized checkpoints: the runtime's own reading of compressed-tensors' packing, tensor by tensor against
the library's decompression, whole and in TP slices; and the one-line refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from runtime.checkpoint import Checkpoint, load_config
from runtime.prequantized import (
    Shard,
    TensorParallel,
    check_stored_bits,
    load_prequantized_stage,
    packed_linear,
    read_schemes,
)
from runtime.quantize import WeightOnlyLinear, tp_sizes_for_group
from runtime.schema import InputError
from tests.compressed_checkpoints import decompressed_weights, write_compressed_tensors


def assert_reads_as_library(model_dir: Path, tp: int) -> None:
    """Every quantized layer, whole and as its TP slices put back together, dequantizes to exactly the library's
    dense weight."""
    checkpoint = Checkpoint(model_dir)
    (scheme,) = read_schemes(load_config(model_dir).quantization_config, "config.json")
    expected = decompressed_weights(model_dir)
    assert len(expected) == 28  # 7 linear layers in each of 4 decoder layers; the LM head stays dense
    for name, weight in expected.items():
        whole = packed_linear(checkpoint.view, name, scheme, Shard(), tuple(weight.shape))
        assert torch.equal(whole.dequantize(torch.float32), weight), name
        dim = 1 if name.endswith(("o_proj", "down_proj")) else 0
        parts = [
            packed_linear(checkpoint.view, name, scheme, Shard(r, tp, dim), tuple(weight.shape)) for r in range(tp)
        ]
        assert torch.equal(torch.cat([p.dequantize(torch.float32) for p in parts], dim=dim), weight), name


def test_int4_asymmetric_groups_read_as_the_library_decompresses(compressed_model_dir: Path) -> None:
    assert tp_sizes_for_group([128, 352], 16) == [1, 2]  # the fixture's groups fit TP-2 slices
    assert_reads_as_library(compressed_model_dir, tp=2)


def test_int8_symmetric_channels_read_as_the_library_decompresses(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = write_compressed_tensors(tiny_model_dir, tmp_path / "w8", bits=8, group_size=None, symmetric=True)
    assert_reads_as_library(model_dir, tp=4)


def test_stage_views_the_packed_words_without_copying(compressed_model_dir: Path) -> None:
    """A stage's packed weights are views of the memory map: the rank reads only the pages it touches."""
    config = load_config(compressed_model_dir)
    stage, checkpoint = load_prequantized_stage(
        compressed_model_dir, config, range(2, 4), False, True, TensorParallel()
    )
    down = stage.model.model.layers[0].mlp.down_proj
    assert isinstance(down, WeightOnlyLinear) and (down.bits, down.group_size) == (4, 16)
    stored = checkpoint.view("model.layers.2.mlp.down_proj.weight_packed")
    assert down.qweight.untyped_storage().data_ptr() == stored.untyped_storage().data_ptr()
    assert not any(name.startswith(("model.layers.0.", "model.layers.1.")) for name in checkpoint.read)


def test_group_that_straddles_a_tp_slice_is_named_with_the_sizes_that_work(compressed_model_dir: Path) -> None:
    config = load_config(compressed_model_dir)
    with pytest.raises(InputError) as err:
        load_prequantized_stage(compressed_model_dir, config, range(4), True, True, TensorParallel(0, 4))
    assert str(err.value) == (
        f"{compressed_model_dir}/config.json: model.layers.0.mlp.down_proj has 352 input columns, 88 a rank at "
        "tp_size 4: not whole groups of 16; TP sizes that would work: 1, 2"
    )


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"quant_method": "awq"}, "quantization 'awq' is not supported"),
        ({"format": "float-quantized"}, "(float-quantized, int4 weights, strategy group) is not supported"),
        ({"input_activations": {"num_bits": 8}}, "activations quantized) is not supported"),
        ({"actorder": "group"}, "reorders groups by activation (actorder 'group'"),
    ],
)
def test_unsupported_scheme_is_named_with_what_is_supported(
    compressed_model_dir: Path, change: dict, named: str
) -> None:
    config = dict(load_config(compressed_model_dir).quantization_config)
    group = dict(config["config_groups"]["group_0"], format=change.get("format", "pack-quantized"))
    if "input_activations" in change:
        group["input_activations"] = change["input_activations"]
    group["weights"] = dict(group["weights"], actorder=change.get("actorder"))
    config = {
        **config,
        "config_groups": {"group_0": group},
        "quant_method": change.get("quant_method", "compressed-tensors"),
    }
    with pytest.raises(InputError) as err:
        read_schemes(config, "m/config.json")
    message = str(err.value)
    assert message.startswith("m/config.json: ") and named in message and "\n" not in message
    if "actorder" not in change:
        assert message.endswith(
            "the runtime loads compressed-tensors pack-quantized, int4 or int8 weights only, group or channel strategy"
        )


def test_precision_names_the_activations_or_the_stored_bits(compressed_model_dir: Path) -> None:
    config = load_config(compressed_model_dir)
    check_stored_bits("bf16", config, "c")  # the activations' dtype
    check_stored_bits("int4", config, "c")  # the checkpoint's own bits: as stored
    with pytest.raises(InputError, match=r"^c: the checkpoint is already quantized to int4; precision int8 would"):
        check_stored_bits("int8", config, "c")

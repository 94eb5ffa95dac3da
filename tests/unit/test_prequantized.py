"""Pre-quantized checkpoints: the runtime's own reading of compressed-tensors', AutoAWQ's and GPTQ's packing, tensor
by tensor against each library's dequantization, whole and in TP slices; and the one-line refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from runtime.checkpoint import Checkpoint, load_config
from runtime.prequantized import (
    SUPPORTED,
    Shard,
    TensorParallel,
    check_stored_bits,
    load_prequantized_stage,
    packed_linear,
    read_schemes,
)
from runtime.quantize import WeightOnlyLinear, tp_sizes_for_group, unpack_int4
from runtime.schema import InputError
from tests.awq_checkpoints import awq_dequantized_weights
from tests.compressed_checkpoints import decompressed_weights, write_compressed_tensors
from tests.gptq_checkpoints import gptq_dequantized_weights, pack_gptq, write_gptq


def assert_reads_as_library(model_dir: Path, tp: int, expected: dict[str, torch.Tensor] | None = None) -> None:
    """Every quantized layer, whole and as its TP slices put back together, dequantizes to exactly the library's
    dense weight (`expected`; by default compressed-tensors' decompression)."""
    checkpoint = Checkpoint(model_dir)
    (scheme,) = read_schemes(load_config(model_dir).quantization_config, "config.json")
    expected = decompressed_weights(model_dir) if expected is None else expected
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
        ({"quant_method": "exl2"}, "quantization 'exl2' is not supported"),
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
        assert message.endswith(f"the runtime loads {SUPPORTED}")


def test_precision_names_the_activations_or_the_stored_bits(compressed_model_dir: Path) -> None:
    config = load_config(compressed_model_dir)
    check_stored_bits("bf16", config, "c")  # the activations' dtype
    check_stored_bits("int4", config, "c")  # the checkpoint's own bits: as stored
    with pytest.raises(InputError, match=r"^c: the checkpoint is already quantized to int4; precision int8 would"):
        check_stored_bits("int8", config, "c")


def test_awq_gemm_reads_as_autoawq_dequantizes(awq_model_dir: Path) -> None:
    assert_reads_as_library(awq_model_dir, tp=2, expected=awq_dequantized_weights(awq_model_dir))


def test_classic_gptq_int4_asymmetric_reads_as_gptqmodel_dequantizes(gptq_model_dir: Path) -> None:
    assert_reads_as_library(gptq_model_dir, tp=2, expected=gptq_dequantized_weights(gptq_model_dir))


def test_gptq_v2_int8_symmetric_channels_read_as_gptqmodel_dequantizes(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = write_gptq(tiny_model_dir, tmp_path / "w8", bits=8, group_size=-1, sym=True, v1=False)
    assert_reads_as_library(model_dir, tp=4, expected=gptq_dequantized_weights(model_dir))


def test_awq_pack_order_round_trips() -> None:
    """Codes packed by AutoAWQ's own WQLinear_GEMM.from_linear (scale 1, zero 0: the weight is the codes) come
    back in output order, every code of a word in its place."""
    from awq.modules.linear.gemm import WQLinear_GEMM

    codes = torch.randint(0, 16, (32, 16), generator=torch.Generator().manual_seed(0))
    linear = nn.Linear(16, 32, bias=False)
    linear.weight.data = codes.float()
    ones, zeros = torch.ones(1, 32), torch.zeros(1, 32)
    packed = WQLinear_GEMM.from_linear(linear, 4, 16, scales=ones, zeros=zeros)
    view = {"w.qweight": packed.qweight, "w.qzeros": packed.qzeros, "w.scales": packed.scales}.__getitem__
    (scheme,) = read_schemes({"quant_method": "awq", "version": "gemm", "bits": 4, "group_size": 16}, "c")
    layer = packed_linear(view, "w", scheme, Shard(), (32, 16))
    assert torch.equal(unpack_int4(layer.qweight), codes.to(torch.uint8))


@pytest.mark.parametrize("bits", [4, 8])
def test_classic_gptq_zero_points_round_trip_through_the_borrows(bits: int) -> None:
    """Classic GPTQ stores each zero-point word less 0x11..., so a zero of 0 borrows from its neighbour: reading
    adds the words back whole, and every zero, 0 and the largest included, comes back."""
    maxq = 2**bits - 1
    zeros = torch.tensor([[0.0, maxq, 1, 0, 7, 0, maxq, 2] * 2]).T  # (out 16, one group)
    codes = torch.randint(0, maxq + 1, (16, 8), generator=torch.Generator().manual_seed(1)).float()
    packed = pack_gptq(codes - zeros, torch.ones(16, 1), zeros, bits, 8, v1=True)
    view = {f"w.{k}": v for k, v in packed.items()}.__getitem__
    (scheme,) = read_schemes({"quant_method": "gptq", "bits": bits, "group_size": 8, "sym": False}, "c")
    layer = packed_linear(view, "w", scheme, Shard(), (16, 8))
    assert torch.equal(layer.zero.long(), zeros.long() - (0 if bits == 4 else 128))
    assert torch.equal(layer.dequantize(torch.float32), codes - zeros)


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"quant_method": "awq", "version": "gemv", "bits": 4}, "AWQ (version gemv, int4) is not supported"),
        ({"quant_method": "awq", "version": "marlin", "bits": 4}, "AWQ (version marlin, int4) is not supported"),
        ({"quant_method": "awq", "version": "gemm", "bits": 4, "zero_point": False}, "no zero point) is not"),
        ({"quant_method": "gptq", "bits": 3}, "GPTQ (int3, checkpoint_format gptq, pack_dtype int32) is not"),
        ({"quant_method": "gptq", "bits": 4, "checkpoint_format": "marlin"}, "checkpoint_format marlin,"),
        ({"quant_method": "gptq", "bits": 4, "dynamic": {"-:.*down": {}}}, "per-module overrides (dynamic)"),
    ],
)
def test_unsupported_awq_or_gptq_layout_is_named_with_what_is_supported(config: dict, named: str) -> None:
    with pytest.raises(InputError) as err:
        read_schemes(config, "m/config.json")
    message = str(err.value)
    assert message.startswith("m/config.json: ") and named in message and "\n" not in message
    assert message.endswith(f"the runtime loads {SUPPORTED}")


def test_gptq_act_order_is_refused_naming_the_layer(gptq_model_dir: Path) -> None:
    """desc_act true stores a g_idx that sends columns to groups out of order: the layer is named."""
    checkpoint = Checkpoint(gptq_model_dir)
    (scheme,) = read_schemes(load_config(gptq_model_dir).quantization_config, "c")
    name = "model.layers.0.self_attn.q_proj"
    shuffled = checkpoint.view(f"{name}.g_idx").flip(0)

    def view(tensor: str) -> torch.Tensor:
        return shuffled if tensor == f"{name}.g_idx" else checkpoint.view(tensor)

    with pytest.raises(InputError, match=rf"^{name}.g_idx orders the groups by activation \(act-order, desc_act"):
        packed_linear(view, name, scheme, Shard(), (128, 128))


def test_awq_slice_that_cuts_a_packed_word_is_named(awq_model_dir: Path) -> None:
    """AWQ packs 8 output rows to a word: a column-parallel slice of k_proj's 64 rows 16 ways cuts words."""
    checkpoint = Checkpoint(awq_model_dir)
    (scheme,) = read_schemes(load_config(awq_model_dir).quantization_config, "c")
    with pytest.raises(InputError) as err:
        packed_linear(checkpoint.view, "model.layers.0.self_attn.k_proj", scheme, Shard(0, 16, 0), (64, 128))
    assert str(err.value) == (
        "model.layers.0.self_attn.k_proj: its awq words pack 8 output rows each, and a TP slice of 4 rows cuts a "
        "word; use a TP size that divides 8"
    )

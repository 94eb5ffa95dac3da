"""Checkpoints published already quantized, read without the libraries that wrote them, in three layouts.

- compressed-tensors' `pack-quantized` (llm-compressor's GPTQ and AWQ recipes; vLLM serves it): config.json's
  `quantization_config` has `quant_method: compressed-tensors`, `format: pack-quantized` and `config_groups` whose
  `weights` say the bits, the strategy and the group size; each quantized linear layer `<name>` is stored as
  `<name>.weight_packed` (int32, (out, in * bits / 32): element i of a row at bits [i * bits, (i + 1) * bits) of
  the row's words, as `value + 2 ** (bits - 1)`), `<name>.weight_scale` ((out, in / group)), `<name>.weight_shape`,
  and, when asymmetric, `<name>.weight_zero_point` (packed the same way along the output dimension: (out * bits /
  32, in / group)); `w = (q - zero) * scale` with q and zero signed (compressed_tensors/compressors/pack_quantized).
- GPTQ (`quant_method: gptq`, AutoGPTQ / GPTQModel): `<name>.qweight` int32 (in * bits / 32, out), packed along
  the input the same way, `<name>.qzeros` int32 (in / group, out * bits / 32), `<name>.scales` (in / group, out),
  `<name>.g_idx` (in): compressed-tensors' tensors transposed, with unsigned codes; `checkpoint_format` gptq (the
  classic one) stores each packed word of zeros less 0x11111111 (4 bits) or 0x01010101 (8 bits), gptq_v2 as is
  (GPTQModel's utils/model.py `convert_gptq_v2_to_v1_format_module`).
- AutoAWQ GEMM (`quant_method: awq`, `version: gemm`): `<name>.qweight` int32 (in, out / 8), packed along the
  output, the eight codes of a word in the order [0, 2, 4, 6, 1, 3, 5, 7], `<name>.qzeros` int32 (in / group,
  out / 8) the same way, `<name>.scales` (in / group, out) (awq/modules/linear/gemm.py `WQLinear_GEMM.from_linear`).

On a little-endian machine an int32 row of 4-bit codes packed along the input, seen as bytes, is WeightOnlyLinear's
own layout (element 2j in the low nibble of byte j; the zero point absorbs the codes' offset), so compressed-tensors'
packed weight becomes a WeightOnlyLinear without a copy, and GPTQ's after a transpose of the rank's slice; 8-bit
codes flip their top bit to become signed bytes. AWQ's, packed along the output, are unpacked and packed again.

Each rank builds only its stage's layers and its tensor-parallel slice of them, from views of the memory map:
column-parallel layers (q, k, v, gate, up) keep their output rows, row-parallel ones (o, down, the LM head) their
input columns, cut on group boundaries, and sum their outputs across the TP group (`reduce_output`). AutoTP is not
used here: it cannot slice a WeightOnlyLinear. Attention reshapes with -1 heads, so a rank's slice of q, k and v
runs its own heads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn
from transformers import PretrainedConfig

from runtime.checkpoint import Checkpoint, Stage, assign_from_checkpoint, source_name, stage_skeleton
from runtime.model_shape import ModelShape
from runtime.quantize import (
    QUANTIZED_PRECISIONS,
    Bits,
    WeightOnlyLinear,
    pack_int4,
    tp_sizes_for_group,
    unpack_int4,
)
from runtime.schema import InputError

SUPPORTED = (
    "compressed-tensors pack-quantized (int4 or int8 weights only, group or channel strategy), GPTQ (int4 or int8, "
    "checkpoint_format gptq or gptq_v2, without act-order) and AutoAWQ GEMM (int4, zero point)"
)
COLUMN_PARALLEL = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")  # output rows split
ROW_PARALLEL = ("o_proj", "down_proj", "lm_head")  # input columns split, outputs summed across the group
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # the output row (of 8) whose code sits in nibble k of an AWQ word
GPTQ_V1_ZERO_OFFSET: dict[int, int] = {4: 0x11111111, 8: 0x01010101}  # classic GPTQ stores each zero less one

Layout = Literal["compressed-tensors", "gptq", "gptq_v1", "awq"]


@dataclass(frozen=True)
class PackedScheme:
    """One config group's weight quantization, as the runtime needs it."""

    bits: Bits
    group_size: int | None  # None: channel strategy, one scale per output row
    symmetric: bool
    targets: tuple[str, ...]
    layout: Layout = "compressed-tensors"

    @property
    def rows_per_word(self) -> int:
        """How many output rows share a packed word (of codes or of zero points): a TP slice must not cut one."""
        return 32 // self.bits if self.layout != "compressed-tensors" or not self.symmetric else 1


@dataclass(frozen=True)
class Shard:
    """Which part of a (out, in) linear layer a rank holds: `part` of `parts` along `dim` (0: output rows, for a
    column-parallel layer; 1: input columns, row-parallel), or the whole layer (dim None)."""

    part: int = 0
    parts: int = 1
    dim: int | None = None

    def bounds(self, size: int) -> tuple[int, int]:
        step = size // self.parts
        return self.part * step, (self.part + 1) * step


@dataclass(frozen=True)
class Part:
    """The rows, input columns and groups of a (out, in) layer one rank holds, each as [start, stop)."""

    rows: tuple[int, int]
    cols: tuple[int, int]
    groups: tuple[int, int]


@dataclass(frozen=True)
class TensorParallel:
    """A rank's place in its stage's TP group (group None without TP)."""

    rank: int = 0
    size: int = 1
    group: dist.ProcessGroup | None = None


def is_prequantized(config: PretrainedConfig) -> bool:
    return bool(getattr(config, "quantization_config", None))


def read_schemes(quantization_config: Mapping[str, Any], source: str) -> list[PackedScheme]:
    """The weight schemes of a `quantization_config`, or an InputError naming what is not supported."""
    method = quantization_config.get("quant_method")
    readers = {"compressed-tensors": _compressed_tensors_schemes, "gptq": _gptq_scheme, "awq": _awq_scheme}
    if method not in readers:
        raise InputError(f"{source}: quantization {method!r} is not supported; the runtime loads {SUPPORTED}")
    return readers[method](quantization_config, source)


def _compressed_tensors_schemes(quantization_config: Mapping[str, Any], source: str) -> list[PackedScheme]:
    if quantization_config.get("kv_cache_scheme"):
        raise InputError(f"{source}: a quantized KV cache is not supported; the runtime loads {SUPPORTED}")
    schemes = []
    for name, group in quantization_config.get("config_groups", {}).items():
        fmt = group.get("format") or quantization_config.get("format")
        weights = group.get("weights") or {}
        scheme = (
            f"{fmt}, {weights.get('type')}{weights.get('num_bits')} weights, strategy {weights.get('strategy')}"
            f"{', activations quantized' if group.get('input_activations') else ''}"
        )
        if (
            fmt != "pack-quantized"
            or weights.get("type") != "int"
            or weights.get("num_bits") not in (4, 8)
            or weights.get("strategy") not in ("group", "channel")
            or weights.get("dynamic")
            or group.get("input_activations")
            or group.get("output_activations")
        ):
            raise InputError(
                f"{source}: config group {name} ({scheme}) is not supported; the runtime loads {SUPPORTED}"
            )
        if weights.get("actorder") == "group":
            raise InputError(
                f"{source}: config group {name} reorders groups by activation (actorder 'group', a g_idx per "
                "layer): not supported; quantize with actorder 'weight' or none, which keeps groups contiguous"
            )
        group_size = weights.get("group_size") if weights["strategy"] == "group" else None
        schemes.append(
            PackedScheme(weights["num_bits"], group_size, bool(weights.get("symmetric", True)), tuple(group["targets"]))
        )
    if not schemes:
        raise InputError(f"{source}: quantization_config has no config_groups")
    return schemes


def _group_size(quantization_config: Mapping[str, Any]) -> int | None:
    """GPTQ's and AWQ's group_size: -1 (or none) is one group per row, the channel strategy."""
    size = quantization_config.get("group_size")
    return size if size and size > 0 else None


def _gptq_scheme(quantization_config: Mapping[str, Any], source: str) -> list[PackedScheme]:
    """GPTQ's config (AutoGPTQ, GPTQModel, optimum): bits, group_size, sym, desc_act and the checkpoint format;
    act-order is refused layer by layer, from g_idx (`packed_linear`)."""
    bits = quantization_config.get("bits")
    fmt = quantization_config.get("checkpoint_format") or quantization_config.get("format") or "gptq"
    packing = quantization_config.get("pack_dtype", "int32")
    if bits not in (4, 8) or fmt not in ("gptq", "gptq_v2") or packing != "int32" or quantization_config.get("dynamic"):
        described = f"int{bits}, checkpoint_format {fmt}, pack_dtype {packing}"
        extra = ", per-module overrides (dynamic)" if quantization_config.get("dynamic") else ""
        raise InputError(f"{source}: GPTQ ({described}{extra}) is not supported; the runtime loads {SUPPORTED}")
    layout: Layout = "gptq_v1" if fmt == "gptq" else "gptq"
    symmetric = bool(quantization_config.get("sym", True))
    return [PackedScheme(bits, _group_size(quantization_config), symmetric, ("Linear",), layout)]


def _awq_scheme(quantization_config: Mapping[str, Any], source: str) -> list[PackedScheme]:
    """AutoAWQ's config: the GEMM layout with zero points is the one read; GEMV, Marlin, exllama and IPEX
    layouts pack differently and are refused by name."""
    version = str(quantization_config.get("version", "gemm")).lower()
    bits, zero_point = quantization_config.get("bits"), quantization_config.get("zero_point", True)
    if version != "gemm" or bits != 4 or not zero_point:
        described = f"version {version}, int{bits}{', no zero point' if not zero_point else ''}"
        raise InputError(f"{source}: AWQ ({described}) is not supported; the runtime loads {SUPPORTED}")
    return [PackedScheme(4, _group_size(quantization_config), False, ("Linear",), "awq")]


def scheme_for(schemes: list[PackedScheme], name: str, source: str) -> PackedScheme:
    """The scheme whose targets match linear layer `name` (a layer class, an exact name, or "re:" a regex)."""
    for scheme in schemes:
        for target in scheme.targets:
            if target == "Linear" or target == name or (target.startswith("re:") and re.match(target[3:], name)):
                return scheme
    raise InputError(f"{source}: {name} is stored quantized but no config group targets it")


def packed_weight_name(name: str, layout: Layout) -> str:
    """The tensor whose presence says layer `name` is stored quantized in `layout`."""
    return f"{name}.weight_packed" if layout == "compressed-tensors" else f"{name}.qweight"


def _words_as_codes(words: torch.Tensor, bits: Bits) -> torch.Tensor:
    """Int32 words of packed unsigned codes, seen as WeightOnlyLinear stores codes: 4 bits stay packed two to a
    byte; 8 bits become signed bytes (the code less 128, which the zero point, read the same way, cancels)."""
    words = words.contiguous()  # through one dimension: a size-1 dimension may keep any stride
    as_bytes = words.view(-1).view(torch.uint8).view(*words.shape[:-1], -1)
    return as_bytes if bits == 4 else (as_bytes ^ 0x80).view(torch.int8)


def _unpack_zero(words: torch.Tensor, bits: Bits) -> torch.Tensor:
    """A (groups, out * bits / 32) zero point packed along the output dimension -> (out, groups) zero points on
    WeightOnlyLinear's scale (4 bits: 0..15; 8 bits: signed, less 128 as the codes are)."""
    codes = _words_as_codes(words, bits)
    return (unpack_int4(codes) if bits == 4 else codes).t().contiguous()


def _checked(view: Callable[[str], torch.Tensor], name: str, shape: tuple[int, ...]) -> torch.Tensor:
    tensor = view(name)
    if tuple(tensor.shape) != shape:
        raise InputError(f"{name} is {tuple(tensor.shape)}, the config implies {shape}")
    return tensor


LayerTensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]  # codes, scale, zero as WeightOnlyLinear's


def _compressed_tensors_part(
    view: Callable[[str], torch.Tensor], name: str, scheme: PackedScheme, shape: tuple[int, int], part: Part
) -> LayerTensors:
    """compressed-tensors pack-quantized: codes as stored (zero-copy), zero points packed along the output."""
    stored = tuple(view(f"{name}.weight_shape").tolist())
    if stored != shape:
        raise InputError(f"{name}.weight_shape is {stored}, the config implies {shape}")
    (r0, r1), (c0, c1), (g0, g1), per_word = part.rows, part.cols, part.groups, 32 // scheme.bits
    packed = view(f"{name}.weight_packed")[r0:r1, c0 // per_word : c1 // per_word]
    scale = view(f"{name}.weight_scale")[r0:r1, g0:g1]
    zero = None
    if not scheme.symmetric:
        words = view(f"{name}.weight_zero_point")[r0 // per_word : r1 // per_word, g0:g1]
        zero = _unpack_zero(words.t(), scheme.bits)
    return _words_as_codes(packed, scheme.bits), scale, zero


def _gptq_part(
    view: Callable[[str], torch.Tensor], name: str, scheme: PackedScheme, shape: tuple[int, int], part: Part
) -> LayerTensors:
    """GPTQ: compressed-tensors' layout transposed (codes unsigned, zero points always stored); a g_idx other
    than each column's own contiguous group (act-order) is refused."""
    (out_features, in_features), per_word = shape, 32 // scheme.bits
    groups = in_features // scheme.group_size if scheme.group_size else 1
    g_idx = _checked(view, f"{name}.g_idx", (in_features,))
    if not torch.equal(g_idx, torch.arange(in_features, dtype=g_idx.dtype) * groups // in_features):
        raise InputError(
            f"{name}.g_idx orders the groups by activation (act-order, desc_act true): not supported; quantize "
            "with desc_act false, which keeps each group's columns contiguous"
        )
    (r0, r1), (c0, c1), (g0, g1) = part.rows, part.cols, part.groups
    packed = _checked(view, f"{name}.qweight", (in_features // per_word, out_features))
    scale = _checked(view, f"{name}.scales", (groups, out_features))[g0:g1, r0:r1].t()
    zero_words = _checked(view, f"{name}.qzeros", (groups, out_features // per_word))[
        g0:g1, r0 // per_word : r1 // per_word
    ]
    if scheme.layout == "gptq_v1":  # word-wise, as GPTQModel's v1 -> v2 conversion: borrows come back
        zero_words = (zero_words.to(torch.int64) + GPTQ_V1_ZERO_OFFSET[scheme.bits]).to(torch.int32)
    codes = _words_as_codes(packed[c0 // per_word : c1 // per_word, r0:r1].t(), scheme.bits)
    return codes, scale, _unpack_zero(zero_words, scheme.bits)


def _unpack_awq(words: torch.Tensor) -> torch.Tensor:
    """(rows, out / 8) AWQ words -> (rows, out) codes 0..15 in output order (uint8)."""
    shifts = torch.arange(0, 32, 4, dtype=torch.int32)
    nibbles = ((words.unsqueeze(-1) >> shifts) & 0xF).to(torch.uint8)  # nibble k holds row AWQ_ORDER[k]
    codes = torch.empty_like(nibbles)
    codes[..., list(AWQ_ORDER)] = nibbles
    return codes.flatten(-2)


def _awq_part(
    view: Callable[[str], torch.Tensor], name: str, scheme: PackedScheme, shape: tuple[int, int], part: Part
) -> LayerTensors:
    """AutoAWQ GEMM: codes packed along the output in AWQ's order, unpacked and packed again along the input."""
    out_features, in_features = shape
    groups = in_features // scheme.group_size if scheme.group_size else 1
    (r0, r1), (c0, c1), (g0, g1) = part.rows, part.cols, part.groups
    packed = _checked(view, f"{name}.qweight", (in_features, out_features // 8))[c0:c1, r0 // 8 : r1 // 8]
    scale = _checked(view, f"{name}.scales", (groups, out_features))[g0:g1, r0:r1].t()
    zero_words = _checked(view, f"{name}.qzeros", (groups, out_features // 8))[g0:g1, r0 // 8 : r1 // 8]
    return pack_int4(_unpack_awq(packed).t()), scale, _unpack_awq(zero_words).t().contiguous()


LAYOUT_READERS: dict[Layout, Callable[..., LayerTensors]] = {
    "compressed-tensors": _compressed_tensors_part,
    "gptq": _gptq_part,
    "gptq_v1": _gptq_part,
    "awq": _awq_part,
}


def packed_linear(
    view: Callable[[str], torch.Tensor], name: str, scheme: PackedScheme, shard: Shard, shape: tuple[int, int]
) -> WeightOnlyLinear:
    """This rank's part of the packed linear layer `name` (out, in) as a WeightOnlyLinear, from views of the
    checkpoint's tensors (`view`: name -> tensor); only the part's rows and words are touched."""
    out_features, in_features = shape
    per_word = 32 // scheme.bits
    rows, cols = (0, out_features), (0, in_features)
    if shard.dim == 0:
        rows = shard.bounds(out_features)
    elif shard.dim == 1:
        cols = shard.bounds(in_features)
    width = cols[1] - cols[0]
    group = scheme.group_size or width
    if in_features % (group * shard.parts if shard.dim == 1 else group) or width % per_word:
        raise InputError(
            f"{name}: its {in_features} input columns split {shard.parts} ways do not hold whole groups of {group} "
            f"({per_word} codes to a word)"
        )
    if (rows[1] - rows[0]) % scheme.rows_per_word:
        raise InputError(
            f"{name}: its {scheme.layout} words pack {scheme.rows_per_word} output rows each, and a TP slice of "
            f"{rows[1] - rows[0]} rows cuts a word; use a TP size that divides {out_features // per_word}"
        )
    groups = (cols[0] // group, cols[1] // group) if scheme.group_size else (0, 1)
    codes, scale, zero = LAYOUT_READERS[scheme.layout](view, name, scheme, shape, Part(rows, cols, groups))
    return WeightOnlyLinear(codes, scale, zero, scheme.bits, group)


def check_tp_groups(config: PretrainedConfig, schemes: list[PackedScheme], tp_size: int, source: str) -> None:
    """Every row-parallel layer's input slice must hold whole groups; if not, name the layer, the group size and
    the TP sizes that would work (their slices hold whole groups and they divide the head counts)."""
    shape = ModelShape.from_config(config.to_dict())
    heads, kv_heads, widths = shape.num_heads, shape.num_kv_heads, shape.row_parallel_widths
    for group in {scheme.group_size for scheme in schemes if scheme.group_size}:
        for layer, width in widths.items():
            if width % (group * tp_size):
                fits = [t for t in tp_sizes_for_group(widths.values(), group) if heads % t == 0 and kv_heads % t == 0]
                raise InputError(
                    f"{source}: model.layers.0.{layer} has {width} input columns, {width // tp_size} a rank at "
                    f"tp_size {tp_size}: not whole groups of {group}; TP sizes that would work: "
                    f"{', '.join(map(str, fits))}"
                )


def linear_shard(name: str, tp: TensorParallel) -> Shard:
    """How a linear layer is split across the TP group, by its name (as AutoTP decides)."""
    if tp.size == 1:
        return Shard()
    leaf = name.rsplit(".", 1)[-1]
    if leaf in COLUMN_PARALLEL:
        return Shard(tp.rank, tp.size, 0)
    if leaf in ROW_PARALLEL:
        return Shard(tp.rank, tp.size, 1)
    raise InputError(f"{name}: the runtime does not know how to split this layer for tensor parallelism")


def _bias(view: Callable[[str], torch.Tensor], name: str, shard: Shard) -> torch.Tensor:
    bias = view(f"{name}.bias")
    return bias[slice(*shard.bounds(bias.shape[0]))] if shard.dim == 0 else bias


def _dense_slice(view: Callable[[str], torch.Tensor], name: str, shard: Shard, bias: bool) -> nn.Linear:
    """A dense linear layer's part (the LM head, a layer the checkpoint left unquantized), as a view."""
    weight = view(f"{name}.weight")
    start, stop = shard.bounds(weight.shape[shard.dim])
    weight = weight.narrow(shard.dim, start, stop - start)
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias, device="meta")
    layer.weight = nn.Parameter(weight, requires_grad=False)
    if bias:
        layer.bias = nn.Parameter(_bias(view, name, shard), requires_grad=False)
    return layer


def load_prequantized_stage(
    model_path: str | Path, config: PretrainedConfig, layers: range, first: bool, last: bool, tp: TensorParallel
) -> tuple[Stage, Checkpoint]:
    """The stage of a pre-quantized checkpoint, this rank's TP slice of it, with views of the memory map: packed
    layers as WeightOnlyLinear, the rest (embedding, norms, LM head) as the checkpoint stores them."""
    from runtime.tensor_parallel import reduce_output, slice_input

    source = f"{model_path}/config.json"
    schemes = read_schemes(config.quantization_config, source)
    check_tp_groups(config, schemes, tp.size, source)
    checkpoint = Checkpoint(model_path)
    model = stage_skeleton(config, layers, first, last)
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear):
            continue
        stored = source_name(f"{name}.weight", layers, config)  # the embedding's, for a tied LM head
        prefix, shard = stored.removesuffix(".weight"), linear_shard(name, tp)
        if packed_weight_name(prefix, schemes[0].layout) in checkpoint:  # one layout to a checkpoint
            scheme = scheme_for(schemes, prefix, source)
            shape = (module.out_features, module.in_features)
            layer: nn.Module = packed_linear(checkpoint.view, prefix, scheme, shard, shape)
            if module.bias is not None:
                layer.bias = nn.Parameter(_bias(checkpoint.view, prefix, shard), requires_grad=False)
        elif shard.dim is not None:
            layer = _dense_slice(checkpoint.view, prefix, shard, module.bias is not None)
        else:
            continue  # whole and dense: assigned with the other tensors below
        if shard.dim == 1:
            if name == "lm_head":  # its input, after the last norm, is whole
                start, stop = shard.bounds(module.in_features)
                slice_input(layer, start, stop - start)
            reduce_output(layer, tp.group)
        model.set_submodule(name, layer)
    return assign_from_checkpoint(model, checkpoint, config, layers, first, last), checkpoint


def check_stored_bits(precision: str, config: PretrainedConfig, source: str) -> None:
    """With a pre-quantized checkpoint, fp32/bf16/fp16 name the activations' dtype and int8/int4 must name the
    checkpoint's own bits (the weights stay as stored: nothing is quantized again; activations then take the
    device's compute dtype, `runtime.device.compute_dtype`); other bits than stored are refused."""
    if precision not in QUANTIZED_PRECISIONS:
        return
    stored = {scheme.bits for scheme in read_schemes(config.quantization_config, source)}
    if stored != {QUANTIZED_PRECISIONS[precision]}:
        bits = "/".join(f"int{b}" for b in sorted(stored))
        raise InputError(
            f"{source}: the checkpoint is already quantized to {bits}; precision {precision} would quantize it "
            f"again: use precision {bits} (or fp32, bf16, fp16 to name the activations' dtype)"
        )

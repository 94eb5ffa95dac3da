"""A stage made weight-only int8/int4: the visible step between slicing and decoding, gpt-fast style.

Each rank quantizes its own weights, one layer at a time, from what it holds: the checkpoint's memory-mapped
views without TP, or AutoTP's slices with it. Every linear layer of the decoder layers and the LM head becomes a
`WeightOnlyLinear` (wired for TP as the AutoTP layer was: runtime.stage_linears); the embedding and the norms
stay in the compute dtype.

The group size comes from the model alone (or the run's config), so the reference and every strategy of a sweep
quantize alike; a TP size whose slices would cut a group is refused before anything loads.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from transformers import PretrainedConfig

from runtime import huge_pages
from runtime.cpu_linear import fuse_projections
from runtime.model_shape import GROUP_SIZES, ModelShape, tp_sizes_for_group
from runtime.quantize import QUANTIZED_PRECISIONS, Bits, WeightOnlyLinear, decodes_from_codes, quantize_weight
from runtime.schema import InputError
from runtime.stage_linears import replace_linears, row_slice


def model_shape(config: PretrainedConfig) -> ModelShape:
    return ModelShape.from_config(config.to_dict())


def default_group_size(config: PretrainedConfig) -> int:
    """The model's group size (ModelShape.default_group_size); InputError when no preferred size fits."""
    shape = model_shape(config)
    group = shape.default_group_size()
    if group is None:
        raise InputError(
            f"no group size of {', '.join(map(str, GROUP_SIZES))} divides the model's layer input widths "
            f"({', '.join(map(str, shape.input_widths))}): the model cannot be quantized group-wise"
        )
    return group


def quant_group_size(config: PretrainedConfig, precision: str, tp_size: int, override: int | None = None) -> int:
    """The run's group size (`override`, else the model's default), checked against its TP size: a slice that
    would cut a group is refused, naming the TP sizes that keep groups whole."""
    group = override or default_group_size(config)
    widths = model_shape(config).input_widths
    fits = tp_sizes_for_group(widths, group, limit=max(tp_size, 64))
    if tp_size not in fits:
        works = ", ".join(map(str, fits)) if fits else "none (choose a group size that divides them)"
        raise InputError(
            f"{precision} in groups of {group}: tp_size {tp_size} would cut a group of the layers' input widths "
            f"({', '.join(map(str, widths))}); TP sizes that work: {works}"
        )
    return group


def quantize_layer(
    layer: nn.Module, bits: Bits, group_size: int, dtype: torch.dtype, device: torch.device
) -> WeightOnlyLinear:
    """One linear layer (nn.Linear or an AutoTP slice) as a WeightOnlyLinear on `device`; a row-parallel slice
    must hold whole groups."""
    row = row_slice(layer)
    if row is not None and (row[0] % group_size or row[1] % group_size):
        start, size = row
        raise InputError(f"{layer.name}: its input slice [{start}, {start + size}) cuts groups of {group_size}")
    qweight, scale = quantize_weight(layer.weight.detach().to(device), bits, group_size, dtype)
    bias = layer.bias.detach().to(device=device, dtype=dtype) if layer.bias is not None else None
    return WeightOnlyLinear(huge_pages.place(qweight), scale, None, bits, group_size, bias)  # the kernel's stream


def quantize_stage(
    model: nn.Module,
    precision: str,
    group_size: int,
    dtype: torch.dtype,
    device: torch.device,
    group: dist.ProcessGroup | None = None,
) -> nn.Module:
    """`model` with each linear of its decoder layers and its LM head replaced, in place and one at a time, by
    a `precision` ("int8"/"int4") WeightOnlyLinear of the weights this rank holds (scales and bias in `dtype`,
    on `device`), q/k/v and gate/up fused where decode steps read the codes through the CPU kernel; `group` is
    the TP group when AutoTP has sliced the model."""
    bits = QUANTIZED_PRECISIONS[precision]
    model = replace_linears(model, group, lambda layer: quantize_layer(layer, bits, group_size, dtype, device))
    if decodes_from_codes(device, dtype):
        fuse_projections(model)
    return model

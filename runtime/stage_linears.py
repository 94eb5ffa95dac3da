"""A stage's linear layers swapped for other kinds (quantized, or packed for the CPU), TP wiring kept visible.

AutoTP's layers compute `torch.matmul(x, self.weight.transpose(-1, -2))` on their slice: a column-parallel slice
needs nothing more, a row-parallel one gets its output all-reduced (`reduce_output`), and the LM head,
row-parallel over the hidden size, also gets only its slice of the input (`slice_input`). A replacement is built
from the layer it replaces (its weight slice and bias) and given the same wiring.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.distributed as dist
from torch import nn

from runtime.tensor_parallel import reduce_output, slice_input


def row_slice(layer: nn.Module) -> tuple[int, int] | None:
    """(start, size) of the input features a row-parallel AutoTP layer holds; None for any other layer."""
    if isinstance(layer, nn.Linear):  # not AutoTP's (and no DeepSpeed import for a stage without TP)
        return None
    from deepspeed.module_inject.layers import LinearAllreduce

    if not isinstance(layer, LinearAllreduce):
        return None
    sizes, index = layer._partition_sizes, layer.tp_index  # frozen by AutoTP when it cut the slice
    return sum(sizes[:index]), sizes[index]


def linear_layers(model: nn.Module, group: dist.ProcessGroup | None) -> list[str]:
    """The names of the layers a stage's matrix products run through: every linear of the decoder layers, and
    the LM head."""
    kinds: tuple[type, ...] = (nn.Linear,)
    if group is not None:
        from deepspeed.module_inject.layers import LinearAllreduce, LinearLayer

        kinds += (LinearAllreduce, LinearLayer)
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, kinds) and (name.startswith("model.layers.") or name == "lm_head")
    ]


def rewire(old: nn.Module, new: nn.Module, group: dist.ProcessGroup | None) -> nn.Module:
    """`new` in `old`'s place in TP: row-parallel again where `old` was (input sliced where it was whole)."""
    row = row_slice(old) if group is not None else None
    if row is None:
        return new
    from deepspeed.module_inject.layers import LinearAllreduceWithReplicatedInput, LmHeadLinearAllreduce

    if isinstance(old, LmHeadLinearAllreduce | LinearAllreduceWithReplicatedInput):  # its input is whole
        slice_input(new, *row)
    return reduce_output(new, group)


def replace_linears(
    model: nn.Module,
    group: dist.ProcessGroup | None,
    make: Callable[[nn.Module], nn.Module],
) -> nn.Module:
    """`model` with each of its `linear_layers` replaced, in place and one at a time (one layer's old and new
    weights alive together at most), by `make(layer)`, rewired for TP when `group` is the stage's TP group."""
    for name in linear_layers(model, group):
        parent, _, attr = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        old = getattr(owner, attr)
        setattr(owner, attr, rewire(old, make(old), group))
    return model

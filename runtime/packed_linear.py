"""Dense linear layers with their weights in oneDNN's blocked layout, for decoding on a CPU.

At batch 1 a decode step is one matrix-vector product per layer, bound by how fast the weights stream from
memory. A weight kept as PyTorch's (out, in) rows goes through MKL's general GEMM; reordered once at load into
the blocked layout oneDNN's inner product reads (for the batch size it is packed for), the same product reads
the weights about a fifth faster here (the 57 linears of the llama-100m shape at batch 1, one thread, in turn:
41.6 ms against 52.8 ms through `F.linear`, 47.6 ms as `x @ W.T` stored transposed). The reorder replaces the
weight (no second copy stays), and the product computes the same sums in a different order: greedy tokens are
checked against the reference as for every strategy.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from runtime.stage_linears import replace_linears

PACKED_DTYPES = (torch.float32, torch.bfloat16)
# Below about a million weights oneDNN's call costs what the layout saves (here, 2 threads, batch 1: 128x128
# 4.7 us through F.linear against 14.7 us packed, 768x768 37.6 against 36.1, 1024x1024 62.7 against 46.1,
# the 32000x1024 LM head 6.8 ms against 3.1 ms): smaller layers stay as they are.
MIN_PACKED_WEIGHTS = 1 << 20


def can_pack(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether this build of torch can pack dense `dtype` weights for `device` (a CPU with oneDNN)."""
    return device.type == "cpu" and dtype in PACKED_DTYPES and torch.backends.mkldnn.is_available()


class PackedLinear(nn.Module):
    """y = x W^T + b with W held in oneDNN's layout (an opaque tensor: only this layer reads it)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, batch_size: int = 1) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), batch_size))
        self.bias = bias

    @classmethod
    def of(cls, layer: nn.Module) -> PackedLinear:
        bias = layer.bias.detach() if layer.bias is not None else None
        return cls(layer.weight.detach(), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        out = torch.ops.mkldnn._linear_pointwise(flat, self.packed, self.bias, "none", [], "")
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def pack_stage(model: nn.Module, group: dist.ProcessGroup | None) -> nn.Module:
    """`model` with the dense linears of its decoder layers and its LM head packed (see `PackedLinear`), those
    of at least MIN_PACKED_WEIGHTS weights."""
    return replace_linears(model, group, PackedLinear.of, only=lambda layer: layer.weight.numel() >= MIN_PACKED_WEIGHTS)

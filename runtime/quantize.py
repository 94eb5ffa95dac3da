"""Weight-only quantization: int8 or int4 weights in groups along the input dimension, one scale per group.

A weight row of `in_features` is cut into groups of `group_size` columns; each group keeps its own scale (and,
for checkpoints quantized asymmetrically, its own zero point), and `w = (q - zero) * scale`. Groups never
straddle a tensor-parallel slice boundary (the group size divides every rank's slice), so quantizing a rank's
slice gives exactly the numbers quantizing the whole matrix would: a quantized TP run computes what the
quantized single device computes, and greedy tokens match.

Activations stay in the run's compute dtype. On a CPU in fp32, a decode step's few rows go through the project's
quantized matrix-vector kernel (runtime/kernels/qgemv.cpp), which reads the codes and scales as held here, one
byte (int8) or half a byte (int4) per weight, and takes integer dot products against x rounded to int16 per group
(an error of at most 1/65534 of the group's largest |x| per element, where llama.cpp rounds to int8); q/k/v and
gate/up run as one product (runtime.cpu_linear.FusedGemv). Anything else (a prefill's many rows, a GPU,
fp16/bf16) dequantizes the weight for the call (one layer's dense weight alive at a time) and runs the GEMM.
Either way resident memory is the packed bytes plus the scales.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from runtime.cpu_kernels import compiled
from runtime.cpu_linear import few_rows

# the group-size choice is pure arithmetic on the model's widths; kept importable from here
from runtime.model_shape import GROUP_SIZES as GROUP_SIZES
from runtime.model_shape import choose_group_size as choose_group_size
from runtime.model_shape import tp_sizes_for_group as tp_sizes_for_group

Bits = Literal[4, 8]
QUANTIZED_PRECISIONS: dict[str, Bits] = {"int8": 8, "int4": 4}
SYMMETRIC_ZERO: dict[int, int] = {8: 0, 4: 8}  # int8 stored signed; int4 stored as unsigned nibbles around 8


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """(out, in) integers in [0, 15] -> (out, in / 2) bytes, the even column in the low nibble."""
    values = values.to(torch.uint8)
    return values[:, 0::2] | (values[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """(out, in / 2) bytes -> (out, in) integers in [0, 15] (uint8)."""
    return torch.stack((packed & 0x0F, packed >> 4), dim=-1).flatten(-2)


def decodes_from_codes(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether a decode step's few rows read the codes through the CPU kernel (fp32 on a CPU, where it builds)
    rather than dequantizing every weight on every call, as a prefill still does."""
    return device.type == "cpu" and dtype == torch.float32 and compiled("qgemv") is not None


class WeightOnlyLinear(nn.Module):
    """A linear layer whose weight is held as int8 or packed int4 groups with per-group scales.

    Buffers: `qweight` (int8 (out, in) for 8 bits; uint8 (out, in / 2) for 4 bits), `scale` (out, in / group),
    `zero` (out, in / group) or None for symmetric weights (zero 0 for int8, 8 for int4).
    """

    KERNEL_TENSORS = ("qweight", "scale", "zero")  # what `decode_rows` reads (runtime.cpu_linear.FusedGemv)

    def __init__(
        self,
        qweight: torch.Tensor,
        scale: torch.Tensor,
        zero: torch.Tensor | None,
        bits: Bits,
        group_size: int,
        bias: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.bits, self.group_size = bits, group_size
        self.out_features = qweight.shape[0]
        self.in_features = qweight.shape[1] * (2 if bits == 4 else 1)
        if self.in_features % group_size or scale.shape != (self.out_features, self.in_features // group_size):
            raise ValueError(
                f"scale {tuple(scale.shape)} does not fit a ({self.out_features}, {self.in_features}) weight "
                f"in groups of {group_size}"
            )
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale)
        self.register_buffer("zero", zero)
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        """The dense (out, in) weight in `dtype`."""
        q = unpack_int4(self.qweight) if self.bits == 4 else self.qweight
        groups = q.view(self.out_features, -1, self.group_size).to(dtype)
        zero = self.zero.to(dtype).unsqueeze(-1) if self.zero is not None else SYMMETRIC_ZERO[self.bits]
        return ((groups - zero) * self.scale.to(dtype).unsqueeze(-1)).view(self.out_features, self.in_features)

    def fusion_key(self) -> tuple:
        """Layers with equal keys can run as one product (runtime.cpu_linear.FusedGemv)."""
        return (type(self), self.bits, self.group_size, self.zero is None, self.scale.dtype, self.bias is None)

    def decode_rows(
        self,
        x: torch.Tensor,
        qweight: torch.Tensor,
        scale: torch.Tensor,
        zero: torch.Tensor | None,
        bias: torch.Tensor | None,
    ) -> torch.Tensor | None:
        """x W^T + bias from the codes through the CPU kernel, or None where it does not apply (a GPU, another
        dtype, more rows than it takes)."""
        if not (decodes_from_codes(x.device, x.dtype) and qweight.is_contiguous()):
            return None
        kernel, bits, group = compiled("qgemv"), self.bits, self.group_size
        return few_rows(x, kernel.max_batch, lambda rows: kernel.linear(rows, qweight, scale, zero, bits, group), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.decode_rows(x, self.qweight, self.scale, self.zero, self.bias)
        return F.linear(x, self.dequantize(x.dtype), self.bias) if out is None else out

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, int{self.bits}, group={self.group_size}"


def quantize_weight(
    weight: torch.Tensor, bits: Bits, group_size: int, scale_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric round-to-nearest of a (out, in) weight: (qweight as WeightOnlyLinear stores it, scale).

    The scale is computed in float32 from each group alone, so equal groups give equal numbers wherever the
    matrix was cut."""
    out_features, in_features = weight.shape
    if in_features % group_size:
        raise ValueError(f"group size {group_size} does not divide the weight's {in_features} input features")
    groups = weight.detach().float().view(out_features, -1, group_size)
    qmax = 127 if bits == 8 else 7
    scale = groups.abs().amax(dim=-1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny) / qmax
    q = torch.round(groups / scale).clamp(-qmax - 1, qmax).view(out_features, in_features)
    qweight = q.to(torch.int8) if bits == 8 else pack_int4((q + SYMMETRIC_ZERO[4]).to(torch.uint8))
    return qweight, scale.squeeze(-1).to(scale_dtype)


def weight_bytes(model: nn.Module) -> int:
    """The bytes of the model's weights as held: its parameters and its persistent buffers (the packed weights,
    scales and zero points of WeightOnlyLinear layers; not derived tables such as rotary
    frequencies, which are non-persistent)."""
    buffers = [
        tensor
        for module in model.modules()
        for name, tensor in module.named_buffers(recurse=False)
        if name not in module._non_persistent_buffers_set
    ]
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *buffers))

"""The quantized matrix-vector kernel (runtime/kernels/qgemv.cpp) behind WeightOnlyLinear's decode steps on a CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from runtime.cpu_kernels import compiled
from runtime.quantize import WeightOnlyLinear, quantize_weight

OUT = 37  # a block tail: 9 blocks of four rows and one row


def layer(bits: int, group: int, in_features: int, zeros: bool, seed: int) -> WeightOnlyLinear:
    torch.manual_seed(seed)
    qweight, scale = quantize_weight(torch.randn(OUT, in_features), bits, group, torch.float32)
    zero = None
    if zeros:  # asymmetric, as pre-quantized checkpoints load: int4 codes 0..15, int8 signed
        low, high, dtype = (0, 16, torch.uint8) if bits == 4 else (-20, 20, torch.int8)
        zero = torch.randint(low, high, (OUT, in_features // group), dtype=dtype)
    return WeightOnlyLinear(qweight, scale, zero, bits, group, torch.randn(OUT))


def activation_error_bound(x: torch.Tensor, dense: torch.Tensor, group: int) -> torch.Tensor:
    """The most the kernel's int16 activations can move each output: every x is rounded to a step of its group's
    max |x| / 32767, so by at most half a step, times its weight's magnitude (and fp32 summation's own noise)."""
    flat = x.reshape(-1, x.shape[-1])
    steps = flat.abs().view(flat.shape[0], -1, group).amax(-1) / 32767
    half_steps = steps.repeat_interleave(group, dim=-1) / 2
    return (half_steps @ dense.abs().t()).view(*x.shape[:-1], -1) * 1.01 + 1e-5


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("zeros", [False, True])
def test_the_kernel_computes_what_the_dequantized_weight_does(bits: int, zeros: bool) -> None:
    """Groups the vectors fill (32, 128) and groups summed column by column (24, 8), one to four rows through the
    kernel (its activations rounded to int16: within that rounding's bound) and more through the dequantized
    GEMM (exact up to summation order)."""
    assert compiled("qgemv") is not None
    for group, in_features in ((32, 96), (128, 256), (24, 72), (8, 40)):
        quantized = layer(bits, group, in_features, zeros, seed=group)
        dense = quantized.dequantize(torch.float32)
        for rows in (1, 2, 3, 4, 6):
            x = torch.randn(rows, 1, in_features)
            ours, exact = quantized(x), F.linear(x, dense, quantized.bias)
            if rows <= 4:
                assert ((ours - exact).abs() <= activation_error_bound(x, dense, group)).all()
                assert not torch.equal(ours, exact)  # the kernel ran, not the GEMM
            else:
                torch.testing.assert_close(ours, exact, rtol=1e-5, atol=1e-4)


def test_scales_as_pre_quantized_checkpoints_hold_them() -> None:
    """fp16 scales seen through a transpose (GPTQ and AWQ store them (groups, out)) read as their fp32 values."""
    quantized = layer(4, 32, 128, zeros=True, seed=1)
    as_stored = quantized.scale.t().contiguous().half().t()
    half = WeightOnlyLinear(quantized.qweight, as_stored, quantized.zero, 4, 32, None)
    x = torch.randn(2, 128)
    dense = half.dequantize(torch.float32)
    assert ((half(x) - F.linear(x, dense)).abs() <= activation_error_bound(x, dense, 32)).all()


@pytest.mark.parametrize("bits", [8, 4])
def test_a_row_sums_the_same_in_any_block_or_slice(bits: int) -> None:
    """Tensor parallelism hands a rank some rows of a layer: each row must come out bit for bit as in the whole."""
    whole = layer(bits, 32, 128, zeros=False, seed=3)
    x = torch.randn(1, 128)
    for first in (1, 5, 30):
        part = WeightOnlyLinear(whole.qweight[first:], whole.scale[first:], None, bits, 32, whole.bias[first:])
        assert torch.equal(part(x), whole(x)[:, first:])

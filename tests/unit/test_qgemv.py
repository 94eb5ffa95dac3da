"""The quantized matrix-vector kernel (runtime/kernels/qgemv.cpp) behind WeightOnlyLinear's decode steps on a CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from runtime.cpu_linear import compiled
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


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("zeros", [False, True])
def test_the_kernel_computes_what_the_dequantized_weight_does(bits: int, zeros: bool) -> None:
    """Groups the vector steps fill (32, 128) and groups they leave a tail of (24, 8), one to four rows through
    the kernel and more through the dequantized GEMM."""
    assert compiled("qgemv") is not None
    for group, in_features in ((32, 96), (128, 256), (24, 72), (8, 40)):
        quantized = layer(bits, group, in_features, zeros, seed=group)
        dense = quantized.dequantize(torch.float32)
        for rows in (1, 2, 3, 4, 6):
            x = torch.randn(rows, 1, in_features)
            torch.testing.assert_close(quantized(x), F.linear(x, dense, quantized.bias), rtol=1e-5, atol=1e-4)


def test_scales_as_pre_quantized_checkpoints_hold_them() -> None:
    """fp16 scales seen through a transpose (GPTQ and AWQ store them (groups, out)) read as their fp32 values."""
    quantized = layer(4, 32, 128, zeros=True, seed=1)
    as_stored = quantized.scale.t().contiguous().half().t()
    half = WeightOnlyLinear(quantized.qweight, as_stored, quantized.zero, 4, 32, None)
    x = torch.randn(2, 128)
    torch.testing.assert_close(half(x), F.linear(x, half.dequantize(torch.float32)), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("bits", [8, 4])
def test_a_row_sums_the_same_in_any_block_or_slice(bits: int) -> None:
    """Tensor parallelism hands a rank some rows of a layer: each row must come out bit for bit as in the whole."""
    whole = layer(bits, 32, 128, zeros=False, seed=3)
    x = torch.randn(1, 128)
    for first in (1, 5, 30):
        part = WeightOnlyLinear(whole.qweight[first:], whole.scale[first:], None, bits, 32, whole.bias[first:])
        assert torch.equal(part(x), whole(x)[:, first:])

"""The fused one-token ops (runtime/kernels/decode_ops.cpp) against the PyTorch ops they replace, and each
output's independence of the slice it is computed in (a TP rank holds a slice of the heads and of the MLP)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import LlamaRMSNorm, apply_rotary_pos_emb

from runtime.cpu_kernels import compiled

TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}


@pytest.fixture(scope="module")
def ops():
    built = compiled("decode_ops")
    assert built is not None
    return built


def test_rms_norm_and_the_residual_add_before_it(ops) -> None:
    torch.manual_seed(0)
    norm = LlamaRMSNorm(72, eps=1e-5)  # 72: whole vectors and a tail
    norm.weight.data.normal_()
    x, h = torch.randn(3, 1, 72) * 4, torch.randn(3, 1, 72)
    torch.testing.assert_close(ops.rms_norm(x, norm.weight, norm.variance_epsilon), norm(x), **TOLERANCE)
    total, normed = ops.add_rms_norm(x, h, norm.weight, norm.variance_epsilon)
    assert torch.equal(total, x + h)
    torch.testing.assert_close(normed, norm(x + h), **TOLERANCE)


def test_silu_times_up_whatever_slice_of_the_mlp(ops) -> None:
    torch.manual_seed(1)
    gate, up = (torch.randn(2, 1, 2 * 75) * 6).split(75, dim=-1)  # views of one fused product, as decode passes them
    gate[0, 0, :3] = torch.tensor([-100.0, 100.0, 0.0])  # far out on both sides: 0 and the input itself
    whole = ops.silu_mul(gate, up)
    torch.testing.assert_close(whole, F.silu(gate) * up, **TOLERANCE)
    assert torch.equal(ops.silu_mul(gate[..., 37:], up[..., 37:]), whole[..., 37:])


@pytest.mark.parametrize("head_dim", [16, 24])  # whole vectors; a tail
def test_one_query_attention_writes_the_cache_and_attends_as_sdpa_does(ops, head_dim: int) -> None:
    """Rotary, cache write and GQA attention over the positions the mask allows (padding, unwritten positions),
    against apply_rotary_pos_emb, index_copy_ and scaled_dot_product_attention; a rank holding the last KV head
    alone gets that head's bits."""
    torch.manual_seed(2)
    batch, heads, kv_heads, capacity, at = 2, 4, 2, 11, 6
    q, k, v = (
        t.view(batch, 1, -1, head_dim)
        for t in torch.randn(batch, 1, 8 * head_dim).split([4 * head_dim, 2 * head_dim, 2 * head_dim], -1)
    )
    cos, sin = torch.randn(batch, 1, head_dim), torch.randn(batch, 1, head_dim)
    keys, values = torch.randn(batch, kv_heads, capacity, head_dim), torch.randn(batch, kv_heads, capacity, head_dim)
    mask = torch.arange(capacity) <= at
    mask = mask.expand(batch, 1, 1, capacity).clone()
    mask[1, ..., :2] = False  # the second row's left padding
    expected_keys, expected_values = keys.clone(), values.clone()
    rotated_q, rotated_k = apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
    expected_keys.index_copy_(2, torch.tensor([at]), rotated_k)
    expected_values.index_copy_(2, torch.tensor([at]), v.transpose(1, 2))
    groups = heads // kv_heads
    expected = F.scaled_dot_product_attention(
        rotated_q,
        expected_keys.repeat_interleave(groups, 1),
        expected_values.repeat_interleave(groups, 1),
        attn_mask=mask,
        scale=0.3,
    )
    slice_keys, slice_values = keys[:, 1:].clone(), values[:, 1:].clone()
    out = ops.attend(q, k, v, cos, sin, keys, values, at, mask, 0.3)
    torch.testing.assert_close(out, expected.transpose(1, 2).reshape(batch, 1, -1), **TOLERANCE)
    torch.testing.assert_close(keys, expected_keys, **TOLERANCE)
    assert torch.equal(values, expected_values)
    last = ops.attend(q[:, :, groups:], k[:, :, 1:], v[:, :, 1:], cos, sin, slice_keys, slice_values, at, mask, 0.3)
    assert torch.equal(last, out[..., groups * head_dim :])

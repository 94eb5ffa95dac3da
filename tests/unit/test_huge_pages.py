"""runtime.huge_pages: weights copied onto transparent huge pages keep their values and their lifetime, and lie on
huge pages where the OS has them (checked in /proc/self/smaps)."""

from __future__ import annotations

import gc

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from runtime import cpu_linear, huge_pages
from runtime.quantize import weight_bytes

MB = 1 << 20
needs_thp = pytest.mark.skipif(
    not huge_pages.available(), reason="the OS gives no transparent huge pages to madvised memory here"
)


def test_a_placed_tensor_keeps_its_values_after_the_source_and_the_tensor_are_freed() -> None:
    """3 MB: one whole huge page and a tail on small pages; a view outlives the placed tensor (the mapping with it)."""
    source = torch.randn(768, 1024)
    expected = source.clone()
    placed = huge_pages.place(source)
    del source
    gc.collect()
    assert torch.equal(placed, expected) and placed.is_contiguous()
    tail = placed[700:]
    del placed
    gc.collect()
    assert torch.equal(tail, expected[700:])


def test_a_tensor_under_one_huge_page_or_where_there_are_none_stays_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    small = torch.randn(16, 16)
    assert huge_pages.place(small) is small
    monkeypatch.setattr(huge_pages, "available", lambda: False)
    large = torch.randn(1024, 1024)
    assert huge_pages.place(large) is large and huge_pages.huge_bytes(large) == 0


@needs_thp
def test_a_placed_tensor_lies_on_huge_pages_from_a_2mb_boundary() -> None:
    placed = huge_pages.place(torch.randn(1024, 1024))
    assert placed.data_ptr() % huge_pages.HUGE_PAGE == 0
    assert huge_pages.huge_bytes(placed) > 0, "smaps shows no huge page under the placed tensor"


@needs_thp
def test_the_kernel_layers_read_their_weights_from_huge_pages_with_the_same_bits() -> None:
    """GemvLinear's weight and FusedGemv's concatenation are placed; the state dict and the products are unchanged."""
    if cpu_linear.kernel() is None:
        pytest.skip("the fp32 kernel does not build here")
    torch.manual_seed(0)
    attn = torch.nn.Module()
    for name in ("q_proj", "k_proj", "v_proj"):
        setattr(attn, name, cpu_linear.GemvLinear.of(torch.nn.Linear(1024, 512, bias=False)))
    before = {name: tensor.clone() for name, tensor in attn.state_dict().items()}
    x = torch.randn(1, 1024)
    alone = [member(x) for member in (attn.q_proj, attn.k_proj, attn.v_proj)]
    assert huge_pages.huge_bytes(attn.q_proj.weight) > 0
    cpu_linear.fuse_projections(attn)
    assert huge_pages.huge_bytes(attn.fused_qkv.weight) >= 2 * MB
    assert before.keys() == attn.state_dict().keys()
    assert all(torch.equal(before[name], tensor) for name, tensor in attn.state_dict().items())
    assert all(torch.equal(a, b) for a, b in zip(alone, attn.fused_qkv(x), strict=True))


@needs_thp
def test_a_tied_lm_head_is_placed_once_for_both_of_its_uses() -> None:
    """The head's placed copy becomes the embeddings' weight too: the weights held do not grow by the vocabulary."""
    if cpu_linear.kernel() is None:
        pytest.skip("the fp32 kernel does not build here")
    config = LlamaConfig(
        vocab_size=1024, hidden_size=1024, intermediate_size=64, num_hidden_layers=1, num_attention_heads=8,
        tie_word_embeddings=True,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    held, table = weight_bytes(model), model.lm_head.weight.detach().clone()
    model = cpu_linear.use_gemv(model, None)
    assert model.get_input_embeddings().weight is model.lm_head.weight and weight_bytes(model) == held
    assert torch.equal(model.lm_head.weight, table) and huge_pages.huge_bytes(model.lm_head.weight) > 0

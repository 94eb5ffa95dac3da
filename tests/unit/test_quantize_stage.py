"""quantize_stage on a tiny random Llama: the step that makes a stage weight-only int8/int4."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from runtime.device import compute_dtype
from runtime.quantize import WeightOnlyLinear, quantize_weight, weight_bytes
from runtime.quantize_stage import default_group_size, quant_group_size, quantize_stage
from runtime.schema import InputError

CPU = torch.device("cpu")


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def test_quantized_logits_stay_close_to_dense_and_only_linears_change() -> None:
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))
    model = tiny_llama()
    dense = model(ids).logits
    group = default_group_size(model.config)  # widths 64, 160 at TP up to 2: 160 / (2 * 16) is whole, / 64 not
    assert group == 16
    errors = {}
    for precision in ("int8", "int4"):
        quantized = quantize_stage(tiny_llama(), precision, group, torch.float32, CPU)
        errors[precision] = ((quantized(ids).logits - dense).norm() / dense.norm()).item()
        layers = [n for n, m in quantized.named_modules() if isinstance(m, WeightOnlyLinear)]
        assert len(layers) == 2 * 7 + 1 and "lm_head" in layers  # q k v o gate up down per layer, and the head
        assert isinstance(quantized.model.embed_tokens, torch.nn.Embedding)
    assert errors["int8"] < 0.02 and errors["int4"] < 0.2 and errors["int8"] < errors["int4"] / 4, errors


def test_a_tp_slice_quantizes_to_the_wholes_slice() -> None:
    """Row-parallel (input columns) and column-parallel (output rows) halves give the whole's numbers."""
    weight = tiny_llama().model.layers[0].mlp.down_proj.weight  # (64, 160)
    for bits in (8, 4):
        whole_q, whole_scale = quantize_weight(weight, bits, 16, torch.float32)
        cols = 160 // (2 if bits == 8 else 4)  # packed int4 holds two columns a byte
        right_q, right_scale = quantize_weight(weight[:, 80:], bits, 16, torch.float32)
        assert torch.equal(right_q, whole_q[:, cols:]) and torch.equal(right_scale, whole_scale[:, 5:])
        bottom_q, bottom_scale = quantize_weight(weight[32:], bits, 16, torch.float32)
        assert torch.equal(bottom_q, whole_q[32:]) and torch.equal(bottom_scale, whole_scale[32:])


def test_int4_holds_about_half_the_bytes_of_int8() -> None:
    sizes = {}
    for precision in ("int8", "int4"):
        model = quantize_stage(tiny_llama(), precision, 16, torch.float32, CPU)
        embedding = model.model.embed_tokens.weight
        sizes[precision] = weight_bytes(model) - embedding.numel() * embedding.element_size()
    dense = tiny_llama()
    linears = sum(m.weight.numel() for m in dense.modules() if isinstance(m, torch.nn.Linear))
    scales = linears // 16 * 4
    norms = weight_bytes(dense) - 4 * (linears + dense.model.embed_tokens.weight.numel())
    assert sizes == {"int8": linears + scales + norms, "int4": linears // 2 + scales + norms}


def test_a_tp_size_that_cuts_a_group_is_refused_naming_those_that_work() -> None:
    config = tiny_llama().config
    assert quant_group_size(config, "int8", 2) == 16
    with pytest.raises(InputError) as err:
        quant_group_size(config, "int8", 2, override=64)
    assert str(err.value) == (
        "int8 in groups of 64: tp_size 2 would cut a group of the layers' input widths (64, 160); "
        "TP sizes that work: none (choose a group size that divides them)"
    )
    with pytest.raises(InputError, match=r"tp_size 4 would cut .*; TP sizes that work: 1, 2$"):
        quant_group_size(config, "int4", 4)


def test_fake_cuda_without_bf16_is_refused_bf16_and_runs_int8_in_fp16(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU here: torch's bf16 query and the device name are faked, as on a pre-Ampere card."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    cuda = torch.device("cuda", 0)
    with pytest.raises(InputError, match=r"^precision bf16: cuda:0 \(Tesla V100\) has no bf16; use fp16"):
        compute_dtype("bf16", cuda)
    assert compute_dtype("int8", cuda) == torch.float16 and compute_dtype("int4", CPU) == torch.float32

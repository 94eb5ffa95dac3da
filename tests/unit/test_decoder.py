"""The static-cache forward (runtime.decoder) against Hugging Face's own forward, family by family, and the
CPU's matrix-vector kernel against nn.Linear."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
from transformers import DynamicCache, PretrainedConfig
from transformers.models.llama import LlamaConfig
from transformers.models.mistral import MistralConfig
from transformers.models.qwen2 import Qwen2Config
from transformers.models.qwen3 import Qwen3Config

from runtime import cpu_kernels, cpu_linear, decoder
from runtime.checkpoint import Stage, random_stage
from runtime.cpu_linear import GemvLinear, can_use, use_gemv
from runtime.generate import DecodeSettings, Generator, left_pad
from runtime.quantize import WeightOnlyLinear, quantize_weight, weight_bytes

CPU = torch.device("cpu")
SMALL = {
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,  # GQA: the one-query path packs heads, the prefill path repeats keys
    "vocab_size": 300,
    "max_position_embeddings": 128,
}
FAMILIES = {
    "llama": LlamaConfig(**SMALL),
    "mistral-window": MistralConfig(**SMALL, sliding_window=5),  # every layer, shorter than the prompts
    "qwen2-bias-mixed": Qwen2Config(  # q/k/v biases, the last layer sliding
        **SMALL, use_sliding_window=True, sliding_window=4, max_window_layers=2
    ),
    "qwen3-qk-norm": Qwen3Config(**SMALL, head_dim=24),  # q/k norms; head_dim * heads != hidden
}
ROWS = [[5, 9, 14, 3, 77, 81, 2, 40, 41], [6, 7], [100, 200, 150, 9, 9, 9]]  # left-padded to 9


def whole(config: PretrainedConfig, seed: int = 0) -> Stage:
    return random_stage(config, range(config.num_hidden_layers), True, True, torch.float32, "cpu", seed=seed)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_step_matches_hf_forward(family: str) -> None:
    stage = whole(FAMILIES[family])
    assert decoder.supports(stage)
    assert decoder.fused_ops(torch.zeros(1), torch.tensor([0])) is not None  # the one-token steps below run fused
    ids, mask = left_pad(ROWS, 0, CPU)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    cache, hf_cache = decoder.StaticCache(ids.shape[1] + 4), DynamicCache(config=stage.config)
    feed = ids
    with torch.inference_mode():
        for _ in range(4):  # a prefill, then three one-token steps
            ours = decoder.forward(stage, cache, mask, positions, ids=feed)
            theirs = stage.model.model(
                input_ids=feed, attention_mask=mask, position_ids=positions, past_key_values=hf_cache, use_cache=True
            ).last_hidden_state
            real = mask[:, -feed.shape[1] :].bool()  # padding positions' states are never read
            torch.testing.assert_close(ours[real], theirs[real], rtol=1e-5, atol=1e-5)
            feed = stage.model.lm_head(ours[:, -1:]).argmax(-1)
            mask = torch.cat([mask, mask.new_ones(len(ROWS), 1)], dim=1)
            positions = positions[:, -1:] + 1
    assert cache.length == ids.shape[1] + 3


@pytest.mark.parametrize("family", ["llama", "mistral-window"])
@pytest.mark.parametrize("fused", [True, False])
def test_greedy_tokens_are_the_same_either_way_and_the_cache_is_written_in_place(
    family: str, fused: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HF's forward, the static cache through PyTorch's ops, and through the fused one-token ops (their cache
    writes go through the kernel's attention, not `StaticCache.write`)."""
    stage = whole(FAMILIES[family], seed=1)

    def decode(static: bool) -> list[list[int]]:
        settings = DecodeSettings(CPU, torch.float32, set(), 0, max_new_tokens=8, static_cache=static)
        return [r.tokens for r in Generator.alone(stage, settings).run(ROWS)]

    hf_tokens = decode(static=False)
    writes: list[int] = []
    original, ops = decoder.StaticCache.write, cpu_kernels.compiled("decode_ops")

    def recorded(cache: decoder.StaticCache, layer: int, k: torch.Tensor, v: torch.Tensor, at: torch.Tensor | None):
        out = original(cache, layer, k, v, at)
        writes.append(cache.keys[layer].data_ptr())
        return out

    def fused_attention(*args: object) -> torch.Tensor:
        writes.append(args[5].data_ptr())  # the keys buffer it writes into
        return attend(*args)

    monkeypatch.setattr(decoder.StaticCache, "write", recorded)
    if fused:
        attend = ops.attend
        monkeypatch.setattr(ops, "attend", fused_attention)
    else:
        monkeypatch.setattr(decoder, "fused_ops", lambda x, at: None)
    assert decode(static=True) == hf_tokens
    layers = stage.config.num_hidden_layers
    assert len(writes) == layers * 8 and len(set(writes)) == layers  # one buffer per layer, every step into it


def test_a_model_outside_the_families_keeps_hf_forward() -> None:
    from transformers import GPT2Config

    stage = Stage(torch.nn.Identity(), GPT2Config(), range(1), True, True)
    assert not decoder.supports(stage)


def test_the_kernel_computes_what_the_linear_does() -> None:
    """A width that runs every loop of a row's sum (the four chains, single vectors, the scalar tail); one to four
    rows through the kernel, more through the GEMM."""
    torch.manual_seed(0)
    width = 4 * 4 * cpu_linear.kernel().vector_width + 21
    for bias in (True, False):
        linear = torch.nn.Linear(width, 78, bias=bias)
        fast = GemvLinear.of(linear)
        for batch, rows in ((1, 1), (3, 1), (4, 1), (2, 7)):
            x = torch.randn(batch, rows, width)
            torch.testing.assert_close(fast(x), linear(x), rtol=1e-5, atol=1e-5)


def dense_layer(rows: int) -> GemvLinear:
    return GemvLinear.of(torch.nn.Linear(72, rows, bias=True))


def int4_layer(rows: int) -> WeightOnlyLinear:
    qweight, scale = quantize_weight(torch.randn(rows, 72), 4, 24, torch.float32)
    return WeightOnlyLinear(
        qweight, scale, torch.randint(0, 16, (rows, 3), dtype=torch.uint8), 4, 24, torch.randn(rows)
    )


@pytest.mark.parametrize("make", [dense_layer, int4_layer], ids=["dense", "int4-codes"])
def test_fused_projections_give_each_member_its_own_bits(make: Callable[[int], torch.nn.Module]) -> None:
    """q/k/v in one product: each output is bit for bit what its layer gives alone (TP ranks fuse other rows,
    so parity needs a row's sum to be independent of its neighbours), the kernel's tensors are held once, and a
    prefill's rows go through the members."""
    torch.manual_seed(1)
    attn = torch.nn.Module()
    for name, rows in (("q_proj", 40), ("k_proj", 24), ("v_proj", 24)):
        setattr(attn, name, make(rows))
    members = (attn.q_proj, attn.k_proj, attn.v_proj)
    names = members[0].KERNEL_TENSORS
    alone = [[getattr(m, name).clone() for name in names] for m in members]
    held = weight_bytes(attn)
    cpu_linear.fuse_projections(attn)
    assert weight_bytes(attn) == held
    for name in names:
        fused = getattr(attn.fused_qkv, name)
        assert [getattr(m, name).data_ptr() for m in members] == [fused[start:].data_ptr() for start in (0, 40, 64)]
    assert all(
        torch.equal(a, b)
        for m, tensors in zip(members, alone, strict=True)
        for a, b in zip((getattr(m, name) for name in names), tensors, strict=True)
    )
    for x in (torch.randn(1, 1, 72), torch.randn(4, 1, 72), torch.randn(1, 9, 72)):
        for fused, member in zip(attn.fused_qkv(x), members, strict=True):
            assert torch.equal(fused, member(x))
    attn.k_proj.bias = None  # one bias for some members and not others: left unfused, each keeps its own
    del attn.fused_qkv
    cpu_linear.fuse_projections(attn)
    assert not hasattr(attn, "fused_qkv")


def test_the_kernel_is_built_apart_for_each_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Built with -march=native into a folder nodes may share: a CPU with other instruction sets gets its own."""
    here = cpu_kernels.build_name()
    assert here == cpu_kernels.build_name() and here.startswith("runtime_gemv_")
    monkeypatch.setattr(cpu_kernels.platform, "machine", lambda: "aarch64")
    assert cpu_kernels.build_name() != here


def test_a_kernel_stage_holds_the_same_weights_and_decodes_the_same_tokens() -> None:
    stage = whole(FAMILIES["llama"], seed=2)
    settings = DecodeSettings(CPU, torch.float32, set(), 0, max_new_tokens=8)
    dense = [r.tokens for r in Generator.alone(stage, settings).run(ROWS)]
    held = weight_bytes(stage.model)
    assert can_use(CPU, torch.float32) and not can_use(CPU, torch.bfloat16)
    stage.model = use_gemv(stage.model, None)
    layers = stage.model.model.layers
    assert not any(isinstance(m, torch.nn.Linear) for m in stage.model.modules())
    assert isinstance(stage.model.lm_head, GemvLinear)
    assert all(hasattr(layer.self_attn, "fused_qkv") and hasattr(layer.mlp, "fused_gate_up") for layer in layers)
    assert weight_bytes(stage.model) == held
    assert [r.tokens for r in Generator.alone(stage, settings).run(ROWS)] == dense


def test_compiled_one_token_steps_are_one_graph_and_decode_the_same_tokens() -> None:
    """The static cache keeps every shape the same from step to step: one capture serves them all (a compile per
    step would cost more than it saves). Captured with torch.compile's own checking backend, cheap on a CPU."""
    stage = whole(FAMILIES["mistral-window"], seed=3)
    eager = DecodeSettings(CPU, torch.float32, set(), 0, max_new_tokens=8)
    expected = [r.tokens for r in Generator.alone(stage, eager).run(ROWS)]
    graphs: list[torch.fx.GraphModule] = []

    def counting(graph: torch.fx.GraphModule, _inputs: list[torch.Tensor]):
        graphs.append(graph)
        return graph.forward

    torch._dynamo.reset()
    generator = Generator.alone(stage, replace(eager, compile_backend=counting))
    assert [r.tokens for r in generator.run(ROWS)] == expected
    assert [r.tokens for r in generator.run(ROWS)] == expected  # a second batch: no new capture either
    assert len(graphs) == 1

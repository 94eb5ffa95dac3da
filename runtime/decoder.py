"""The forward pass of a stage's layers with a static KV cache: what every strategy and the reference run.

Hugging Face's forward rebuilds a 4-D mask, grows a `DynamicCache` by concatenation (a copy of every layer's
keys and values per token) and goes through several wrappers per layer. Here a stage's Llama-family layers are
driven directly: the same modules (so AutoTP's sliced linears, their all-reduce and the quantized layers are
unchanged), the same rotary embedding and normalisation, keys and values written in place into buffers sized once
for the prompt plus `max_new_tokens`, and one boolean mask per step shared by every layer of a kind.

Numerically it is the computation `model.model(...)` does: the attention reads the same keys under the same
padding, causal and sliding-window rules (a prefill the written prefix of the buffers, a one-token step the whole
buffers with the unwritten positions masked, so its shapes never change); only the bookkeeping differs.

A one-token step on a CPU in fp32 (eager) runs the small operations between the matrix-vector products fused
(runtime/kernels/decode_ops.cpp): each RMSNorm with the residual add before it, rotary + cache write + attention
of the one query, silu(gate) * up. At batch 1 those are a few microseconds of arithmetic that PyTorch spreads
over ~45 operator calls per layer (HF's RMSNorm alone is 8, ~13 us; the CPU's flash attention ~40 us a call):
the built-in tiny model's step went from 0.51 to 0.29 ms, llama-100m's saved 0.4 ms. They round differently
from PyTorch's (within 1e-5), but every strategy and the reference run them, head by head, so tokens still
match exactly. Prefills, GPUs, other precisions and the compiled step keep PyTorch's ops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm
from transformers.models.mistral.modeling_mistral import MistralRMSNorm
from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm
from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

from runtime.checkpoint import Stage
from runtime.cpu_kernels import compiled

# families whose decoder layer is exactly: norm, attention (q/k/v/o, rotary, optional q/k norm), residual, norm, MLP
SUPPORTED_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})
# their norms: weight * (x * rsqrt(mean(x^2) + eps)) in fp32, what decode_ops.cpp's rms_norm computes
RMS_NORMS = (LlamaRMSNorm, MistralRMSNorm, Qwen2RMSNorm, Qwen3RMSNorm)


def supports(stage: Stage) -> bool:
    """Whether this stage's model can take the static-cache path (else the runtime keeps HF's forward)."""
    return getattr(stage.config, "model_type", None) in SUPPORTED_TYPES


@dataclass
class StaticCache:
    """Each layer's keys and values, (batch, kv heads, capacity, head dim), allocated at the prefill's write (when
    the local head count after TP slicing is known), and how many positions are written."""

    capacity: int
    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)
    length: int = 0
    static_addresses: bool = False  # tell torch.compile the buffers never move (CUDA graphs replay them)

    def write(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, at: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's keys/values for `layer`: the prefill's at the start (the keys/values written so far
        come back), one step's at position `at` (the whole buffers come back: the same shapes at every step)."""
        if layer == len(self.keys):  # the prefill reaches each layer in order
            batch, heads, _, dim = k.shape
            for buffers in (self.keys, self.values):
                buffers.append(k.new_zeros(batch, heads, self.capacity, dim))
                if self.static_addresses:
                    torch._dynamo.mark_static_address(buffers[-1])
        keys, values = self.keys[layer], self.values[layer]
        if at is not None:
            keys.index_copy_(2, at, k)
            values.index_copy_(2, at, v)
            return keys, values
        end = self.length + k.shape[2]
        keys[:, :, self.length : end].copy_(k)
        values[:, :, self.length : end].copy_(v)
        return keys[:, :, :end], values[:, :, :end]


def attention_masks(
    padding: torch.Tensor, start: int, width: int, windows: set[int | None]
) -> dict[int | None, torch.Tensor]:
    """Boolean masks (batch, 1, width, keys) for the queries at cache positions [start, start + width) over the
    `keys` positions `padding` (batch, keys) covers, one per sliding window in use (None: full attention): a key
    is seen when it is not padding, not in the future and inside the window. Every query also sees itself, so a
    padding query's row is never empty: its output is never read, but not every attention kernel returns zeros
    for an empty row (the CPU's does), and a NaN there would spread through the keys and values it writes."""
    q = torch.arange(start, start + width, device=padding.device)[:, None]
    kv = torch.arange(padding.shape[1], device=padding.device)[None, :]
    seen = padding[:, None, None, :].bool() & (kv <= q)
    masks = {}
    for window in windows:
        mask = seen if window is None else seen & (kv > q - window)
        masks[window] = mask | (kv == q)
    return masks


def layer_windows(stage: Stage) -> list[int | None]:
    """Each layer's sliding window (None: full attention), from the stage's own config: per layer where it names
    `layer_types` (Qwen), else the one window on every layer (Mistral; Llama has none)."""
    config = stage.config
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if not types:
        return [window] * config.num_hidden_layers
    return [window if kind == "sliding_attention" else None for kind in types]


def fused_ops(x: torch.Tensor, at: torch.Tensor | None) -> ModuleType | None:
    """runtime/kernels/decode_ops.cpp where this step can take it: a one-token step, fp32 on a CPU, eager (under
    torch.compile the PyTorch ops are what gets traced), the kernel built."""
    if at is None or x.device.type != "cpu" or x.dtype != torch.float32 or torch.compiler.is_compiling():
        return None
    return compiled("decode_ops")


def add_norm(
    ops: ModuleType | None, x: torch.Tensor, h: torch.Tensor | None, norm: nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual stream x + h (x where h is None) and `norm` of it, in one pass where the fused ops apply."""
    if ops is not None and type(norm) in RMS_NORMS:
        if h is None:
            return x, ops.rms_norm(x, norm.weight, norm.variance_epsilon)
        return ops.add_rms_norm(x, h, norm.weight, norm.variance_epsilon)
    x = x if h is None else x + h
    return x, norm(x)


def attend(
    attn: nn.Module,
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    cache: StaticCache,
    layer: int,
    mask: torch.Tensor,
    at: torch.Tensor | None,
    ops: ModuleType | None = None,
) -> torch.Tensor:
    """One attention block: projections, rotary, cache write, scaled dot-product attention, output projection
    (an all-reduce inside it under TP). With the fused ops (a one-token step) rotary, cache write and attention
    are one call."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    batch, width, _ = x.shape
    shape = (batch, width, -1, attn.head_dim)
    if hasattr(attn, "fused_qkv"):  # runtime.cpu_linear's FusedGemv: one product for the three
        q, k, v = (t.view(shape) for t in attn.fused_qkv(x))
    else:
        q, k, v = attn.q_proj(x).view(shape), attn.k_proj(x).view(shape), attn.v_proj(x).view(shape)
    if hasattr(attn, "q_norm"):  # Qwen3
        q, k = attn.q_norm(q), attn.k_norm(k)
    if ops is not None and cos.shape[-1] == attn.head_dim <= ops.max_head_dim:  # rotary on whole heads, as the kernel's
        keys, values = cache.keys[layer], cache.values[layer]
        return attn.o_proj(ops.attend(q, k, v, cos, sin, keys, values, cache.length, mask, attn.scaling))
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    keys, values = cache.write(layer, k, v, at)
    groups = q.shape[1] // keys.shape[1]
    if width == 1 and groups > 1:  # one query: its heads become rows of their KV head's query block, no copy
        out = F.scaled_dot_product_attention(
            q.reshape(batch, keys.shape[1], groups, -1), keys, values, attn_mask=mask, scale=attn.scaling
        )
        out = out.reshape(batch, -1, 1, out.shape[-1])
    else:
        if groups > 1:
            keys = keys.repeat_interleave(groups, dim=1)
            values = values.repeat_interleave(groups, dim=1)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=attn.scaling)
    return attn.o_proj(out.transpose(1, 2).reshape(batch, width, -1))


def feed_forward(
    mlp: nn.Module, x: torch.Tensor, silu_mul: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
) -> torch.Tensor:
    """The gated MLP, down(act(gate(x)) * up(x)), with gate and up in one product where they are fused and
    act(gate) * up in one pass where `silu_mul` is given (the fused ops, for a silu MLP)."""
    fused = hasattr(mlp, "fused_gate_up")
    if not fused and silu_mul is None:
        return mlp(x)
    gate, up = mlp.fused_gate_up(x) if fused else (mlp.gate_proj(x), mlp.up_proj(x))
    return mlp.down_proj(mlp.act_fn(gate) * up if silu_mul is None else silu_mul(gate, up))


def layers(
    stage: Stage,
    cache: StaticCache,
    x: torch.Tensor,
    positions: torch.Tensor,
    masks: list[torch.Tensor],
    at: torch.Tensor | None,
) -> torch.Tensor:
    """The stage's decoder layers over `x` (and its final norm: the identity before the last stage), each with its
    mask. With `at` (a one-token step) every shape is the same at every step: the part `torch.compile` captures,
    and the part the fused ops run eagerly on a CPU."""
    model = stage.model.model
    cos, sin = model.rotary_emb(x, position_ids=positions)
    ops = fused_ops(x, at)
    silu_mul = ops.silu_mul if ops is not None and stage.config.hidden_act == "silu" else None
    h = None  # each block's output, added to the residual stream x by the norm after it
    for index, layer in enumerate(model.layers):
        x, normed = add_norm(ops, x, h, layer.input_layernorm)
        h = attend(layer.self_attn, normed, cos, sin, cache, index, masks[index], at, ops)
        x, normed = add_norm(ops, x, h, layer.post_attention_layernorm)
        h = feed_forward(layer.mlp, normed, silu_mul)
    return add_norm(ops, x, h, model.norm)[1]


def forward(
    stage: Stage,
    cache: StaticCache,
    padding: torch.Tensor,
    positions: torch.Tensor,
    ids: torch.Tensor | None = None,
    hidden: torch.Tensor | None = None,
    step: Callable[..., torch.Tensor] = layers,
) -> torch.Tensor:
    """This stage's layers over `width` new positions (token ids on the first stage, the previous stage's hidden
    state elsewhere): the hidden state after them (normalised on the last stage). `padding` is the (batch,
    length) attention mask of every position so far, the new ones included. A one-token step attends over the
    whole buffers (unwritten positions masked) and runs through `step` (`layers`, or it compiled)."""
    x = stage.model.model.embed_tokens(ids) if ids is not None else hidden
    width, windows = x.shape[1], layer_windows(stage)
    one_token = width == 1 and cache.length > 0
    if one_token:
        padding = F.pad(padding, (0, cache.capacity - padding.shape[1]))
    by_window = attention_masks(padding, cache.length, width, set(windows))
    masks = [by_window[window] for window in windows]
    if one_token:
        x = step(stage, cache, x, positions, masks, torch.tensor([cache.length], device=x.device))
    else:
        x = layers(stage, cache, x, positions, masks, None)
    cache.length += width
    return x


def compiled_step(device: torch.device, backend: str | Callable = "inductor") -> Callable[..., torch.Tensor]:
    """`layers` compiled for one-token steps, with CUDA graphs on cuda (the static cache keeps every shape and
    address the same from step to step). Measured on a 2-core CPU it does not pay (the first compile takes
    minutes, and the steps were no faster): the runtime compiles on GPUs only."""
    mode = "reduce-overhead" if device.type == "cuda" and backend == "inductor" else None
    return torch.compile(layers, backend=backend, mode=mode, dynamic=False)

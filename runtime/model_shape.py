"""A decoder's shape, read once from its config.json, and what follows from it: the input widths of its linear
layers, the group sizes that keep weight-only quantization groups whole in every TP slice, and its bytes (weights
at a precision, KV cache per token). Pure Python (no torch): the cockpit's memory plan and performance model and
the runtime's quantization and TP checks read the same numbers from here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from runtime.contract import PRECISION_BITS, QUANTIZED
from runtime.schema import InputError

GROUP_SIZES = (128, 64, 32, 16, 8)  # preferred first: the largest that fits every slice


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a Llama-family config.json (head_dim defaults to hidden / heads, kv heads to heads)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tied_embeddings: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ModelShape:
        """From a config.json's dict (or a transformers config's `to_dict()`); KeyError names a missing size,
        TypeError/ValueError one that is not a number."""
        heads, hidden = int(config["num_attention_heads"]), int(config["hidden_size"])
        return cls(
            vocab_size=int(config["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(config["intermediate_size"]),
            num_layers=int(config["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        )

    @property
    def attention_width(self) -> int:
        """The query heads' width: q_proj's output, o_proj's input."""
        return self.num_heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def row_parallel_widths(self) -> dict[str, int]:
        """The input widths of the layers TP cuts along their input: o_proj and down_proj."""
        return {"self_attn.o_proj": self.attention_width, "mlp.down_proj": self.intermediate_size}

    @property
    def input_widths(self) -> list[int]:
        """The input widths of the linear layers: hidden (q/k/v, gate/up, LM head), o_proj's and down_proj's."""
        return sorted({self.hidden_size, *self.row_parallel_widths.values()})

    def layer_linear_params(self, tp: int = 1) -> int:
        """One decoder layer's linear weights a rank of a TP-`tp` group holds (the largest share where a size
        does not divide)."""

        def share(n: int) -> int:
            return math.ceil(n / tp)

        h = self.hidden_size
        attention = 2 * h * share(self.attention_width) + 2 * h * share(self.kv_width)
        return attention + 3 * h * share(self.intermediate_size)

    @property
    def quantized_params(self) -> int:
        """The weights weight-only quantization holds in groups: every decoder layer's linears and the LM head."""
        return self.num_layers * self.layer_linear_params() + self.vocab_size * self.hidden_size

    def weight_bytes_per_token(self, linear_bytes: float, dense_bytes: float | None = None) -> float:
        """Bytes of weights read per decoded token (embedding lookups excluded: one row each): the linears and
        the LM head at `linear_bytes` a weight, the norms at `dense_bytes` (default: the same)."""
        norms = (2 * self.num_layers + 1) * self.hidden_size
        return self.quantized_params * linear_bytes + norms * (linear_bytes if dense_bytes is None else dense_bytes)

    def kv_bytes_per_token(self, element_bytes: float) -> float:
        """The KV cache one position of one sequence takes, every layer's keys and values."""
        return 2 * self.num_layers * self.kv_width * element_bytes

    def default_group_size(self) -> int | None:
        """The largest preferred group size whose groups stay whole at every TP size the model allows (dividing
        its key/value heads), else at the largest TP size some group size still fits; None if none does."""
        for max_tp in sorted((d for d in range(1, self.num_kv_heads + 1) if self.num_kv_heads % d == 0), reverse=True):
            try:
                return choose_group_size(self.input_widths, max_tp)
            except InputError:
                continue
        return None


def choose_group_size(in_features: Iterable[int], max_tp: int) -> int:
    """The largest preferred group size that divides every layer's input slice at TP up to `max_tp` (each TP
    size used must divide `max_tp`), so no group straddles a slice boundary; raises InputError when none does."""
    widths = sorted(set(in_features))
    for size in GROUP_SIZES:
        if all(width % (size * max_tp) == 0 for width in widths):
            return size
    raise InputError(
        f"no group size of {', '.join(map(str, GROUP_SIZES))} divides the layers' input widths "
        f"({', '.join(map(str, widths))}) split {max_tp} ways: quantize with a smaller TP size"
    )


def tp_sizes_for_group(in_features: Iterable[int], group_size: int, limit: int = 64) -> list[int]:
    """The TP sizes (up to `limit`) whose slices of every input width hold whole groups of `group_size`."""
    widths = set(in_features)
    return [tp for tp in range(1, limit + 1) if all(width % (tp * group_size) == 0 for width in widths)]


def activation_bytes(precision: str, device: str) -> int:
    """Bytes of one activation, KV cache value or unquantized weight: the precision's own for fp32/bf16/fp16;
    for weight-only int8/int4, float32 on a CPU and 16 bits on an accelerator (runtime.device.compute_dtype)."""
    if precision in QUANTIZED:
        return 4 if device.startswith("cpu") else 2
    return PRECISION_BITS[precision] // 8


def weight_bytes_per_param(precision: str, device: str, group_size: int | None = None) -> float:
    """Bytes one weight of a linear layer takes at `precision`: int8/int4 with its share of its group's scale,
    held in the activations' dtype (runtime.quantize_stage); `group_size` is needed for those."""
    stored = PRECISION_BITS[precision] / 8
    if precision not in QUANTIZED:
        return stored
    if not group_size:
        raise ValueError(f"{precision}: a group size is needed to count the scales")
    return stored + activation_bytes(precision, device) / group_size

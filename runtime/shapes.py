"""Named shapes of real models, for benchmarks with random weights (no download, same bytes to move).

Throughput of a decoder at small batch is set by the bytes read per token, so a random model with the exact
shape of Llama 3.1 8B measures what the real one would, against the memory-bandwidth roofline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import LlamaConfig

SHAPES: dict[str, dict[str, object]] = {
    # ~100M parameters: big enough that CPU decoding is memory-bound, small enough for this machine's tests
    "llama-100m": {
        "hidden_size": 1024,
        "intermediate_size": 2816,
        "num_hidden_layers": 8,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "vocab_size": 32000,
    },
    "llama-3.2-1b": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "tie_word_embeddings": True,
        "rope_theta": 500000.0,
    },
    "llama-3.2-3b": {
        "hidden_size": 3072,
        "intermediate_size": 8192,
        "num_hidden_layers": 28,
        "num_attention_heads": 24,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "tie_word_embeddings": True,
        "rope_theta": 500000.0,
    },
    "llama-3.1-8b": {
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "rope_theta": 500000.0,
    },
    "mistral-small-2409": {
        "hidden_size": 6144,
        "intermediate_size": 16384,
        "num_hidden_layers": 56,
        "num_attention_heads": 48,
        "num_key_value_heads": 8,
        "vocab_size": 32768,
        "head_dim": 128,
        "rope_theta": 1000000.0,
    },
    "llama-3.1-70b": {
        "hidden_size": 8192,
        "intermediate_size": 28672,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "rope_theta": 500000.0,
    },
}


def shape_config(name: str) -> LlamaConfig:
    """The transformers config of a named shape."""
    from transformers import LlamaConfig

    from runtime.schema import InputError

    if name not in SHAPES:
        raise InputError(f"unknown shape {name!r}: choose one of {', '.join(SHAPES)}")
    return LlamaConfig(**{"max_position_embeddings": 131072, "tie_word_embeddings": False, **SHAPES[name]})

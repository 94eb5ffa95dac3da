"""A Hugging Face Llama written as GGUF, so llama.cpp runs the very weights the runtime runs (bench `peers`).

Follows llama.cpp's convert_hf_to_gguf.py for Llama: its tensor names (gguf's own name map), its Q/K row permutation
(HF's rotary embedding pairs dimension i with i + d/2, GGUF's with i + 1), f32 1-D tensors at every precision. The
vocabulary is a stand-in (the benchmark feeds token ids): three control tokens, the 256 byte tokens, filler pieces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import PretrainedConfig

BYTE_TOKENS = 256


def permute_rotary(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's `LlamaModel.permute`: each head's rows from halves (HF) to interleaved pairs (GGUF)."""
    pairs = weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
    return pairs.swapaxes(1, 2).reshape(weight.shape)


def stand_in_vocab(size: int) -> tuple[list[str], list[int]]:
    """A SentencePiece-style vocabulary of `size` pieces and their token types (gguf.TokenType)."""
    from gguf import TokenType

    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(BYTE_TOKENS)]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * BYTE_TOKENS
    fillers = size - len(pieces)
    return pieces + [f"▁t{i}" for i in range(fillers)], types + [TokenType.NORMAL] * fillers


GGUF_KINDS = ("f32", "Q8_0", "Q4_0")  # Q8_0 / Q4_0: blocks of 32 weights, one fp16 scale each (8.5 / 4.5 bits)


def write_gguf(model: torch.nn.Module, config: PretrainedConfig, path: Path, kind: str) -> Path:
    """Write `model` (a LlamaForCausalLM) to `path` at f32, or with every matrix in `kind` (Q8_0 or Q4_0)."""
    import gguf

    quant = None if kind == "f32" else gguf.GGMLQuantizationType[kind]

    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType[f"MOSTLY_{kind}"] if quant else gguf.LlamaFileType.ALL_F32)
    pieces, types = stand_in_vocab(config.vocab_size)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(pieces)
    writer.add_token_scores([0.0] * len(pieces))
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    for name, tensor in model.state_dict().items():
        data = tensor.detach().to(torch.float32).cpu().numpy()
        if name.endswith("q_proj.weight"):
            data = permute_rotary(data, heads)
        elif name.endswith("k_proj.weight"):
            data = permute_rotary(data, kv_heads)
        gguf_name = names.get_name(name, try_suffixes=(".weight",))
        if gguf_name is None:
            raise ValueError(f"no GGUF name for tensor {name}")
        if quant is not None and data.ndim == 2:
            writer.add_tensor(gguf_name, gguf.quants.quantize(data, quant), raw_dtype=quant)
        else:
            writer.add_tensor(gguf_name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path

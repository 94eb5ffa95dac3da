"""Pre-quantized checkpoints written by the real compressed-tensors library, and its own decompression of them.

The library (a dev dependency; the runtime reads the format itself) quantizes the built-in model's linear layers
with min-max parameters it computes (`calculate_qparams`: what llm-compressor's observers feed it, without
calibration data), compresses them to `pack-quantized` and writes config.json's `quantization_config`: the layout
llm-compressor publishes and vLLM serves.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

COPIED = ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja")


def write_compressed_tensors(model_dir: Path, out: Path, bits: int, group_size: int | None, symmetric: bool) -> Path:
    """`model_dir`'s model with every linear layer but the LM head quantized (group-wise, or per channel when
    `group_size` is None) and saved as compressed-tensors pack-quantized, with its tokenizer."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationArgs,
        QuantizationConfig,
        QuantizationScheme,
        QuantizationStatus,
        apply_quantization_config,
    )
    from compressed_tensors.quantization.utils import calculate_qparams
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    strategy = "group" if group_size else "channel"
    args = QuantizationArgs(num_bits=bits, type="int", symmetric=symmetric, strategy=strategy, group_size=group_size)
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    apply_quantization_config(model, QuantizationConfig(config_groups={"group_0": scheme}, ignore=["lm_head"]))
    for module in model.modules():
        if getattr(module, "quantization_scheme", None) is None:
            continue
        weight = module.weight.detach()
        groups = weight.view(weight.shape[0], -1, group_size or weight.shape[1])
        scale, zero = calculate_qparams(groups.amin(-1), groups.amax(-1), args)
        module.weight_scale.data.copy_(scale)
        module.weight_zero_point.data.copy_(zero)
        module.quantization_status = QuantizationStatus.FROZEN
    compressor = ModelCompressor.from_pretrained_model(model, "pack-quantized")
    compressor.compress_model(model)
    model.save_pretrained(out)
    compressor.update_config(str(out))
    copy_tokenizer(model_dir, out)
    return out


def copy_tokenizer(model_dir: Path, out: Path) -> None:
    """What a published checkpoint ships beside its weights: the tokenizer and the generation config."""
    for name in COPIED:
        if (model_dir / name).is_file():
            shutil.copy(model_dir / name, out / name)


def decompressed_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """Each quantized linear layer's dense weight, by layer name, as the library's own compressor decompresses it."""
    import json

    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationConfig
    from safetensors.torch import load_file

    config = QuantizationConfig.model_validate(
        json.loads((model_dir / "config.json").read_text())["quantization_config"]
    )
    (scheme,) = config.config_groups.values()
    compressor = BaseCompressor.load_from_registry(config.format)
    tensors = load_file(model_dir / "model.safetensors")
    weights = {}
    for name in tensors:
        if name.endswith(".weight_packed"):
            layer = name.removesuffix(".weight_packed")
            local = {k.removeprefix(f"{layer}."): v for k, v in tensors.items() if k.startswith(f"{layer}.weight_")}
            weights[layer] = compressor.decompress(local, scheme)["weight"]
    return weights


def decompressed_model(model_dir: Path) -> nn.Module:
    """The dense fp32 model the library's decompression gives: the reference a pre-quantized run must match."""
    return dense_model(model_dir, decompressed_weights(model_dir))


def dense_model(model_dir: Path, weights: dict[str, torch.Tensor]) -> nn.Module:
    """The checkpoint's model in fp32 with each quantized layer's dense weight from `weights` (by layer name) and
    every other tensor as stored."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    packed = tuple(f"{layer}." for layer in weights)
    dense = {k: v for k, v in load_file(model_dir / "model.safetensors").items() if not k.startswith(packed)}
    dense |= {f"{layer}.weight": weight for layer, weight in weights.items()}
    model.load_state_dict(dense, strict=True)
    return model.eval()

"""GPTQ checkpoints in the layout AutoGPTQ and GPTQModel publish, packed by a transcription of GPTQModel's code.

GPTQModel (7.x) cannot be a dev dependency here: it requires torch >= 2.14 (7.7) or, at 7.6, pulls its compiled
extensions, torchao and an older numpy into the runtime's environment. This module follows its source line by line
instead (GPTQModel 7.7.0, read from its sdist):
- the group parameters: `gptqmodel/quantization/quantizer.py`, `Quantizer.find_params` (min-max over each group's
  columns, the range widened to hold 0; symmetric: zero (maxq + 1) / 2), without GPTQ's Hessian error feedback,
  which changes the weights it is given, not the layout;
- the packing: `gptqmodel/nn_modules/qlinear/__init__.py`, `PackableQuantLinear.pack_original` (qweight packed
  along the input, qzeros along the output, j-th code of a word at bits [bits * j, bits * (j + 1)));
- the classic format: `gptqmodel/utils/model.py`, `convert_gptq_v2_to_v1_format_module` (each zero-point word less
  0x11111111 for 4 bits, 0x01010101 for 8 bits);
- the reference dequantization: `PackableQuantLinear.dequantize_weight` (shift, mask, `scales[g_idx] * (weight -
  zeros[g_idx])`), after `convert_gptq_v1_to_v2_format_module` for the classic format.
When this was written, `pack_gptq` gave byte for byte the qweight, qzeros and scales of GPTQModel 7.6.0's own
`pack_original` (its source run on CPU with a stand-in module) at 4 and 8 bits, with a zero point of 0 among them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tests.compressed_checkpoints import copy_tokenizer, dense_model

V1_ZERO_OFFSET = {4: 0b00010001000100010001000100010001, 8: 0b00000001000000010000000100000001}


def group_params(weight: torch.Tensor, bits: int, group_size: int, sym: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in / group) scales and zeros, as `Quantizer.find_params(x, weight=True)` gives them group by group."""
    maxq = 2**bits - 1
    groups = weight.view(weight.shape[0], -1, group_size)
    xmin = torch.minimum(groups.amin(-1), torch.zeros(()))
    xmax = torch.maximum(groups.amax(-1), torch.zeros(()))
    if sym:
        xmax = torch.maximum(xmin.abs(), xmax)
        xmin = torch.where(xmin < 0, -xmax, xmin)
    both_zero = xmax == 0 if sym else (xmin == 0) & (xmax == 0)
    xmin, xmax = torch.where(both_zero, xmin - 1, xmin), torch.where(both_zero, xmax + 1, xmax)
    scale = (xmax - xmin) / maxq
    zero = torch.full_like(scale, (maxq + 1) / 2) if sym else torch.round(-xmin / scale)
    return scale, zero


def pack_gptq(
    weight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, bits: int, group_size: int, v1: bool
) -> dict[str, torch.Tensor]:
    """A (out, in) weight and its (out, groups) scales and zeros as GPTQ's qweight, qzeros, scales and g_idx
    (`pack_original`, then `convert_gptq_v2_to_v1_format_module` when `v1`)."""
    pack_factor, maxq = 32 // bits, 2**bits - 1
    g_idx = torch.arange(weight.shape[1], dtype=torch.int32) // group_size
    scales, zeros = scales.T.contiguous(), zeros.T.contiguous()
    scale_zeros = zeros * scales
    int_weight = torch.round((weight + scale_zeros[g_idx].T) / scales[g_idx].T).clamp_(0, maxq).to(torch.int32)
    int_weight = int_weight.T.contiguous().numpy().astype(np.uint32)
    qweight = np.zeros((int_weight.shape[0] * bits // 32, int_weight.shape[1]), dtype=np.uint32)
    for row in range(qweight.shape[0]):
        for j in range(pack_factor):
            qweight[row] |= int_weight[row * pack_factor + j] << (bits * j)
    zeros_int = zeros.to(torch.int32).numpy().astype(np.uint32)
    qzeros = np.zeros((zeros_int.shape[0], zeros_int.shape[1] * bits // 32), dtype=np.uint32)
    for col in range(qzeros.shape[1]):
        for j in range(pack_factor):
            qzeros[:, col] |= zeros_int[:, col * pack_factor + j] << (bits * j)
    qzeros_words = torch.from_numpy(qzeros.astype(np.int32))
    if v1:
        qzeros_words = qzeros_words - V1_ZERO_OFFSET[bits]
    return {
        "qweight": torch.from_numpy(qweight.astype(np.int32)),
        "qzeros": qzeros_words,
        "scales": scales.to(torch.float16),
        "g_idx": g_idx,
    }


def dequantize_gptq(tensors: dict[str, torch.Tensor], bits: int, v1: bool) -> torch.Tensor:
    """The (out, in) fp32 weight GPTQModel's `dequantize_weight` gives for one layer's tensors."""
    pack_factor, maxq = 32 // bits, 2**bits - 1
    qzeros = tensors["qzeros"] + V1_ZERO_OFFSET[bits] if v1 else tensors["qzeros"]
    shifts = torch.arange(0, 32, bits, dtype=torch.int32)
    zeros = (qzeros.unsqueeze(2).expand(-1, -1, pack_factor) >> shifts.unsqueeze(0)) & maxq
    zeros = zeros.reshape(qzeros.shape[0], -1)
    qweight = tensors["qweight"]
    weight = (qweight.unsqueeze(1).expand(-1, pack_factor, -1) >> shifts.unsqueeze(-1)) & maxq
    weight = weight.reshape(-1, qweight.shape[1])
    g_idx, scales = tensors["g_idx"].long(), tensors["scales"].float()
    return (scales[g_idx] * (weight - zeros[g_idx])).T.contiguous()


def write_gptq(model_dir: Path, out: Path, bits: int, group_size: int, sym: bool, v1: bool) -> Path:
    """`model_dir`'s model with every decoder linear layer packed as GPTQ, config.json's quantization_config as
    GPTQModel writes it (checkpoint_format gptq when `v1`, else gptq_v2)."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tensors = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name != "lm_head":
            weight = module.weight.detach()
            group = group_size if group_size > 0 else weight.shape[1]  # -1: one group a row
            scales, zeros = group_params(weight, bits, group, sym)
            packed = pack_gptq(weight, scales, zeros, bits, group, v1)
            tensors |= {f"{name}.{key}": value for key, value in packed.items()}
    linears = tuple(f"{name.rsplit('.', 1)[0]}.weight" for name in tensors)
    tensors |= {k: v for k, v in model.state_dict().items() if k not in linears}
    out.mkdir(parents=True)
    model.config.quantization_config = {
        "quant_method": "gptq",
        "bits": bits,
        "group_size": group_size,
        "desc_act": False,
        "sym": sym,
        "true_sequential": True,
        "lm_head": False,
        "checkpoint_format": "gptq" if v1 else "gptq_v2",
        "pack_dtype": "int32",
    }
    model.config.save_pretrained(out)
    save_file({k: v.contiguous() for k, v in tensors.items()}, out / "model.safetensors")
    copy_tokenizer(model_dir, out)
    return out


def gptq_dequantized_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """Each quantized layer's dense (out, in) fp32 weight, by layer name, as GPTQModel dequantizes it."""
    from safetensors.torch import load_file

    config = json.loads((model_dir / "config.json").read_text())["quantization_config"]
    tensors = load_file(model_dir / "model.safetensors")
    layers = [name.removesuffix(".qweight") for name in tensors if name.endswith(".qweight")]
    v1 = config["checkpoint_format"] == "gptq"
    return {
        layer: dequantize_gptq(
            {k: tensors[f"{layer}.{k}"] for k in ("qweight", "qzeros", "scales", "g_idx")}, config["bits"], v1
        )
        for layer in layers
    }


def gptq_dequantized_model(model_dir: Path) -> nn.Module:
    """The dense fp32 model GPTQModel's dequantization gives: the reference a pre-quantized GPTQ run must match."""
    return dense_model(model_dir, gptq_dequantized_weights(model_dir))

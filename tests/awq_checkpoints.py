"""AutoAWQ GEMM checkpoints written by the real AutoAWQ library, and its own dequantization of them.

AutoAWQ's quantize-and-pack step (`AwqQuantizer._apply_quant`: its `pseudo_quantize_tensor` min-max zero-point
parameters, `WQLinear_GEMM.from_linear` packing) runs on every linear layer of the built-in model but the LM head,
and the checkpoint is saved as `AutoAWQForCausalLM.save_quantized` saves it (config.json's `quantization_config`
from `AwqConfig.to_transformers_dict`, the quantized state dict as safetensors). The activation-aware scale search
before that step (calibration text, about 70 s on this machine's CPUs) only rescales the weights it is given; the
on-disk layout is the same.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from tests.compressed_checkpoints import copy_tokenizer, dense_model


def write_awq(model_dir: Path, out: Path, group_size: int) -> Path:
    """`model_dir`'s model with every decoder linear layer quantized by AutoAWQ (int4, zero point, GEMM)."""
    with warnings.catch_warnings():  # the package warns on import that it is no longer maintained
        warnings.simplefilter("ignore")
        from awq.models._config import AwqConfig
        from awq.quantize.quantizer import AwqQuantizer
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = AwqConfig(zero_point=True, q_group_size=group_size, w_bit=4, version="gemm")
    quantizer = AwqQuantizer.__new__(AwqQuantizer)  # its quantize-and-pack step, without the calibration run
    quantizer.w_bit, quantizer.group_size, quantizer.zero_point = config.w_bit, config.q_group_size, True
    quantizer.version = config.version
    for layer in model.model.layers:
        quantizer._apply_quant(layer, {n: m for n, m in layer.named_modules() if isinstance(m, nn.Linear)})
    model.config.quantization_config = config.to_transformers_dict()
    out.mkdir(parents=True)
    model.config.save_pretrained(out)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "model.safetensors")
    copy_tokenizer(model_dir, out)
    return out


def awq_dequantized_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """Each quantized layer's dense (out, in) weight in fp32, by layer name, as AutoAWQ's `dequantize_gemm`
    unpacks it (its scales taken in fp32, so the products are exact)."""
    import json

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from awq.utils.packing_utils import dequantize_gemm
    from safetensors.torch import load_file

    group_size = json.loads((model_dir / "config.json").read_text())["quantization_config"]["group_size"]
    tensors = load_file(model_dir / "model.safetensors")
    layers = [name.removesuffix(".qweight") for name in tensors if name.endswith(".qweight")]
    return {
        layer: dequantize_gemm(
            tensors[f"{layer}.qweight"], tensors[f"{layer}.qzeros"], tensors[f"{layer}.scales"].float(), 4, group_size
        ).t()
        for layer in layers
    }


def awq_dequantized_model(model_dir: Path) -> nn.Module:
    """The dense fp32 model AutoAWQ's dequantization gives: the reference a pre-quantized AWQ run must match."""
    return dense_model(model_dir, awq_dequantized_weights(model_dir))

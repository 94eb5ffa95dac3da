"""Decode against the memory-bandwidth roofline: at batch 1 every token reads every weight once, so tokens/s
cannot exceed B_mem / weight_bytes. The peer is that bound, with B_mem measured here in the same run."""

from __future__ import annotations

import torch

from bench.decode import decode_rate
from bench.report import ratio_line, table
from runtime.device import pick_device
from runtime.microbench import memory_bandwidth
from runtime.model_shape import ModelShape
from runtime.shapes import SHAPES


def run(quick: bool) -> dict:
    device = pick_device("auto", 0)
    # on an accelerator, the case: Llama 3.1 8B in bf16; on a CPU a model this machine decodes in seconds
    shape, dtype = ("llama-3.1-8b", torch.bfloat16) if device.type != "cpu" else ("llama-100m", torch.float32)
    bandwidth = memory_bandwidth(device, megabytes=1024 if device.type != "cpu" else 512)
    weights = ModelShape.from_config(SHAPES[shape]).weight_bytes_per_token(dtype.itemsize)
    decode = decode_rate(shape, 1, device, dtype, repeats=2 if quick else 4, with_peer=False)
    bound = bandwidth["bandwidth_Bps"] / weights
    gemv_bound = bandwidth["gemv_Bps"] / weights
    share = decode["ours_tokens_per_s"] / bound
    print(f"roofline, {shape} {str(dtype).removeprefix('torch.')} on {device}, batch 1:")
    rows = [
        ["memory bandwidth (read/copy, best)", f"{bandwidth['bandwidth_Bps'] / 1e9:.1f} GB/s"],
        ["matrix-vector bandwidth", f"{bandwidth['gemv_Bps'] / 1e9:.1f} GB/s"],
        ["weights read per token", f"{weights / 1e9:.3f} GB"],
        ["roofline", f"{bound:.1f} tok/s"],
        ["matrix-vector ceiling", f"{gemv_bound:.1f} tok/s"],
        ["measured (our loop)", f"{decode['ours_tokens_per_s']:.1f} tok/s"],
    ]
    print(table(["", "value"], rows))
    print(ratio_line("decode", share, "the bandwidth roofline", goal=0.7 if device.type != "cpu" else None))
    return {
        "shape": shape,
        "device": str(device),
        "membw": bandwidth,
        "weight_bytes": weights,
        "roofline_tokens_per_s": bound,
        "gemv_ceiling_tokens_per_s": gemv_bound,
        "tokens_per_s": decode["ours_tokens_per_s"],
        "share_of_roofline": share,
    }

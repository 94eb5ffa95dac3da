"""Checkpoints published pre-quantized decode, launched for real, exactly the tokens of the writing library's own
dequantized model under HF `generate`: compressed-tensors pack-quantized int4 (written by compressed-tensors),
AutoAWQ GEMM int4 (written by AutoAWQ) and classic GPTQ int4 (packed as GPTQModel packs: tests/gptq_checkpoints.py).

Every layout: TP-2 launched (the TP slicing is the pre-quantized path's own) and a single device: launched for
compressed-tensors; for AWQ and GPTQ the runtime's whole stage decodes in this process, as the launched single
process would (which adds nothing layout-specific: it passed for both when this was written, as did PP-2 and hybrid
TP-2 x PP-2, which split layers as for a dense checkpoint, but they do not fit the suite's time budget)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from torch import nn

from runtime.checkpoint import load_config
from runtime.prequantized import TensorParallel, load_prequantized_stage
from runtime.quantize import WeightOnlyLinear
from tests.awq_checkpoints import awq_dequantized_model
from tests.compressed_checkpoints import decompressed_model
from tests.gptq_checkpoints import gptq_dequantized_model
from tests.integration import runs

pytestmark = pytest.mark.slow

LAYOUTS: dict[str, tuple[str, Callable[[Path], nn.Module]]] = {  # layout -> (its model fixture, its reference)
    "compressed-tensors": ("compressed_model_dir", decompressed_model),
    "awq": ("awq_model_dir", awq_dequantized_model),
    "gptq": ("gptq_model_dir", gptq_dequantized_model),
}


@pytest.fixture(scope="module")
def published(request: pytest.FixtureRequest) -> tuple[Path, dict[int, list[int]]]:
    """A pre-quantized checkpoint of the built-in model and the tokens its library's dequantized model decodes."""
    fixture, dequantized = LAYOUTS[request.param]
    model_dir = request.getfixturevalue(fixture)
    return model_dir, runs.greedy_tokens(dequantized(model_dir), model_dir, runs.PROMPTS, 12, 4)


@pytest.mark.parametrize("published", ["awq", "gptq"], indirect=True)  # compressed-tensors: launched, below
def test_single_device_stage_decodes_as_the_library(published: tuple[Path, dict]) -> None:
    model_dir, reference = published
    config = load_config(model_dir)
    stage, _ = load_prequantized_stage(model_dir, config, range(config.num_hidden_layers), True, True, TensorParallel())
    assert sum(isinstance(m, WeightOnlyLinear) for m in stage.model.modules()) == 28  # the LM head stays dense
    assert runs.greedy_tokens(stage.model, model_dir, runs.PROMPTS, 12, 4) == reference


@pytest.mark.parametrize("published", ["compressed-tensors"], indirect=True)
def test_single_process(run_dir: Path, published: tuple[Path, dict]) -> None:
    model_dir, reference = published
    config = runs.write_config(run_dir, model_dir, "w4_reference", precision="int4")
    done = runs.single(config)
    assert done.returncode == 0, runs.describe_failure(done)
    assert runs.shard_tokens(config) == reference


@pytest.mark.parametrize("published", list(LAYOUTS), indirect=True)
def test_tp2_slices_the_packed_weights(run_dir: Path, published: tuple[Path, dict]) -> None:
    model_dir, reference = published
    config = runs.write_config(run_dir, model_dir, "w4_tp2", tp=2)
    done = runs.deepspeed(config, 2)
    assert done.returncode == 0, runs.describe_failure(done)
    assert runs.shard_tokens(config) == reference
    assert all(m["time_split"]["comm_s"] > 0 for m in runs.metrics(config))  # the row-parallel slices were summed
    packed = (model_dir / "model.safetensors").stat().st_size
    assert all(m["weight_bytes"] < 0.8 * packed for m in runs.metrics(config))  # a share, not the whole model

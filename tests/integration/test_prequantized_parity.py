"""A checkpoint published pre-quantized (compressed-tensors pack-quantized int4, written by the library itself)
decodes, launched for real, exactly the tokens of the library's own dequantized model under HF `generate`.

Single process and TP-2 here (the TP slicing is the pre-quantized path's own); PP splits layers as for a dense
checkpoint, and PP-2 and hybrid TP-2 x PP-2 gave the same tokens when this was written, but do not fit the
suite's time budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compressed_checkpoints import decompressed_model
from tests.integration import runs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dequantized_reference(compressed_model_dir: Path) -> dict[int, list[int]]:
    return runs.greedy_tokens(decompressed_model(compressed_model_dir), compressed_model_dir, runs.PROMPTS, 12, 4)


def test_single_process(run_dir: Path, compressed_model_dir: Path, dequantized_reference: dict) -> None:
    config = runs.write_config(run_dir, compressed_model_dir, "w4_reference", precision="int4")
    done = runs.single(config)
    assert done.returncode == 0, runs.describe_failure(done)
    assert runs.shard_tokens(config) == dequantized_reference


def test_tp2_slices_the_packed_weights(run_dir: Path, compressed_model_dir: Path, dequantized_reference: dict) -> None:
    config = runs.write_config(run_dir, compressed_model_dir, "w4_tp2", tp=2)
    done = runs.deepspeed(config, 2)
    assert done.returncode == 0, runs.describe_failure(done)
    assert runs.shard_tokens(config) == dequantized_reference
    assert all(m["time_split"]["comm_s"] > 0 for m in runs.metrics(config))  # the row-parallel slices were summed
    packed = (compressed_model_dir / "model.safetensors").stat().st_size
    assert all(m["weight_bytes"] < 0.8 * packed for m in runs.metrics(config))  # a share, not the whole model

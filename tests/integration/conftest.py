"""Fixtures shared by the runtime's integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration import runs


@pytest.fixture(scope="module")
def run_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder per test module, holding the prompt table every strategy of the module reads."""
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    runs.write_prompt_table(path / "prompts.parquet")
    return path


@pytest.fixture(scope="session")
def reference(tiny_model_dir: Path) -> dict[int, list[int]]:
    """What single-process HF `generate` decodes from runs.PROMPTS: the tokens every strategy must match."""
    return runs.hf_reference(tiny_model_dir, runs.PROMPTS, max_new_tokens=12, batch_size=4)

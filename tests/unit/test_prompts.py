"""The prompt table a run reads, and how data-parallel replicas share it."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.prompts import Prompt, read_prompt_table, replica_share
from runtime.schema import InputError


def write(path: Path, **columns: list) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def test_rows_come_back_in_stored_order(tmp_path: Path) -> None:
    texts = [f"prompt {i}" for i in range(50)]
    ids = [(i * 37) % 50 for i in range(50)]  # neither sorted nor equal to the row number
    variants = ["2k" if i % 3 else "4k" for i in range(50)]
    path = write(tmp_path / "p.parquet", prompt_id=ids, variant=variants, prompt=texts, extra=list(range(50)))
    assert read_prompt_table(path) == [Prompt(i, v, t) for i, v, t in zip(ids, variants, texts, strict=True)]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "none.parquet"
    with pytest.raises(InputError, match=re.escape(f"{path}: prompt table not found")):
        read_prompt_table(path)


def test_not_parquet(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    path.write_text("prompt_id,prompt\n1,hi\n")
    with pytest.raises(InputError, match=re.escape(f"{path}: not a readable parquet file")):
        read_prompt_table(path)


def test_a_folder_is_not_a_table(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=re.escape(str(tmp_path))):
        read_prompt_table(tmp_path)


@pytest.mark.parametrize("column", ["prompt_id", "variant", "prompt"])
def test_missing_column_is_named(tmp_path: Path, column: str) -> None:
    columns = {"prompt_id": [1], "variant": ["2k"], "prompt": ["hi"]}
    del columns[column]
    path = write(tmp_path / "p.parquet", **columns)
    with pytest.raises(InputError, match=re.escape(f"{path}: prompt table lacks column(s) {column}")):
        read_prompt_table(path)


@pytest.mark.parametrize("empty", ["", None])
def test_empty_prompt_names_the_row(tmp_path: Path, empty: str | None) -> None:
    path = write(tmp_path / "p.parquet", prompt_id=[10, 20], variant=["2k", "2k"], prompt=["hi", empty])
    with pytest.raises(InputError, match=re.escape(f"{path}: row 1 (prompt_id 20): empty prompt")):
        read_prompt_table(path)


def test_replicas_split_every_prompt_once_keeping_ids() -> None:
    prompts = [Prompt(100 + i, "2k", f"p{i}") for i in range(7)]
    shares = [replica_share(prompts, r, 3) for r in range(3)]
    assert [[p.prompt_id for p in s] for s in shares] == [[100, 103, 106], [101, 104], [102, 105]]
    assert replica_share(prompts, 0, 1) == prompts


@given(st.integers(0, 40), st.integers(1, 8))
def test_replica_shares_cover_all_rows(rows: int, replicas: int) -> None:
    prompts = [Prompt(i * 7, "4k", f"p{i}") for i in range(rows)]
    shares = [replica_share(prompts, r, replicas) for r in range(replicas)]
    assert sorted((p for s in shares for p in s), key=lambda p: p.prompt_id) == prompts
    assert max(map(len, shares)) - min(map(len, shares)) <= 1

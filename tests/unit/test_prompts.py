"""The prompt table a run reads, and how data-parallel replicas share it."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runtime.prompts import Prompt, read_prompt_table, replica_share
from runtime.schema import InputError


def write(path: Path, **columns: list) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def test_rows_come_back_in_stored_order(tmp_path: Path) -> None:
    path = write(tmp_path / "p.parquet", prompt_id=[7, 3], variant=["4k", "2k"], prompt=["b", "a"], extra=[1, 2])
    assert read_prompt_table(path) == [Prompt(7, "4k", "b"), Prompt(3, "2k", "a")]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=f"{tmp_path}/none.parquet: prompt table not found"):
        read_prompt_table(tmp_path / "none.parquet")


def test_not_parquet(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    path.write_text("prompt_id,prompt\n1,hi\n")
    with pytest.raises(InputError, match="not a readable parquet file"):
        read_prompt_table(path)


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "p.parquet", prompt_id=[1], prompt=["hi"])
    with pytest.raises(InputError, match="lacks column\\(s\\) variant"):
        read_prompt_table(path)


def test_empty_prompt_names_the_row(tmp_path: Path) -> None:
    path = write(tmp_path / "p.parquet", prompt_id=[1, 2], variant=["2k", "2k"], prompt=["hi", ""])
    with pytest.raises(InputError, match="row 1 \\(prompt_id 2\\): empty prompt"):
        read_prompt_table(path)


def test_replicas_split_every_prompt_once_keeping_ids() -> None:
    prompts = [Prompt(i, "2k", f"p{i}") for i in range(7)]
    shares = [replica_share(prompts, r, 3) for r in range(3)]
    assert [[p.prompt_id for p in s] for s in shares] == [[0, 3, 6], [1, 4], [2, 5]]

"""The prompt table: written once before inference, read back by the runtime in the same order."""

from __future__ import annotations

from pathlib import Path

import pytest

from cockpit.sweep.prompt_table import SCHEMA, build_prompt_table, load_prompt_table, save_prompt_table
from cockpit.sweep.prompts import PromptFileSet, PromptRepository
from runtime.prompts import read_prompt_table
from runtime.schema import InputError

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module")
def records() -> list:
    files = {"2k": DATA / "prompts_2k.txt", "4k": DATA / "prompts_4k.txt"}
    return PromptRepository(PromptFileSet(files)).load_all()


def test_table_has_seed_columns_and_pending_rows(records: list) -> None:
    frame = build_prompt_table(records)
    assert list(frame.columns) == SCHEMA.names and len(frame) == 40
    assert set(frame["status"]) == {"pending"} and frame["local_completion"].isna().all()
    assert list(frame["variant"][:2]) == ["2k", "2k"] and frame["token_budget"].iloc[-1] == 4096


def test_persisted_table_is_what_the_runtime_reads(records: list, tmp_path: Path) -> None:
    path = save_prompt_table(build_prompt_table(records), tmp_path / "run" / "prompts.parquet")
    assert [p.name for p in path.parent.iterdir()] == ["prompts.parquet"]  # no temporary file left behind
    rows = read_prompt_table(path)
    assert [(p.prompt_id, p.variant, p.text) for p in rows] == [(r.prompt_id, r.variant, r.prompt) for r in records]
    assert load_prompt_table(path).equals(build_prompt_table(records))


def test_loading_a_foreign_table_names_what_is_missing(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt_id": [1], "prompt": ["x"]}), path)
    with pytest.raises(InputError, match="lacks column"):
        load_prompt_table(path)
    with pytest.raises(InputError, match="prompt table not found"):
        load_prompt_table(tmp_path / "none.parquet")

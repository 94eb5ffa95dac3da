"""The prompt table: every prompt record as one row, written to parquet before any inference, so the baseline,
every strategy's runtime and the collector all read the same rows in the same order."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cockpit.sweep.prompts import PromptRecord
from runtime.atomic import atomic_open
from runtime.prompts import read_table

# the columns every step reads (docs/architecture.md); the completion fields are filled by the baseline run
SCHEMA = pa.schema(
    [
        ("prompt_id", pa.int64()),
        ("variant", pa.string()),
        ("prompt", pa.string()),
        ("token_budget", pa.int64()),
        ("source_file", pa.string()),
        ("local_completion", pa.string()),
        ("local_latency_ms", pa.float64()),
        ("status", pa.string()),  # pending | done | failed
    ]
)


def build_prompt_table(records: list[PromptRecord]) -> pd.DataFrame:
    """Records -> the canonical DataFrame, completions pending."""
    rows = {
        "prompt_id": [r.prompt_id for r in records],
        "variant": [r.variant for r in records],
        "prompt": [r.prompt for r in records],
        "token_budget": [r.token_budget for r in records],
        "source_file": [r.source_file for r in records],
        "local_completion": [None] * len(records),
        "local_latency_ms": [None] * len(records),
        "status": ["pending"] * len(records),
    }
    return pa.table(rows, schema=SCHEMA).to_pandas()


def save_prompt_table(frame: pd.DataFrame, path: Path) -> Path:
    """The table to parquet, written atomically."""
    table = pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False)
    with atomic_open(path, "wb") as handle:
        pq.write_table(table, handle)
    return path


def load_prompt_table(path: Path) -> pd.DataFrame:
    """A table written by `save_prompt_table`, with its columns checked."""
    return read_table(path, tuple(SCHEMA.names)).to_pandas()

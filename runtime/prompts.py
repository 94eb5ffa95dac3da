"""The prompt table a run works through (a parquet file the control node wrote before the run)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.schema import InputError

if TYPE_CHECKING:
    import pyarrow as pa

COLUMNS = ("prompt_id", "variant", "prompt")


@dataclass(frozen=True)
class Prompt:
    prompt_id: int
    variant: str
    text: str


def read_table(path: str | Path, columns: tuple[str, ...]) -> pa.Table:
    """A prompt table's `columns` (others dropped), or an InputError naming the file and what is wrong."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise InputError(f"{path}: prompt table not found") from None
    except (OSError, pa.ArrowException) as err:
        raise InputError(f"{path}: not a readable parquet file ({err})") from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise InputError(f"{path}: prompt table lacks column(s) {', '.join(missing)}")
    return table.select(list(columns))


def read_prompt_table(path: str | Path) -> list[Prompt]:
    """Rows of the table in their stored order; every later step relies on that order."""
    table = read_table(path, COLUMNS)
    rows = table.to_pylist()
    for n, row in enumerate(rows):
        if not isinstance(row["prompt"], str) or not row["prompt"]:
            raise InputError(f"{path}: row {n} (prompt_id {row['prompt_id']}): empty prompt")
    return [Prompt(int(r["prompt_id"]), str(r["variant"]), r["prompt"]) for r in rows]


def replica_share(prompts: list[Prompt], dp_rank: int, dp_size: int) -> list[Prompt]:
    """This data-parallel replica's prompts: every dp_size-th row, so long and short prompts spread evenly."""
    return prompts[dp_rank::dp_size]


def split_evenly(items: list, parts: int) -> list[list]:
    """A batch cut into `parts` micro-batches in order, sizes differing by at most one, none empty."""
    base, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        size = base + (1 if i < extra else 0)
        out.append(items[start : start + size])
        start += size
    return [chunk for chunk in out if chunk]

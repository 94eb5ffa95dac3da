"""DataTable updates by keyed diffs: rows added, removed and changed cell by cell, never rebuilt per tick."""

from __future__ import annotations

from collections.abc import Sequence

from textual.widgets import DataTable
from textual.widgets.data_table import RowKey

MAX_ROWS = 2000  # beyond this a table shows the first rows and says how many it left out; filter to see others


def sync_rows(table: DataTable, rows: Sequence[tuple[str, Sequence[object]]]) -> int:
    """Make `table` show `rows` (key, cells) in their order of first appearance; how many rows were left out."""
    shown = rows[:MAX_ROWS]
    wanted = {key: cells for key, cells in shown}
    for key in [k for k in table.rows if k.value not in wanted]:
        table.remove_row(key)
    columns = list(table.columns)
    for key, cells in shown:
        row_key = RowKey(key)
        if row_key not in table.rows:
            table.add_row(*cells, key=key)
            continue
        for column, cell in zip(columns, cells, strict=True):
            if table.get_cell(row_key, column) != cell:
                table.update_cell(row_key, column, cell)
    return len(rows) - len(shown)


def matching(rows: Sequence[tuple[str, Sequence[object]]], needle: str) -> list[tuple[str, Sequence[object]]]:
    """The rows whose key or any cell's text contains `needle` (case-insensitive); all rows for an empty one."""
    needle = needle.strip().lower()
    if not needle:
        return list(rows)
    return [
        (key, cells) for key, cells in rows if needle in key.lower() or any(needle in str(c).lower() for c in cells)
    ]

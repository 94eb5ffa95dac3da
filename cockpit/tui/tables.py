"""DataTable updates by keyed diffs: rows added, removed and changed cell by cell, never rebuilt per tick."""

from __future__ import annotations

from collections.abc import Sequence
from weakref import WeakKeyDictionary

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import RowKey

MAX_ROWS = 2000  # beyond this a table shows the first rows and says how many it left out; filter to see others

# per table, the cells it was last given by row key: unchanged rows are skipped without asking the table
_shown: WeakKeyDictionary[DataTable, dict[str, tuple[object, ...]]] = WeakKeyDictionary()


def same(a: object, b: object) -> bool:
    """Cell equality that sees style: rich's Text == compares only the text and its spans."""
    if isinstance(a, Text) and isinstance(b, Text):
        return a.plain == b.plain and a.style == b.style and a.spans == b.spans
    return type(a) is type(b) and a == b


def sync_rows(table: DataTable, rows: Sequence[tuple[str, Sequence[object]]]) -> int:
    """Make `table` show `rows` (key, cells) in their order of first appearance; how many rows were left out.
    The table must be changed through here only (what it was last given is remembered per table)."""
    shown = rows[:MAX_ROWS]
    wanted = {key: tuple(cells) for key, cells in shown}
    last = _shown.setdefault(table, {})
    for key in [k for k in table.rows if k.value not in wanted]:
        table.remove_row(key)
        last.pop(str(key.value), None)
    columns = list(table.columns)
    for key, cells in wanted.items():
        before = last.get(key)
        if before is None or RowKey(key) not in table.rows:
            table.add_row(*cells, key=key)
        elif not all(map(same, before, cells)):
            for column, old, new in zip(columns, before, cells, strict=True):
                if not same(old, new):
                    table.update_cell(key, column, new)
        last[key] = cells
    return len(rows) - len(shown)


def matching(rows: Sequence[tuple[str, Sequence[object]]], needle: str) -> list[tuple[str, Sequence[object]]]:
    """The rows whose key or any cell's text contains `needle` (case-insensitive); all rows for an empty one."""
    needle = needle.strip().lower()
    if not needle:
        return list(rows)
    return [
        (key, cells) for key, cells in rows if needle in key.lower() or any(needle in str(c).lower() for c in cells)
    ]

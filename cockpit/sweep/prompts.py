"""Prompt sets: text files of numbered prompts, one file per variant (`2k`, `4k`, ...), ids aligned across files.

File format (UTF-8). A record starts with a line `@@@ prompt <id>: <title>`; every line after it, up to the next
line starting with `@@@` or the end of the file, is the prompt text, kept exactly (blank lines at its start and end
dropped). Lines before the first record that start with `#` are comments. A prompt may hold any text but a line
starting with `@@@`, so multi-line prompts are never ambiguous.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from cockpit.errors import BadInput

HEADER = re.compile(r"@@@ prompt (\d+): (.+)")


@dataclass(frozen=True)
class PromptRecord:
    prompt_id: int
    variant: str
    prompt: str
    token_budget: int
    title: str = ""
    source_file: str = ""
    line: int = 0  # where the record starts in its file


def _decode(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{path}: prompt file not found") from None
    except OSError as err:
        raise BadInput(f"{path}: cannot read ({err.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise BadInput(f"{path}:{line}: not UTF-8 (byte 0x{data[err.start]:02x} at offset {err.start})") from None


def parse_prompt_file(path: Path, variant: str, token_budget: int) -> list[PromptRecord]:
    """The records of one file, in file order, with every format error named by file and line."""
    records: list[PromptRecord] = []
    current: tuple[int, str, int] | None = None  # id, title, header line
    body: list[str] = []

    def close() -> None:
        if current is None:
            return
        prompt_id, title, line = current
        text = "\n".join(body).strip("\n")
        if not text.strip():
            raise BadInput(f"{path}:{line}: prompt {prompt_id} ({title}) is empty")
        records.append(PromptRecord(prompt_id, variant, text, token_budget, title, str(path), line))

    for number, line in enumerate(_decode(path).splitlines(), start=1):
        if line.startswith("@@@"):
            match = HEADER.fullmatch(line.rstrip())
            if not match:
                raise BadInput(f"{path}:{number}: expected '@@@ prompt <id>: <title>', got {line[:60]!r}")
            close()
            current, body = (int(match[1]), match[2].strip(), number), []
        elif current is not None:
            body.append(line)
        elif line.strip() and not line.startswith("#"):
            raise BadInput(f"{path}:{number}: text before the first '@@@ prompt <id>: <title>' line")
    close()
    seen: dict[int, int] = {}
    for record in records:
        if record.prompt_id in seen:
            raise BadInput(
                f"{path}:{record.line}: prompt id {record.prompt_id} again (first at line {seen[record.prompt_id]})"
            )
        seen[record.prompt_id] = record.line
    return records


@dataclass(frozen=True)
class PromptFileSet:
    """One file per variant (`{"2k": path, "4k": path}`), each with `count` prompts and the same ids."""

    files: Mapping[str, Path]
    count: int = 20
    token_budgets: Mapping[str, int] = field(default_factory=dict)  # default: from the variant name, '2k' -> 2048

    def budget(self, variant: str) -> int:
        if variant in self.token_budgets:
            return self.token_budgets[variant]
        match = re.fullmatch(r"(\d+)k", variant)
        if not match:
            raise BadInput(
                f"{self.files[variant]}: variant {variant!r} has no 'Nk' in its name: give its "
                f'token budget in cockpit.toml ([sweep] token_budgets = {{ "{variant}" = 2048 }})'
            )
        return int(match[1]) * 1024

    def iter_records(self) -> list[PromptRecord]:
        """Every record of every variant, validated: variant order as configured, then file order."""
        by_variant = {v: parse_prompt_file(Path(p), v, self.budget(v)) for v, p in self.files.items()}
        for variant, records in by_variant.items():
            if len(records) != self.count:
                raise BadInput(
                    f"{self.files[variant]}: {len(records)} prompts, expected exactly {self.count} (variant {variant})"
                )
        (first, first_records), *others = by_variant.items()
        ids = [r.prompt_id for r in first_records]
        for variant, records in others:
            theirs = [r.prompt_id for r in records]
            if theirs != ids:
                position = next(i for i, (a, b) in enumerate(zip(ids, theirs, strict=True)) if a != b)
                raise BadInput(
                    f"{self.files[variant]}:{records[position].line}: prompt {position + 1} has id {theirs[position]}, "
                    f"but {self.files[first]} has id {ids[position]} there (ids must align across variants)"
                )
        return [r for records in by_variant.values() for r in records]

    def validate(self) -> None:
        self.iter_records()


@dataclass
class PromptRepository:
    """The validated records of a file set, loaded once."""

    file_set: PromptFileSet

    @cached_property
    def _records(self) -> list[PromptRecord]:
        return self.file_set.iter_records()

    def load_all(self) -> list[PromptRecord]:
        return list(self._records)

    def get_by_id(self, prompt_id: int, variant: str | None = None) -> list[PromptRecord]:
        """The records with this id: one per variant, or only `variant`'s."""
        found = [r for r in self._records if r.prompt_id == prompt_id and variant in (None, r.variant)]
        if not found:
            raise BadInput(f"no prompt {prompt_id}{f' in variant {variant}' if variant else ''}")
        return found

"""Prompt files: the format, and every way a file set can be wrong, named by file and line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cockpit.errors import BadInput
from cockpit.sweep.prompts import PromptFileSet, PromptRepository, parse_prompt_file


def prompt_file(path: Path, ids: list[int], text: str = "Line one.\n\n@@ not a header\nLine three.") -> Path:
    records = [f"@@@ prompt {i}: Title {i}\n\n{text} ({i})\n" for i in ids]
    path.write_text("# a comment\n\n" + "".join(records))
    return path


def file_set(tmp_path: Path, ids_2k: list[int], ids_4k: list[int] | None = None, count: int = 3) -> PromptFileSet:
    files = {
        "2k": prompt_file(tmp_path / "p2k.txt", ids_2k),
        "4k": prompt_file(tmp_path / "p4k.txt", ids_2k if ids_4k is None else ids_4k),
    }
    return PromptFileSet(files, count=count)


def test_multi_line_prompts_are_kept_exactly(tmp_path: Path) -> None:
    (record,) = parse_prompt_file(prompt_file(tmp_path / "p.txt", [7]), "2k", 2048)
    assert record.prompt == "Line one.\n\n@@ not a header\nLine three. (7)"
    assert (record.prompt_id, record.title, record.line, record.token_budget) == (7, "Title 7", 3, 2048)


def test_a_valid_set_loads_in_order_with_budgets(tmp_path: Path) -> None:
    repo = PromptRepository(file_set(tmp_path, [3, 1, 2]))
    records = repo.load_all()
    assert [(r.variant, r.prompt_id) for r in records] == [
        ("2k", 3),
        ("2k", 1),
        ("2k", 2),
        ("4k", 3),
        ("4k", 1),
        ("4k", 2),
    ]
    assert {r.token_budget for r in records if r.variant == "4k"} == {4096}
    assert [r.variant for r in repo.get_by_id(1)] == ["2k", "4k"]
    assert repo.get_by_id(1, "4k")[0].source_file.endswith("p4k.txt")
    with pytest.raises(BadInput, match="no prompt 9"):
        repo.get_by_id(9)


@pytest.mark.parametrize("ids", [[1, 2], [1, 2, 3, 4]], ids=["one-short", "one-too-many"])
def test_wrong_count_is_named(tmp_path: Path, ids: list[int]) -> None:
    with pytest.raises(BadInput, match=rf"p2k\.txt: {len(ids)} prompts, expected exactly 3"):
        file_set(tmp_path, ids).validate()


def test_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"p2k.txt:\d+: prompt id 1 again \(first at line 3\)"):
        file_set(tmp_path, [1, 2, 1]).validate()


def test_misaligned_ids_are_named(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"p4k.txt:\d+: prompt 2 has id 3, but .*p2k.txt has id 2 there"):
        file_set(tmp_path, [1, 2, 3], [1, 3, 2]).validate()


def test_empty_prompt(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("@@@ prompt 1: Fine\nText.\n@@@ prompt 2: Hollow\n\n   \n@@@ prompt 3: Fine\nText.\n")
    with pytest.raises(BadInput, match=re.escape(f"{path}:3: prompt 2 (Hollow) is empty")):
        parse_prompt_file(path, "2k", 2048)


def test_non_utf8_bytes_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_bytes(b"@@@ prompt 1: Latin-1\ncaf\xe9\n")
    with pytest.raises(BadInput, match=re.escape(f"{path}:2: not UTF-8 (byte 0xe9 at offset 25)")):
        parse_prompt_file(path, "2k", 2048)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("@@@ prompt x: Bad id\nText\n", ":1: expected '@@@ prompt <id>: <title>'"),
        ("Stray text\n@@@ prompt 1: T\nText\n", ":1: text before the first"),
    ],
)
def test_malformed_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.txt"
    path.write_text(text)
    with pytest.raises(BadInput, match=re.escape(message)):
        parse_prompt_file(path, "2k", 2048)


def test_missing_file_and_unknown_budget(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"nope\.txt: prompt file not found"):
        PromptFileSet({"2k": tmp_path / "nope.txt"}, count=1).validate()
    with pytest.raises(BadInput, match=r"nope\.txt: variant 'long' has no 'Nk' in its name: give its token budget"):
        PromptFileSet({"long": tmp_path / "nope.txt"}, count=1).budget("long")
    assert PromptFileSet({}, token_budgets={"long": 8000}).budget("long") == 8000


def test_the_shipped_prompt_sets() -> None:
    data = Path(__file__).resolve().parents[2] / "data"
    records = PromptFileSet({"2k": data / "prompts_2k.txt", "4k": data / "prompts_4k.txt"}).iter_records()
    words = {v: [len(r.prompt.split()) for r in records if r.variant == v] for v in ("2k", "4k")}
    # ~1.3 Llama-3 tokens per English word: about 2k and 4k tokens
    assert all(1300 <= w <= 1600 for w in words["2k"]) and all(2700 <= w <= 3150 for w in words["4k"])
    by_id = {(r.prompt_id, r.variant): r.prompt for r in records}
    assert all(by_id[(i, "4k")].startswith(by_id[(i, "2k")]) for i in range(1, 21))  # same task, longer material

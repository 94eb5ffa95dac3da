"""The content digest of a folder (a runtime build, a model's checkpoint), and what a node has of one.

One digest for a folder: sha256 over one line per file (its relative path, whether it is executable, and the
sha256 of its content) or symlink (its target), in path order. Derived files are left out, so running the
runtime never changes its digest: `__pycache__` folders anywhere, and at the top the manifest, the listing and
the `.cache` folder (DeepSpeed's compiled ops; Hugging Face's download notes in a model folder). The listing
itself is kept as `CONTENTS` beside the build, so a node whose copy differs can say which files. The stat
listing is the same lines with each file's size and mtime (ns) in place of its hash: what a cheap check compares.
A model's folder is listed with its links followed (`follow_links`): a Hugging Face snapshot is links into the
cache's blobs, its copy on a node is the files themselves, and both are the same model.

An image is one file: its digest is the file's sha256, and its manifest lies beside it (`NAME.sif`, `NAME.json`).

Run on a node with this file on stdin (nothing is copied or left there; the Ansible role runs it with its
`script` module), it prints one JSON object on stdout. Standard library only, Python 3.8+.

    python3 - ROOT NAME             what the node has as `ROOT/NAME` (a build's folder, or `ROOT/NAME.sif`)
    python3 - --folder PATH [--full]  the stat listing of the folder PATH; with --full its listing and digest too
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

LISTING_NAME = "CONTENTS"
TOP_LEVEL_DERIVED = {"build_manifest.json", LISTING_NAME, ".cache"}
SHOWN_DIFFERENCES = 10
CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _entries(root: Path, follow_links: bool) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Every file, symlink and other non-folder under `root` by its relative path (derived files left out); with
    `follow_links`, a link to a folder is walked and a link to nothing is an error."""
    pending = [""]
    while pending:
        relative = pending.pop()
        with os.scandir(root / relative) as entries:
            for entry in entries:
                path = f"{relative}/{entry.name}" if relative else entry.name
                if entry.name == "__pycache__" or (not relative and entry.name in TOP_LEVEL_DERIVED):
                    continue
                if "\t" in path or "\n" in path:
                    raise ValueError(f"{root / path}: a tab or newline in a file name")
                if follow_links and entry.is_symlink() and not Path(entry.path).exists():
                    raise ValueError(f"{root / path}: a link to {Path(entry.path).readlink()}, which is not there")
                if entry.is_dir(follow_symlinks=follow_links):
                    pending.append(path)
                else:
                    yield path, entry


def _lines(root: Path, content: Callable[[Path, os.stat_result], str], follow_links: bool) -> tuple[list[str], int]:
    """One line per file (`content` says what of it) or symlink under `root`, sorted; and the bytes of the files."""
    lines: list[str] = []
    total = 0
    for path, entry in _entries(root, follow_links):
        if entry.is_symlink() and not follow_links:
            lines.append(f"{path}\tlink\t{Path(entry.path).readlink()}")
        elif entry.is_file():
            info = entry.stat()
            kind = "exec" if info.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH) else "file"
            lines.append(f"{path}\t{kind}\t{content(Path(entry.path), info)}")
            total += info.st_size
    lines.sort()
    return lines, total


def listing(root: Path, *, follow_links: bool = False) -> tuple[list[str], int]:
    """One line per file or symlink under `root` (derived files left out), sorted; and the bytes of the files."""
    return _lines(root, lambda path, info: file_sha256(path), follow_links)


def stat_listing(root: Path, *, follow_links: bool = False) -> tuple[list[str], int]:
    """listing()'s lines with each file's size and mtime (ns) in place of its hash, and the bytes: cheap to take,
    and what rewriting a file almost always changes (the full listing catches the rest)."""
    return _lines(root, lambda path, info: f"{info.st_size}\t{info.st_mtime_ns}", follow_links)


def digest_of(lines: list[str]) -> str:
    """The digest of a listing."""
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8", "surrogateescape") + b"\n")
    return f"sha256:{digest.hexdigest()}"


def differences(expected: list[str], found: list[str]) -> list[str]:
    """The files that differ between two listings, named: changed, missing or extra (first few, then a count)."""
    want = dict(line.split("\t", 1) for line in expected)
    have = dict(line.split("\t", 1) for line in found)
    named = [f"changed: {p}" for p in sorted(want) if p in have and have[p] != want[p]]
    named += [f"missing: {p}" for p in sorted(want) if p not in have]
    named += [f"extra: {p}" for p in sorted(have) if p not in want]
    if len(named) > SHOWN_DIFFERENCES:
        named = [*named[:SHOWN_DIFFERENCES], f"... and {len(named) - SHOWN_DIFFERENCES} more"]
    return named


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def installed(root: Path, name: str) -> dict[str, object]:
    """What the node has as `root/name` (a build's folder or an image), and which build `root/current` points at."""
    folder, image, current = root / name, root / f"{name}.sif", root / "current"
    report: dict[str, object] = {
        "install_dir": str(folder),
        "present": False,
        "current": str(current.readlink()) if current.is_symlink() else None,
        "current_manifest": _read(current / "build_manifest.json"),
        "manifest": None,
        "digest": None,
        "files": 0,
        "bytes": 0,
        "differences": [],
    }
    if image.is_file():
        report.update(install_dir=str(image), present=True, manifest=_read(root / f"{name}.json"))
        report.update(digest=f"sha256:{file_sha256(image)}", files=1, bytes=image.stat().st_size)
    elif folder.is_dir():
        lines, total = listing(folder)
        report.update(present=True, manifest=_read(folder / "build_manifest.json"))
        report.update(digest=digest_of(lines), files=len(lines), bytes=total)
        contents = _read(folder / LISTING_NAME)
        if contents is not None:
            report["differences"] = differences(contents.splitlines(), lines)
    return report


def folder_report(folder: Path, full: bool) -> dict[str, object]:
    """What a node has at the model folder `folder`, links followed: whether it is there, its stat listing and
    bytes; with `full` also its listing and digest (every file hashed)."""
    if not folder.is_dir():
        return {"present": False, "stats": [], "bytes": 0, "listing": None, "digest": None}
    stats, total = stat_listing(folder, follow_links=True)
    lines = listing(folder, follow_links=True)[0] if full else None
    digest = None if lines is None else digest_of(lines)
    return {"present": True, "stats": stats, "bytes": total, "listing": lines, "digest": digest}


if __name__ == "__main__":
    try:
        if sys.argv[1] == "--folder":
            print(json.dumps(folder_report(Path(sys.argv[2]), full=sys.argv[3:] == ["--full"])))
        else:
            print(json.dumps(installed(Path(sys.argv[1]), sys.argv[2])))
    except (OSError, ValueError) as err:
        print(json.dumps({"error": str(err)}))
        sys.exit(1)

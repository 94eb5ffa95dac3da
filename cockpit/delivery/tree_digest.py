"""The content digest of a runtime build, and what a node has installed of one.

One digest for a folder: sha256 over one line per file (its relative path, whether it is executable, and the
sha256 of its content) or symlink (its target), in path order. Derived files are left out, so running the
runtime never changes its digest: `__pycache__` folders anywhere, and at the top the manifest, the listing and
the `.cache` folder (DeepSpeed's compiled ops). The listing itself is kept as `CONTENTS` beside the build, so a
node whose copy differs can say which files.

An image is one file: its digest is the file's sha256, and its manifest lies beside it (`NAME.sif`, `NAME.json`).

Run on a node as `python3 - ROOT NAME` with this file on stdin (nothing is copied or left there; the Ansible role
runs it with its `script` module): one JSON object on stdout saying what the node has as `ROOT/NAME` (a build's
folder, or `ROOT/NAME.sif`). Standard library only, Python 3.8+.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
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


def listing(root: Path) -> tuple[list[str], int]:
    """One line per file or symlink under `root` (derived files left out), sorted; and the bytes of the files."""
    lines: list[str] = []
    total = 0
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
                if entry.is_symlink():
                    lines.append(f"{path}\tlink\t{Path(entry.path).readlink()}")
                elif entry.is_dir():
                    pending.append(path)
                elif entry.is_file():
                    info = entry.stat()
                    kind = "exec" if info.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH) else "file"
                    lines.append(f"{path}\t{kind}\t{file_sha256(Path(entry.path))}")
                    total += info.st_size
    lines.sort()
    return lines, total


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


if __name__ == "__main__":
    try:
        print(json.dumps(installed(Path(sys.argv[1]), sys.argv[2])))
    except (OSError, ValueError) as err:
        print(json.dumps({"error": str(err)}))
        sys.exit(1)

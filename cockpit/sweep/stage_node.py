"""The node's side of a staged run folder: unpack what a job reads, pack what it wrote, tail its progress.

Sent by cockpit.sweep.staging over the ssh connection the cockpit already holds to the node and run as
`python3 -c SCRIPT ACTION ROOT [RELATIVE...]`, ROOT being the run folder (the same path on every node):

- `put ROOT`: a tar stream on stdin is unpacked below ROOT, every file written to a temporary name and renamed,
  so a reader never sees half a file; one JSON line says how many files, or why not (with the free space left
  when the disk is full);
- `get ROOT REL...`: a tar stream on stdout of every file below the RELs, each read once, ending with a listing
  (`.stage-listing.json`) of every file's size and line count as sent, against which the receiver checks them;
- `tail ROOT REL...`: one JSON line with the last complete line of each of the files that exist.

Standard library only, Python 3.8+; nothing is left on the node but the files themselves.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

LISTING = ".stage-listing.json"
PARTIAL = ".stage-"  # in the name of a file still being written by `put`
TAIL_BYTES = 64 * 1024


def inside(root: Path, relative: str) -> Path:
    """`root/relative`, refusing a name that would leave root."""
    path = Path(os.path.normpath(root / relative))
    if Path(relative).is_absolute() or root not in path.parents:
        raise ValueError(f"{relative}: not a path inside {root}")
    return path


def free_bytes(path: Path) -> int:
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def put(root: Path) -> dict:
    count, size, path = 0, 0, root
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as archive:
            for member in archive:
                path = inside(root, member.name)
                if member.isdir():
                    path.mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isfile():
                    raise ValueError(f"{member.name}: only files and folders are staged")
                path.parent.mkdir(parents=True, exist_ok=True)
                temporary = path.with_name(f"{path.name}{PARTIAL}{os.getpid()}")
                try:
                    with temporary.open("wb") as out:
                        shutil.copyfileobj(archive.extractfile(member), out)
                    temporary.chmod(member.mode & 0o777)
                    os.utime(temporary, (member.mtime, member.mtime))
                    temporary.replace(path)
                finally:
                    temporary.unlink(missing_ok=True)
                count, size = count + 1, size + member.size
    except OSError as err:
        report = {"error": f"{path}: {err.strerror or err}", "path": str(path)}
        if err.errno == errno.ENOSPC:
            report["free_bytes"] = free_bytes(path)
        return report
    except (ValueError, tarfile.TarError) as err:
        return {"error": f"{path}: {err}", "path": str(path)}
    return {"files": count, "bytes": size}


def files_below(root: Path, relatives: list[str]) -> Iterator[str]:
    for relative in relatives:
        top = inside(root, relative)
        if top.is_file():
            yield relative
        for folder, _, names in os.walk(top):
            for name in sorted(names):
                full = Path(folder) / name
                if full.is_file() and not full.is_symlink() and PARTIAL not in name:
                    yield str(full.relative_to(root))


def get(root: Path, relatives: list[str]) -> None:
    listing = {}
    with tarfile.open(fileobj=sys.stdout.buffer, mode="w|") as archive:
        for relative in files_below(root, relatives):
            full = root / relative
            try:
                data, info = full.read_bytes(), full.stat()
            except OSError:
                continue  # gone between the walk and the read: not part of this copy
            member = tarfile.TarInfo(relative)
            member.size, member.mtime, member.mode = len(data), int(info.st_mtime), info.st_mode & 0o777
            archive.addfile(member, io.BytesIO(data))
            listing[relative] = [len(data), data.count(b"\n")]
        text = json.dumps(listing).encode()
        member = tarfile.TarInfo(LISTING)
        member.size = len(text)
        archive.addfile(member, io.BytesIO(text))


def last_line(path: Path) -> str | None:
    with path.open("rb") as handle:
        handle.seek(max(0, os.fstat(handle.fileno()).st_size - TAIL_BYTES))
        lines = handle.read().split(b"\n")
    complete = [line for line in lines[:-1] if line.strip()]  # a torn last line is still being written
    return complete[-1].decode("utf-8", "replace") if complete else None


def tail(root: Path, relatives: list[str]) -> dict[str, str]:
    lines = {}
    for relative in relatives:
        try:
            line = last_line(inside(root, relative))
        except OSError:
            continue
        if line is not None:
            lines[relative] = line
    return lines


def main(argv: list[str]) -> None:
    action, root, relatives = argv[0], Path(argv[1]), argv[2:]
    if action == "put":
        print(json.dumps(put(root)))
    elif action == "get":
        get(root, relatives)
    elif action == "tail":
        print(json.dumps(tail(root, relatives)))
    else:
        raise SystemExit(f"unknown action {action}")


if __name__ == "__main__":
    main(sys.argv[1:])

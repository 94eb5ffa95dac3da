"""Node ranges as ClusterShell writes them: `node[0-3,7]` expands to node0..node3 and node7, and back."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable

from cockpit.errors import BadInput

_RANGE = re.compile(r"^(?P<head>[^\[\]]*)\[(?P<body>[^\[\]]+)\](?P<tail>.*)$")
_NUMBERED = re.compile(r"^(?P<head>.*?)(?P<number>\d+)(?P<tail>\D*)$")
_OUTSIDE_BRACKETS = re.compile(r",(?![^\[]*\])")  # a comma that parts patterns, not numbers in a bracket


def _numbers(body: str, pattern: str) -> list[str]:
    out: list[str] = []
    for part in body.split(","):
        low, _, high = part.strip().partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise BadInput(f"{pattern!r}: bad node range {part!r} (expected like node[0-3,7])")
        if not high:
            out.append(low)
            continue
        if int(high) < int(low):
            raise BadInput(f"{pattern!r}: range {part!r} goes backwards")
        width = len(low) if low.startswith("0") and len(low) > 1 else 0
        out.extend(f"{n:0{width}d}" for n in range(int(low), int(high) + 1))
    return out


def expand(pattern: str) -> list[str]:
    """`node[0-2]` -> node0 node1 node2; zero padding kept (`gpu[01-03]`); several brackets multiply."""
    match = _RANGE.match(pattern)
    if match is None:
        if "[" in pattern or "]" in pattern:
            raise BadInput(f"{pattern!r}: unbalanced brackets in a node range")
        return [pattern]
    head, tail = match["head"], match["tail"]
    return [name for n in _numbers(match["body"], pattern) for name in expand(f"{head}{n}{tail}")]


def expand_list(text: str) -> list[str]:
    """A node list as Slurm writes one, `node[0-1,4],gpu3`: each of its comma-parted patterns expanded."""
    return [name for part in _OUTSIDE_BRACKETS.split(text) if part for name in expand(part)]


def _spans(numbers: list[str]) -> str:
    ordered = sorted(set(numbers), key=lambda s: (int(s), s))
    parts: list[str] = []
    start = prev = ordered[0]
    for number in [*ordered[1:], None]:
        if number is not None and int(number) == int(prev) + 1 and len(number) == len(prev):
            prev = number
            continue
        parts.append(start if start == prev else f"{start}-{prev}")
        if number is not None:
            start = prev = number
    return ",".join(parts)


def fold(names: Iterable[str]) -> str:
    """The inverse of `expand`, for headers like dshbak's: node0 node1 node3 -> node[0-1,3]."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    plain: list[str] = []
    for name in names:
        match = _NUMBERED.match(name)
        if match is None:
            plain.append(name)
        else:
            groups[match["head"], match["tail"]].append(match["number"])
    folded = [
        f"{head}{numbers[0]}{tail}" if len(set(numbers)) == 1 else f"{head}[{_spans(numbers)}]{tail}"
        for (head, tail), numbers in groups.items()
    ]
    return ",".join(sorted(plain) + sorted(folded))

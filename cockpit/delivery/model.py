"""The model on every node: the checkpoint folder here, copied to the same path on each compute node and checked
there before every sweep.

`cluster model push` copies `[model] path` to that same path on each node (the `model` role, ansible/model.yml:
rsync with mtimes kept, links copied as the files they point to), then checks every copy. The digest is the runtime
delivery's (tree_digest.py, links followed): sha256 over every file's path, executable bit and content. Hashing a
16 GB checkpoint before every sweep would take minutes, so it is taken once, when the model is pushed, and kept in
the push record, `<data_dir>/models/<folder name>.push.json` (never inside the folder, so never copied): the digest,
the listing (every file's hash) and every file's size and mtime as hashed, and per node the verdict of its last
check, when a push last reached it, and the sizes and mtimes its copy had when it last matched the digest.

A check is then cheap: every file's size and mtime here against the record (a file changed since the push means
every node needs a new push, and no node is asked), then each node's, in one ssh fan-out (tree_digest.py on stdin to
`python3 - --folder PATH`), against what that node had when it last matched. With `full` every file is hashed, here
and on each node: that catches a change that kept a file's size and mtime, and vouches for a copy no push made.

When the check applies (`model_check_needed`): never with the local scheduler, whose ranks all run on this machine
and read this very folder. With Slurm, once the model has been pushed (the record exists: the nodes hold copies of
their own), and before any push when run storage is not shared (nothing says the nodes see this machine's files, so
a sweep waits for a push). With shared run storage and no push, the model is taken to be on storage the nodes share,
as the run folders are; the first push makes the check apply from then on.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cockpit.config import RunStorageKind, Settings
from cockpit.delivery.tree_digest import differences, digest_of, listing, stat_listing
from cockpit.delivery.verify import config_flag, digest_source, fix_commands, plain_table, script_report
from cockpit.errors import BAD_INPUT, BadInput
from cockpit.nodes.inventory import Node
from cockpit.nodes.nodeset import fold
from cockpit.nodes.ssh import CommandResult, SshPool
from runtime.atomic import atomic_write_text
from runtime.schema import parse, to_plain

if TYPE_CHECKING:
    from cockpit.provision.runner import PlaybookRun

ModelState = Literal["ok", "missing", "differs", "not pushed", "outdated", "unreachable", "error"]
Mode = Literal["cheap", "copied", "full"]  # against the node's last good sizes and mtimes; the copy here's; hashes
RECORD_SUFFIX = ".push.json"
MARKS: dict[ModelState, str] = {  # how the nodes table words a node that lacks the model
    "missing": "no model",
    "differs": "model differs",
    "not pushed": "model not pushed",
    "outdated": "model outdated",
    "unreachable": "model unchecked",
    "error": "model unchecked",
}


@dataclass(frozen=True)
class NodeEntry:
    """What the record keeps of one node."""

    state: ModelState  # its last check's verdict
    detail: str
    checked_at: str
    pushed_at: str | None = None  # when a push last reached it
    stats: tuple[str, ...] | None = None  # its copy's stat listing when it last matched the digest; None: never


@dataclass(frozen=True)
class ModelRecord:
    """The push record: the copy here as it was hashed, and each node's last check."""

    path: str
    digest: str
    listing: tuple[str, ...]  # tree_digest's listing: a changed file is named after a full check
    stats: tuple[str, ...]  # every file's size and mtime when it was hashed
    bytes: int
    hashed_at: str
    nodes: dict[str, NodeEntry] = field(default_factory=dict)

    @property
    def short(self) -> str:
        """The digest's first 12 hex digits."""
        return self.digest.removeprefix("sha256:")[:12]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def record_path(settings: Settings) -> Path:
    """Where the push record of the configured model lives: beside the models here, outside every model folder."""
    return settings.data_dir / "models" / f"{settings.model_path.name}{RECORD_SUFFIX}"


def read_record(settings: Settings) -> ModelRecord | None:
    """The configured model's push record; None when it was never pushed (a record of another folder by the same
    name counts as none). BadInput naming the file when it is not a record."""
    path = record_path(settings)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise BadInput(f"{path}: not valid JSON ({err.msg}); `cluster model push` writes it again") from None
    record = parse(ModelRecord, data, str(path))
    return record if record.path == str(settings.model_path) else None


def write_record(settings: Settings, record: ModelRecord) -> None:
    atomic_write_text(record_path(settings), json.dumps(to_plain(record), indent=1) + "\n")


def model_check_needed(settings: Settings, backend: str, run_storage: RunStorageKind) -> bool:
    """Whether a sweep on `backend` with `run_storage` must find the model on every node first (the rule is in the
    module's docstring)."""
    if backend != "slurm":
        return False
    return run_storage != "shared" or read_record(settings) is not None


def _folder(settings: Settings) -> Path:
    folder = settings.model_path
    if not folder.is_dir():
        where = f" in {settings.source}" if settings.source else ""
        raise BadInput(f"{folder}: no model folder here ([model] path{where})")
    return folder


def _amount(count: int) -> str:
    """Bytes in the unit that suits them: 16.07 GB, 3.1 MB, 4.1 kB."""
    if count >= 1e9:
        return f"{count / 1e9:.2f} GB"
    return f"{count / 1e6:.1f} MB" if count >= 1e6 else f"{count / 1e3:.1f} kB"


def _listed(folder: Path, lister: Callable[..., tuple[list[str], int]]) -> tuple[list[str], int]:
    """`lister`'s lines for the model folder, links followed (a snapshot's links into a cache are copied as the files
    they point to); a link to nothing is bad input, named."""
    try:
        return lister(folder, follow_links=True)
    except ValueError as err:
        raise BadInput(f"model folder {err}") from None


def _stats(folder: Path) -> tuple[list[str], int]:
    return _listed(folder, stat_listing)


def hash_here(settings: Settings, *, full: bool = False, progress: Callable[[str], None] | None = None) -> ModelRecord:
    """The record of the copy here: the last one while every file's size and mtime are as it has them (unless
    `full`), else the folder hashed again; the nodes' entries are kept while the digest is the same. A corrupt
    record counts as none: this one replaces it."""
    folder = _folder(settings)
    stats, total = _stats(folder)
    try:
        previous = read_record(settings)
    except BAD_INPUT:
        previous = None
    if previous is not None and not full and previous.stats == tuple(stats):
        return previous
    if progress is not None:
        progress(f"hashing {folder} ({len(stats):,} files, {_amount(total)})")
    lines, total = _listed(folder, listing)
    digest = digest_of(lines)
    kept = previous.nodes if previous is not None and previous.digest == digest else {}
    return ModelRecord(str(folder), digest, tuple(lines), tuple(stats), total, _now(), kept)


def push_run(settings: Settings, nodes: Sequence[Node], full: bool = False) -> PlaybookRun:
    """The `model` role's run (not yet started) that copies the model folder to the same path on `nodes`; with
    `full`, rsync compares every file by content, not by size and mtime."""
    from cockpit.provision.compute import PROJECT_ROOT, compute_run  # ansible-runner loads for a push only

    extravars = {"model_path": str(_folder(settings)), "model_checksum": full}
    return compute_run(settings, nodes, PROJECT_ROOT / "ansible" / "model.yml", extravars=extravars)


@dataclass(frozen=True)
class NodeModel:
    """One node's verdict: `state` ok or why not, and what was found."""

    node: str
    state: ModelState
    detail: str

    @property
    def ok(self) -> bool:
        return self.state == "ok"


def _without_mtimes(stats: Sequence[str]) -> list[str]:
    """A stat listing with the files' sizes only: what a fresh copy must match (rsync has kept the mtimes as
    precisely as the node's filesystem can)."""
    return [line if line.split("\t")[1] == "link" else line.rsplit("\t", 1)[0] for line in stats]


def judge(result: CommandResult, record: ModelRecord, mode: Mode) -> tuple[NodeModel, tuple[str, ...] | None]:
    """One node's verdict from its folder report (or from why it gave none), and its stat listing when its copy
    matches: cheap, against the sizes and mtimes it had when it last matched; copied (just pushed), against the
    files here; full, by the digest."""
    node, path = result.node, record.path
    report, failure, why = script_report(result)
    if report is None:
        return NodeModel(node, failure, why), None
    if not report["present"]:
        return NodeModel(node, "missing", f"{path} is not there"), None
    stats = tuple(report["stats"])
    size = f"{len(stats):,} files, {_amount(report['bytes'])}"
    if mode == "full":
        same = report["digest"] == record.digest
        named = [] if same else differences(list(record.listing), report["listing"]) or [f"digest {report['digest']}"]
        found = f"{size} hashed"
    elif mode == "copied":
        named, found = differences(_without_mtimes(record.stats), _without_mtimes(stats)), f"{size} copied"
    else:
        entry = record.nodes.get(node)
        if entry is None or entry.stats is None:
            return NodeModel(node, "not pushed", f"no push or full check has vouched for its {path}"), None
        named, found = differences(list(entry.stats), list(stats)), f"{size}, sizes and mtimes unchanged"
    if named:
        return NodeModel(node, "differs", f"{path}: {'; '.join(named)}"), None
    return NodeModel(node, "ok", found), stats


@dataclass(frozen=True)
class ModelCheck:
    """Every node's verdict on the configured model; `changed_here` names the files changed here since the push."""

    path: str
    record: ModelRecord | None  # None: never pushed
    full: bool
    checks: tuple[NodeModel, ...]
    changed_here: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failed(self) -> list[NodeModel]:
        return [check for check in self.checks if not check.ok]

    def fixes(self, config_flag: str = "") -> list[str]:
        """Wake the nodes that do not answer, then push to every node that lacks the model (comparing contents
        when a full check found the difference)."""
        return fix_commands(self.failed, "model push --full" if self.full else "model push", config_flag)

    def table(self) -> str:
        return plain_table([("node", "state", "detail"), *((c.node, c.state, c.detail) for c in self.checks)])

    def summary(self, config_flag: str = "") -> str:
        """One line when every node has the model; else why not, the table of nodes and the fixing commands."""
        if self.record is None:
            head = f"model {self.path}: never pushed to the nodes"
        else:
            head = f"model {self.path} ({self.record.short}, hashed {self.record.hashed_at})"
        if self.ok:
            return f"{head}: verified on {fold(c.node for c in self.checks)} ({'hashed' if self.full else 'cheap'})"
        if self.changed_here:
            head += f": the copy here changed since the push ({'; '.join(self.changed_here)}), every node needs it"
        elif self.record is not None:
            head += f": {fold(c.node for c in self.failed)} lack(s) it"
        fixes = "\n".join(f"  {command}" for command in self.fixes(config_flag))
        return f"{head}\n{self.table()}\nfix:\n{fixes}"


async def _fan_out(
    pool: SshPool, nodes: Sequence[Node], settings: Settings, record: ModelRecord, mode: Mode
) -> tuple[ModelRecord, tuple[NodeModel, ...]]:
    """Every node's folder report at once, judged; the record with each node's entry brought up to date."""
    command = f"python3 - --folder {shlex.quote(record.path)}" + (" --full" if mode == "full" else "")
    timeout = settings.runtime.verify_timeout_s if mode == "full" else None  # hashing GBs takes the build's time
    results = await pool.run_all(nodes, command, input=digest_source(), timeout_s=timeout)
    now, entries, checks = _now(), dict(record.nodes), []
    for result in results:
        check, stats = judge(result, record, mode)
        old = entries.get(result.node, NodeEntry(check.state, check.detail, now))
        pushed_at = now if mode == "copied" and check.ok else old.pushed_at
        kept = stats if stats is not None else old.stats  # a node that differs keeps what it had when it matched
        entries[result.node] = NodeEntry(check.state, check.detail, now, pushed_at, kept)
        checks.append(check)
    return replace(record, nodes=entries), tuple(checks)


async def check(pool: SshPool, nodes: Sequence[Node], settings: Settings, *, full: bool = False) -> ModelCheck:
    """Whether every node has the model that was pushed: the copy here first, then every node's at once (sizes and
    mtimes; with `full` every file hashed, here too). Each node's verdict is kept in the record."""
    path, record = str(settings.model_path), read_record(settings)
    if record is None:
        never = tuple(NodeModel(n.name, "not pushed", f"cluster model push has not copied {path} to it") for n in nodes)
        return ModelCheck(path, None, full, never)
    if full:
        fresh = hash_here(settings, full=True)
        changed = differences(list(record.listing), list(fresh.listing)) if fresh.digest != record.digest else []
        record = fresh if not changed else record  # the same content: the sizes and mtimes as they are now
    else:
        changed = differences(list(record.stats), _stats(_folder(settings))[0])
    if changed:
        outdated = tuple(NodeModel(n.name, "outdated", "pushed before the copy here changed") for n in nodes)
        return ModelCheck(path, record, full, outdated, tuple(changed))
    record, checks = await _fan_out(pool, nodes, settings, record, "full" if full else "cheap")
    write_record(settings, record)
    return ModelCheck(path, record, full, checks)


async def check_pushed(
    pool: SshPool, nodes: Sequence[Node], settings: Settings, record: ModelRecord, *, full: bool = False
) -> ModelCheck:
    """Right after a push of `record`: every node's copy against the files here (their sizes; with `full`, the
    digest), and the record written with what each node has."""
    record, checks = await _fan_out(pool, nodes, settings, record, "full" if full else "copied")
    write_record(settings, record)
    return ModelCheck(record.path, record, full, checks)


async def require_model(pool: SshPool, nodes: Sequence[Node], settings: Settings) -> ModelRecord:
    """The record of the model every node verifiably has (cheaply: sizes and mtimes as when each last matched the
    digest), or a BadInput (exit 2: a precondition `model push` fixes) with the table of the nodes that lack it."""
    verdict = await check(pool, nodes, settings)
    if not verdict.ok or verdict.record is None:
        raise BadInput(verdict.summary(config_flag(settings)) + "\nno job was submitted")
    return verdict.record


def gaps(settings: Settings, names: Sequence[str]) -> dict[str, str]:
    """For each of `names` that lacks the model as far as the record knows, a few words (the nodes table's mark);
    {} when no check applies. No node is asked: the record, and the sizes and mtimes of the files here."""
    if not model_check_needed(settings, settings.cluster.scheduler, settings.file.paths.run_storage):
        return {}
    record = read_record(settings)
    if record is None:
        return dict.fromkeys(names, MARKS["not pushed"])
    if tuple(_stats(_folder(settings))[0]) != record.stats:
        return dict.fromkeys(names, MARKS["outdated"])
    entries = {name: record.nodes.get(name) for name in names}
    return {
        name: MARKS["not pushed"] if entry is None else MARKS[entry.state]
        for name, entry in entries.items()
        if entry is None or entry.state != "ok"
    }

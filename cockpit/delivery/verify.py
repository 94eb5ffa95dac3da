"""Verify before run: every node's installed runtime against the built one, in one fan-out over ssh.

Each node hashes its own copy (tree_digest.py on stdin to `python3 -`), so a node passes only when the files it
would run are the files that were built: a changed, missing or extra file, a manifest that is missing, corrupt
or for another device kind, and a node that does not answer all stop a sweep before any job is submitted, with
a table of the nodes and the command that fixes them. The last verification of each node is kept beside the
build (`<build_dir>/venv-cpu.nodes.json`, outside what is copied) for the cockpit to show. The model's check
(cockpit.delivery.model) words its verdicts with the same table and fixing commands.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol

from cockpit.config import RuntimeSection, Settings
from cockpit.delivery.build import build_folder, built
from cockpit.errors import BAD_INPUT, BadInput
from cockpit.nodes.inventory import Node
from cockpit.nodes.nodeset import fold
from cockpit.nodes.ssh import CommandResult, SshPool
from runtime.atomic import atomic_write_text
from runtime.contract import BUILD_MANIFEST_NAME, CURRENT_IMAGE_MANIFEST, BuildManifest, Delivery, DeviceKind, loads

NodeState = Literal["ok", "differs", "missing", "corrupt", "wrong device", "unreachable", "error"]


@dataclass(frozen=True)
class Target:
    """Where a delivery puts a build on the nodes: `root/name` (a folder, or `name.sif` for an image)."""

    delivery: Delivery
    root: str
    name: str

    @property
    def path(self) -> str:
        return f"{self.root}/{self.name}" + (".sif" if self.delivery == "apptainer" else "")

    @property
    def manifest_path(self) -> str:
        if self.delivery == "apptainer":
            return f"{self.root}/{self.name}.json"
        return f"{self.root}/{self.name}/{BUILD_MANIFEST_NAME}"


def target(settings: Settings, build: BuildManifest) -> Target:
    """Where the configured delivery installs `build` on every node."""
    if build.delivery == "apptainer":
        if not settings.runtime.image_dir:
            raise BadInput("runtime: delivery apptainer needs [runtime] image_dir (storage every node mounts)")
        return Target("apptainer", settings.runtime.image_dir, f"cockpit-runtime-{build.build_id}")
    return Target("venv", settings.runtime.install_root, build.build_id)


def current_manifest_path(runtime: RuntimeSection) -> str | None:
    """Where every node finds the manifest of the build it runs now (`current`); None when the nodes run this
    tree as it is (shared) or no image folder is configured."""
    if runtime.delivery == "venv":
        return f"{runtime.install_root}/current/{BUILD_MANIFEST_NAME}"
    if runtime.delivery == "apptainer" and runtime.image_dir:
        return f"{runtime.image_dir}/{CURRENT_IMAGE_MANIFEST}"
    return None


@dataclass(frozen=True)
class NodeCheck:
    """One node's verdict: `state` ok or why not, and the build its `current` names (when it has one)."""

    node: str
    state: NodeState
    current: str | None
    detail: str

    @property
    def ok(self) -> bool:
        return self.state == "ok"


class Verdict(Protocol):
    """One node's verdict, as a fix is chosen for it: its name, its state, and why."""

    @property
    def node(self) -> str: ...

    @property
    def state(self) -> str: ...

    @property
    def detail(self) -> str: ...


def fix_commands(failed: Sequence[Verdict], repair: str, config_flag: str = "") -> list[str]:
    """The commands that bring `failed` nodes in line: wake those that do not answer, then `repair` them all
    (`runtime deploy`, `model push`)."""
    # a refused host key says itself what to do; a node that does not answer may be asleep
    down = [c.node for c in failed if c.state == "unreachable" and "host key" not in c.detail]
    commands = [f"cluster{config_flag} compute up {fold(down)}"] if down else []
    return commands + ([f"cluster{config_flag} {repair} {fold(c.node for c in failed)}"] if failed else [])


def plain_table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as columns two spaces apart, the first row the header; the last column (the details) runs free."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)), row[-1]]) for row in rows
    )


@dataclass(frozen=True)
class Verification:
    build: BuildManifest
    target: Target
    checks: tuple[NodeCheck, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failed(self) -> list[NodeCheck]:
        return [check for check in self.checks if not check.ok]

    def fixes(self, config_flag: str = "") -> list[str]:
        """The commands that bring the failed nodes in line: wake the unreachable ones, then deploy."""
        return fix_commands(self.failed, "runtime deploy", config_flag)

    def table(self) -> str:
        """The nodes as a plain table: node, state, the build its `current` names, the details."""
        rows = [("node", "state", "current", "detail")]
        return plain_table(rows + [(c.node, c.state, c.current or "-", c.detail) for c in self.checks])

    def summary(self, config_flag: str = "") -> str:
        """One line when every node has the build; else the table of nodes and the commands that fix them."""
        head = f"runtime {self.build.build_id} ({self.build.delivery}, {self.build.device}) at {self.target.path}"
        if self.ok:
            return f"{head}: verified on {fold(c.node for c in self.checks)}"
        fixes = "\n".join(f"  {command}" for command in self.fixes(config_flag))
        failed = fold(c.node for c in self.failed)
        return f"{head}: {failed} differ(s)\n{self.table()}\nfix:\n{fixes}"


def digest_source() -> str:
    """tree_digest.py's text, to send as stdin to `python3 - ROOT NAME`."""
    return resources.files("cockpit.delivery").joinpath("tree_digest.py").read_text(encoding="utf-8")


def _current(report: dict) -> str | None:
    text = report.get("current_manifest")
    if not text:
        return report.get("current")
    try:
        return json.loads(text).get("build_id") or report.get("current")
    except (json.JSONDecodeError, AttributeError):
        return report.get("current")


def script_report(result: CommandResult) -> tuple[dict[str, Any] | None, NodeState, str]:
    """The JSON object tree_digest.py printed on a node, "ok", ""; or None, the node's state and why there is none
    (it did not answer, or the script failed)."""
    if result.error is not None:
        return None, "unreachable", result.error
    try:
        report = json.loads(result.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return None, "error", f"exit {result.exit_status}: {tail}"
    if "error" in report:
        return None, "error", str(report["error"])
    return report, "ok", ""


def judge(result: CommandResult, build: BuildManifest, where: Target) -> NodeCheck:
    """One node's verdict from its digest report (or from why it gave none)."""
    node = result.node
    report, state, why = script_report(result)
    if report is None:
        return NodeCheck(node, state, None, why)
    current = _current(report)
    if not report["present"]:
        return NodeCheck(node, "missing", current, f"{where.path} is not there")
    source = f"{node}:{where.manifest_path}"
    if report["manifest"] is None:
        return NodeCheck(node, "corrupt", current, f"{source}: no such file")
    try:
        installed = loads(BuildManifest, report["manifest"], source)
    except BAD_INPUT as err:
        return NodeCheck(node, "corrupt", current, str(err))
    if installed.device != build.device:
        return NodeCheck(node, "wrong device", current, f"{source}: built for {installed.device}, not {build.device}")
    if report["digest"] != build.digest:
        named = "; ".join(report["differences"]) or f"its digest is {report['digest']}"
        return NodeCheck(node, "differs", current, f"{where.path}: {named}")
    if installed.digest != build.digest:
        return NodeCheck(node, "corrupt", current, f"{source}: names digest {installed.digest}, not the build's")
    return NodeCheck(node, "ok", current, f"{report['files']:,} files, {report['bytes'] / 1e9:.2f} GB hashed")


async def verify(pool: SshPool, nodes: Sequence[Node], settings: Settings, build: BuildManifest) -> Verification:
    """Hash every node's copy of `build` at once; each node's verdict, in the nodes' order."""
    where = target(settings, build)
    command = f"python3 - {shlex.quote(where.root)} {shlex.quote(where.name)}"
    timeout = settings.runtime.verify_timeout_s
    results = await pool.run_all(nodes, command, input=digest_source(), timeout_s=timeout)
    verification = Verification(build, where, tuple(judge(result, build, where) for result in results))
    record(settings, verification)
    return verification


def _record_path(settings: Settings, delivery: Delivery, device: DeviceKind) -> Path:
    folder = build_folder(settings, delivery, device)
    return folder.with_name(f"{folder.name}.nodes.json")


def record(settings: Settings, verification: Verification) -> None:
    """Keep each node's latest verdict beside the build (other nodes' entries stay)."""
    path = _record_path(settings, verification.build.delivery, verification.build.device)
    try:
        known = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        known = {}
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    for check in verification.checks:
        known[check.node] = {**asdict(check), "build_id": verification.build.build_id, "checked_at": stamp}
    atomic_write_text(path, json.dumps(known, indent=2) + "\n")


def config_flag(settings: Settings) -> str:
    """What a command told to the user needs to reach this configuration: ` --config PATH`, or nothing."""
    return f" --config {settings.source}" if settings.source else ""


async def require_verified(pool: SshPool, nodes: Sequence[Node], settings: Settings, device: str) -> BuildManifest:
    """The build every node verifiably has, or a BadInput (exit 2: a precondition the user fixes with `runtime
    deploy`) with the table of those that differ."""
    if settings.runtime.delivery == "shared":
        raise BadInput("runtime: delivery is shared; nothing to verify")
    build = built(settings, settings.runtime.delivery, settings.runtime_device(device))
    verification = await verify(pool, nodes, settings, build)
    if not verification.ok:
        raise BadInput(verification.summary(config_flag(settings)) + "\nno job was submitted")
    return build

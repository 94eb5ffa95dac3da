"""Where a sweep's jobs find their run folder: shared storage every node mounts, or staged copies on each node.

`[paths] run_storage` chooses, and the plan records the choice in the manifest, so a resumed run keeps it.

shared: the run folder is on storage the control node and every compute node mount at the same path (NFS from
the control node: the `nfs` role); nothing moves.

staged: for a cluster with no shared filesystem. Before each job, what its ranks read (the prompt table, the
strategy's exp_config.json, job.slurm, the profiler wrapper) goes to the same path on every node the job may be
given, written there under temporary names and renamed. While the job runs, the ranks' progress heartbeats are
tailed from the job's nodes over the ssh connections the sweep already holds and mirrored into the control
node's run folder, where the dashboard, `sweep status` and the web view read them as they read shared ones.
After the job, everything below the strategy's folder on each of its nodes (shards, metrics, progress, the
Slurm log, traces) comes back as one tar stream per node, is unpacked into a scratch folder, checked against
the node's own listing (every file's size and line count) and only then moved into place. A node that does not
answer, a copy that ends early and a file that differs from its listing are named, and that node's files stay
out of the run folder, so nothing half-copied is ever collected; Ctrl-C removes the scratch folder. Until
then a running job's logs are read where they are written (`on_nodes`).

Every copy runs on a pool of ssh connections (cockpit.nodes.ssh) kept open for the whole sweep, on an event
loop of its own thread: the synchronous pipeline waits for the copies out and back, while a progress mirror
runs beside its polling (one at a time), so a slow node never delays noticing that a job ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shlex
import shutil
import tarfile
import threading
import time
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from cockpit.config import RunStorageKind
from cockpit.errors import BadInput, OperationFailed
from cockpit.jobs.factory import PROFILE_WRAPPER, JobFiles
from cockpit.jobs.output import JobLogs
from cockpit.jobs.records import JobRecord
from cockpit.nodes.inventory import Node
from cockpit.nodes.nodeset import expand, fold
from cockpit.sweep.strategies import ParallelismStrategy
from runtime.atomic import atomic_write_text

if TYPE_CHECKING:  # the pool comes from the caller: importing this module opens no ssh machinery
    from cockpit.nodes.ssh import CommandResult, SshPool

LISTING = ".stage-listing.json"  # as stage_node.py names it
SCRATCH = ".staging"  # below the run folder: copies from nodes before they are checked
MIRROR_EVERY_S = 1.0
T = TypeVar("T")


class StagingFailed(OperationFailed):
    """Files did not reach the nodes a job may run on; nothing was submitted."""


def node_script() -> str:
    """stage_node.py's text, run on a node as `python3 -c`."""
    return resources.files("cockpit.sweep").joinpath("stage_node.py").read_text(encoding="utf-8")


def _size(count: float) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 1e5 else f"{count / 1e3:.1f} kB"


@dataclass(frozen=True)
class Fetched:
    """What came back from a job's nodes: files moved into the run folder, and why a node's did not."""

    files: int
    bytes: int
    seconds: float
    problems: tuple[str, ...]

    def summary(self, nodes: str) -> str:
        head = f"{self.files} files ({_size(self.bytes)}) back from {nodes} in {self.seconds:.2f} s"
        return head + "".join(f"; {problem}" for problem in self.problems)


class RunStorage(Protocol):
    """What the pipeline asks of the run folder's storage around each job."""

    kind: RunStorageKind

    def send(self, strategy: ParallelismStrategy, files: JobFiles) -> str | None:
        """Put what the job's ranks read where they read it; what was done, to tell the user (None: nothing)."""
        ...

    def mirror(self, strategy: ParallelismStrategy, job: JobRecord) -> None:
        """While the job runs: make its ranks' latest progress visible in the control node's run folder."""
        ...

    def fetch(self, strategy: ParallelismStrategy, job: JobRecord) -> Fetched | None:
        """After the job: its outputs in the control node's run folder, checked (None: nothing to do)."""
        ...

    def close(self) -> None: ...


class SharedRunStorage:
    """Every node mounts the run folder: nothing to copy."""

    kind: RunStorageKind = "shared"

    def send(self, strategy: ParallelismStrategy, files: JobFiles) -> str | None:
        return None

    def mirror(self, strategy: ParallelismStrategy, job: JobRecord) -> None:
        return None

    def fetch(self, strategy: ParallelismStrategy, job: JobRecord) -> Fetched | None:
        return None

    def close(self) -> None:
        return None


def _reason(result: CommandResult) -> str:
    """Why a node's part of a copy failed, in one line."""
    if result.error is not None:
        return result.error
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    return f"exit {result.exit_status}" + (f": {lines[-1]}" if lines else "")


def _put_problem(result: CommandResult) -> str | None:
    """A node's answer to `put`: None when every file arrived, else what went wrong (free space when full)."""
    if result.error is not None or result.exit_status != 0:
        return _reason(result)
    try:
        report = json.loads(result.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return f"no report from the node ({_reason(result)})"
    if "error" not in report:
        return None
    free = report.get("free_bytes")
    return report["error"] + (f" ({_size(free)} free there)" if free is not None else "")


def _unpack(data: bytes, scratch: Path) -> tuple[list[Path], int]:
    """A node's `get` stream unpacked into `scratch` and checked against the node's listing: the files (relative
    to scratch) and their bytes. A ValueError says what differs or that the stream ended early."""
    listing: dict[str, list[int]] | None = None
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            for member in archive:
                if member.name == LISTING:
                    listing = json.loads(archive.extractfile(member).read())  # type: ignore[union-attr]
                else:
                    archive.extract(member, scratch, filter="data")
    except (tarfile.TarError, EOFError) as err:
        raise ValueError(f"the copy ended early ({err})") from None
    if listing is None:
        raise ValueError("the copy ended early (no listing at its end)")
    total = 0
    for relative, (size, lines) in listing.items():
        path = scratch / relative
        content = path.read_bytes() if path.is_file() else None
        got = None if content is None else (len(content), content.count(b"\n"))
        if got != (size, lines):
            what = "missing" if got is None else f"{got[0]} bytes, {got[1]} lines"
            raise ValueError(f"{relative}: {what}, the node listed {size} bytes, {lines} lines")
        total += size
    return [Path(relative) for relative in listing], total


class StagedRunStorage:
    """Copies a run folder's job files out to the nodes and their outputs back, over one pool of ssh connections."""

    kind: RunStorageKind = "staged"

    def __init__(self, run_dir: Path, nodes: Sequence[Node], pool: SshPool, *, timeout_s: float = 300.0) -> None:
        """`nodes`: every node a job may be given (what is sent goes to all of them); a job's outputs come back
        from the nodes its record names."""
        self.run_dir, self.pool, self.timeout_s = run_dir, pool, timeout_s
        self.nodes = {node.name: node for node in nodes if not node.local}
        self._script = shlex.quote(node_script())
        self._sent: dict[str, set[tuple[str, int, int]]] = {name: set() for name in self.nodes}
        self._mirrored: dict[Path, str] = {}
        self._mirroring: Future[None] | None = None
        self._last_mirror = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="run-storage", daemon=True)
        self._thread.start()

    def _wait(self, work: Coroutine[Any, Any, T]) -> T:
        """`work` on the storage's loop; Ctrl-C here cancels it there."""
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def _mirror_done(self) -> None:
        """Wait for a mirror in flight (its files must not land after the real ones)."""
        if self._mirroring is not None:
            with contextlib.suppress(Exception):
                self._mirroring.result(timeout=30)

    def close(self) -> None:
        self._mirror_done()
        with contextlib.suppress(Exception):
            self._wait(self.pool.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def _command(self, action: str, *relatives: str) -> str:
        return f"python3 -c {self._script} {action} {shlex.quote(str(self.run_dir))} " + shlex.join(relatives)

    def _relative(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.run_dir))
        except ValueError:
            raise BadInput(f"{path}: a staged job reads only files in its run folder {self.run_dir}") from None

    def _job_nodes(self, job: JobRecord) -> list[Node]:
        names = expand(job.nodes) if job.nodes else []
        unknown = [name for name in names if name not in self.nodes]
        if unknown:
            raise OperationFailed(
                f"job {job.job_id} ran on {fold(unknown)}, which the inventory does not name: "
                "its outputs cannot be copied back"
            )
        return [self.nodes[name] for name in names]

    def send(self, strategy: ParallelismStrategy, files: JobFiles) -> str | None:
        config = strategy.config()
        paths = [Path(config.prompt_df_path), files.config, files.script, files.config.parent / PROFILE_WRAPPER]
        wanted = [(self._relative(path), path.stat()) for path in paths if path.exists()]
        started = time.monotonic()
        outcomes = self._wait(self._send_all(wanted, self._relative(files.config.parent / "logs")))
        problems = [f"{name}: {problem}" for name, problem in outcomes.items() if problem]
        if problems:
            raise StagingFailed(
                f"{strategy.strategy_id}: its job files did not reach every node it may run on\n  "
                + "\n  ".join(problems)
                + "\nno job was submitted"
            )
        sent = sum(stat.st_size for _, stat in wanted)
        return f"{len(wanted)} files ({_size(sent)}) to {fold(self.nodes)} in {time.monotonic() - started:.2f} s"

    async def _send_all(self, wanted: list[tuple[str, os.stat_result]], logs: str) -> dict[str, str | None]:
        async def one(node: Node) -> str | None:
            # the prompt table goes once per node; a job's own files every time (a retry rewrites them)
            seen = self._sent[node.name]
            archive = io.BytesIO()
            with tarfile.open(fileobj=archive, mode="w:") as tar:
                tar.addfile(_folder(logs))
                for relative, stat in wanted:
                    if (relative, stat.st_size, stat.st_mtime_ns) not in seen:
                        tar.add(self.run_dir / relative, arcname=relative)
            result = await self.pool.run(node, self._command("put"), input=archive.getvalue(), timeout_s=self.timeout_s)
            problem = _put_problem(result)
            if problem is None:
                seen.update((relative, stat.st_size, stat.st_mtime_ns) for relative, stat in wanted)
            return problem

        nodes = list(self.nodes.values())
        answers = await asyncio.gather(*(one(node) for node in nodes))
        return {node.name: answer for node, answer in zip(nodes, answers, strict=True)}

    def mirror(self, strategy: ParallelismStrategy, job: JobRecord) -> None:
        """Start tailing the job's heartbeats (at most once a second, one tail at a time) and return at once."""
        if job.state != "RUNNING" or not job.nodes or time.monotonic() - self._last_mirror < MIRROR_EVERY_S:
            return
        if self._mirroring is not None and not self._mirroring.done():
            return
        try:
            nodes = self._job_nodes(job)
        except OperationFailed:
            return  # fetch names them when the job ends
        self._last_mirror = time.monotonic()
        config = strategy.config()
        relatives = [self._relative(config.progress_path(rank)) for rank in range(config.world_size)]
        self._mirroring = asyncio.run_coroutine_threadsafe(self._tail(nodes, relatives), self._loop)

    async def _tail(self, nodes: list[Node], relatives: list[str]) -> None:
        command = self._command("tail", *relatives)
        for result in await self.pool.run_all(nodes, command, timeout_s=10.0):
            try:
                lines = json.loads(result.stdout) if result.ok else {}
            except json.JSONDecodeError:
                continue  # the last good heartbeat stands; the dashboard marks it as it ages
            for relative, line in lines.items():
                path = self.run_dir / relative
                if self._mirrored.get(path) != line:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_text(path, line + "\n")
                    self._mirrored[path] = line

    def fetch(self, strategy: ParallelismStrategy, job: JobRecord) -> Fetched | None:
        started = time.monotonic()
        try:
            nodes = self._job_nodes(job)
        except OperationFailed as err:
            return Fetched(0, 0, 0.0, (str(err),))
        if not nodes:
            return None
        folder = self._relative(Path(strategy.config().output_root))
        command = self._command("get", folder)
        self._mirror_done()
        results = self._wait(self.pool.run_all(nodes, command, timeout_s=self.timeout_s, binary=True))
        scratch = self.run_dir / SCRATCH / f"{strategy.strategy_id}-{job.job_id}"
        shutil.rmtree(scratch, ignore_errors=True)
        checked: list[tuple[Path, list[Path]]] = []
        problems, total = [], 0
        try:
            for result in results:
                if not result.ok:
                    problems.append(f"{result.node}: {_reason(result)}")
                    continue
                try:
                    files, size = _unpack(result.data, scratch / result.node)
                except ValueError as err:
                    problems.append(f"{result.node}: {err}")
                    continue
                checked.append((scratch / result.node, files))
                total += size
            for source, files in checked:
                for relative in files:
                    (self.run_dir / relative).parent.mkdir(parents=True, exist_ok=True)
                    (source / relative).replace(self.run_dir / relative)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        count = sum(len(files) for _, files in checked)
        return Fetched(count, total, time.monotonic() - started, tuple(problems))


def on_nodes(logs: JobLogs) -> JobLogs:
    """Where a staged job's logs are while it runs: its output on the batch host (the allocation's first node),
    each rank's on the node that runs it (srun fills the nodes a rank per GPU, in order)."""
    if not logs.running_on:
        return logs
    names = expand(logs.running_on)
    placed = [
        replace(log, node=names[min(len(names) - 1, (log.rank or 0) // logs.ranks_per_node)]) for log in logs.logs
    ]
    return replace(logs, logs=tuple(placed))


def _folder(relative: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(relative)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
    return info

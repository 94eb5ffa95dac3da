"""Commands on many nodes at once over asyncssh: one reused connection per node, bounded concurrency, timeouts.

Host keys are checked against a known_hosts file the cockpit manages. A node not in it is refused unless the
caller accepts new keys (then its key is recorded, like OpenSSH's `accept-new`); a key that differs from the
recorded one is always refused. Every failure comes back as a `CommandResult` naming the node, never raised,
so one bad node never hides the others. `shell_argv` is OpenSSH's command line for a person's shell on a node,
checked against the same known_hosts just as strictly.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import os
import signal
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from cockpit.config import Settings
from cockpit.nodes.inventory import Node
from cockpit.nodes.nodeset import fold
from runtime.atomic import atomic_write_text

DEFAULT_CONCURRENCY = 64
CONNECTION_LOST = "connection closed by the node while the command ran"


@dataclass(frozen=True)
class CommandResult:
    """What one command did on one node. `error` says why it did not run to an exit status."""

    node: str
    target: str
    command: str
    exit_status: int | None
    stdout: str
    stderr: str
    error: str | None
    elapsed_s: float
    data: bytes = b""  # stdout as bytes, for a command run with binary=True (then `stdout` is empty)

    @property
    def ok(self) -> bool:
        return self.error is None and self.exit_status == 0

    def failure(self) -> str:
        """Everything needed to debug a failure: node, command, exit status or error, stderr."""
        lines = [f"{self.target}: {self.error or f'exit {self.exit_status}'}", f"  command: {self.command}"]
        if self.error is None and self.stderr.strip():
            lines += ["  stderr:", *(f"    {line}" for line in self.stderr.rstrip().splitlines()[-20:])]
        return "\n".join(lines)


class HostKeyRefused(Exception):
    """The node's host key is unknown (and new keys were not accepted) or differs from the recorded one."""


class KnownHosts:
    """The cockpit's known_hosts file: lookup by node name and address, and appending accepted keys."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = asyncio.Lock()

    def _entries(self) -> asyncssh.SSHKnownHosts:
        text = self.path.read_text() if self.path.exists() else ""
        return asyncssh.import_known_hosts(text)

    def trusted(self, node: Node) -> list[asyncssh.SSHKey]:
        """The keys recorded for the node under its name or its address."""
        entries = self._entries()
        port = None if node.port == 22 else node.port
        keys = list(entries.match(node.name, "", port)[0])
        address = node.address if _is_ip(node.address) else ""
        return keys + [key for key in entries.match(node.address, address, port)[0] if key not in keys]

    async def record(self, node: Node, key: asyncssh.SSHKey) -> None:
        """Append the node's key under its name and address (atomically: a reader never sees half a file)."""
        line = f"{','.join(host_patterns(node))} {key.export_public_key().decode().strip()}\n"
        async with self._lock:
            old = self.path.read_text() if self.path.exists() else ""
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, old + ("" if not old or old.endswith("\n") else "\n") + line, perms=0o600)


def host_patterns(node: Node) -> list[str]:
    """How known_hosts names the node: its name and its address, as `[host]:port` when the port is not 22."""
    hosts = list(dict.fromkeys([node.name, node.address]))
    return hosts if node.port == 22 else [f"[{host}]:{node.port}" for host in hosts]


class _Client(asyncssh.SSHClient):
    """Drops the pooled connection when the node goes away, so the next command reconnects."""

    def __init__(self, pool: SshPool, name: str) -> None:
        self._pool, self._name = pool, name

    def connection_lost(self, exc: Exception | None) -> None:
        self._pool._forget(self._name)


class SshPool:
    """Reused ssh connections to nodes; `run` and `run_all` give one CommandResult per node."""

    def __init__(
        self,
        known_hosts: Path,
        *,
        accept_new: bool = False,
        connect_timeout_s: float = 5.0,
        command_timeout_s: float = 30.0,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self.known_hosts = KnownHosts(known_hosts)
        self.accept_new = accept_new
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        self._slots = asyncio.Semaphore(concurrency)
        self._connections: dict[str, asyncssh.SSHClientConnection] = {}
        self._connecting: dict[str, asyncio.Lock] = {}

    async def __aenter__(self) -> SshPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every pooled connection."""
        connections, self._connections = list(self._connections.values()), {}
        for conn in connections:
            conn.close()
        for conn in connections:
            with contextlib.suppress(Exception):
                await conn.wait_closed()

    @property
    def connected(self) -> list[str]:
        """The nodes with an open pooled connection."""
        return sorted(self._connections)

    def _forget(self, name: str) -> None:
        self._connections.pop(name, None)

    async def _connect(self, node: Node) -> asyncssh.SSHClientConnection:
        async with self._connecting.setdefault(node.name, asyncio.Lock()):
            conn = self._connections.get(node.name)
            if conn is not None:
                return conn
            trusted = self.known_hosts.trusted(node)
            if not trusted and not self.accept_new:
                raise HostKeyRefused(
                    f"unknown host key: {node.name} is not in {self.known_hosts.path}; "
                    "check the node, then connect once with --accept-new to record its key"
                )
            options = {
                "port": node.port,
                "known_hosts": (trusted, [], []) if trusted else None,
                "connect_timeout": self.connect_timeout_s,
                "login_timeout": self.connect_timeout_s,
                "keepalive_interval": 15,
                "client_factory": lambda: _Client(self, node.name),
            }
            if node.user:
                options["username"] = node.user
            if node.key_file is not None:
                options["client_keys"] = [str(node.key_file)]
            try:
                conn, _ = await asyncssh.create_connection(host=node.address, **options)
            except asyncssh.HostKeyNotVerifiable:
                raise HostKeyRefused(
                    f"host key CHANGED: {node.name}'s key is not the one recorded in {self.known_hosts.path}; "
                    f"refusing to connect. If the node was reinstalled, remove its entry "
                    f"(ssh-keygen -R {node.address} -f {self.known_hosts.path}) and reconnect with --accept-new"
                ) from None
            if not trusted:
                key = conn.get_server_host_key()
                if key is not None:
                    await self.known_hosts.record(node, key)
            self._connections[node.name] = conn
            return conn

    async def run(
        self,
        node: Node,
        command: str,
        *,
        input: str | bytes | None = None,
        timeout_s: float | None = None,
        binary: bool = False,
    ) -> CommandResult:
        """Run a shell command on one node; connection trouble and timeouts come back as the result's error.
        With `binary`, stdin is bytes and stdout comes back as the result's `data`, untouched."""
        timeout = timeout_s or self.command_timeout_s
        started = time.monotonic()
        async with self._slots:
            try:
                if node.local:
                    status, out, err = await _run_here(command, input, timeout)
                else:
                    status, out, err = await self._run_remote(node, command, input, timeout)
            except Exception as failure:
                return CommandResult(
                    node.name, node.target, command, None, "", "", self._explain(failure, node, timeout),
                    time.monotonic() - started,
                )  # fmt: skip
        elapsed = time.monotonic() - started
        if binary:
            return CommandResult(node.name, node.target, command, status, "", _text(err), None, elapsed, out)
        return CommandResult(node.name, node.target, command, status, _text(out), _text(err), None, elapsed)

    async def _run_remote(
        self, node: Node, command: str, input: str | bytes | None, timeout: float
    ) -> tuple[int, bytes, bytes]:
        for attempt in (1, 2):
            conn = await self._connect(node)
            try:
                stdin = input.encode() if isinstance(input, str) else input
                run = conn.run(command, input=stdin, check=False, encoding=None)
                done = await asyncio.wait_for(run, timeout)
            except asyncssh.ChannelOpenError:
                # the pooled connection died while idle: the command never started, so a fresh one is safe
                self._forget(node.name)
                if attempt == 2:
                    raise
                continue
            status = done.exit_status if done.exit_status is not None else 128 + (_signal_number(done) or 0)
            return status, _bytes(done.stdout), _bytes(done.stderr)
        raise AssertionError("unreachable")

    def _explain(self, failure: BaseException, node: Node, timeout: float) -> str:
        if isinstance(failure, HostKeyRefused):
            return str(failure)
        if isinstance(failure, TimeoutError):
            connected = node.name in self._connections or node.local
            return (
                f"command timed out after {timeout:g} s"
                if connected
                else f"no answer within {self.connect_timeout_s:g} s (connect timeout)"
            )
        if isinstance(failure, socket.gaierror):
            return f"cannot resolve {node.address!r}: {failure.strerror}"
        if isinstance(failure, ConnectionRefusedError):
            return f"connection refused on port {node.port} (is sshd running?)"
        if isinstance(failure, asyncssh.PermissionDenied):
            key = node.key_file or "the default keys and agent"
            return f"permission denied for user {node.user or os.environ.get('USER', '?')} with {key}"
        if isinstance(failure, asyncssh.ConnectionLost):
            return CONNECTION_LOST
        if isinstance(failure, asyncssh.Error):
            return f"ssh: {failure.reason}"
        if isinstance(failure, OSError):
            return f"connect: {failure.strerror or failure}"
        return f"{type(failure).__name__}: {failure}"

    async def run_all(
        self,
        nodes: Iterable[Node],
        command: str,
        *,
        input: str | bytes | None = None,
        timeout_s: float | None = None,
        binary: bool = False,
    ) -> list[CommandResult]:
        """The command on every node at once (bounded by the pool's concurrency), results in the nodes' order."""
        return list(
            await asyncio.gather(
                *(self.run(n, command, input=input, timeout_s=timeout_s, binary=binary) for n in nodes)
            )
        )


def pool_for(
    settings: Settings,
    *,
    accept_new: bool = False,
    connect_timeout_s: float | None = None,
    command_timeout_s: float | None = None,
) -> SshPool:
    """A pool with the configured known_hosts, timeouts and concurrency (a timeout given here wins)."""
    ssh = settings.ssh
    return SshPool(
        settings.known_hosts,
        accept_new=accept_new,
        connect_timeout_s=connect_timeout_s or ssh.connect_timeout_s,
        command_timeout_s=command_timeout_s or ssh.command_timeout_s,
        concurrency=ssh.concurrency,
    )


def shell_argv(
    node: Node, known_hosts: Path, connect_timeout_s: float, command: str | None = None, local_shell: str = "/bin/sh"
) -> list[str]:
    """The command line of a shell on `node` (or of `command` run there) for a person at this terminal: OpenSSH
    with the cockpit's known_hosts only and strict host keys (an unknown or changed key is refused, as the pool
    refuses it), the inventory's user, port and key. A local node gets `local_shell` here, without ssh."""
    if node.local:
        return [local_shell] if command is None else ["/bin/sh", "-c", command]
    argv = ["ssh", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}"]
    argv += ["-o", "GlobalKnownHostsFile=/dev/null", "-o", f"ConnectTimeout={math.ceil(connect_timeout_s)}"]
    argv += ["-p", str(node.port)] + (["-l", node.user] if node.user else [])
    if node.key_file is not None:
        argv += ["-i", str(node.key_file), "-o", "IdentitiesOnly=yes"]
    return [*argv, "--", node.address, *([command] if command is not None else [])]


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _text(data: bytes) -> str:
    return data.decode(errors="replace")


def _bytes(data: str | bytes | None) -> bytes:
    """What asyncssh gives as a stream's output with encoding=None (None when the stream was empty)."""
    if data is None:
        return b""
    return data.encode() if isinstance(data, str) else data


def _signal_number(done: asyncssh.SSHCompletedProcess) -> int | None:
    name = (done.exit_signal or (None,))[0]
    return getattr(signal, f"SIG{name}", None) if name else None


async def _run_here(command: str, input: str | bytes | None, timeout: float) -> tuple[int, bytes, bytes]:
    """The local node: the same shell command without ssh, killed with its process group on timeout."""
    process = await asyncio.create_subprocess_shell(
        command,
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdin = input.encode() if isinstance(input, str) else input
        out, err = await asyncio.wait_for(process.communicate(stdin), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        raise
    return process.returncode or 0, out, err


def group_identical(results: Sequence[CommandResult]) -> list[tuple[str, CommandResult]]:
    """Results folded like `dshbak -c`: nodes with identical output and outcome share one entry, headed by
    their folded names (`node[0-3]`); entries in the order of their first node."""
    groups: dict[tuple[object, ...], list[CommandResult]] = {}
    for result in results:
        groups.setdefault((result.exit_status, result.error, result.stdout, result.stderr), []).append(result)
    return [(fold(r.node for r in members), members[0]) for members in groups.values()]

"""fanout: `uptime` on many sshd endpoints through the cockpit's asyncssh pool, against ClusterShell's `clush`
on the same endpoints in the same run.

The endpoints are real sshd daemons, one per node, on loopback ports (started here, stopped by PID at the end),
in a mount namespace where ~/.bashrc is empty: bash sources it for every command ssh runs, and a heavy one (this
machine's pyenv init costs ~90 ms) would measure the shell, not the fan-out. Both clients see the same endpoints.
Two pairs are compared: a cold run (every connection new: the pool's first round against plain clush) and a
warm run (connections reused: the pool's next round against clush over OpenSSH ControlMaster). The goal: faster
than clush, and a warm round on all nodes under 1.5x one node's round trip. On a small machine every endpoint
shares its cores, so the last ratio also measures the server side forking 64 shells at once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.report import ratio_line, table
from cockpit.nodes.inventory import Node
from cockpit.nodes.nodeset import fold
from cockpit.nodes.ssh import SshPool

PORT_BASE = 22200
Round = tuple[float, list[float], list[float], float]
SSHD = "/usr/sbin/sshd"


def _need_tools() -> str:
    """clush (Debian's clustershell, installed here if missing and root) and sshd; the clush path."""
    if not Path(SSHD).exists():
        raise RuntimeError(f"{SSHD} not found: run scripts/setup test (openssh-server)")
    if shutil.which("clush") is None and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-qq", "clustershell"], env=env, capture_output=True, check=False)
    clush = shutil.which("clush")
    if clush is None:
        raise RuntimeError("clush not found: apt-get install clustershell (the peer of this benchmark)")
    return clush


@contextmanager
def sshd_endpoints(count: int, folder: Path) -> Iterator[list[Node]]:
    """`count` sshd daemons on 127.0.0.1:22200+i, key-only; an ssh_config and known_hosts for both clients."""
    key, host_key = folder / "id_ed25519", folder / "host_ed25519"
    for path in (key, host_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    (folder / "authorized_keys").write_text((folder / "id_ed25519.pub").read_text())
    public = " ".join((folder / "host_ed25519.pub").read_text().split()[:2])
    nodes = [Node(f"bench{i}", "127.0.0.1", PORT_BASE + i, "root", key) for i in range(count)]
    known, config, pidfiles = [], [], []
    for node in nodes:
        sshd_config = folder / f"{node.name}.sshd_config"
        pidfile = folder / f"{node.name}.pid"
        sshd_config.write_text(
            f"Port {node.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {pidfile}\n"
            f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
        )
        known.append(f"[{node.name}]:{node.port},[127.0.0.1]:{node.port} {public}")
        config.append(f"Host {node.name}\n  HostName 127.0.0.1\n  Port {node.port}\n")
        pidfiles.append(pidfile)
    (folder / "known_hosts").write_text("\n".join(known) + "\n")
    (folder / "ssh_config").write_text(
        "".join(config) + f"Host *\n  User root\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {folder / 'known_hosts'}\n  StrictHostKeyChecking yes\n  BatchMode yes\n"
    )
    pids: list[int] = []
    try:
        starts = "; ".join(f"{SSHD} -f {folder / f'{node.name}.sshd_config'}" for node in nodes)
        bashrc = Path.home() / ".bashrc"
        if bashrc.exists():  # bash sources it for every command ssh runs; hide it from the endpoints only
            (folder / "empty_bashrc").write_text("")
            starts = f"mount --bind {folder / 'empty_bashrc'} {bashrc} && {starts}"
        subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", starts], check=True)
        deadline = time.monotonic() + 30
        while len(pids) < count and time.monotonic() < deadline:
            pids = [int(p.read_text()) for p in pidfiles if p.exists() and p.read_text().strip()]
            time.sleep(0.05)
        if len(pids) < count:
            raise RuntimeError(f"only {len(pids)} of {count} sshd endpoints started (logs: {folder})")
        yield nodes
    finally:
        pids = [int(p.read_text()) for p in pidfiles if p.exists() and p.read_text().strip()]
        for pid in pids:
            os.kill(pid, signal.SIGTERM)


def _clush(clush: str, folder: Path, nodes: list[Node], reuse: bool) -> float:
    """One clush round: wall seconds; every node must answer."""
    options = f"-F {folder / 'ssh_config'}"
    if reuse:  # %% because clush reads its options through configparser
        options += f" -o ControlMaster=auto -o ControlPath={folder}/cm-%%p -o ControlPersist=120"
    command = [clush, "-f", str(len(nodes)), "-w", fold(n.name for n in nodes), "-o", options, "-b", "-S", "uptime"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"clush failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return elapsed


async def _ours(pool: SshPool, nodes: list[Node]) -> float:
    started = time.perf_counter()
    results = await pool.run_all(nodes, "uptime")
    elapsed = time.perf_counter() - started
    failed = [r for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} node(s) failed: {failed[0].failure()}")
    return elapsed


async def _round(folder: Path, nodes: list[Node], warm_rounds: int) -> Round:
    """A cold round on a new pool, then warm rounds on all nodes and on one node, interleaved; also the client's
    own CPU seconds per node in a warm round (what the fan-out costs here, apart from the servers)."""
    async with SshPool(folder / "known_hosts", command_timeout_s=120, connect_timeout_s=60) as pool:
        cold = await _ours(pool, nodes)
        warm_all, warm_one, cpu = [], [], 0.0
        for _ in range(warm_rounds):
            started = time.process_time()
            warm_all.append(await _ours(pool, nodes))
            cpu += time.process_time() - started
            warm_one.append(await _ours(pool, nodes[:1]))
    return cold, warm_all, warm_one, cpu / warm_rounds / len(nodes)


def run(quick: bool) -> dict:
    clush = _need_tools()
    count, repeats = (16, 2) if quick else (64, 3)
    with tempfile.TemporaryDirectory(prefix="bench-fanout-", dir="/tmp") as tmp:
        folder = Path(tmp)
        with sshd_endpoints(count, folder) as nodes:
            ours_cold, ours_warm, ours_one, clush_cold, clush_warm, clush_one, cpu = [], [], [], [], [], [], []
            _clush(clush, folder, nodes, reuse=True)  # start the ControlMasters once
            for _ in range(repeats):  # interleaved, so both see the same machine state
                cold, warm_all, warm_one, cpu_per_node = asyncio.run(_round(folder, nodes, warm_rounds=3))
                ours_cold.append(cold)
                cpu.append(cpu_per_node)
                ours_warm += warm_all
                ours_one += warm_one
                clush_cold.append(_clush(clush, folder, nodes, reuse=False))
                clush_warm.append(_clush(clush, folder, nodes, reuse=True))
                clush_one.append(_clush(clush, folder, nodes[:1], reuse=True))
            subprocess.run(
                ["ssh", "-F", str(folder / "ssh_config"), "-O", "exit", "-o", f"ControlPath={folder}/cm-%p", "bench0"],
                capture_output=True,
                check=False,
            )
    med = statistics.median
    figures = {
        "endpoints": count,
        "ours_cold_s": med(ours_cold),
        "ours_warm_s": med(ours_warm),
        "ours_one_node_s": med(ours_one),
        "clush_cold_s": med(clush_cold),
        "clush_warm_s": med(clush_warm),
        "clush_one_node_s": med(clush_one),
        "ours_client_cpu_ms_per_node": med(cpu) * 1000,
        "cores": os.cpu_count(),
    }
    figures["cold_speedup"] = figures["clush_cold_s"] / figures["ours_cold_s"]
    figures["warm_speedup"] = figures["clush_warm_s"] / figures["ours_warm_s"]
    figures["warm_all_over_one"] = figures["ours_warm_s"] / figures["ours_one_node_s"]
    rows = [
        ["asyncssh pool (ours)", figures["ours_cold_s"], figures["ours_warm_s"], figures["ours_one_node_s"]],
        ["clush", figures["clush_cold_s"], figures["clush_warm_s"], figures["clush_one_node_s"]],
    ]
    print(table(["uptime on", f"{count} nodes cold s", f"{count} nodes warm s", "1 node warm s"], rows))
    print(ratio_line(f"cold, {count} nodes", figures["cold_speedup"], "faster than clush", goal=1.0))
    print(ratio_line(f"warm, {count} nodes", figures["warm_speedup"], "faster than clush (ControlMaster)", goal=1.0))
    goal = "met" if figures["warm_all_over_one"] < 1.5 else "NOT met"
    print(f"warm, {count} nodes vs 1 node: {figures['warm_all_over_one']:.2f}x one round trip (goal < 1.5x: {goal})")
    print(
        f"  the client's own CPU: {figures['ours_client_cpu_ms_per_node']:.2f} ms per node per round; the rest is "
        f"the {count} sshd endpoints sharing this machine's {figures['cores']} cores"
    )
    return figures

"""Who launched us and how to join the others: Slurm, PBS, the deepspeed launcher, torchrun, or nothing.

`detect_launch` reads only the environment (like ezpz's scheduler detection), so it is cheap and testable.
`join_world` creates the rendezvous store, agrees on one backend across all ranks (nccl on CUDA, xccl on XPU,
gloo on CPU, gloo for everyone when any rank lacks the device backend), and starts a heartbeat watch so a rank
that dies makes the others stop with its name instead of hanging.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from runtime.schema import InputError

if TYPE_CHECKING:
    import torch.distributed as dist

log = logging.getLogger("runtime")

Launcher = Literal["torchrun", "deepspeed", "slurm", "pbs", "env", "single"]


class LaunchError(InputError):
    """The process cannot find or join its peers."""


@dataclass(frozen=True)
class LaunchInfo:
    launcher: Launcher
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    master_addr: str
    master_port: int
    hostname: str

    def describe(self) -> str:
        return (
            f"{self.launcher}: rank {self.rank}/{self.world_size} (local {self.local_rank}/{self.local_world_size}) "
            f"on {self.hostname}, rendezvous {self.master_addr}:{self.master_port}"
        )


def _int(env: Mapping[str, str], *keys: str, default: int | None = None) -> int:
    for key in keys:
        if key in env:
            try:
                return int(env[key])
            except ValueError:
                raise LaunchError(f"environment: {key}={env[key]!r} is not an integer") from None
    if default is None:
        raise LaunchError(f"environment: none of {', '.join(keys)} is set")
    return default


def expand_hostlist(hostlist: str) -> list[str]:
    """Slurm's compressed host list: 'node[0-2,5],gpu7' -> node0 node1 node2 node5 gpu7; bracket groups may
    be followed by text and by more groups ('rack[1-2]-n[1-2]-ib' -> rack1-n1-ib ... rack2-n2-ib)."""
    try:
        return [host for item in re.findall(r"(?:[^,\[]|\[[^\]]*\])+", hostlist) for host in _expand_item(item)]
    except ValueError:
        raise LaunchError(f"environment: cannot read the Slurm host list {hostlist!r}") from None


def _expand_item(item: str) -> list[str]:
    match = re.match(r"([^\[]*)\[([^\]]*)\](.*)", item)
    if not match:
        return [item]
    prefix, ranges, rest = match.groups()
    numbers = []
    for part in ranges.split(","):
        first, _, last = part.partition("-")
        numbers += [f"{n:0{len(first)}d}" for n in range(int(first), int(last or first) + 1)]
    return [f"{prefix}{n}{tail}" for n in numbers for tail in _expand_item(rest)]


def _tasks_on_node(tasks_per_node: str, node_index: int) -> int:
    """SLURM_STEP_TASKS_PER_NODE ('2(x3),1') -> the task count on node `node_index`."""
    counts: list[int] = []
    for item in tasks_per_node.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", item.strip())
        if not match:
            raise LaunchError(f"environment: cannot read SLURM tasks per node {tasks_per_node!r}")
        counts += [int(match[1])] * int(match[2] or 1)
    return counts[node_index]


def _slurm(env: Mapping[str, str], host: str) -> LaunchInfo:
    job = _int(env, "SLURM_JOB_ID", default=0)
    node_index = _int(env, "SLURM_NODEID", default=0)
    per_node = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or "1"
    # srun inside a batch script is launched from the allocation's first node, where rank 0 runs
    nodes = expand_hostlist(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or host)
    master = env.get("MASTER_ADDR") or env.get("SLURM_LAUNCH_NODE_IPADDR") or nodes[0]
    return LaunchInfo(
        "slurm",
        _int(env, "SLURM_PROCID"),
        _int(env, "SLURM_LOCALID", default=0),
        _int(env, "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"),
        _tasks_on_node(per_node, node_index),
        master,
        _int(env, "MASTER_PORT", default=20000 + job % 20000),
        host,
    )


def _pbs(env: Mapping[str, str], host: str) -> LaunchInfo:
    master = env.get("MASTER_ADDR")
    if not master:
        nodefile = env.get("PBS_NODEFILE", "")
        try:
            with Path(nodefile).open(encoding="utf-8") as handle:
                master = handle.readline().strip()
        except OSError as err:
            raise LaunchError(f"PBS: cannot read PBS_NODEFILE {nodefile!r}: {err.strerror}") from None
    return LaunchInfo(
        "pbs",
        _int(env, "PALS_RANKID", "PMI_RANK", "OMPI_COMM_WORLD_RANK"),
        _int(env, "PALS_LOCAL_RANKID", "MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", default=0),
        _int(env, "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"),
        _int(env, "PALS_LOCAL_SIZE", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", default=1),
        master,
        _int(env, "MASTER_PORT", default=29500),
        host,
    )


def detect_launch(env: Mapping[str, str] | None = None) -> LaunchInfo:
    """Find rank, local rank, world size and rendezvous from whichever launcher started this process."""
    env = os.environ if env is None else env
    host = socket.gethostname()

    def from_torch_env(kind: Launcher, local_size_key: str) -> LaunchInfo:
        return LaunchInfo(
            kind,
            _int(env, "RANK"),
            _int(env, "LOCAL_RANK", default=0),
            _int(env, "WORLD_SIZE"),
            _int(env, local_size_key, default=1),
            env.get("MASTER_ADDR", "127.0.0.1"),
            _int(env, "MASTER_PORT", default=29500),
            host,
        )

    if "TORCHELASTIC_RUN_ID" in env:
        return from_torch_env("torchrun", "LOCAL_WORLD_SIZE")
    if "CROSS_RANK" in env and "LOCAL_SIZE" in env:
        return from_torch_env("deepspeed", "LOCAL_SIZE")
    if "SLURM_PROCID" in env and "SLURM_STEP_ID" in env:
        return _slurm(env, host)
    if "PBS_JOBID" in env and any(k in env for k in ("PALS_RANKID", "PMI_RANK", "OMPI_COMM_WORLD_RANK")):
        return _pbs(env, host)
    if "RANK" in env and "WORLD_SIZE" in env:
        return from_torch_env("env", "LOCAL_WORLD_SIZE")
    return LaunchInfo("single", 0, 0, 1, 1, "127.0.0.1", 0, host)


# Per backend, the variables naming the interface its sockets use: oneCCL's (xccl) key-value store and its
# libfabric TCP transport each read their own. The job script exports them all for the cluster's ranks interface.
INTERFACE_VARS = {
    "gloo": ("GLOO_SOCKET_IFNAME",),
    "nccl": ("NCCL_SOCKET_IFNAME",),
    "xccl": ("CCL_KVS_IFACE", "FI_TCP_IFACE"),
}


def _ipv4_of(probe: socket.socket, name: str) -> str | None:
    """The IPv4 address of interface `name` (None: it has none), asked through any socket."""
    import fcntl
    import struct

    try:
        packed = fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))  # SIOCGIFADDR
    except OSError:
        return None
    return socket.inet_ntoa(packed[20:24])


def interface_address(name: str) -> str | None:
    """The IPv4 address of the local interface `name` (None when it has none or does not exist)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        return _ipv4_of(probe, name)


def interface_towards(address: str) -> str | None:
    """The local network interface whose address this host uses to reach `address` (None if unknown).

    The collectives must use the link the rendezvous is on: on a cluster with USB4 and Ethernet that choice is
    the experiment, and without DNS for node names gloo would otherwise advertise the loopback address.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((socket.gethostbyname(address), 9))  # UDP connect sends nothing; it picks the route
            local = probe.getsockname()[0]
            return next((name for _, name in socket.if_nameindex() if _ipv4_of(probe, name) == local), None)
    except OSError:
        return None


def device_backend(device_type: str) -> str:
    """The collective backend a device wants: nccl on CUDA, xccl on XPU, gloo on CPU."""
    return {"cuda": "nccl", "xpu": "xccl"}.get(device_type, "gloo")


def _backend_available(backend: str) -> bool:
    import torch.distributed as dist

    probe = {"nccl": dist.is_nccl_available, "gloo": dist.is_gloo_available}.get(backend)
    if backend == "xccl":
        probe = getattr(dist, "is_xccl_available", lambda: False)
    return bool(probe and probe())


def connect_store(info: LaunchInfo, timeout_s: float, attempts: int = 3) -> dist.Store:
    """The rendezvous store, with a bounded number of connection attempts inside `timeout_s` in all (waits
    between attempts included). Rank 0 hosts it, except under torchrun, whose agent already serves one."""
    import torch.distributed as dist

    hosts = info.rank == 0 and info.launcher != "torchrun"
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    for attempt in range(1, attempts + 1):
        left = deadline - time.monotonic()
        try:
            return dist.TCPStore(
                info.master_addr,
                info.master_port,
                info.world_size,
                is_master=hosts,
                timeout=timedelta(seconds=max(left / (attempts - attempt + 1), 0.1)),
                wait_for_workers=False,
            )
        except (RuntimeError, OSError) as err:  # DistNetworkError and DistStoreError are RuntimeErrors
            last = err
            if hosts and "address already in use" in str(err).lower():
                raise LaunchError(
                    f"rank 0 cannot listen on {info.master_addr}:{info.master_port}: the port is in use"
                ) from None
            log.warning(
                "rendezvous %s:%s attempt %d/%d failed: %s",
                info.master_addr,
                info.master_port,
                attempt,
                attempts,
                str(err).splitlines()[0],
            )
            if attempt < attempts:
                time.sleep(max(min(2.0**attempt, 5.0, deadline - time.monotonic()), 0.0))
    raise LaunchError(
        f"rank {info.rank}: cannot reach the rendezvous at {info.master_addr}:{info.master_port} (rank 0's host) "
        f"after {attempts} attempts in {timeout_s:g} s: {str(last).splitlines()[0] if last else ''}"
    )


def agree_backend(store: dist.Store, info: LaunchInfo, wanted: str) -> str:
    """Every rank says what it can run; all use `wanted` only if all can, else gloo (logged)."""
    can = wanted if _backend_available(wanted) else "gloo"
    store.set(f"backend/{info.rank}", can)
    store.wait([f"backend/{r}" for r in range(info.world_size)])
    votes = {store.get(f"backend/{r}").decode() for r in range(info.world_size)}
    chosen = wanted if votes == {wanted} else "gloo"
    if chosen != wanted and info.rank == 0:
        log.warning("backend %s is not available on every rank (%s): falling back to gloo", wanted, sorted(votes))
    return chosen


class PeerWatch:
    """Heartbeats through the rendezvous store: a failed or silent peer stops this rank with the peer's name.

    Every rank bumps a counter each `interval_s`; a peer whose counter has not moved for `stale_s` (local clock,
    so no clock sync is needed) is taken for dead, and a peer that recorded a failure is reported with its reason.
    Ranks that finished cleanly record it, so their silence afterwards is not mistaken for a crash.
    """

    def __init__(
        self,
        store: dist.Store,
        info: LaunchInfo,
        on_peer_failure: Callable[[str], None],
        interval_s: float = 0.5,
        stale_s: float = 10.0,
    ) -> None:
        self.store, self.info, self.on_peer_failure = store, info, on_peer_failure
        self.interval_s, self.stale_s = interval_s, stale_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peer-watch", daemon=True)

    def start(self) -> PeerWatch:
        self.store.set(f"host/{self.info.rank}", self.info.hostname)
        self._thread.start()
        return self

    def record_failure(self, reason: str) -> None:
        """Tell the peers why this rank is stopping (best effort: the store may be gone)."""
        with contextlib.suppress(Exception):  # the store may be gone; the caller is already failing
            self.store.set(f"failed/{self.info.rank}", reason[:500])

    def record_done(self) -> None:
        self.store.set(f"done/{self.info.rank}", "1")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _peer(self, rank: int) -> str:
        try:
            host = self.store.get(f"host/{rank}").decode() if self.store.check([f"host/{rank}"]) else "?"
        except Exception:
            host = "?"
        return f"rank {rank} on {host}"

    def _run(self) -> None:
        peers = [r for r in range(self.info.world_size) if r != self.info.rank]
        seen = {r: (-1, time.monotonic()) for r in peers}
        while not self._stop.wait(self.interval_s):
            try:
                self.store.add(f"hb/{self.info.rank}", 1)
                for rank in peers:
                    if self.store.check([f"failed/{rank}"]):
                        reason = self.store.get(f"failed/{rank}").decode()
                        return self.on_peer_failure(f"{self._peer(rank)} failed: {reason}")
                    if self.store.check([f"done/{rank}"]):
                        continue
                    count, since = seen[rank]
                    now_count = self.store.add(f"hb/{rank}", 0)
                    if now_count != count:
                        seen[rank] = (now_count, time.monotonic())
                    elif time.monotonic() - since > self.stale_s:
                        return self.on_peer_failure(f"{self._peer(rank)} stopped responding for {self.stale_s:g} s")
            except Exception as err:
                if self._stop.is_set():
                    return None
                where = f"{self.info.master_addr}:{self.info.master_port}"
                return self.on_peer_failure(f"rank 0 (the rendezvous store at {where}) is gone: {err}")
        return None


@dataclass
class World:
    """This rank's membership: the agreed backend, the rendezvous store and the peer watch."""

    info: LaunchInfo
    backend: str
    store: dist.Store
    watch: PeerWatch
    interface: str | None = None  # what the backend's sockets were told to use (INTERFACE_VARS), and its address
    address: str | None = None

    def finish(self) -> None:
        """Clean end: say so, wait for everyone, then leave (so no peer mistakes our exit for a crash)."""
        import torch.distributed as dist

        self.watch.record_done()
        dist.barrier()
        self.watch.stop()
        dist.destroy_process_group()


def join_world(
    info: LaunchInfo,
    device_type: str,
    rendezvous_timeout_s: float,
    comm_timeout_s: float,
    on_peer_failure: Callable[[str], None],
) -> World:
    """Connect to the rendezvous, agree on a backend, create the default process group, start the watch. The
    backends' sockets use the interface the job script named (INTERFACE_VARS), else the one towards the master;
    the World keeps which, and its address."""
    import torch.distributed as dist

    towards = interface_towards(info.master_addr)
    if towards:
        for var in (var for names in INTERFACE_VARS.values() for var in names):
            if os.environ.setdefault(var, towards) == towards:
                log.info("%s=%s (the interface towards %s)", var, towards, info.master_addr)
    store = connect_store(info, rendezvous_timeout_s)
    backend = agree_backend(store, info, device_backend(device_type))
    dist.init_process_group(
        backend,
        store=dist.PrefixStore("pg", store),
        rank=info.rank,
        world_size=info.world_size,
        timeout=timedelta(seconds=comm_timeout_s),
    )
    named = os.environ.get(INTERFACE_VARS.get(backend, INTERFACE_VARS["gloo"])[0], "")
    interface = named.split(",")[0].lstrip("=") or None  # a list names the first one it uses; NCCL's "=" exact
    watch = PeerWatch(store, info, on_peer_failure).start()
    return World(info, backend, store, watch, interface, interface_address(interface) if interface else None)

"""Launch detection from each launcher's environment, host lists, and joining or failing to join peers."""

from __future__ import annotations

import gc
import re
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import torch.distributed as dist

from runtime import launch
from runtime.launch import (
    LaunchError,
    LaunchInfo,
    PeerWatch,
    _tasks_on_node,
    connect_store,
    detect_launch,
    device_backend,
    expand_hostlist,
    interface_towards,
)
from runtime.local_launch import free_port

TORCHRUN = {
    "TORCHELASTIC_RUN_ID": "x",
    "RANK": "5",
    "LOCAL_RANK": "1",
    "WORLD_SIZE": "8",
    "LOCAL_WORLD_SIZE": "4",
    "MASTER_ADDR": "head",
    "MASTER_PORT": "29400",
}
DEEPSPEED = {
    "CROSS_RANK": "0",
    "CROSS_SIZE": "1",
    "LOCAL_SIZE": "2",
    "RANK": "1",
    "LOCAL_RANK": "1",
    "WORLD_SIZE": "2",
    "MASTER_ADDR": "127.0.0.1",
    "MASTER_PORT": "29501",
}
SRUN = {
    "SLURM_JOB_ID": "21234",
    "SLURM_STEP_ID": "0",
    "SLURM_PROCID": "3",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "1",
    "SLURM_STEP_NUM_TASKS": "4",
    "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
    "SLURM_STEP_NODELIST": "node[01-02]",
    "SLURM_LAUNCH_NODE_IPADDR": "10.0.0.1",
}


def fields(info: LaunchInfo) -> tuple[object, ...]:
    return (info.launcher, info.rank, info.local_rank, info.world_size, info.local_world_size)


def test_torchrun() -> None:
    info = detect_launch(TORCHRUN)
    assert fields(info) == ("torchrun", 5, 1, 8, 4)
    assert (info.master_addr, info.master_port) == ("head", 29400)


def test_deepspeed_launcher() -> None:
    info = detect_launch(DEEPSPEED)
    assert fields(info) == ("deepspeed", 1, 1, 2, 2)
    assert (info.master_addr, info.master_port) == ("127.0.0.1", 29501)


def test_srun_task() -> None:
    info = detect_launch(SRUN)
    assert fields(info) == ("slurm", 3, 1, 4, 2)
    assert (info.master_addr, info.master_port) == ("10.0.0.1", 20000 + 21234 % 20000)


def test_srun_master_falls_back_to_the_first_node_and_yields_to_master_addr() -> None:
    env = {k: v for k, v in SRUN.items() if k != "SLURM_LAUNCH_NODE_IPADDR"}
    assert detect_launch(env).master_addr == "node01"
    info = detect_launch({**SRUN, "MASTER_ADDR": "10.9.9.9", "MASTER_PORT": "5000"})
    assert (info.master_addr, info.master_port) == ("10.9.9.9", 5000)


def test_srun_with_job_level_variables_only() -> None:
    env = {
        "SLURM_STEP_ID": "0",
        "SLURM_PROCID": "0",
        "SLURM_NTASKS": "3",
        "SLURM_TASKS_PER_NODE": "2,1",
        "SLURM_JOB_NODELIST": "gpu[7-8]",
    }
    info = detect_launch(env)
    assert fields(info) == ("slurm", 0, 0, 3, 2)
    assert (info.master_addr, info.master_port) == ("gpu7", 20000)


def test_a_batch_script_is_not_a_rank() -> None:
    """sbatch's own shell has SLURM_PROCID but no step: it is one plain process, not rank 0 of a step."""
    env = {k: v for k, v in SRUN.items() if k != "SLURM_STEP_ID"}
    assert detect_launch(env).launcher == "single"


def test_pbs(tmp_path: Path) -> None:
    nodefile = tmp_path / "nodes"
    nodefile.write_text("x1001\nx1002\n")
    env = {
        "PBS_JOBID": "7.pbs",
        "PALS_RANKID": "2",
        "PALS_LOCAL_RANKID": "0",
        "PMI_SIZE": "4",
        "PALS_LOCAL_SIZE": "2",
        "PBS_NODEFILE": str(nodefile),
    }
    info = detect_launch(env)
    assert fields(info) == ("pbs", 2, 0, 4, 2)
    assert (info.master_addr, info.master_port) == ("x1001", 29500)
    assert detect_launch({**env, "MASTER_ADDR": "x2000"}).master_addr == "x2000"


def test_pbs_without_a_readable_nodefile(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    env = {"PBS_JOBID": "7", "PMI_RANK": "0", "PMI_SIZE": "2", "PBS_NODEFILE": str(missing)}
    with pytest.raises(LaunchError, match=re.escape(f"cannot read PBS_NODEFILE '{missing}'")):
        detect_launch(env)


def test_pbs_job_shell_is_not_a_rank() -> None:
    assert detect_launch({"PBS_JOBID": "7", "PBS_NODEFILE": "/nonexistent"}).launcher == "single"


def test_plain_environment_and_nothing_at_all() -> None:
    info = detect_launch({"RANK": "1", "WORLD_SIZE": "2"})
    assert fields(info) == ("env", 1, 0, 2, 1)
    assert (info.master_addr, info.master_port) == ("127.0.0.1", 29500)
    info = detect_launch({})
    assert fields(info) == ("single", 0, 0, 1, 1)
    assert info.hostname and info.hostname in info.describe()


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"RANK": "one", "WORLD_SIZE": "2"}, "RANK"),
        ({**TORCHRUN, "LOCAL_WORLD_SIZE": "4.0"}, "LOCAL_WORLD_SIZE"),
        ({**DEEPSPEED, "MASTER_PORT": "port"}, "MASTER_PORT"),
        ({**SRUN, "SLURM_PROCID": ""}, "SLURM_PROCID"),
        ({**SRUN, "SLURM_JOB_ID": "1234a"}, "SLURM_JOB_ID"),
        ({"PBS_JOBID": "7", "PMI_RANK": "x", "PMI_SIZE": "2", "MASTER_ADDR": "h"}, "PMI_RANK"),
    ],
)
def test_a_non_integer_is_named(env: dict[str, str], key: str) -> None:
    with pytest.raises(LaunchError, match=f"environment: {key}='.*' is not an integer"):
        detect_launch(env)


def test_a_missing_world_size_is_named() -> None:
    with pytest.raises(LaunchError, match="none of SLURM_STEP_NUM_TASKS, SLURM_NTASKS is set"):
        detect_launch({"SLURM_STEP_ID": "0", "SLURM_PROCID": "0"})


@pytest.mark.parametrize(
    ("hostlist", "hosts"),
    [
        ("node[0-2,5],gpu7", ["node0", "node1", "node2", "node5", "gpu7"]),
        ("n[08-10]", ["n08", "n09", "n10"]),
        ("head", ["head"]),
        ("a[1-2],b[3,5]", ["a1", "a2", "b3", "b5"]),
        ("gpu-node[1-2],cpu-node[003-004]", ["gpu-node1", "gpu-node2", "cpu-node003", "cpu-node004"]),
    ],
)
def test_expand_hostlist(hostlist: str, hosts: list[str]) -> None:
    assert expand_hostlist(hostlist) == hosts


def test_expand_hostlist_with_text_after_a_group() -> None:
    """As Slurm's own `scontrol show hostnames` expands them."""
    assert expand_hostlist("rack[1-2]-ib") == ["rack1-ib", "rack2-ib"]
    assert expand_hostlist("r[1-2]-n[1-2]-ib,login") == ["r1-n1-ib", "r1-n2-ib", "r2-n1-ib", "r2-n2-ib", "login"]


@pytest.mark.parametrize("hostlist", ["node[a-b]", "node[1-x]"])
def test_an_unreadable_hostlist_is_named(hostlist: str) -> None:
    with pytest.raises(LaunchError, match=re.escape(f"cannot read the Slurm host list {hostlist!r}")):
        expand_hostlist(hostlist)


def test_tasks_per_node() -> None:
    assert [_tasks_on_node("2(x3),1", i) for i in range(4)] == [2, 2, 2, 1]
    assert _tasks_on_node("4", 0) == 4
    with pytest.raises(LaunchError, match="tasks per node 'two'"):
        _tasks_on_node("two", 0)


def test_backend_by_device() -> None:
    assert [device_backend(d) for d in ("cuda", "xpu", "cpu", "mps")] == ["nccl", "xccl", "gloo", "gloo"]


def test_interface_towards_loopback() -> None:
    assert interface_towards("127.0.0.1") == "lo"


def info(rank: int, port: int) -> LaunchInfo:
    return LaunchInfo("env", rank, rank, 2, 2, "127.0.0.1", port, f"host{rank}")


def test_unreachable_rendezvous_is_named_in_bounded_time() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(LaunchError, match=f"rank 1: cannot reach the rendezvous at 127.0.0.1:{port}"):
        connect_store(info(1, port), timeout_s=1.5, attempts=2)
    assert time.monotonic() - started < 10  # 1.5 s asked; torch overshoots each attempt by about a second


def test_backoff_only_between_attempts_and_inside_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(launch.time, "sleep", slept.append)
    with pytest.raises(LaunchError, match=r"after 3 attempts in 0\.6 s"):
        connect_store(info(1, free_port()), timeout_s=0.6, attempts=3)
    assert len(slept) == 2 and all(0 <= s <= 0.6 for s in slept)  # none after the last: the error is certain


def test_rank_0_on_a_port_in_use() -> None:
    port = free_port()
    taken = dist.TCPStore("127.0.0.1", port, 1, is_master=True, timeout=timedelta(seconds=5), wait_for_workers=False)
    started = time.monotonic()
    with pytest.raises(LaunchError, match=f"rank 0 cannot listen on 127.0.0.1:{port}: the port is in use"):
        connect_store(info(0, port), timeout_s=1.5, attempts=2)
    assert time.monotonic() - started < 1.5
    del taken


class Watches:
    """Two ranks' peer watches on a real TCPStore; rank 0 reports what it sees."""

    def __init__(self) -> None:
        port = free_port()
        kwargs = {"world_size": 2, "timeout": timedelta(seconds=10), "wait_for_workers": False}
        self.stores = [dist.TCPStore("127.0.0.1", port, is_master=r == 0, **kwargs) for r in range(2)]
        self.reported: list[str] = []
        self.event = threading.Event()

        def seen(reason: str) -> None:
            self.reported.append(reason)
            self.event.set()

        self.watches = [
            PeerWatch(self.stores[r], info(r, port), seen if r == 0 else lambda _: None, interval_s=0.05, stale_s=0.5)
            for r in range(2)
        ]
        for w in self.watches:
            w.start()

    def stop(self) -> None:
        for w in self.watches:
            w.stop()


@pytest.fixture
def watches() -> Iterator[Watches]:
    pair = Watches()
    yield pair
    pair.stop()


def test_a_failed_peer_is_named_with_its_reason(watches: Watches) -> None:
    watches.watches[1].record_failure("CUDA out of memory")
    assert watches.event.wait(5)
    assert watches.reported == ["rank 1 on host1 failed: CUDA out of memory"]


def test_a_silent_peer_is_taken_for_dead(watches: Watches) -> None:
    time.sleep(0.3)
    watches.watches[1].stop()
    assert watches.event.wait(5)
    assert watches.reported == ["rank 1 on host1 stopped responding for 0.5 s"]


def test_a_peer_that_finished_is_not_missed(watches: Watches) -> None:
    watches.watches[1].record_done()
    watches.watches[1].stop()
    assert not watches.event.wait(1.5)
    assert watches.reported == []


def test_a_lost_rendezvous_store_is_named() -> None:
    port = free_port()
    kwargs = {"world_size": 2, "timeout": timedelta(seconds=5), "wait_for_workers": False}
    host = dist.TCPStore("127.0.0.1", port, is_master=True, **kwargs)
    client = dist.TCPStore("127.0.0.1", port, is_master=False, **kwargs)
    reported: list[str] = []
    event = threading.Event()
    watch = PeerWatch(client, info(1, port), lambda m: (reported.append(m), event.set()), interval_s=0.05).start()
    try:
        time.sleep(0.2)
        del host
        gc.collect()
        assert event.wait(5)
        assert reported[0].startswith(f"rank 0 (the rendezvous store at 127.0.0.1:{port}) is gone: ")
    finally:
        watch.stop()

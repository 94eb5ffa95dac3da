"""Launch detection from each launcher's environment, host lists, and joining or failing to join peers."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch.distributed as dist

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

SRUN = {
    "SLURM_JOB_ID": "1234",
    "SLURM_STEP_ID": "0",
    "SLURM_PROCID": "3",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "1",
    "SLURM_STEP_NUM_TASKS": "4",
    "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
    "SLURM_STEP_NODELIST": "node[01-02]",
    "SLURM_LAUNCH_NODE_IPADDR": "10.0.0.1",
}


def test_torchrun() -> None:
    env = {"TORCHELASTIC_RUN_ID": "x", "RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}
    info = detect_launch({**env, "MASTER_ADDR": "head", "MASTER_PORT": "29400"})
    assert (info.launcher, info.rank, info.local_rank, info.world_size, info.local_world_size) == (
        "torchrun",
        5,
        1,
        8,
        4,
    )
    assert (info.master_addr, info.master_port) == ("head", 29400)


def test_deepspeed_launcher() -> None:
    env = {"CROSS_RANK": "0", "LOCAL_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}
    info = detect_launch({**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"})
    assert (info.launcher, info.rank, info.local_world_size) == ("deepspeed", 1, 2)


def test_srun_task() -> None:
    info = detect_launch(SRUN)
    assert (info.launcher, info.rank, info.local_rank, info.world_size, info.local_world_size) == ("slurm", 3, 1, 4, 2)
    assert (info.master_addr, info.master_port) == ("10.0.0.1", 20000 + 1234)


def test_srun_master_falls_back_to_the_first_node_and_yields_to_master_addr() -> None:
    env = {k: v for k, v in SRUN.items() if k != "SLURM_LAUNCH_NODE_IPADDR"}
    assert detect_launch(env).master_addr == "node01"
    assert detect_launch({**env, "MASTER_ADDR": "10.9.9.9", "MASTER_PORT": "5000"}).master_addr == "10.9.9.9"


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
        "PMI_SIZE": "4",
        "PALS_LOCAL_SIZE": "2",
        "PBS_NODEFILE": str(nodefile),
    }
    info = detect_launch(env)
    assert (info.launcher, info.rank, info.world_size, info.master_addr) == ("pbs", 2, 4, "x1001")


def test_pbs_without_a_readable_nodefile(tmp_path: Path) -> None:
    env = {"PBS_JOBID": "7", "PMI_RANK": "0", "PMI_SIZE": "2", "PBS_NODEFILE": str(tmp_path / "missing")}
    with pytest.raises(LaunchError, match=r"cannot read PBS_NODEFILE .*missing"):
        detect_launch(env)


def test_plain_environment_and_nothing_at_all() -> None:
    assert detect_launch({"RANK": "1", "WORLD_SIZE": "2"}).launcher == "env"
    info = detect_launch({})
    assert (info.launcher, info.rank, info.world_size) == ("single", 0, 1)


def test_a_non_integer_is_named() -> None:
    with pytest.raises(LaunchError, match="RANK='one' is not an integer"):
        detect_launch({"RANK": "one", "WORLD_SIZE": "2"})


@pytest.mark.parametrize(
    ("hostlist", "hosts"),
    [
        ("node[0-2,5],gpu7", ["node0", "node1", "node2", "node5", "gpu7"]),
        ("n[08-10]", ["n08", "n09", "n10"]),
        ("head", ["head"]),
        ("a[1-2],b[3,5]", ["a1", "a2", "b3", "b5"]),
    ],
)
def test_expand_hostlist(hostlist: str, hosts: list[str]) -> None:
    assert expand_hostlist(hostlist) == hosts


def test_tasks_per_node() -> None:
    assert [_tasks_on_node("2(x3),1", i) for i in range(4)] == [2, 2, 2, 1]
    with pytest.raises(LaunchError, match="tasks per node"):
        _tasks_on_node("two", 0)


def test_backend_by_device() -> None:
    assert [device_backend(d) for d in ("cuda", "xpu", "cpu")] == ["nccl", "xccl", "gloo"]


def test_interface_towards_loopback() -> None:
    assert interface_towards("127.0.0.1") == "lo"


def info(rank: int, port: int) -> LaunchInfo:
    return LaunchInfo("env", rank, rank, 2, 2, "127.0.0.1", port, f"host{rank}")


def test_unreachable_rendezvous_is_named_in_bounded_time() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(LaunchError, match=f"rank 1: cannot reach the rendezvous at 127.0.0.1:{port}"):
        connect_store(info(1, port), timeout_s=1.5, attempts=2)
    assert time.monotonic() - started < 15


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
def watches() -> Watches:
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

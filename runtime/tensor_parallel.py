"""Tensor parallelism by DeepSpeed AutoTP, inside one pipeline stage.

AutoTP is always given an `mpu` naming the stage's own TP group: without it DeepSpeed builds a group of ranks
0..tp-1, which is wrong for every stage but the first in a hybrid TP x PP run.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from runtime.checkpoint import Stage
from runtime.generate import Timers
from runtime.launch import LaunchInfo
from runtime.topology import Topology

# the name DeepSpeed's shm.cpp gives a rank's all-reduce workspace (under /dev/shm)
SHM_WORKSPACE = "deepspeed_allreduce_buffer_{uid}_{addr}_{port}_{rank}"


class StageMPU:
    """The model-parallel unit DeepSpeed asks for: this stage's TP group."""

    def __init__(self, group: dist.ProcessGroup, size: int) -> None:
        self.group, self.size = group, size

    def get_model_parallel_group(self) -> dist.ProcessGroup:
        return self.group

    def get_model_parallel_rank(self) -> int:
        return dist.get_rank(group=self.group)

    def get_model_parallel_world_size(self) -> int:
        return self.size


def tp_groups(topo: Topology) -> dist.ProcessGroup | None:
    """Create every TP group (a collective call: all ranks, same order) and return this rank's."""
    mine = None
    for ranks in topo.all_tp_groups():
        group = dist.new_group(ranks)
        if topo.rank in ranks:
            mine = group
    return mine


def uses_shared_memory_allreduce(topo: Topology, info: LaunchInfo, device_type: str) -> bool:
    """DeepSpeed's CPU shared-memory all-reduce ignores its group and spans the whole (local) world, so it is
    right only when the TP group is the entire world and every rank is on this machine."""
    return device_type == "cpu" and topo.tp_size == info.world_size and info.local_world_size == info.world_size


def release_shm_workspace(info: LaunchInfo) -> None:
    """DeepSpeed's CPU all-reduce gives each rank of a one-machine world a 66 MB /dev/shm segment at init and never
    unlinks it: every such run left its segments behind, until memory ran out. Init returns once this rank has
    mapped every peer's segment; after a barrier (all have) each rank unlinks its own name, and the memory goes
    when the last rank exits, however it ends."""
    name = SHM_WORKSPACE.format(
        uid=os.getuid(), addr=os.environ.get("MASTER_ADDR", ""), port=os.environ.get("MASTER_PORT", ""), rank=info.rank
    )
    dist.barrier()
    (Path("/dev/shm") / name).unlink(missing_ok=True)


def init_deepspeed_comm(topo: Topology, info: LaunchInfo, device_type: str) -> bool:
    """Wrap the existing process group in DeepSpeed's comm layer; returns whether the SHM all-reduce is used."""
    import deepspeed
    from deepspeed.comm import comm as ds_comm

    os.environ["LOCAL_SIZE"] = str(info.local_world_size)  # the SHM op reads it to decide it is single-node
    deepspeed.init_distributed(dist_backend=dist.get_backend())
    release_shm_workspace(info)
    shm = uses_shared_memory_allreduce(topo, info, device_type)
    if not shm and getattr(ds_comm.cdb, "shm_vector_kernel_level", 0):
        ds_comm.cdb.shm_vector_kernel_level = 0  # private in 0.19.8: forces the process-group all-reduce
    return shm


def shard_stage(stage: Stage, group: dist.ProcessGroup, tp_size: int, dtype: torch.dtype | None) -> Stage:
    """Slice the stage's linear layers across its TP group with AutoTP, then cast to the run's precision (None:
    keep the stored dtype, for a stage whose slices are quantized next).

    DeepSpeed is given the weights' own dtype so it does not cast the full tensors first; casting after the
    slicing touches only this rank's share.
    """
    import deepspeed

    stored = next(stage.model.parameters()).dtype
    engine = deepspeed.init_inference(
        stage.model,
        # both: the mpu makes the engine skip building its own group of ranks 0..tp-1; tp_group is what the
        # layer replacement actually reads (0.19.8 does not take it from the mpu, and without it slices nothing)
        tensor_parallel={"tp_size": tp_size, "tp_group": group, "mpu": StageMPU(group, tp_size)},
        dtype=stored,
        replace_with_kernel_inject=False,
    )
    stage.model = engine.module.to(dtype) if dtype is not None else engine.module
    return stage


@contextlib.contextmanager
def timed_allreduce(timers: Timers) -> Iterator[None]:
    """While inside, count (and, profiled, mark) the time AutoTP's layers spend in all-reduce; the original
    function is back on the way out, however the block ends.

    AutoTP's row-parallel layers (LinearAllreduce, LmHeadLinearAllreduce) call deepspeed.comm.inference_all_reduce
    from inside their forward, between their matmul and their bias, so a hook on those layers would time the
    matmul too: the wrapper goes where they look the function up, for this block only.
    """
    import deepspeed.comm

    inner = deepspeed.comm.inference_all_reduce

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            with timers.span("all_reduce"):
                return inner(*args, **kwargs)
        finally:
            timers.comm_s += time.perf_counter() - start

    deepspeed.comm.inference_all_reduce = timed
    try:
        yield
    finally:
        deepspeed.comm.inference_all_reduce = inner


def reduce_output(layer: nn.Module, group: dist.ProcessGroup) -> nn.Module:
    """Make `layer` row-parallel: its output, a partial sum over this rank's input slice, is summed across the TP
    group after the layer, and its bias (replicated) added once, after the sum. The all-reduce is looked up in
    deepspeed.comm at each call, as AutoTP's own layers do, so `timed_allreduce` counts it."""
    import deepspeed.comm

    bias = getattr(layer, "bias", None)
    if bias is not None:
        layer.bias = None

    def all_reduce(_layer: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        deepspeed.comm.inference_all_reduce(output, group=group)
        return output if bias is None else output + bias

    layer.register_forward_hook(all_reduce)
    return layer


def slice_input(layer: nn.Module, start: int, size: int) -> nn.Module:
    """Feed `layer` only features [start, start + size) of its input: a row-parallel layer whose input is whole
    (the LM head after the last norm)."""

    def narrow(_layer: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (inputs[0].narrow(-1, start, size), *inputs[1:])

    layer.register_forward_pre_hook(narrow)
    return layer

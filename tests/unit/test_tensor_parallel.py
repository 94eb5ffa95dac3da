"""The all-reduce timing of a TP rank: counted and marked inside its scope, DeepSpeed's own function outside it."""

from __future__ import annotations

import time

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from runtime.generate import Timers
from runtime.tensor_parallel import timed_allreduce

deepspeed_comm = pytest.importorskip("deepspeed.comm")


def test_autotp_layers_look_the_all_reduce_up_where_the_scope_wraps_it() -> None:
    from deepspeed.module_inject import layers

    assert layers.dist is deepspeed_comm  # LinearAllreduce and LmHeadLinearAllreduce call dist.inference_all_reduce


def test_inside_the_scope_all_reduce_time_is_counted_and_marked(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def slow_all_reduce(tensor: torch.Tensor, group: object = None) -> str:
        calls.append(group)
        time.sleep(0.02)
        return "reduced"

    monkeypatch.setattr(deepspeed_comm, "inference_all_reduce", slow_all_reduce)
    timers = Timers(enabled=True, marked=True)
    with profile(activities=[ProfilerActivity.CPU]) as recorded, timed_allreduce(timers):
        assert deepspeed_comm.inference_all_reduce is not slow_all_reduce
        assert deepspeed_comm.inference_all_reduce(torch.ones(2), group="tp") == "reduced"
    assert calls == ["tp"] and timers.comm_s >= 0.02
    assert "all_reduce" in {event.name for event in recorded.events()}
    assert deepspeed_comm.inference_all_reduce is slow_all_reduce  # what was there before is back


def test_deepspeeds_function_is_back_however_the_scope_ends() -> None:
    original = deepspeed_comm.inference_all_reduce
    with pytest.raises(RuntimeError, match="decode failed"), timed_allreduce(Timers(enabled=True)):
        raise RuntimeError("decode failed")
    assert deepspeed_comm.inference_all_reduce is original

"""A straggler made for real: TP 2 in one node, each rank pinned to a CPU of its own, and in one run busy loops
sharing rank 1's CPU. The collector's figures name rank 1 as the straggler there, and nobody in the run where the
ranks share a CPU alike.

The model is wider than the built-in one (hidden 1024, 4 layers: about 110 MB of weights per rank), so a forward
step takes several milliseconds, longer than the scheduler's time slice: the built-in model's step (about 1 ms with
the static cache) fits between two preemptions, and its median step did not move however busy its CPU was. A slow
device (a hotter GPU, a slower board) slows every step; so does sharing a CPU once a step outlasts a slice."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from cockpit.analysis.stragglers import straggler
from cockpit.sweep.collect import ResultCollector
from cockpit.sweep.strategies import STRATEGIES, SweepSettings
from runtime.local_launch import local_command, local_env
from runtime.outputs import last_progress
from tests.integration import runs

pytestmark = pytest.mark.slow
CPUS = sorted(os.sched_getaffinity(0))


def descendants(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in map(int, (task / "children").read_text().split()):
            children += [child, *descendants(child)]
    return children


def pin_rank(launcher: int, rank: int, cpu: int) -> None:
    """Every thread of the rank's process (found by its RANK variable) onto `cpu`; threads it starts later follow."""
    for pid in descendants(launcher):
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            for thread in Path(f"/proc/{pid}/task").iterdir():
                os.sched_setaffinity(int(thread.name), {cpu})
            return
    raise AssertionError(f"no process of rank {rank} under the launcher {launcher}")


@contextmanager
def busy_loop(cpu: int) -> Iterator[None]:
    spin = f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True:\n    pass\n"
    process = subprocess.Popen([sys.executable, "-c", spin])
    try:
        yield
    finally:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def wide_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random model of the built-in family, wide enough that one TP-2 step takes several milliseconds."""
    from transformers import AutoTokenizer

    from runtime.tiny_model import TinyShape, build_model

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    shape = TinyShape(hidden_size=1024, intermediate_size=2816, num_attention_heads=16, num_key_value_heads=8)
    out = tmp_path_factory.mktemp("models") / "wide-llama"
    build_model(tokenizer, shape, seed=0).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def run_pinned(run_dir: Path, model: Path, name: str, slowed: bool) -> dict:
    """TP 2 on this machine, once both ranks are loading: slowed, rank 0 on the first CPU and rank 1 on the second
    with two busy loops (about half of it, as measured), started before the launch; else both ranks on the second
    CPU, sharing it alike (CPUs of their own would compare the first CPU's interrupts and other processes with the
    second's quiet). The metrics row."""
    settings = SweepSettings("tiny-llama", str(model), name, "test", run_dir, run_dir / "prompts.parquet", 1, 2)
    strategy = STRATEGIES["tp_node"](settings)
    config = runs.write_config(run_dir, model, strategy.strategy_id, tp=2, max_new_tokens=32, repeats=3)
    command = local_command("torchrun", 2, "runtime", "--config", str(config), "--skip-calibration")
    with contextlib.ExitStack() as loops:
        for _ in range(2 if slowed else 0):
            loops.enter_context(busy_loop(CPUS[1]))
        launcher = subprocess.Popen(command, env=local_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        loops.enter_context(launcher)
        progress = [config.parent / "progress" / f"progress_rank_{rank}.jsonl" for rank in (0, 1)]
        deadline = time.monotonic() + 120
        while not all((line := last_progress(path)) and line.phase != "starting" for path in progress):
            assert launcher.poll() is None and time.monotonic() < deadline, "the ranks never started loading"
            time.sleep(0.05)  # waiting on the ranks' own heartbeats
        for rank in (0, 1):
            pin_rank(launcher.pid, rank, CPUS[rank] if slowed else CPUS[1])
        _, stderr = launcher.communicate(timeout=300)
        assert launcher.returncode == 0, stderr.decode()[-4000:]
    prompts = pd.read_parquet(run_dir / "prompts.parquet")
    return ResultCollector(prompts, run_dir / "results", name, "test").collect(strategy).metrics


@pytest.mark.skipif(len(CPUS) < 2, reason="pinning two ranks apart needs two CPUs")
def test_a_rank_sharing_its_cpu_with_a_busy_loop_is_named_and_equal_ranks_are_not(
    run_dir: Path, wide_model_dir: Path
) -> None:
    slowed = straggler(run_pinned(run_dir, wide_model_dir, "slowed", slowed=True))
    assert slowed is not None and slowed.rank == 1, slowed
    assert slowed.sentence().startswith("slowed_pp1_tp2_n1: rank 1 (")  # one host: the rank is named, not a node
    assert slowed.without_tokens_per_s > slowed.tokens_per_s
    assert straggler(run_pinned(run_dir, wide_model_dir, "even", slowed=False)) is None

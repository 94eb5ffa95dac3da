"""When things go wrong: a rank that dies, and bad input. Each ends in one clear error and a non-zero exit,
in bounded time, with every line already written still whole."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.local_launch import free_port, local_env
from tests.integration import runs


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    runs.write_prompt_table(tmp_path / "prompts.parquet")
    return tmp_path


def env_rank(config: Path, rank: int, world: int, port: int, *args: str) -> subprocess.Popen[str]:
    """One rank started by hand, the way a launcher we do not know would: RANK/WORLD_SIZE/MASTER_*."""
    env = local_env(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    command = [sys.executable, "-m", "runtime", "--config", str(config), *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def last_progress(config: Path, rank: int) -> dict:
    path = config.parent / f"progress/progress_rank_{rank}.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1]) if lines else {}


def wait_for_rows(config: Path, owner: int, procs: list[subprocess.Popen[str]], timeout: float = 120) -> None:
    """Until the result-owning rank has written rows: every rank is then past loading, mid-run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if last_progress(config, owner).get("rows_written", 0) > 0:
            return
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.2)
    for p in procs:
        p.kill()
    pytest.fail("the ranks never got to writing rows:\n" + "\n".join(p.communicate()[1][-3000:] for p in procs))


def assert_whole_lines(path: Path) -> None:
    text = path.read_text()
    assert text.endswith("\n"), f"{path} ends in a partial line"
    for line in text.splitlines():
        json.loads(line)


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0], ids=["last-stage-dies", "rank0-with-the-store-dies"])
def test_a_dead_rank_is_named_by_the_survivor(run_dir: Path, tiny_model_dir: Path, victim: int) -> None:
    runs.write_prompt_table(run_dir / "prompts.parquet", runs.PROMPTS * 500)  # long enough to be killed mid-run
    config = runs.write_config(run_dir, tiny_model_dir, "tiny_pp2", pp=2, nodes=2, batch_size=1)
    port = free_port()
    procs = [env_rank(config, rank, 2, port) for rank in range(2)]
    wait_for_rows(config, 1, procs)

    procs[victim].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    survivor = procs[1 - victim]
    try:
        _, stderr = survivor.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        survivor.kill()
        pytest.fail(f"rank {1 - victim} still running 60 s after rank {victim} was killed")
    procs[victim].wait()

    assert survivor.returncode == 1, stderr[-3000:]
    assert time.monotonic() - killed_at < 30
    assert f"rank {victim}" in stderr
    progress = last_progress(config, 1 - victim)
    assert progress["phase"] == "failed" and f"rank {victim}" in progress["message"]
    assert_whole_lines(config.parent / "outputs/shard_1.jsonl")
    assert_whole_lines(config.parent / f"progress/progress_rank_{1 - victim}.jsonl")


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if " ERROR " in line]


def test_missing_checkpoint_folder(run_dir: Path) -> None:
    config = runs.write_config(run_dir, run_dir / "no-such-model", "reference")
    done = runs.single(config)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    (line,) = error_lines(done)
    assert f"{run_dir / 'no-such-model'}: no config.json" in line
    assert (config.parent / "logs/rank_0.log").read_text().splitlines() == [line]  # the rank's own log: the same


def test_missing_weights_file(run_dir: Path, tiny_model_dir: Path) -> None:
    model = run_dir / "model"
    model.mkdir()
    for item in tiny_model_dir.iterdir():
        if item.name != "model.safetensors":
            (model / item.name).write_bytes(item.read_bytes())
    config = runs.write_config(run_dir, model, "reference")
    done = runs.single(config)
    assert done.returncode == 2, runs.describe_failure(done)
    assert "Traceback" not in done.stderr
    assert f"{model}: no model.safetensors" in done.stderr
    assert last_progress(config, 0)["phase"] == "failed"
    assert (config.parent / "outputs/shard_0.jsonl").read_text() == ""  # nothing half-written
    assert not (config.parent / "metrics").exists()


def test_tp_size_that_does_not_divide_the_heads(run_dir: Path, tiny_model_dir: Path) -> None:
    config = runs.write_config(run_dir, tiny_model_dir, "tiny_tp3", tp=3)
    # the size check comes before the rendezvous: one rank fails alone, no peers needed
    done = runs.run([sys.executable, "-m", "runtime", "--config", str(config)], RANK="0", WORLD_SIZE="3")
    assert done.returncode == 2
    (line,) = error_lines(done)
    assert "tp_size 3 does not divide the model's 8 attention heads and 4 key/value heads" in line


def test_pp_size_beyond_the_layers(run_dir: Path, tiny_model_dir: Path) -> None:
    config = runs.write_config(run_dir, tiny_model_dir, "tiny_pp8", pp=8, nodes=8)
    done = runs.run([sys.executable, "-m", "runtime", "--config", str(config)], RANK="0", WORLD_SIZE="8")
    assert done.returncode == 2
    assert "pp_size 8 exceeds the model's 4 layers" in done.stderr


def test_world_size_that_does_not_match_the_launcher(run_dir: Path, tiny_model_dir: Path) -> None:
    config = runs.write_config(run_dir, tiny_model_dir, "tiny_tp2", tp=2)
    done = runs.single(config)
    assert done.returncode == 2
    (line,) = error_lines(done)
    assert f"{config}: world_size 2 (tp*pp*dp) but single started 1 process(es)" in line


def test_unreachable_master(run_dir: Path, tiny_model_dir: Path) -> None:
    config = runs.write_config(run_dir, tiny_model_dir, "tiny_tp2", tp=2)
    port = free_port()  # nobody listens there
    started = time.monotonic()
    proc = env_rank(config, 1, 2, port, "--rendezvous-timeout", "3")
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2, stderr[-3000:]
    assert time.monotonic() - started < 30
    assert f"rank 1: cannot reach the rendezvous at 127.0.0.1:{port}" in stderr
    assert "Traceback" not in stderr
    assert last_progress(config, 1)["phase"] == "failed"


def test_dry_run_prints_the_topology_and_touches_nothing(run_dir: Path, tiny_model_dir: Path) -> None:
    config = runs.write_config(run_dir, tiny_model_dir, "tiny_pp2_tp2", tp=2, pp=2, nodes=2)
    done = runs.run(
        [sys.executable, "-m", "runtime", "--config", str(config), "--dry-run"],
        RANK="3",
        WORLD_SIZE="4",
        LOCAL_WORLD_SIZE="2",
        LOCAL_RANK="1",
    )
    assert done.returncode == 0, runs.describe_failure(done)
    assert done.stdout.splitlines()[1:] == [
        "rank 3/4: tp 1/2 pp 1/2 dp 0/1: tp group [2, 3], pipeline [1, 3], replicas [3], owns results: False",
        "stage 1: layers 2-3 of 4",
    ]
    assert done.stdout.startswith("env: rank 3/4 (local 1/2) on ")
    assert sorted(p.name for p in config.parent.iterdir()) == ["exp_config.json"]


def test_the_deepspeed_entry_script_takes_the_launchers_local_rank(run_dir: Path, tiny_model_dir: Path) -> None:
    config = runs.write_config(run_dir, tiny_model_dir, "reference")
    shim = Path(__file__).resolve().parents[2] / "runtime/run_distributed_inference.py"
    done = runs.run([sys.executable, str(shim), "--local_rank=0", "--config", str(config), "--dry-run"])
    assert done.returncode == 0, runs.describe_failure(done)
    assert "stage 0: layers 0-3 of 4" in done.stdout

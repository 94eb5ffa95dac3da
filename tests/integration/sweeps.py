"""Helpers for sweep tests: a cockpit.toml with small prompt files, the `cluster` command, and what to expect."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from cockpit.config import load_settings
from cockpit.errors import BAD_INPUT
from cockpit.sweep.manifest import Manifest
from runtime.local_launch import local_env
from tests.integration import runs

REPO = Path(__file__).resolve().parents[2]
# two prompts per variant, ids aligned; the 4k variant says more, as the real sets do
PROMPT_FILES = {
    "2k": [(1, runs.PROMPTS[0]), (2, runs.PROMPTS[1])],
    "4k": [(1, runs.PROMPTS[0] + " " + runs.PROMPTS[3]), (2, runs.PROMPTS[1] + " " + runs.PROMPTS[2])],
}
MAX_NEW_TOKENS = 6


def write_config(
    tmp: Path,
    model: Path,
    *,
    scheduler: str = "local",
    nodes: int = 2,
    gpus_per_node: int = 2,
    max_new_tokens: int = MAX_NEW_TOKENS,
    extra: str = "",
    paths: str = "",
    precision: str = "fp32",
) -> Path:
    """A cockpit.toml for a sweep of the test prompts; `extra` adds lines to [cluster] and further tables,
    `paths` to [paths]."""
    for variant, prompts in PROMPT_FILES.items():
        text = "".join(f"@@@ prompt {pid}: p{pid}\n{prompt}\n" for pid, prompt in prompts)
        (tmp / f"prompts_{variant}.txt").write_text(f"# {variant} test prompts\n{text}")
    config = tmp / "cockpit.toml"
    config.write_text(
        f"""
[cluster]
scheduler = "{scheduler}"
{extra}
[paths]
data_dir = "{tmp / "data"}"
{paths}
[model]
path = "{model}"
[sweep]
prompt_files = {{ "2k" = "prompts_2k.txt", "4k" = "prompts_4k.txt" }}
prompts_per_file = 2
nodes = {nodes}
gpus_per_node = {gpus_per_node}
batch_size = 4
max_new_tokens = {max_new_tokens}
precision = "{precision}"
device = "cpu"
time_limit = "00:05:00"
[refresh]
squeue_max_s = 1.0  # a job's end seen within a second, as the sweeps here are short
"""
    )
    return config


def command(config: Path, *args: str) -> list[str]:
    return [sys.executable, str(REPO / "cluster.py"), "--config", str(config), *args]


def cluster(config: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(config, *args), env=local_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def start(config: Path, *args: str) -> subprocess.Popen[str]:
    """`cluster ...` in the background, in its own session (signals reach it alone)."""
    return subprocess.Popen(
        command(config, *args),
        env=local_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def run_dir(config: Path) -> Path:
    (found,) = load_settings(config).runs_dir.glob("run_*")
    return found


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except (OSError, ValueError, *BAD_INPUT):  # a run folder, or its manifest, may not exist yet
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def entries(run: Path) -> list:
    return list(Manifest.load(run).strategies.values())


def expected_tokens(
    model: Path, max_new_tokens: int = MAX_NEW_TOKENS, precision: str = "fp32"
) -> dict[tuple[str, int], list[int]]:
    """HF `generate` on the prompt table's rows, in the table's order and batches (its linears quantized as the
    runtime quantizes them at int8/int4): every strategy's target."""
    keys = [(variant, pid) for variant, prompts in PROMPT_FILES.items() for pid, _ in prompts]
    texts = [text for prompts in PROMPT_FILES.values() for _, text in prompts]
    tokens = runs.hf_reference(model, texts, max_new_tokens=max_new_tokens, batch_size=4, precision=precision)
    return {key: tokens[i] for i, key in enumerate(keys)}


def results(run: Path) -> pd.DataFrame:
    (path,) = (run / "results").glob("run_*.parquet")
    return pd.read_parquet(path)


def assert_parity(run: Path, expected: dict[tuple[str, int], list[int]], strategies: int) -> None:
    """Every strategy decoded every prompt of both variants, token for token as single-process HF."""
    table = results(run)
    assert table["strategy"].nunique() == strategies
    for strategy, rows in table.groupby("strategy"):
        got = {(r.variant, r.prompt_id): list(r.token_ids) for r in rows.itertuples()}
        assert got == expected, f"{strategy} differs from the single-process reference"


def status(config: Path, run: Path) -> dict:
    done = cluster(config, "sweep", "status", str(run), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)

"""The entry points as a user meets them: exit codes, one-line errors, --json, --debug."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, cwd: Path, entry: str = "cluster.py") -> subprocess.CompletedProcess[str]:
    target = [str(REPO / entry)] if entry.endswith(".py") else ["-m", entry]
    command = [sys.executable, *target, *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)


GOOD = {
    "strategy_id": "tiny_tp2",
    "run_id": "r1",
    "model_name": "tiny-llama",
    "model_path": "model",
    "prompt_df_path": "prompts.parquet",
    "output_root": ".",
    "num_nodes": 1,
    "gpus_per_node": 2,
    "tp_size": 2,
    "pp_size": 1,
}


def test_config_json_on_the_embedded_default(isolated_home: Path) -> None:
    done = run("config", "--json", cwd=isolated_home)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["scheduler"] == "local" and info["inventory"] == "this machine (localhost)"
    assert info["source"].startswith("embedded default")


def test_check_good_and_bad_files(isolated_home: Path) -> None:
    (isolated_home / "exp_config.json").write_text(json.dumps(GOOD))
    (isolated_home / "bad.json").write_text(json.dumps({**GOOD, "world_size": 3}))
    (isolated_home / "cockpit.toml").write_text('[cluster]\nscheduler = "slurm"\n[paths]\nrun_storage = "staged"\n')
    ok = run("check", "exp_config.json", "cockpit.toml", cwd=isolated_home)
    assert ok.returncode == 0, ok.stderr
    assert "cockpit.toml: ok (cluster 'local', scheduler slurm, run folders staged)" in ok.stdout
    assert "exp_config.json: ok (tiny_tp2: tp=2 pp=1 dp=1, 1 node(s) x 2)" in ok.stdout
    bad = run("--json", "check", "exp_config.json", "bad.json", cwd=isolated_home)
    assert bad.returncode == 2
    report = json.loads(bad.stdout)
    assert [f["ok"] for f in report["files"]] == [True, False]
    assert report["files"][1]["message"] == "bad.json: world_size: expected pp_size*tp_size*dp_size = 1*2*1 = 2, got 3"
    (isolated_home / "nfs.toml").write_text('[paths]\nrun_storage = "nfs"\n')
    wrong = run("check", "nfs.toml", cwd=isolated_home)
    assert wrong.returncode == 2 and "nfs.toml: paths.run_storage: expected one of" in wrong.stderr


@pytest.mark.parametrize("entry", ["cluster.py", "cockpit.tui.main"])
def test_malformed_config_is_one_line_exit_2(isolated_home: Path, entry: str) -> None:
    (isolated_home / "cockpit.toml").write_text('[refresh]\nnodes_s = "fast"\n')
    args = ["config"] if entry == "cluster.py" else []
    done = run(*args, cwd=isolated_home, entry=entry)
    assert done.returncode == 2
    prog = "cluster" if entry == "cluster.py" else "cockpit"
    assert done.stderr == f"{prog}: {isolated_home / 'cockpit.toml'}: refresh.nodes_s: expected number, got 'fast'\n"
    assert done.stdout == ""


def test_debug_shows_the_traceback(isolated_home: Path) -> None:
    (isolated_home / "cockpit.toml").write_text("[cluster\n")
    done = run("--debug", "config", cwd=isolated_home)
    assert done.returncode != 0
    assert "Traceback" in done.stderr and "SchemaError" in done.stderr


def test_usage_errors_exit_2(isolated_home: Path) -> None:
    done = run("frobnicate", cwd=isolated_home)
    assert done.returncode == 2 and "invalid choice: 'frobnicate'" in done.stderr
    done = run("sweep", "run", "--profile", "torch,vtune", cwd=isolated_home)
    assert done.returncode == 2 and "expected some of torch, nsys, perf, got 'torch,vtune'" in done.stderr


def test_build_tiny_refuses_to_overwrite(isolated_home: Path) -> None:
    existing = isolated_home / "model"
    existing.mkdir()
    done = run("model", "build-tiny", str(existing), cwd=isolated_home)
    assert done.returncode == 0
    assert "already built (use --force to rebuild)" in done.stdout
    assert list(existing.iterdir()) == []


def test_cluster_py_on_a_python_without_the_packages(isolated_home: Path) -> None:
    """`python3 -S` has no site-packages, as a bare system Python: with no `.venv` beside the script it says what to
    run; with one, the script runs itself again there (the stand-in `.venv`'s Python records that it ran)."""
    checkout = isolated_home / "checkout"
    checkout.mkdir()
    shutil.copy(REPO / "cluster.py", checkout)
    for package in ("cockpit", "runtime"):
        (checkout / package).symlink_to(REPO / package)
    bare = [sys.executable, "-S", str(checkout / "cluster.py"), "config", "--json"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(bare, cwd=isolated_home, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1
    assert f"which the cockpit needs: run {checkout}/scripts/setup demo" in done.stderr
    python = checkout / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\ntouch "{checkout}/used"\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    done = subprocess.run(bare, cwd=isolated_home, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["source"].startswith("embedded default") and (checkout / "used").exists()

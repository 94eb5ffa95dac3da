"""`cluster sweep ...` and `cluster report` on bad input: one line naming the file, folder or job; exit 2; nothing
half made. And a planned run as `sweep status` shows it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cockpit.sweep.manifest import Manifest
from cockpit.sweep.plan import model_tag
from tests.unit.test_cli import run


def prompt_file(path: Path, ids: list[int]) -> Path:
    path.write_text("".join(f"@@@ prompt {i}: t{i}\nSay {i} things about clusters.\n" for i in ids))
    return path


@pytest.fixture
def sweep_home(isolated_home: Path) -> Path:
    """A cockpit.toml with two-prompt files and a model folder (planning never loads the model)."""
    (isolated_home / "model").mkdir()
    prompt_file(isolated_home / "p2k.txt", [1, 2])
    prompt_file(isolated_home / "p4k.txt", [1, 2])
    (isolated_home / "cockpit.toml").write_text(
        '[model]\npath = "model"\n[paths]\ndata_dir = "data"\n'
        '[sweep]\nprompt_files = { "2k" = "p2k.txt", "4k" = "p4k.txt" }\nprompts_per_file = 2\n'
    )
    return isolated_home


def test_missing_model_says_how_to_build_it(isolated_home: Path) -> None:
    done = run("sweep", "run", cwd=isolated_home)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "tiny-llama: model not found (build it: cluster model build-tiny)" in done.stderr


@pytest.mark.parametrize(("ids", "problem"), [([1], "1 prompts, expected exactly 2"), ([1, 2, 3], "3 prompts")])
def test_wrong_prompt_count_names_the_file_and_makes_no_run(sweep_home: Path, ids: list[int], problem: str) -> None:
    prompt_file(sweep_home / "p4k.txt", ids)
    done = run("sweep", "run", cwd=sweep_home)
    assert done.returncode == 2 and f"p4k.txt: {problem}" in done.stderr
    assert not (sweep_home / "data" / "runs").exists()


def test_misaligned_ids(sweep_home: Path) -> None:
    prompt_file(sweep_home / "p4k.txt", [1, 3])
    done = run("sweep", "run", cwd=sweep_home)
    assert done.returncode == 2 and "p4k.txt:3: prompt 2 has id 3" in done.stderr


@pytest.mark.parametrize(
    ("flag", "problem"),
    [("--repeats=0", "repeats: expected at least 1, got 0"), ("--warmup-batches=-1", "warmup_batches: expected 0")],
)
def test_a_bad_override_is_named_and_makes_no_run(sweep_home: Path, flag: str, problem: str) -> None:
    done = run("sweep", "run", flag, cwd=sweep_home)
    assert done.returncode == 2 and f"the command line's overrides of [sweep]: {problem}" in done.stderr
    assert not (sweep_home / "data" / "runs").exists()


def test_bad_sweep_key_is_named(sweep_home: Path) -> None:
    config = sweep_home / "cockpit.toml"
    config.write_text(config.read_text() + "nodez = 2\n")
    done = run("sweep", "run", cwd=sweep_home)
    assert done.returncode == 2 and "sweep.nodez: unknown key (did you mean 'nodes'?)" in done.stderr


def test_no_runs_yet_and_not_a_run_folder(sweep_home: Path) -> None:
    done = run("report", cwd=sweep_home)
    assert done.returncode == 2 and "no sweep runs yet (start one: cluster sweep run)" in done.stderr
    done = run("sweep", "status", str(sweep_home), cwd=sweep_home)
    assert done.returncode == 2 and f"{sweep_home}: not a sweep run folder (no manifest.json)" in done.stderr


def test_torn_manifest_is_named(sweep_home: Path) -> None:
    run_dir = sweep_home / "data" / "runs" / "run_1"
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text('{"run_id": "run_1", "run_dir"')
    done = run("sweep", "status", cwd=sweep_home)
    assert done.returncode == 2 and f"{run_dir}/manifest.json" in done.stderr and "not valid JSON" in done.stderr


def test_a_planned_run_as_status_shows_it(sweep_home: Path) -> None:
    """Plan through the library (no job started), then read it back through the command."""
    from cockpit.config import load_settings
    from cockpit.sweep.plan import plan

    planned = plan(load_settings(sweep_home / "cockpit.toml"), nodes=2, gpus_per_node=1)
    done = run("sweep", "status", "--json", cwd=sweep_home)
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)
    assert state["state"] == "planned" and state["run_dir"] == str(planned.run_dir)
    assert [(s["kind"], s["status"], s["job_id"]) for s in state["strategies"]] == [
        ("reference", "NOT_STARTED", None),
        ("tp_nodes", "NOT_STARTED", None),
        ("pp_nodes", "NOT_STARTED", None),
    ]
    assert Manifest.load(planned.run_dir).settings["nodes"] == 2
    done = run("report", cwd=sweep_home)
    assert done.returncode == 2 and "no strategy has been collected yet" in done.stderr


@pytest.mark.parametrize(
    ("name", "tag"),
    [("tiny-llama", "tiny"), ("meta-llama/Meta-Llama-3-8B-Instruct", "llama8b"), ("Qwen2.5-0.5B", "qwen05b")],
)
def test_model_tag(name: str, tag: str) -> None:
    assert model_tag(name) == tag


def test_manifest_from_another_version_is_named(sweep_home: Path) -> None:
    from cockpit.config import load_settings
    from cockpit.sweep.plan import plan

    planned = plan(load_settings(sweep_home / "cockpit.toml"))
    path = planned.run_dir / "manifest.json"
    data = json.loads(path.read_text())
    data["settings"]["nodez"] = 2
    del data["settings"]["model_name"]
    path.write_text(json.dumps(data))
    done = run("sweep", "resume", cwd=sweep_home)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{path}: settings: nodez (unknown), model_name (missing)" in done.stderr


def test_prompt_limit_runs_the_first_prompts_of_each_file(sweep_home: Path) -> None:
    import pandas as pd

    from cockpit.config import load_settings
    from cockpit.sweep.plan import plan

    planned = plan(load_settings(sweep_home / "cockpit.toml"), prompt_limit=1)
    table = pd.read_parquet(planned.settings.prompt_df_path)
    assert sorted(zip(table["variant"], table["prompt_id"], strict=True)) == [("2k", 1), ("4k", 1)]
    (sweep_home / "cockpit.toml").write_text((sweep_home / "cockpit.toml").read_text() + "prompt_limit = -1\n")
    done = run("sweep", "run", cwd=sweep_home)
    assert done.returncode == 2 and "prompt_limit: expected 0 (all) or more, got -1" in done.stderr


def test_status_reads_running_jobs_from_the_shared_squeue_snapshot(
    sweep_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Slurm, a running strategy's state is the queue's, read from the snapshot the sweep's own watch keeps
    (squeue output captured from the test cluster); with no squeue on PATH, nothing else could have said it."""
    from cockpit.config import load_settings
    from cockpit.jobs.watch import SNAPSHOT_NAME
    from cockpit.sweep import execute
    from cockpit.sweep.plan import plan

    config = sweep_home / "cockpit.toml"
    config.write_text('[cluster]\nscheduler = "slurm"\n' + config.read_text())
    planned = plan(load_settings(config), nodes=2, gpus_per_node=1)
    entry = next(iter(planned.manifest.strategies.values()))
    entry.job_id, entry.status = "201", "RUNNING"
    squeue = (Path(__file__).parent / "fixtures" / "slurm" / "squeue-22.05.json").read_text()
    snapshot = {"at": time.time(), "interval": 8.0, "digest": "", "data": json.loads(squeue)}
    (planned.run_dir.parent / SNAPSHOT_NAME).write_text(json.dumps(snapshot))
    monkeypatch.setenv("PATH", str(sweep_home))
    rows = execute.status(planned)["strategies"]
    assert [(row["job_id"], row["status"]) for row in rows][:2] == [("201", "COMPLETED"), (None, "NOT_STARTED")]


def test_a_variant_without_nk_takes_its_budget_from_the_config(sweep_home: Path) -> None:
    import pandas as pd

    from cockpit.config import load_settings
    from cockpit.sweep.plan import plan

    config = sweep_home / "cockpit.toml"
    config.write_text(config.read_text().replace('"4k" = "p4k.txt"', '"long" = "p4k.txt"'))
    done = run("sweep", "run", cwd=sweep_home)
    assert done.returncode == 2 and "p4k.txt: variant 'long' has no 'Nk' in its name" in done.stderr
    assert '[sweep] token_budgets = { "long" = 2048 }' in done.stderr and not (sweep_home / "data" / "runs").exists()
    config.write_text(config.read_text() + 'token_budgets = { "long" = 8000 }\n')
    table = pd.read_parquet(plan(load_settings(config)).settings.prompt_df_path)
    assert sorted(set(zip(table["variant"], table["token_budget"], strict=True))) == [("2k", 2048), ("long", 8000)]

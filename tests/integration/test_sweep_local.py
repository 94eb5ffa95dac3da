"""Sweeps on the local backend (the embedded default's): every strategy's ranks on this machine, end to end
through `cluster sweep ...`, interrupted and resumed, and retried with a smaller batch after running out of memory."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import stat
import sys
from pathlib import Path

import pandas as pd
import pytest

from cockpit.analysis.bottlenecks import WITHOUT_STRAGGLER
from cockpit.jobs.factory import RuntimeEnvironment, SlurmJobFactory
from cockpit.jobs.local import LocalJobManager
from cockpit.sweep.collect import ResultCollector
from cockpit.sweep.manifest import Manifest
from cockpit.sweep.pipeline import DistributedExperimentPipeline
from cockpit.sweep.prompt_table import build_prompt_table, save_prompt_table
from cockpit.sweep.strategies import STRATEGIES, SweepSettings
from tests.integration import sweeps

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def expected(tiny_model_dir: Path) -> dict[tuple[str, int], list[int]]:
    return sweeps.expected_tokens(tiny_model_dir)


FULL_SWEEP_TOKENS = 32  # enough decode for the performance model to weigh: one sweep serves both tests below


@pytest.fixture(scope="module")
def full_sweep(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, dict]:
    """Reference + the four strategies, both variants, run once: its config and `sweep run --json`'s output."""
    config = sweeps.write_config(tmp_path_factory.mktemp("full"), tiny_model_dir, max_new_tokens=FULL_SWEEP_TOKENS)
    done = sweeps.cluster(config, "sweep", "run", "--json")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return config, json.loads(done.stdout)


def test_full_sweep(tmp_path: Path, tiny_model_dir: Path, full_sweep: tuple[Path, dict]) -> None:
    """States, shards, merged table, parity, baseline, report; and the run folder read where it was moved to."""
    config, out = full_sweep
    expected = sweeps.expected_tokens(tiny_model_dir, FULL_SWEEP_TOKENS)
    run = Path(out["run_dir"])
    kinds = [row["kind"] for row in out["strategies"]]
    assert kinds == ["reference", "tp_nodes", "pp_nodes", "tp_node", "hybrid"]
    assert all(row["status"] == "COMPLETED" and row["collected"] and row["attempts"] == 1 for row in out["strategies"])
    assert all(row["progress"] == "4/4" and not row["partial"] for row in out["strategies"])
    sweeps.assert_parity(run, expected, strategies=5)
    manifest = Manifest.load(run)
    assert manifest.state == "completed" and manifest.pipeline_pid is None
    for entry in manifest.strategies.values():
        (attempt,) = entry.attempts
        assert attempt.elapsed_s and attempt.max_rss_bytes and Path(attempt.log_path).exists()
        assert Path(entry.output_root, "outputs").is_dir()
    # no endpoint configured: the baseline is the reference run's text, and every strategy matches it
    baseline = pd.read_parquet(run / "results" / "baseline_prompts.parquet")
    reference = sweeps.results(run).query("strategy_kind == 'reference'")
    assert sorted(baseline["local_completion"]) == sorted(reference["completion"])
    scores = pd.read_parquet(next((run / "results").glob("correctness_run_*.parquet")))
    assert scores["exact_match"].all() and (scores["normalized_levenshtein"] == 1.0).all()
    assert set(out["report"]) == {
        "csv",
        "markdown",
        "performance",
        "what_if",
        "latency_vs_correctness",
        "throughput_vs_length",
    }
    summary = Path(out["report"]["markdown"]).read_text()
    assert summary.count("| 100.0% |") == 5
    verdict = summary.splitlines()[2]  # one timed pass each (the CPU default): no winner beyond the noise
    assert verdict.startswith("No winner named: one timed pass each gives no spread") or (
        verdict.startswith("Winner: **") and "not ranked" in verdict  # the one strategy left once others are set aside
    ), verdict
    assert pd.read_csv(out["report"]["csv"])["strategy"].nunique() == 5
    # the memory plan's estimate beside every rank's measured peak (1 + 2 + 2 + 2 + 4 ranks), each ratio near 1
    memory = summary.split("## Memory: estimate vs peak")[1].split("\n## ")[0]
    ratios = [float(line.rsplit("|", 2)[-2]) for line in memory.splitlines() if line.startswith("| tiny_")]
    assert len(ratios) == 11 and all(0.67 < ratio < 1.5 for ratio in ratios), memory
    report = sweeps.cluster(config, "report", str(run), "--json")
    assert report.returncode == 0 and len(json.loads(report.stdout)["strategies"]) == 5
    traces = sweeps.cluster(config, "traces", str(run))  # not profiled: nothing to open, and the exit code says so
    assert traces.returncode == 1 and "no traces" in traces.stdout and not list(run.glob("*/profiling"))
    # the run folder moved elsewhere, its first place gone: status and the report read and write only the copy
    moved, aside = tmp_path / "moved" / run.name, tmp_path / "aside"
    shutil.copytree(run, moved)
    run.rename(aside)  # gone from where it ran while the moved copy is read; put back for the next test
    try:
        state = sweeps.status(config, moved)
        assert state["run_dir"] == str(moved) and all(row["progress"] == "4/4" for row in state["strategies"])
        report = sweeps.cluster(config, "report", str(moved), "--json")
        assert report.returncode == 0 and len(json.loads(report.stdout)["strategies"]) == 5, report.stderr
        assert all(Path(path).is_relative_to(moved) for path in json.loads(report.stdout)["files"].values())
        assert not run.exists()
    finally:
        aside.rename(run)


def test_sigterm_cancels_then_resume_finishes(tmp_path: Path, tiny_model_dir: Path) -> None:
    """SIGTERM mid-sweep cancels the running job and leaves the manifest whole; resume runs only what is left.
    At int8 weight-only: the embedded default's strategies each quantize their own slices, and the resumed sweep
    matches HF `generate` on the same quantized weights."""
    expected = sweeps.expected_tokens(tiny_model_dir, precision="int8")
    config = sweeps.write_config(tmp_path, tiny_model_dir, gpus_per_node=1, precision="int8")  # reference, tp, pp
    sweep = sweeps.start(config, "sweep", "run")
    sweeps.wait_for(lambda: sweeps.entries(sweeps.run_dir(config))[1].status == "RUNNING", 180, "the second job")
    os.kill(sweep.pid, signal.SIGTERM)
    output, _ = sweep.communicate(timeout=120)
    assert sweep.returncode == 130, output
    run = sweeps.run_dir(config)
    manifest = Manifest.load(run)
    first, second, third = manifest.strategies.values()
    assert manifest.state == "cancelled" and manifest.pipeline_pid is None
    assert first.done and second.status == "CANCELLED" and third.status == "NOT_STARTED"
    assert second.attempts[0].error == "cancelled by the user"
    with (run / "failed_experiments.csv").open() as handle:
        (failure,) = list(csv.DictReader(handle))
    assert failure["config_name"] == second.strategy_id and json.loads(failure["config_json"])["tp_size"] == 2
    rows_before = sweeps.results(run)

    done = sweeps.cluster(config, "sweep", "resume", str(run))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"{first.strategy_id:<22} skipped" in done.stdout
    first_after, second_after, third_after = Manifest.load(run).strategies.values()
    assert first_after.attempts == first.attempts  # not run again
    assert [a.state for a in second_after.attempts] == ["CANCELLED", "COMPLETED"]
    assert third_after.done and len(third_after.attempts) == 1
    sweeps.assert_parity(run, expected, strategies=3)
    kept = sweeps.results(run).query(f"strategy == '{first.strategy_id}'")
    assert kept["completion"].tolist() == rows_before["completion"].tolist()


def fake_gpu_python(tmp_path: Path) -> Path:
    """A python for the job that plays a GPU running out of memory at batch size 4 (this machine has no GPU),
    and runs the real runtime otherwise."""
    wrapper = tmp_path / "fake_gpu_python"
    wrapper.write_text(
        "#!/bin/bash\n"
        'if grep -q \'"batch_size": 4\' "${@: -1}"; then\n'
        '  echo "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB" >&2; exit 1\n'
        "fi\n"
        f'exec {sys.executable} "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper


def test_fake_gpu_oom_halves_the_batch(tmp_path: Path, tiny_model_dir: Path, expected: dict) -> None:
    config = sweeps.write_config(tmp_path, tiny_model_dir)
    prompts = tmp_path / "prompts.parquet"
    from cockpit.sweep.prompts import PromptFileSet, PromptRepository

    files = PromptFileSet({v: tmp_path / f"prompts_{v}.txt" for v in ("2k", "4k")}, count=2)
    table = build_prompt_table(PromptRepository(files).load_all())
    save_prompt_table(table, prompts)
    settings = SweepSettings(
        model_name="tiny-llama",
        model_path=str(tiny_model_dir),
        model_tag="tiny",
        run_id="run_oom",
        run_dir=tmp_path,
        prompt_df_path=prompts,
        batch_size=4,
        max_new_tokens=sweeps.MAX_NEW_TOKENS,
        precision="fp32",
        device="cpu",
    )
    manifest = Manifest("run_oom", str(tmp_path), "local", "now")
    pipeline = DistributedExperimentPipeline(
        [STRATEGIES["reference"](settings)],
        SlurmJobFactory(RuntimeEnvironment(python=str(fake_gpu_python(tmp_path)), launcher="local")),
        LocalJobManager(tmp_path / "jobs"),
        ResultCollector(table, tmp_path / "results", "oom", "run_oom"),
        manifest,
        retry_backoff_s=0,
    )
    assert pipeline.run().state == "completed" and config.exists()
    (entry,) = manifest.strategies.values()
    assert [(a.batch_size, a.state) for a in entry.attempts] == [(4, "FAILED"), (2, "COMPLETED")]
    assert "CUDA out of memory" in entry.attempts[0].error
    rows = ResultCollector.load_rows(tmp_path / "results", "oom")
    assert {(r.variant, r.prompt_id): list(r.token_ids) for r in rows.itertuples()} == expected


def test_baseline_from_an_endpoint(tmp_path: Path, tiny_model_dir: Path) -> None:
    """With [baseline] set, completions come from the OpenAI-compatible endpoint (a real one on loopback, failing
    twice first) before the jobs run, and the report compares every strategy with them."""
    from tests.integration.openai_server import TinyModel, serve

    config = sweeps.write_config(tmp_path, tiny_model_dir, nodes=1, gpus_per_node=1)  # the reference alone
    with serve(TinyModel(tiny_model_dir), script=(429, 500)) as server:
        text = config.read_text() + f'[baseline]\nbase_url = "{server.base_url}"\nmodel = "{tiny_model_dir}"\n'
        config.write_text(text)
        done = sweeps.cluster(config, "sweep", "run", "--json")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert server.requests == 4 + 2  # four prompts, two answered 429 and 500 first
    run = Path(json.loads(done.stdout)["run_dir"])
    assert Manifest.load(run).baseline == server.base_url
    baseline = pd.read_parquet(run / "results" / "baseline_prompts.parquet")
    assert (baseline["status"] == "done").all() and baseline["local_completion"].str.len().gt(0).all()
    scores = pd.read_parquet(next((run / "results").glob("correctness_run_*.parquet")))
    assert scores["ratio"].notna().all() and scores["exact_match"].all()
    assert "4 of 4 completions from" in done.stderr


def test_performance_model_against_the_sweep(full_sweep: tuple[Path, dict]) -> None:
    """The report carries a prediction and a measurement for every strategy, each within a factor of 2 unless
    the report itself says the placement is outside the model (its ranks wait for this host's CPUs)."""
    _, out = full_sweep
    table = pd.read_csv(out["report"]["performance"])
    assert sorted(table["kind"]) == sorted(row["kind"] for row in out["strategies"])
    print("\nmeasured/predicted tokens/s:")
    for row in table.itertuples():
        print(f"  {row.strategy:18} {row.kind:10} {row.ratio:5.2f}{'  (oversubscribed)' if row.oversubscribed else ''}")
    assert table[["predicted_tokens_per_s", "measured_tokens_per_s"]].gt(0).all().all()
    within = table[~table["oversubscribed"]]
    assert within["ratio"].between(0.5, 2.0).all(), within[["strategy", "ratio"]]
    markdown = Path(out["report"]["markdown"]).read_text()
    assert "## Where the time goes" in markdown and "Reference device:" in markdown
    for row in table.itertuples():
        sentence = next(line for line in markdown.splitlines() if line.startswith(f"- {row.strategy} ("))
        assert "-bound" in sentence
        assert ("which the model leaves out" in sentence) == row.oversubscribed
    what_if = pd.read_csv(out["report"]["what_if"]).set_index("strategy")
    predicted = what_if.drop(columns=WITHOUT_STRAGGLER, errors="ignore")  # measured, where a rank straggles
    assert predicted.notna().all().all() and len(what_if) == len(table)
    tp_nodes = table.loc[table["kind"] == "tp_nodes", "strategy"].iloc[0]
    # TP across nodes all-reduces over the wire: a slower link can only make it slower
    assert what_if.loc[tp_nodes, "1 GbE x2"] < what_if.loc[tp_nodes, "USB4 (40 Gb/s) x2"]


def test_memory_plan_skips_what_cannot_fit(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Given less memory than a rank process holds, the sweep submits nothing: each strategy says why in one line,
    the reference first, and the report would claim no parity (nothing ran)."""
    config = sweeps.write_config(tmp_path, tiny_model_dir, extra="device_memory_gib = 0.1")
    done = sweeps.cluster(config, "sweep", "run")
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    skipped = [line for line in done.stdout.splitlines() if " skipped " in line]
    assert len(skipped) == 5, done.stdout
    assert skipped[0].split(None, 2)[2] == (
        "single-device reference: needs 0.5 GiB, this machine's host memory has 0.1 GiB: skipped; use a smaller model"
    )
    run = sweeps.run_dir(config)
    entries = sweeps.entries(run)
    assert [e.status for e in entries] == ["SKIPPED"] * 5 and not any(e.attempts for e in entries)
    assert not list(run.glob("*/exp_config.json")) and not (run / "results").exists()

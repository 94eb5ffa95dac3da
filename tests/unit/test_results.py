"""The cockpit's view of results: runs listed from their manifests (a torn one named, not raised), and one run's
table, plot data and completion pairs read from the tables the collector writes, with nothing written. A run folder
moved elsewhere (one written before paths into it were stored relative too) reads, reports and shows its status
where it is, and nothing touches where it was. A run whose single-device reference failed (a fake out-of-memory
failure) is still reported, against the baseline endpoint or the strategies' majority."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from cockpit.analysis.report import report
from cockpit.analysis.results import RunResults, divergence_char, list_runs, load_results
from cockpit.config import load_settings
from cockpit.errors import BadInput
from cockpit.sweep.collect import ResultCollector
from cockpit.sweep.manifest import Attempt, Manifest, now_iso
from cockpit.sweep.plan import BASELINE_NAME, Sweep, plan
from cockpit.sweep.progress import ProgressTracker
from cockpit.sweep.prompt_table import load_prompt_table, save_prompt_table
from runtime.atomic import atomic_write_text
from runtime.contract import EXP_CONFIG_NAME, PROFILER_FILES, ExperimentConfig, ProgressLine, dumps_line
from runtime.schema import InputError, to_plain
from tests.unit.test_cli import run as run_cli
from tests.unit.test_report import PP, REF, TP, TPN, fake_out_of_memory_run, make_run


@pytest.fixture
def settings_file(isolated_home: Path) -> Path:
    """A cockpit.toml with two two-prompt files (ids 0 and 1, as make_run's rows) and a model folder."""
    (isolated_home / "model").mkdir()
    for variant in ("2k", "4k"):
        text = "".join(f"@@@ prompt {i}: t{i}\nSay {i} things about clusters.\n" for i in (0, 1))
        (isolated_home / f"p{variant}.txt").write_text(text)
    config = isolated_home / "cockpit.toml"
    config.write_text(
        '[model]\npath = "model"\n[paths]\ndata_dir = "data"\n'
        '[sweep]\nprompt_files = { "2k" = "p2k.txt", "4k" = "p4k.txt" }\nprompts_per_file = 2\n'
        "nodes = 2\ngpus_per_node = 1\n"
    )
    return config


def planned(settings_file: Path, hour: int) -> Sweep:
    return plan(load_settings(settings_file), now=datetime(2026, 11, 23, hour))


def collected(settings_file: Path, hour: int = 12, tp_last_tokens: tuple[int, ...] = (1, 9, 1)) -> Sweep:
    """A run whose reference and TP strategies are collected, as the collector leaves them on disk."""
    sweep = planned(settings_file, hour)
    rows, metrics, _ = make_run(list(tp_last_tokens))
    prompts = load_prompt_table(sweep.settings.prompt_df_path)
    collector = ResultCollector(prompts, sweep.results_dir, sweep.stamp, sweep.settings.run_id)
    collector.write_table(rows.assign(run_id=sweep.settings.run_id), collector.results_path)
    collector.write_table(metrics, collector.metrics_path)
    for strategy in (REF, TP):
        sweep.manifest.strategies[strategy].collected = True
    sweep.manifest.save()
    return sweep


OUT_OF_MEMORY = "OUT_OF_MEMORY (exit 137): torch.OutOfMemoryError: CUDA out of memory"
MODEL_CONFIG = {
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "vocab_size": 100,
}


def fake_out_of_memory(settings_file: Path, endpoint_texts: list[str] | None = None) -> Sweep:
    """A finished run (2 nodes of 2 GPUs) whose single-device reference ran out of memory: a fake, the manifest as
    the pipeline leaves a failed job (its state and error; no rows, no metrics collected), beside the collected
    strategies of `fake_out_of_memory_run`. `endpoint_texts`: the baseline endpoint's completions, in the prompt
    table's order (None: no endpoint)."""
    settings_file.write_text(settings_file.read_text().replace("gpus_per_node = 1", "gpus_per_node = 2"))
    (settings_file.parent / "model" / "config.json").write_text(json.dumps(MODEL_CONFIG))
    sweep = planned(settings_file, 12)
    rows, metrics = fake_out_of_memory_run()
    prompts = load_prompt_table(sweep.settings.prompt_df_path)
    collector = ResultCollector(prompts, sweep.results_dir, sweep.stamp, sweep.settings.run_id)
    collector.write_table(rows.assign(run_id=sweep.settings.run_id), collector.results_path)
    collector.write_table(metrics, collector.metrics_path)
    for strategy in (TP, PP, TPN):
        sweep.manifest.strategies[strategy].status, sweep.manifest.strategies[strategy].collected = "COMPLETED", True
    entry = sweep.manifest.strategies[REF]
    entry.status = "OUT_OF_MEMORY"
    entry.attempts = [
        Attempt("41", 2, "2026-11-23T12:00:00", state="OUT_OF_MEMORY", exit_code=137, error=OUT_OF_MEMORY)
    ]
    if endpoint_texts is not None:
        sweep.manifest.baseline = "http://fake-endpoint:8000/v1"
        save_prompt_table(
            prompts.assign(local_completion=endpoint_texts, status="done"), sweep.results_dir / BASELINE_NAME
        )
    sweep.manifest.state = "completed"
    sweep.manifest.save()
    return sweep


def files_under(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in sorted(folder.rglob("*"))}


def test_list_runs_newest_first_and_a_torn_manifest_named(settings_file: Path) -> None:
    old = planned(settings_file, 9)
    new = collected(settings_file, 12)
    runs_dir = new.run_dir.parent
    torn = runs_dir / "run_20261123-100000"
    torn.mkdir()
    (torn / "manifest.json").write_text('{"run_id": "run_1", "run_dir"')
    (runs_dir / "run_20261123-230000").mkdir()  # no manifest: not a run
    runs = list_runs(runs_dir)
    assert [r.run_id for r in runs] == [new.settings.run_id, torn.name, old.settings.run_id]
    latest, broken, first = runs
    assert (latest.state, latest.backend, latest.strategies, latest.collected) == ("planned", "local", 3, 2)
    assert latest.has_results
    assert latest.run_dir == new.run_dir and latest.started_at == new.manifest.created_at
    assert (first.collected, first.has_results) == (0, False)
    assert broken.state.startswith(f"unreadable: {torn}/manifest.json: not valid JSON")
    assert (broken.run_dir, broken.started_at, broken.has_results) == (torn, None, False)


def test_list_runs_without_a_runs_folder(tmp_path: Path) -> None:
    assert list_runs(tmp_path / "nowhere") == []


def test_load_results_is_the_report_without_writing(settings_file: Path) -> None:
    sweep = collected(settings_file)
    before = files_under(sweep.run_dir)
    results = load_results(sweep.run_dir)
    assert files_under(sweep.run_dir) == before  # nothing written, nothing touched
    assert results.report_files == {}
    built = report(sweep)
    pd.testing.assert_frame_equal(results.table, built.table)
    assert results.winner == built.summary.winner() and results.winner.startswith(f"Winner: **{REF}**")
    assert results.latency_points == built.summary.latency_points()
    assert results.throughput_curves == built.summary.throughput_curves()
    assert load_results(sweep.run_dir).report_files == built.files  # the files report wrote, found on disk
    assert (results.run_id, results.run_dir) == (sweep.settings.run_id, sweep.run_dir)


def test_plot_data(settings_file: Path) -> None:
    results = load_results(collected(settings_file).run_dir)
    assert results.latency_points == [(REF, 1.0, pytest.approx(250.0)), (TP, 0.75, pytest.approx(65.0))]
    strategy, lengths, rates = results.throughput_curves[1]
    assert (strategy, lengths) == (TP, [1000.0, 1100.0, 3000.0, 3100.0])
    assert rates == pytest.approx([3 / 0.05, 3 / 0.06, 3 / 0.07, 3 / 0.08])


def test_completion_pairs(settings_file: Path) -> None:
    results = load_results(collected(settings_file).run_dir)
    assert [(p.strategy, p.variant, p.prompt_id) for p in results.completions] == [
        (TP, "2k", 0),
        (TP, "2k", 1),
        (TP, "4k", 0),
        (TP, "4k", 1),
    ]
    same, diverging = results.completions[0], results.completions[3]
    assert (same.exact_match, same.first_divergence, same.divergence_char) == (True, None, None)
    assert same.reference == same.completion == "the cat sat"
    assert (diverging.reference, diverging.completion) == ("the cat sat", "the cat sat down")
    assert (diverging.exact_match, diverging.first_divergence, diverging.divergence_char) == (False, 1, 11)
    assert PP not in {p.strategy for p in results.completions}  # never collected


def test_nothing_collected_names_the_run(settings_file: Path) -> None:
    sweep = planned(settings_file, 12)
    with pytest.raises(BadInput, match=f"^{sweep.run_dir}: no strategy has been collected yet"):
        load_results(sweep.run_dir)
    assert not sweep.results_dir.exists()


def test_a_torn_manifest_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        load_results(tmp_path)


@pytest.mark.parametrize(
    ("reference", "completion", "at"),
    [("abc", "abc", None), ("abc", "abd", 2), ("ab", "abc", 2), ("abc", "ab", 2), ("", "x", 0), ("", "", None)],
)
def test_divergence_char(reference: str, completion: str, at: int | None) -> None:
    assert divergence_char(reference, completion) == at


def finished(settings_file: Path) -> Sweep:
    """`collected`, with what the reference's and TP's jobs leave besides their rows: exp_config.json and job.slurm,
    an attempt and its log, the result rank's last progress line, and, for the reference, a perf trace."""
    sweep = collected(settings_file)
    factory = sweep.factory()
    for strategy in sweep.strategies()[:2]:
        files = factory.render(strategy.job_spec())
        entry = sweep.manifest.strategies[strategy.strategy_id]
        entry.status, log = "COMPLETED", files.log("local-1")
        entry.attempts.append(Attempt("local-1", 4, now_iso(), "COMPLETED", log_path=str(log)))
        log.write_text("decoded\n")
        config = strategy.config()
        atomic_write_text(config.progress_path(0), dumps_line(ProgressLine(0, 1.0, "done", 4, 4)))
    trace = sweep.strategies()[0].config().trace_path(0) / PROFILER_FILES["perf"]
    trace.parent.mkdir(parents=True)
    trace.write_bytes(b"PERFILE2")
    sweep.manifest.save()
    return sweep


def moved(sweep: Sweep, to: Path) -> Path:
    """The run folder copied to `to` and its original deleted: nothing there can be read or written any more."""
    copy = to / sweep.run_dir.name
    shutil.copytree(sweep.run_dir, copy)
    shutil.rmtree(sweep.run_dir)
    return copy


def assert_reads_where_it_is(run: Path, home: Path, before: RunResults) -> None:
    """The results, `cluster report` and `cluster sweep status` of the run folder `run`, as they were in its first
    place (`before`), found and written only under `run`."""
    results = load_results(run)
    pd.testing.assert_frame_equal(results.table, before.table)
    assert results.run_dir == run and results.completions == before.completions
    assert [(t.strategy_id, t.tool, t.path) for t in results.traces] == [
        (REF, "perf", run / REF / "profiling" / "rank_0" / "perf.data")
    ]
    done = run_cli("report", str(run), "--json", cwd=home)
    assert done.returncode == 0, done.stderr
    files = json.loads(done.stdout)["files"]
    assert files and all(Path(path).is_relative_to(run / "results") and Path(path).exists() for path in files.values())
    done = run_cli("sweep", "status", str(run), "--json", cwd=home)
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)
    assert state["run_dir"] == str(run)
    assert [(s["status"], s["progress"]) for s in state["strategies"]] == [
        ("COMPLETED", "4/4"),
        ("COMPLETED", "4/4"),
        ("NOT_STARTED", None),
    ]
    manifest = Manifest.load(run)
    paths = [manifest.run_dir, *(str(manifest.settings[key]) for key in ("run_dir", "prompt_df_path"))]
    for entry in manifest.strategies.values():
        paths += [entry.exp_config_path, entry.script_path, entry.output_root]
        paths += [attempt.log_path for attempt in entry.attempts if attempt.log_path]
    assert all(Path(path).is_relative_to(run) for path in paths), paths
    for entry in list(manifest.strategies.values())[:2]:
        assert Path(entry.attempts[0].log_path or "").read_text() == "decoded\n"
    (tracked,) = [s for s in ProgressTracker(run).poll().strategies if s.strategy_id == REF]
    assert tracked.rows_written == 4


def test_a_moved_run_reports_where_it_is(settings_file: Path, tmp_path: Path) -> None:
    sweep = finished(settings_file)
    before = load_results(sweep.run_dir)
    run = moved(sweep, tmp_path / "elsewhere")
    assert_reads_where_it_is(run, settings_file.parent, before)
    assert not sweep.run_dir.exists()  # nothing written where it was
    for entry in list(Manifest.load(run).strategies.values())[:2]:  # what the runtime reads on a resume from here
        config = ExperimentConfig.load(entry.exp_config_path)
        assert (config.output_root, config.prompt_df_path) == (entry.output_root, str(run / "prompts.parquet"))


def test_a_run_folder_names_no_absolute_path_into_itself(settings_file: Path) -> None:
    sweep = finished(settings_file)
    written = [sweep.manifest.path, *sweep.run_dir.glob(f"*/{EXP_CONFIG_NAME}")]
    assert len(written) == 3
    for path in written:
        assert str(sweep.run_dir) not in path.read_text(), path
    strategy = sweep.strategies()[0]
    stored = json.loads((strategy.output_root / EXP_CONFIG_NAME).read_text())
    assert (stored["output_root"], stored["prompt_df_path"]) == (".", "../prompts.parquet")
    assert stored["model_path"] == str(settings_file.parent / "model")  # outside the run: stays absolute
    assert ExperimentConfig.load(strategy.output_root / EXP_CONFIG_NAME) == strategy.config()
    assert json.loads(sweep.manifest.path.read_text())["run_dir"] == "."


def test_a_run_written_with_absolute_paths_reads_where_it_moved(settings_file: Path, tmp_path: Path) -> None:
    """A run folder from before paths into it were stored relative: its absolute paths are taken inside the copy."""
    sweep = finished(settings_file)
    atomic_write_text(sweep.manifest.path, json.dumps(to_plain(sweep.manifest)))
    for strategy in sweep.strategies()[:2]:
        strategy.config().write(strategy.output_root / EXP_CONFIG_NAME)
    assert f'"output_root": "{sweep.run_dir}/' in (sweep.run_dir / REF / EXP_CONFIG_NAME).read_text()
    before = load_results(sweep.run_dir)
    assert_reads_where_it_is(moved(sweep, tmp_path / "elsewhere"), settings_file.parent, before)
    assert not sweep.run_dir.exists()


def test_a_fake_out_of_memory_reference_without_a_baseline_is_judged_by_the_majority(settings_file: Path) -> None:
    sweep = fake_out_of_memory(settings_file)
    built = report(sweep)
    sentence = f"reference: the strategies' majority (the single-device run failed: {OUT_OF_MEMORY}, no baseline)"
    text = built.files["markdown"].read_text()
    assert sentence in text
    assert f"- {PP} differs from the strategies' majority on 1 of 4 prompts; first: token 1 of 4k prompt 1" in text
    assert built.table.set_index("strategy")["tokens_per_s"].to_dict() == pytest.approx({TP: 25, PP: 20, TPN: 12.5})
    assert built.table["speedup"].isna().all()
    assert "identical to the reference" not in text and "strategies' majority." in built.summary.winner()
    assert "no prediction: the reference strategy is not collected, and the model is fitted to it" in text
    results = load_results(sweep.run_dir)
    assert results.reference == sentence
    assert len(results.completions) == 12  # every strategy's, none is the reference
    parted = [p for p in results.completions if not p.exact_match]
    assert [(p.strategy, p.variant, p.prompt_id, p.first_divergence) for p in parted] == [(PP, "4k", 1, 1)]
    assert (parted[0].reference, parted[0].against, parted[0].divergence_char) == (
        "the cat sat",
        "the strategies' majority",
        11,
    )


def test_a_fake_out_of_memory_reference_with_an_endpoint_baseline_is_judged_by_its_text(settings_file: Path) -> None:
    texts = ["the cat sat", "the cat sat", "the cat sat", "the cat sat down"]  # the endpoint agrees with PP
    sweep = fake_out_of_memory(settings_file, texts)
    built = report(sweep)
    text = built.files["markdown"].read_text()
    assert f"reference: the baseline endpoint (the single-device run failed: {OUT_OF_MEMORY})" in text
    assert built.table.set_index("strategy")["exact_match_rate"].to_dict() == {TP: 0.75, PP: 1.0, TPN: 0.75}
    assert f"- {TP} differs from the baseline endpoint on 1 of 4 prompts; first: text, 4k prompt 1" in text
    assert built.summary.winner().endswith("with every prompt's text identical to the baseline endpoint's.")
    assert built.table["tokens_per_s"].notna().all()
    results = load_results(sweep.run_dir)
    pair = next(p for p in results.completions if (p.strategy, p.variant, p.prompt_id) == (TP, "4k", 1))
    assert (pair.reference, pair.against, pair.exact_match, pair.first_divergence) == (
        "the cat sat down",
        "the baseline endpoint",
        False,
        None,
    )
    assert pair.divergence_char == 11

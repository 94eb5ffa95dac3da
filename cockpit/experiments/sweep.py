"""A sweep from start to report, as `cluster sweep ...` and the cockpit drive it (seed 01, steps 1-6).

run_<ts>/prompts.parquet                    the prompt table every step reads
run_<ts>/manifest.json                      strategies, jobs, attempts, states
run_<ts>/failed_experiments.csv             every failed attempt with its config and error
run_<ts>/<strategy_id>/                     exp_config.json, job.slurm, logs/, outputs/, metrics/, progress/
run_<ts>/jobs/                              the local backend's job records
run_<ts>/results/baseline_prompts.parquet   the prompt table with the baseline's completions
run_<ts>/results/run_<ts>.parquet           every strategy's rows, long form
run_<ts>/results/summary_run_<ts>.{csv,md}  the strategy table; plots/ beside it
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from cockpit.config import EMBEDDED_MODEL, Settings
from cockpit.experiments.collect import ResultCollector
from cockpit.experiments.correctness import CorrectnessEvaluator
from cockpit.experiments.performance import Performance, for_run
from cockpit.experiments.pipeline import DistributedExperimentPipeline, SweepEvent, register
from cockpit.experiments.prompt_table import PromptDataFrameBuilder
from cockpit.experiments.prompts import PromptFileSet, PromptRecord, PromptRepository
from cockpit.experiments.report import RunSummary
from cockpit.experiments.strategies import ParallelismStrategy, SweepSettings, sweep_strategies
from cockpit.jobs.factory import RuntimeEnvironment, SlurmJobFactory
from cockpit.jobs.local import SWEEP_JOBS_DIR, LocalJobManager
from cockpit.jobs.manifest import MANIFEST_NAME, Manifest, now_iso
from cockpit.jobs.records import JobManager
from cockpit.jobs.slurm import SlurmJobManager
from runtime.contract import BuildManifest
from runtime.outputs import last_progress
from runtime.schema import InputError

PROMPTS_NAME = "prompts.parquet"
BASELINE_NAME = "baseline_prompts.parquet"


def model_tag(name: str) -> str:
    """A short id for strategy ids: 'tiny-llama' -> 'tiny', 'Meta-Llama-3-8B-Instruct' -> 'llama8b'."""
    if name == EMBEDDED_MODEL:
        return "tiny"
    lowered = name.lower().rsplit("/", 1)[-1].removeprefix("meta-")
    family = re.match(r"[a-z]+", lowered)
    sizes = re.findall(r"(?<![a-z0-9.])(\d+(?:\.\d+)?)b\b", lowered)
    if family and sizes:
        return f"{family[0]}{sizes[-1].replace('.', '')}b"
    return re.sub(r"[^a-z0-9]+", "", lowered)[:16] or "model"


@dataclass
class Sweep:
    """One run folder and everything needed to drive it."""

    settings: SweepSettings
    manifest: Manifest

    @property
    def run_dir(self) -> Path:
        return self.settings.run_dir

    @property
    def results_dir(self) -> Path:
        return self.run_dir / "results"

    @property
    def stamp(self) -> str:
        return self.settings.run_id.removeprefix("run_")

    def strategies(self) -> list[ParallelismStrategy]:
        return sweep_strategies(self.settings)


def _plain_settings(settings: SweepSettings) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(settings).items()}


def first_prompts(records: list[PromptRecord], limit: int) -> list[PromptRecord]:
    """The first `limit` records of each variant, in file order (ids stay aligned across variants)."""
    taken: dict[str, int] = {}
    kept = []
    for record in records:
        taken[record.variant] = taken.get(record.variant, 0) + 1
        if taken[record.variant] <= limit:
            kept.append(record)
    return kept


def plan(settings: Settings, *, now: datetime | None = None, **overrides: Any) -> Sweep:
    """A new run folder: the prompt table written and checked, the manifest listing every strategy."""
    section = dataclasses.replace(settings.sweep, **overrides)
    model_path = settings.model_path
    if not model_path.exists():
        hint = " (build it: cluster model build-tiny)" if settings.file.model.name == EMBEDDED_MODEL else ""
        raise InputError(f"{model_path}: model not found{hint}")
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    run_id = f"run_{stamp}"
    run_dir = settings.runs_dir / run_id
    if run_dir.exists():
        raise InputError(f"{run_dir}: a run with this timestamp exists already")
    files = PromptFileSet(settings.prompt_files(), count=section.prompts_per_file)
    records = PromptRepository(files).load_all()  # every file problem surfaces here, before any folder exists
    if section.prompt_limit:
        records = first_prompts(records, section.prompt_limit)
    sweep_settings = SweepSettings(
        model_name=settings.file.model.name,
        model_path=str(model_path),
        model_tag=section.model_tag or model_tag(settings.file.model.name),
        run_id=run_id,
        run_dir=run_dir,
        prompt_df_path=run_dir / PROMPTS_NAME,
        nodes=section.nodes,
        gpus_per_node=section.gpus_per_node,
        batch_size=section.batch_size,
        max_new_tokens=section.max_new_tokens,
        precision=section.precision,
        device=section.device,
        slurm_time_limit=section.time_limit,
        partition=settings.cluster.partition,
        account=settings.cluster.account,
        profiling_enabled=section.profile,
        profilers=section.profilers,
        profile_steps=section.profile_steps,
    )
    builder = PromptDataFrameBuilder()
    builder.persist(builder.build(records), sweep_settings.prompt_df_path)
    manifest = Manifest(
        run_id=run_id,
        run_dir=str(run_dir),
        backend=settings.cluster.scheduler,
        created_at=now_iso(),
        state="planned",
        launcher="local" if settings.cluster.scheduler == "local" else section.launcher,
        max_attempts=section.max_attempts,
        settings=_plain_settings(sweep_settings),
        baseline=settings.baseline_url or "reference",
    )
    sweep = Sweep(sweep_settings, manifest)
    factory = _factory(sweep)
    for strategy in sweep.strategies():
        register(manifest, strategy, factory.files(strategy))
    manifest.save()
    return sweep


def load(run_dir: Path) -> Sweep:
    """An existing run, from its folder (or its manifest.json)."""
    run_dir = run_dir.parent if run_dir.name == MANIFEST_NAME else run_dir
    if not (run_dir / MANIFEST_NAME).exists():
        raise InputError(f"{run_dir}: not a sweep run folder (no {MANIFEST_NAME})")
    manifest = Manifest.load(run_dir)
    stored = dict(manifest.settings)
    for key in ("run_dir", "prompt_df_path"):
        stored[key] = Path(str(stored[key]))
    fields = {f.name: f for f in dataclasses.fields(SweepSettings)}
    unknown = sorted(set(stored) - set(fields))
    missing = sorted(n for n, f in fields.items() if n not in stored and f.default is dataclasses.MISSING)
    if unknown or missing:
        keys = ", ".join([*(f"{k} (unknown)" for k in unknown), *(f"{k} (missing)" for k in missing)])
        raise InputError(f"{manifest.path}: settings: {keys}; was it written by another version of the cockpit?")
    return Sweep(SweepSettings(**stored), manifest)


def job_manager(sweep: Sweep) -> JobManager:
    if sweep.manifest.backend == "slurm":
        return SlurmJobManager()
    return LocalJobManager(sweep.run_dir / SWEEP_JOBS_DIR)


def _factory(sweep: Sweep, runtime: RuntimeEnvironment | None = None) -> SlurmJobFactory:
    return SlurmJobFactory(runtime or RuntimeEnvironment(launcher=sweep.manifest.launcher))


def verified_runtime(sweep: Sweep, settings: Settings, on_event: Callable[[SweepEvent], None]) -> RuntimeEnvironment:
    """The runtime the sweep's jobs run: this tree when delivery is shared; else the build every node the jobs
    may run on verifiably has (one fan-out; an InputError with the table of nodes that differ, before any job)."""
    launcher = sweep.manifest.launcher
    if settings.runtime.delivery == "shared":
        return RuntimeEnvironment(launcher=launcher)
    from cockpit.delivery.build import IMAGE_PYTHON, IMAGE_SOURCE
    from cockpit.delivery.verify import require_verified, target
    from cockpit.nodes.inventory import LOCALHOST, Inventory
    from cockpit.nodes.ssh import pool_for

    local = sweep.manifest.backend == "local"  # the local backend runs every job on this machine
    nodes = [LOCALHOST] if local else Inventory.load(settings.inventory).compute

    async def check() -> BuildManifest:
        async with pool_for(settings) as pool:
            return await require_verified(pool, nodes, settings, sweep.settings.device)

    build = asyncio.run(check())
    where = target(settings, build)
    on_event(SweepEvent("verified", "runtime", f"{build.build_id} ({build.delivery}, {build.device}) at {where.path}"))
    if build.delivery == "apptainer":
        return RuntimeEnvironment(IMAGE_PYTHON, IMAGE_SOURCE, launcher, image=where.path, build_id=build.build_id)
    return RuntimeEnvironment(
        f"{where.path}/venv/bin/python",
        f"{where.path}/src",
        launcher,
        build_id=build.build_id,
        extensions_dir=f"{where.path}/.cache/torch_extensions",
    )


def _pipeline(
    sweep: Sweep, on_event: Callable[[SweepEvent], None], runtime: RuntimeEnvironment | None = None
) -> DistributedExperimentPipeline:
    prompts = PromptDataFrameBuilder().load(sweep.settings.prompt_df_path)
    collector = ResultCollector(prompts, sweep.results_dir, sweep.stamp, sweep.settings.run_id)
    return DistributedExperimentPipeline(
        sweep.strategies(),
        _factory(sweep, runtime),
        job_manager(sweep),
        collector,
        sweep.manifest,
        max_attempts=sweep.manifest.max_attempts,
        on_event=on_event,
    )


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM takes Ctrl-C's path: the running job is cancelled and the manifest left consistent."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def execute(sweep: Sweep, settings: Settings, on_event: Callable[[SweepEvent], None]) -> Manifest:
    """Run (or resume) every strategy not done, then the baseline, correctness and the report."""
    if sweep.manifest.pipeline_alive():
        raise InputError(f"{sweep.run_dir}: a sweep process (pid {sweep.manifest.pipeline_pid}) is running it")
    runtime = verified_runtime(sweep, settings, on_event)
    if sweep.manifest.baseline != "reference":
        run_endpoint_baseline(sweep, settings, on_event)
    pipeline = _pipeline(sweep, on_event, runtime)
    with sigterm_as_interrupt():
        manifest = pipeline.run()
    if sweep.manifest.baseline == "reference":
        baseline_from_reference(sweep)
    return manifest


def run_endpoint_baseline(sweep: Sweep, settings: Settings, on_event: Callable[[SweepEvent], None]) -> None:
    """Baseline completions from the configured OpenAI-compatible endpoint (resumable: done rows are kept)."""
    from cockpit.experiments.baseline import LocalInferenceRunner, OpenAICompletionClient

    client = OpenAICompletionClient.from_settings(settings)
    if client is None:
        raise InputError(f"{sweep.run_dir}: the run's baseline is {sweep.manifest.baseline}, but none is configured")
    out = sweep.results_dir / BASELINE_NAME
    builder = PromptDataFrameBuilder()
    frame = builder.load(out if out.exists() else sweep.settings.prompt_df_path)
    runner = LocalInferenceRunner(client, sweep.settings.max_new_tokens, settings.file.baseline.concurrency)
    runner.run(frame, out)
    done = len(frame) - len(runner.failures)
    on_event(SweepEvent("collected", "baseline", f"{done} of {len(frame)} completions from {client.url}"))
    for failure in runner.failures:
        on_event(SweepEvent("failed", "baseline", f"prompt {failure.prompt_id} ({failure.variant}): {failure.message}"))


def baseline_from_reference(sweep: Sweep) -> Path | None:
    """With no endpoint, the baseline is the single-device reference run of the cluster's own model."""
    rows = ResultCollector.load_rows(sweep.results_dir, sweep.stamp)
    reference = sweep.strategies()[0].strategy_id
    if rows is None or reference not in set(rows["strategy"]):
        return None
    builder = PromptDataFrameBuilder()
    prompts = builder.load(sweep.settings.prompt_df_path)
    ref = rows[rows["strategy"] == reference].set_index(["variant", "prompt_id"])
    keys = pd.MultiIndex.from_frame(prompts[["variant", "prompt_id"]])
    found = keys.isin(ref.index)
    prompts.loc[found, "local_completion"] = ref.loc[keys[found], "completion"].to_numpy()
    prompts.loc[found, "local_latency_ms"] = ref.loc[keys[found], "latency_ms"].to_numpy()
    prompts["status"] = ["done" if f else "failed" for f in found]
    return builder.persist(prompts, sweep.results_dir / BASELINE_NAME)


@dataclass
class Scored:
    """A run's collected rows scored: per prompt against the reference and the baseline, and the strategy summary."""

    rows: pd.DataFrame
    scores: pd.DataFrame  # CorrectnessEvaluator.evaluate: one row per (strategy, variant, prompt_id)
    reference: str  # the reference strategy's id
    summary: RunSummary


def score_rows(
    rows: pd.DataFrame,
    metrics: pd.DataFrame,
    baseline: pd.DataFrame,
    run_id: str,
    performance: Performance | str | None = None,
) -> Scored:
    """Correctness per prompt and strategy, and the run summary, from the run's tables; reads and writes nothing."""
    evaluator = CorrectnessEvaluator()
    scores = evaluator.evaluate(rows, baseline)
    summary = RunSummary(rows, metrics, evaluator.summarize(scores), run_id, performance=performance)
    return Scored(rows, scores, evaluator.reference_strategy(rows), summary)


def score(sweep: Sweep, peaks: Mapping[str, float] | None = None) -> Scored:
    """A run's collected rows, metrics and baseline from disk, scored; writes nothing. InputError before the first
    strategy is collected. `peaks`: host name -> peak memory bandwidth from the inventory, for the performance
    analysis."""
    rows = ResultCollector.load_rows(sweep.results_dir, sweep.stamp)
    if rows is None:
        raise InputError(f"{sweep.run_dir}: no strategy has been collected yet (no results/run_{sweep.stamp}.parquet)")
    metrics = ResultCollector.load_metrics(sweep.results_dir, sweep.stamp)
    baseline_path = sweep.results_dir / BASELINE_NAME
    builder = PromptDataFrameBuilder()
    baseline = builder.load(baseline_path if baseline_path.exists() else sweep.settings.prompt_df_path)
    performance = for_run(rows, metrics, sweep.settings, peaks)
    return score_rows(rows, metrics, baseline, sweep.settings.run_id, performance)


@dataclass
class Report:
    summary: RunSummary
    table: pd.DataFrame
    files: dict[str, Path]


def report(sweep: Sweep, peaks: Mapping[str, float] | None = None) -> Report:
    """Correctness per prompt and strategy, the strategy table and its plots, written under results/."""
    scored = score(sweep, peaks)
    ResultCollector.write_table(scored.scores, sweep.results_dir / f"correctness_run_{sweep.stamp}.parquet")
    files = scored.summary.write_all(sweep.results_dir, sweep.stamp)
    return Report(scored.summary, scored.summary.table(), files)


def cancel(sweep: Sweep) -> list[str]:
    """Stop a sweep: its process if alive (it cancels its own job), else any job it left running."""
    manifest = sweep.manifest
    if manifest.pipeline_alive() and manifest.pipeline_pid is not None:
        os.kill(manifest.pipeline_pid, signal.SIGTERM)
        return [f"sent SIGTERM to the sweep process {manifest.pipeline_pid}"]
    manager, done = job_manager(sweep), []
    for entry in manifest.running():
        assert entry.job_id is not None
        manager.cancel(entry.job_id)
        entry.status = "CANCELLED"
        done.append(f"cancelled job {entry.job_id} ({entry.strategy_id})")
    manifest.state = "cancelled"
    manifest.save()
    return done


def status(sweep: Sweep) -> dict[str, Any]:
    """The manifest's view, with live progress (rows written by the result ranks) for running strategies."""
    rows = []
    for strategy in sweep.strategies():
        entry = sweep.manifest.strategies.get(strategy.strategy_id)
        if entry is None:
            continue
        progress = [last_progress(strategy.config().progress_path(rank)) for rank in strategy.result_ranks()]
        written = sum(p.rows_written for p in progress if p is not None)
        expected = sum(p.rows_expected for p in progress if p is not None)
        rows.append(
            {
                "strategy": entry.strategy_id,
                "kind": entry.kind,
                "status": entry.status,
                "job_id": entry.job_id,
                "attempts": len(entry.attempts),
                "collected": entry.collected,
                "partial": entry.partial,
                "rows": entry.rows,
                "progress": f"{written}/{expected}" if expected else None,
                "problems": entry.problems,
            }
        )
    m = sweep.manifest
    return {"run_id": m.run_id, "run_dir": m.run_dir, "backend": m.backend, "state": m.state, "strategies": rows}

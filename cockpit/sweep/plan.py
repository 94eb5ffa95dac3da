"""A new sweep's run folder, or an existing one read back: the settings every strategy shares, the prompt table,
and the manifest that lists every strategy before any job runs.

run_<ts>/prompts.parquet                    the prompt table every step reads
run_<ts>/manifest.json                      strategies, jobs, attempts, states (cockpit.sweep.manifest)
run_<ts>/failed_experiments.csv             every failed attempt with its config and error
run_<ts>/<strategy_id>/                     exp_config.json, job.slurm, logs/, outputs/, metrics/, progress/
run_<ts>/jobs/                              the local backend's job records
run_<ts>/results/baseline_prompts.parquet   the prompt table with the baseline's completions
run_<ts>/results/run_<ts>.parquet           every strategy's rows, long form
run_<ts>/results/summary_run_<ts>.{csv,md}  the strategy table; plots/ beside it
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cockpit.config import EMBEDDED_MODEL, Settings, SweepSection
from cockpit.errors import BadInput
from cockpit.jobs.backend import Backend, choose_backend
from cockpit.jobs.factory import RuntimeEnvironment, SlurmJobFactory
from cockpit.jobs.watch import CAP_S
from cockpit.sweep.manifest import MANIFEST_NAME, Manifest, now_iso
from cockpit.sweep.memory import MemoryPlan, NodeMemory, node_memory, plan_label, plan_memory
from cockpit.sweep.pipeline import register
from cockpit.sweep.prompt_table import build_prompt_table, save_prompt_table
from cockpit.sweep.prompts import PromptFileSet, PromptRecord, PromptRepository
from cockpit.sweep.strategies import ParallelismStrategy, SweepSettings, sweep_strategies

if TYPE_CHECKING:
    from cockpit.nodes.telemetry import NodeTelemetry

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
        """The sweep's strategies, each with the batch its memory plan gave it."""
        return [self._planned(strategy) for strategy in sweep_strategies(self.settings)]

    def _planned(self, strategy: ParallelismStrategy) -> ParallelismStrategy:
        entry = self.manifest.strategies.get(strategy.strategy_id)
        memory = entry.memory if entry else None
        if memory is None or memory.batch_size == strategy.settings.batch_size:
            return strategy
        return strategy.with_settings(batch_size=memory.batch_size)

    def backend(self, watch_cap_s: float = CAP_S) -> Backend:
        """The scheduler the run was planned for (the run folders live in the run's parent folder); `watch_cap_s`
        is how far its job watch backs off on Slurm (`[refresh] squeue_max_s`)."""
        return choose_backend(self.manifest.backend, self.run_dir.parent, self.manifest.launcher, watch_cap_s)

    def factory(self, runtime: RuntimeEnvironment | None = None) -> SlurmJobFactory:
        """The job factory for this run's jobs: this tree's runtime unless a verified build is given."""
        return SlurmJobFactory(runtime or RuntimeEnvironment(launcher=self.manifest.launcher))


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


def plan(
    settings: Settings,
    *,
    now: datetime | None = None,
    telemetry: Mapping[str, NodeTelemetry] | None = None,
    **overrides: Any,
) -> Sweep:
    """A new run folder: the prompt table written and checked, the manifest listing every strategy with its memory
    plan (held against the nodes' last `telemetry` readings where the app has them)."""
    section = overridden(settings, overrides)
    if not settings.model_path.exists():
        hint = " (build it: cluster model build-tiny)" if settings.file.model.name == EMBEDDED_MODEL else ""
        raise BadInput(f"{settings.model_path}: model not found{hint}")
    run_id = f"run_{(now or datetime.now()).strftime('%Y%m%d-%H%M%S')}"
    if (settings.runs_dir / run_id).exists():
        raise BadInput(f"{settings.runs_dir / run_id}: a run with this timestamp exists already")
    records = sweep_prompts(settings, section)  # every file problem surfaces here, before any folder exists
    shared = sweep_settings(settings, section, run_id)
    save_prompt_table(build_prompt_table(records), shared.prompt_df_path)
    backend = choose_backend(settings.cluster.scheduler, settings.runs_dir, section.launcher)
    manifest = Manifest(
        run_id=run_id,
        run_dir=str(shared.run_dir),
        backend=backend.name,
        created_at=now_iso(),
        state="planned",
        launcher=backend.launcher,
        run_storage=settings.file.paths.run_storage if backend.name == "slurm" else "shared",
        max_attempts=section.max_attempts,
        settings=_plain_settings(shared),
        baseline=settings.baseline_url or "reference",
    )
    sweep = Sweep(shared, manifest)
    factory = sweep.factory()
    strategies = sweep.strategies()
    plans = memory_plans(settings, strategies, records, node_memory(settings, shared.device, telemetry))
    for strategy in strategies:
        register(manifest, strategy, factory.files(strategy.config())).memory = plans[strategy.strategy_id]
    manifest.save()
    return sweep


def overridden(settings: Settings, overrides: Mapping[str, Any]) -> SweepSection:
    """The [sweep] section with the command line's (or the form's) overrides, checked."""
    section = dataclasses.replace(settings.sweep, **overrides)
    if overrides:
        section.check("the command line's overrides of [sweep]", "")
    return section


def sweep_prompts(settings: Settings, section: SweepSection) -> list[PromptRecord]:
    """The prompts a sweep with `section` runs: each file's, the first `prompt_limit` of each where it is set."""
    files = PromptFileSet(settings.prompt_files(), count=section.prompts_per_file, token_budgets=section.token_budgets)
    records = PromptRepository(files).load_all()
    return first_prompts(records, section.prompt_limit) if section.prompt_limit else records


def memory_plans(
    settings: Settings,
    strategies: list[ParallelismStrategy],
    records: list[PromptRecord],
    memory: NodeMemory | None,
) -> dict[str, MemoryPlan]:
    """Each strategy's memory plan, by strategy id, on the configured scheduler."""
    return plan_memory(strategies, [r.prompt for r in records], memory, local=settings.cluster.scheduler == "local")


@dataclass(frozen=True)
class MemoryPreview:
    """What `plan()` would decide of memory, before there is a run: the figure held against, and each strategy's
    plan with the label its sentences use, in sweep order."""

    memory: NodeMemory | None
    plans: list[tuple[str, MemoryPlan]]


def preview_memory(
    settings: Settings, overrides: Mapping[str, Any], telemetry: Mapping[str, NodeTelemetry] | None = None
) -> MemoryPreview:
    """The memory plan of a sweep with these overrides, nothing written (the sweep form's preview); BadInput for
    overrides or prompt files that `plan()` would refuse."""
    section = overridden(settings, overrides)
    shared = sweep_settings(settings, section, "run_preview")
    strategies = sweep_strategies(shared)
    memory = node_memory(settings, shared.device, telemetry)
    plans = memory_plans(settings, strategies, sweep_prompts(settings, section), memory)
    return MemoryPreview(memory, [(plan_label(s), plans[s.strategy_id]) for s in strategies])


def sweep_settings(settings: Settings, section: SweepSection, run_id: str) -> SweepSettings:
    """What every strategy of the run `run_id` shares, from the configuration and its [sweep] section."""
    run_dir = settings.runs_dir / run_id
    return SweepSettings(
        model_name=settings.file.model.name,
        model_path=str(settings.model_path),
        model_tag=section.model_tag or model_tag(settings.file.model.name),
        run_id=run_id,
        run_dir=run_dir,
        prompt_df_path=run_dir / PROMPTS_NAME,
        nodes=section.nodes,
        gpus_per_node=section.gpus_per_node,
        batch_size=section.batch_size,
        max_new_tokens=section.max_new_tokens,
        precision=section.precision,
        quant_group_size=section.quant_group_size,
        device=section.device,
        fast_decode=section.fast_decode,
        slurm_time_limit=section.time_limit,
        partition=settings.cluster.partition,
        account=settings.cluster.account,
        profiling_enabled=section.profile,
        profilers=section.profilers,
        profile_steps=section.profile_steps,
        warmup_batches=section.warmup_batches,
        repeats=section.timed_repeats,
    )


def load(run_dir: Path) -> Sweep:
    """An existing run, from its folder (or its manifest.json)."""
    run_dir = run_dir.parent if run_dir.name == MANIFEST_NAME else run_dir
    if not (run_dir / MANIFEST_NAME).exists():
        raise BadInput(f"{run_dir}: not a sweep run folder (no {MANIFEST_NAME})")
    manifest = Manifest.load(run_dir)
    stored = dict(manifest.settings)
    for key in ("run_dir", "prompt_df_path"):
        stored[key] = Path(str(stored[key]))
    fields = {f.name: f for f in dataclasses.fields(SweepSettings)}
    unknown = sorted(set(stored) - set(fields))
    missing = sorted(n for n, f in fields.items() if n not in stored and f.default is dataclasses.MISSING)
    if unknown or missing:
        keys = ", ".join([*(f"{k} (unknown)" for k in unknown), *(f"{k} (missing)" for k in missing)])
        raise BadInput(f"{manifest.path}: settings: {keys}; was it written by another version of the cockpit?")
    return Sweep(SweepSettings(**stored), manifest)

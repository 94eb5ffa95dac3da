"""Drive a planned sweep: check the nodes can take its jobs and run its runtime, name the interface its ranks talk
over between nodes (the inventory's ranks_interface), choose how they see the run folder, run (or resume) every
strategy not done through the pipeline, fill in the baseline, and cancel or inspect a run from another process."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from cockpit.config import Settings
from cockpit.errors import BadInput
from cockpit.jobs.factory import RanksLink, RuntimeEnvironment
from cockpit.jobs.watch import CAP_S
from cockpit.sweep.collect import ResultCollector
from cockpit.sweep.manifest import Manifest
from cockpit.sweep.pipeline import DistributedExperimentPipeline, SweepEvent
from cockpit.sweep.plan import BASELINE_NAME, Sweep
from cockpit.sweep.prompt_table import load_prompt_table, save_prompt_table
from cockpit.sweep.staging import RunStorage, SharedRunStorage
from runtime.contract import BuildManifest
from runtime.outputs import last_progress

if TYPE_CHECKING:
    from cockpit.delivery.model import ModelRecord
    from cockpit.nodes.inventory import Node

NOTHING_SUBMITTED = "\nno job was submitted"


def verified_runtime(sweep: Sweep, settings: Settings, on_event: Callable[[SweepEvent], None]) -> RuntimeEnvironment:
    """The runtime the sweep's jobs run, checked with the model in one fan-out over the nodes the jobs may run on:
    the build every node verifiably has (this tree when delivery is shared), and the model pushed to each of them
    (when cockpit.delivery.model says the check applies). A BadInput naming every node that differs, in both
    checks, before any job."""
    from cockpit.delivery.model import model_check_needed

    launcher = sweep.manifest.launcher
    check_runtime = settings.runtime.delivery != "shared"
    check_model = model_check_needed(settings, sweep.manifest.backend, sweep.manifest.run_storage)
    if not check_runtime and not check_model:
        return RuntimeEnvironment(launcher=launcher)
    build, model = asyncio.run(_verify_nodes(sweep, settings, check_runtime, check_model))
    if model is not None:
        on_event(SweepEvent("verified", "model", f"{model.path} ({model.short}) on every node"))
    if build is None:
        return RuntimeEnvironment(launcher=launcher)
    from cockpit.delivery.build import IMAGE_PYTHON, IMAGE_SOURCE
    from cockpit.delivery.verify import target

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


def ranks_link(nodes: Sequence[Node], where: str) -> RanksLink | None:
    """The compute nodes' ranks interface (`ranks_interface`), None where none names one; a BadInput naming the
    inventory when they name different ones (one job's ranks all use one)."""
    named = {node.name: node.ranks_interface for node in nodes}
    interfaces = set(named.values())
    if interfaces == {None}:
        return None
    if len(interfaces) > 1:
        said = ", ".join(f"{name}: {interface or 'none'}" for name, interface in named.items())
        raise BadInput(f"{where}: the compute nodes name different ranks_interface values ({said}): give them one")
    return RanksLink(str(interfaces.pop()), {node.name: node.ranks_address for node in nodes if node.ranks_address})


def over_ranks_link(
    runtime: RuntimeEnvironment, sweep: Sweep, settings: Settings, on_event: Callable[[SweepEvent], None]
) -> RuntimeEnvironment:
    """The runtime with the interface the inventory says the ranks talk over between nodes, said in an event."""
    from cockpit.nodes.inventory import Inventory

    if sweep.manifest.backend == "local" or settings.inventory is None:
        return runtime
    link = ranks_link(Inventory.load(settings.inventory).compute, str(settings.inventory))
    if link is None:
        return runtime
    where = ", ".join(f"{node} {address}" for node, address in link.addresses.items())
    on_event(
        SweepEvent("verified", "link", f"ranks across nodes talk over {link.interface}" + (f" ({where})" * bool(where)))
    )
    return dataclasses.replace(runtime, link=link)


async def _verify_nodes(
    sweep: Sweep, settings: Settings, check_runtime: bool, check_model: bool
) -> tuple[BuildManifest | None, ModelRecord | None]:
    """Both checks at once over one pool; every refusal said together."""
    from cockpit.delivery.model import require_model
    from cockpit.delivery.verify import require_verified
    from cockpit.nodes.inventory import LOCALHOST, Inventory
    from cockpit.nodes.ssh import pool_for

    local = sweep.manifest.backend == "local"  # the local backend runs every job on this machine
    nodes = [LOCALHOST] if local else Inventory.load(settings.inventory).compute

    async def nothing() -> None:
        return None

    async with pool_for(settings) as pool:
        build, model = await asyncio.gather(
            require_verified(pool, nodes, settings, sweep.settings.device) if check_runtime else nothing(),
            require_model(pool, nodes, settings) if check_model else nothing(),
            return_exceptions=True,
        )
    refused = [str(found).removesuffix(NOTHING_SUBMITTED) for found in (build, model) if isinstance(found, BadInput)]
    if refused:
        raise BadInput("\n".join(refused) + NOTHING_SUBMITTED)
    for found in (build, model):
        if isinstance(found, BaseException):
            raise found
    return build, model  # type: ignore[return-value]


def require_slurm_nodes(sweep: Sweep, settings: Settings, on_event: Callable[[SweepEvent], None]) -> list[str]:
    """The partition's nodes that can take jobs, enough of them for the sweep's largest strategy; else a BadInput
    naming every node that cannot and why (down, drained, not answering), before any job."""
    from cockpit.delivery.verify import config_flag
    from cockpit.jobs.slurm_nodes import partition_nodes, slurm_nodes
    from cockpit.nodes.nodeset import fold
    from cockpit.nodes.slurmd_log import slurmd_complaints

    nodes = partition_nodes(slurm_nodes(), settings.cluster.partition)
    usable = [node.name for node in nodes if node.usable]
    needed = sweep.settings.nodes
    if len(usable) < needed:
        where = f"partition {settings.cluster.partition}" if settings.cluster.partition else "Slurm"
        said = slurmd_complaints(settings, [n.name for n in nodes if n.silent], config_flag(settings))
        lines = [f"{node.name}  {node.describe()}" + (f": {said[node.name]}" if node.name in said else "")
                 for node in nodes if not node.usable]  # fmt: skip
        raise BadInput(
            f"{where}: the sweep needs {needed} node(s) that can take jobs, {len(usable)} can"
            + (f" ({fold(usable)})" if usable else "")
            + "".join(f"\n  {line}" for line in lines)
            + "\nno job was submitted"
        )
    on_event(SweepEvent("verified", "slurm", f"{fold(usable)} can take jobs"))
    return usable


def run_storage(sweep: Sweep, settings: Settings, usable: list[str]) -> RunStorage:
    """How the jobs' nodes see the run folder: shared, or staged to the `usable` nodes over ssh (each of them
    must be in the inventory: that is how the cockpit reaches it)."""
    if sweep.manifest.run_storage == "shared":
        return SharedRunStorage()
    from cockpit.nodes.inventory import Inventory
    from cockpit.nodes.nodeset import fold
    from cockpit.nodes.ssh import pool_for
    from cockpit.sweep.staging import StagedRunStorage

    if settings.inventory is None:
        raise BadInput("[paths] run_storage = staged copies run folders to the nodes over ssh: set [cluster] inventory")
    known = {node.name: node for node in Inventory.load(settings.inventory).compute}
    unknown = [name for name in usable if name not in known]
    if unknown:
        raise BadInput(
            f"{settings.inventory}: Slurm may give jobs to {fold(unknown)}, which the inventory does not name; "
            "staged run folders are copied to every node a job may get\nno job was submitted"
        )
    return StagedRunStorage(sweep.run_dir, [known[name] for name in usable], pool_for(settings))


def _pipeline(
    sweep: Sweep,
    on_event: Callable[[SweepEvent], None],
    runtime: RuntimeEnvironment | None = None,
    storage: RunStorage | None = None,
    watch_cap_s: float = CAP_S,
) -> DistributedExperimentPipeline:
    prompts = load_prompt_table(sweep.settings.prompt_df_path)
    collector = ResultCollector(prompts, sweep.results_dir, sweep.stamp, sweep.settings.run_id)
    return DistributedExperimentPipeline(
        sweep.strategies(),
        sweep.factory(runtime),
        sweep.backend(watch_cap_s).job_manager(sweep.run_dir),
        collector,
        sweep.manifest,
        max_attempts=sweep.manifest.max_attempts,
        on_event=on_event,
        storage=storage,
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
        raise BadInput(f"{sweep.run_dir}: a sweep process (pid {sweep.manifest.pipeline_pid}) is running it")
    usable = require_slurm_nodes(sweep, settings, on_event) if sweep.manifest.backend == "slurm" else []
    runtime = over_ranks_link(verified_runtime(sweep, settings, on_event), sweep, settings, on_event)
    storage = run_storage(sweep, settings, usable)
    if sweep.manifest.baseline != "reference":
        run_endpoint_baseline(sweep, settings, on_event)
    pipeline = _pipeline(sweep, on_event, runtime, storage, settings.refresh.squeue_max_s)
    try:
        with sigterm_as_interrupt():
            manifest = pipeline.run()
    finally:
        storage.close()
    if sweep.manifest.baseline == "reference":
        baseline_from_reference(sweep)
    return manifest


def run_endpoint_baseline(sweep: Sweep, settings: Settings, on_event: Callable[[SweepEvent], None]) -> None:
    """Baseline completions from the configured OpenAI-compatible endpoint (resumable: done rows are kept)."""
    from cockpit.sweep.baseline import LocalInferenceRunner, OpenAICompletionClient

    client = OpenAICompletionClient.from_settings(settings)
    if client is None:
        raise BadInput(f"{sweep.run_dir}: the run's baseline is {sweep.manifest.baseline}, but none is configured")
    out = sweep.results_dir / BASELINE_NAME
    frame = load_prompt_table(out if out.exists() else sweep.settings.prompt_df_path)
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
    prompts = load_prompt_table(sweep.settings.prompt_df_path)
    ref = rows[rows["strategy"] == reference].set_index(["variant", "prompt_id"])
    keys = pd.MultiIndex.from_frame(prompts[["variant", "prompt_id"]])
    found = keys.isin(ref.index)
    prompts.loc[found, "local_completion"] = ref.loc[keys[found], "completion"].to_numpy()
    prompts.loc[found, "local_latency_ms"] = ref.loc[keys[found], "latency_ms"].to_numpy()
    prompts["status"] = ["done" if f else "failed" for f in found]
    return save_prompt_table(prompts, sweep.results_dir / BASELINE_NAME)


def cancel(sweep: Sweep) -> list[str]:
    """Stop a sweep: its process if alive (it cancels its own job), else any job it left running."""
    manifest = sweep.manifest
    if manifest.pipeline_alive() and manifest.pipeline_pid is not None:
        os.kill(manifest.pipeline_pid, signal.SIGTERM)
        return [f"sent SIGTERM to the sweep process {manifest.pipeline_pid}"]
    manager, done = sweep.backend().job_manager(sweep.run_dir), []
    for entry in manifest.running():
        assert entry.job_id is not None
        manager.cancel(entry.job_id)
        entry.status = "CANCELLED"
        done.append(f"cancelled job {entry.job_id} ({entry.strategy_id})")
    manifest.state = "cancelled"
    manifest.save()
    return done


def live_states(sweep: Sweep) -> dict[str, str]:
    """Each running strategy's job state as squeue says it now, by job id, read from the snapshot the sweep's own
    job watch and the dashboard share (cockpit.jobs.watch): a status asks squeue no more often than they do. {} on
    the local scheduler, or when squeue fails (the manifest's states stand)."""
    from cockpit.jobs.records import JobError
    from cockpit.jobs.slurm import record_from_squeue
    from cockpit.jobs.watch import SqueueWatch

    running = [entry.job_id for entry in sweep.manifest.running() if entry.job_id]
    if sweep.manifest.backend != "slurm" or not running:
        return {}
    try:
        data = SqueueWatch(sweep.run_dir.parent).snapshot()
    except JobError:
        return {}
    records = {job_id: record_from_squeue(data, job_id) for job_id in running}
    return {job_id: record.state for job_id, record in records.items() if record is not None}


def status(sweep: Sweep) -> dict[str, Any]:
    """The manifest's view, with live progress (rows written by the result ranks) and, on Slurm, the queue's
    state of each running strategy's job."""
    live, rows = live_states(sweep), []
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
                "status": live.get(entry.job_id or "", entry.status),
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

"""The seam between the app and the world: what the app polls and what its actions do. `LiveSource` asks the
nodes (one probe per node over the ssh pool; with Slurm and no inventory, sinfo alone, and the actions that need
ssh refused), the scheduler (squeue/sacct or the local job records), the model's push record and the run folders,
and acts through the same layers as the `cluster` CLI. `cockpit --demo`, the tests and the benchmarks hand the app
a simulated cluster instead (`cockpit.tui.demo`)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cockpit.config import Settings
from cockpit.delivery import model
from cockpit.delivery.build import built
from cockpit.delivery.verify import current_manifest_path
from cockpit.errors import BAD_INPUT, OperationFailed
from cockpit.jobs.backend import choose_backend
from cockpit.jobs.output import JobLog, JobLogs, LogChunk, parse_tail, read_log, tail_command
from cockpit.jobs.queue import QueueRow
from cockpit.nodes import power
from cockpit.nodes.inventory import Inventory, Node
from cockpit.nodes.leases import Lease, lease_file, unknown_hosts
from cockpit.nodes.nodeset import fold
from cockpit.nodes.ssh import CommandResult, pool_for, shell_argv
from cockpit.nodes.telemetry import NodeSample, NodeTelemetry, probe_nodes
from cockpit.nodes.wol import wake
from cockpit.provision.events import ProvisionEvent
from cockpit.sweep.progress import ProgressTracker, SweepProgress, find_active_run
from runtime.local_launch import local_env

if TYPE_CHECKING:
    from cockpit.analysis.results import RunInfo, RunResults
    from cockpit.jobs.slurm_nodes import SlurmNode

# pandas (results, sweeps) and ansible-runner (configure) load on first use: the dashboard's first paint needs neither


@dataclass(frozen=True)
class ActionResult:
    """What one action did: the names it worked for, and for each other one why not."""

    action: str
    done: tuple[str, ...]
    failed: tuple[tuple[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failed

    def message(self) -> str:
        lines = [f"{self.action}: {fold(self.done)}"] if self.done else []
        return "\n".join(lines + [f"{name}: {reason}" for name, reason in self.failed])


@dataclass(frozen=True)
class SweepStarted:
    """A sweep an action started: its run id (the app opens its results when the sweep feed says it completed),
    and what to tell the user."""

    run_id: str
    message: str


def command_outcome(action: str, results: Sequence[CommandResult]) -> ActionResult:
    """An ActionResult from per-node command results (a failure's reason is its error or exit status)."""

    def reason(result: CommandResult) -> str:
        last = result.stderr.strip().splitlines()[-1:] if result.error is None else []
        return "; ".join([result.error or f"exit {result.exit_status}", *last])

    done = tuple(r.node for r in results if r.ok)
    return ActionResult(action, done, tuple((r.node, reason(r)) for r in results if not r.ok))


def slurm_sample(node: SlurmNode) -> NodeSample:
    """A node as the dashboard shows it where Slurm is the only source: what sinfo says, no probe (no ssh)."""
    return NodeSample(node.name, None, None, None, slurm_problem=None if node.usable else node.describe(), slurm=node)


class ProvisionRun(Protocol):
    """A running playbook, as the provisioning screen follows it (`cockpit.provision.runner.PlaybookRun`)."""

    playbook: Path

    def events(self) -> Iterator[ProvisionEvent]: ...

    def cancel(self) -> None: ...

    @property
    def status(self) -> str: ...

    @property
    def rc(self) -> int | None: ...

    def output_tail(self, lines: int = 20) -> str: ...


class ClusterSource(Protocol):
    """Everything the app shows (one awaitable per panel, each call one poll) and everything it can do."""

    node_names: list[str]

    async def nodes(self) -> list[NodeSample]: ...

    async def runtime_build(self) -> str | None:
        """The build id the nodes should run: the one built here for the configured delivery and the sweep's
        device; None when there is none. Asked only when a delivery other than "shared" is configured."""
        ...

    async def model_gaps(self) -> dict[str, str]:
        """The nodes that lack the model a sweep needs on them, each with a few words why ("model differs"); {}
        when every node has it or no sweep checks it (cockpit.delivery.model)."""
        ...

    async def unknown_hosts(self) -> list[Lease]:
        """The DHCP leases on the compute network whose MAC is no inventory node's (cockpit.nodes.leases)."""
        ...

    async def queue(self) -> list[QueueRow]: ...

    async def finished(self) -> list[QueueRow]: ...

    async def sweep(self) -> SweepProgress | None: ...

    async def runs(self) -> list[RunInfo]: ...

    async def results(self, run_dir: Path) -> RunResults: ...

    async def wake(self, names: Sequence[str]) -> ActionResult: ...

    async def power(self, names: Sequence[str], action: power.PowerAction) -> ActionResult: ...

    async def configure(self, names: Sequence[str]) -> ProvisionRun: ...

    async def start_sweep(self, overrides: dict[str, Any], telemetry: Mapping[str, NodeTelemetry]) -> SweepStarted:
        """Plan and start a sweep with these [sweep] overrides, its memory plan held against the nodes' last good
        `telemetry` readings (the node board's)."""
        ...

    async def cancel_job(self, job_id: str) -> ActionResult: ...

    async def job_logs(self, job_id: str) -> JobLogs:
        """Where a queued job's output is (cockpit.jobs.output), each rank's own log too for a sweep's job."""
        ...

    async def strategy_logs(self, run_dir: Path, strategy_id: str) -> JobLogs:
        """The logs of a sweep strategy's latest job."""
        ...

    async def read_log(self, log: JobLog, offset: int | None) -> LogChunk:
        """Whole lines of `log` from `offset` (None: its end), here or on its node."""
        ...

    def shell_argv(self, name: str) -> list[str]:
        """The command line of an interactive shell on the node `name`, for the app to run in its terminal."""
        ...

    async def close(self) -> None: ...


class LiveSource:
    """The configured cluster: inventory nodes over ssh, its scheduler's queue, the run folders."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.inventory = Inventory(()) if settings.nodes_from_slurm else Inventory.load(settings.inventory)
        self.node_names = [node.name for node in self.inventory.compute] or self._slurm_names()
        self.pool = pool_for(settings)
        # the queue at the dashboard's own rate, from the squeue snapshot a sweep's job watch shares
        self.jobs = choose_backend(settings.cluster.scheduler, settings.runs_dir).queue(settings.refresh.squeue_s)
        self.runs_dir = settings.runs_dir
        self.manifest = current_manifest_path(settings.runtime)
        self.lease_file = lease_file(self.inventory)  # None without a control node: nothing to read
        self._tracker: ProgressTracker | None = None

    def _slurm_names(self) -> list[str]:
        """The nodes of the configured partition (all of them without one) that sinfo lists; none without Slurm."""
        from cockpit.jobs.slurm_nodes import partition_nodes, slurm_nodes

        if not self.settings.nodes_from_slurm:
            return []
        return [node.name for node in partition_nodes(slurm_nodes(), self.settings.cluster.partition)]

    def _nodes(self, names: Sequence[str], action: str) -> list[Node]:
        """The inventory's nodes for an action over ssh; refused in one line where the nodes come from Slurm."""
        if self.settings.nodes_from_slurm:
            raise OperationFailed(self.settings.needs_ssh(action))
        return self.inventory.select(list(names))

    async def nodes(self) -> list[NodeSample]:
        """Each node's probe; with Slurm, also what slurmctld says of it, asked at the same time (and that alone
        where the nodes come from Slurm)."""
        if self.settings.nodes_from_slurm:
            return await asyncio.to_thread(self._slurm_samples)
        probing = probe_nodes(self.pool, self.inventory.compute, self.manifest)
        if self.settings.cluster.scheduler != "slurm":
            return await probing
        samples, problems = await asyncio.gather(probing, asyncio.to_thread(self._slurm_problems))
        return [replace(sample, slurm_problem=problems.get(sample.name)) for sample in samples]

    def _slurm_problems(self) -> dict[str, str]:
        """Why Slurm runs no job on each node that it does not run jobs on (every node, when sinfo fails)."""
        from cockpit.jobs.records import JobError
        from cockpit.jobs.slurm_nodes import nodes_named, slurm_nodes

        names = [node.name for node in self.inventory.compute]
        try:
            known = slurm_nodes()
        except JobError as err:
            return dict.fromkeys(names, f"Slurm state unknown ({err})")
        return {name: node.describe() for name, node in nodes_named(known, names).items() if not node.usable}

    def _slurm_samples(self) -> list[NodeSample]:
        """Each node as sinfo shows it (no probe: nothing to reach it with); every one unknown, with the reason,
        when sinfo fails."""
        from cockpit.jobs.records import JobError
        from cockpit.jobs.slurm_nodes import nodes_named, slurm_nodes

        try:
            known = slurm_nodes()
        except JobError as err:
            return [NodeSample(name, None, f"Slurm state unknown ({err})", None) for name in self.node_names]
        return [slurm_sample(node) for node in nodes_named(known, self.node_names).values()]

    async def runtime_build(self) -> str | None:
        return await asyncio.to_thread(self._runtime_build)

    def _runtime_build(self) -> str | None:
        delivery = self.settings.runtime.delivery
        if delivery == "shared":
            return None
        try:
            return built(self.settings, delivery, self.settings.runtime_device()).build_id
        except BAD_INPUT:  # nothing built yet (or for another device kind, or corrupt): nothing to compare with
            return None

    async def model_gaps(self) -> dict[str, str]:
        return await asyncio.to_thread(model.gaps, self.settings, self.node_names)

    async def unknown_hosts(self) -> list[Lease]:
        return await asyncio.to_thread(unknown_hosts, self.lease_file, self.inventory)

    async def queue(self) -> list[QueueRow]:
        return await asyncio.to_thread(self.jobs.active)

    async def finished(self) -> list[QueueRow]:
        return await asyncio.to_thread(self.jobs.finished)

    async def sweep(self) -> SweepProgress | None:
        return await asyncio.to_thread(self._sweep)

    def _sweep(self) -> SweepProgress | None:
        run: Path | None = find_active_run(self.runs_dir)
        if run is None:
            return None if self._tracker is None else self._tracker.poll()  # the last run, as it ended
        if self._tracker is None or self._tracker.run_dir != run:
            self._tracker = ProgressTracker(run)
        return self._tracker.poll()

    async def runs(self) -> list[RunInfo]:
        from cockpit.analysis.results import list_runs

        return await asyncio.to_thread(list_runs, self.runs_dir)

    async def results(self, run_dir: Path) -> RunResults:
        from cockpit.analysis.results import load_results

        return await asyncio.to_thread(load_results, run_dir, self.inventory.memory_bandwidths())

    async def wake(self, names: Sequence[str]) -> ActionResult:
        results = wake(self._nodes(names, "wake"), self.settings.wake_on_lan)
        done = tuple(r.node for r in results if r.ok)
        return ActionResult("magic packets sent", done, tuple((r.node, str(r.error)) for r in results if not r.ok))

    async def power(self, names: Sequence[str], action: power.PowerAction) -> ActionResult:
        nodes = self._nodes(names, "shut down" if action == "off" else "restart")
        results = await power.power(self.pool, nodes, action)
        return command_outcome("shutting down" if action == "off" else "restarting", results)

    async def configure(self, names: Sequence[str]) -> ProvisionRun:
        """The compute playbooks on `names`, started once every one of them answers."""
        from cockpit.provision.compute import compute_run

        nodes = self._nodes(names, "configure")
        silent = [r for r in await power.status(self.pool, nodes) if not r.ok]
        if silent:
            reasons = "; ".join(f"{r.node}: {r.error or f'exit {r.exit_status}'}" for r in silent)
            raise OperationFailed(f"configure: not every node answers ({reasons})")
        return compute_run(self.settings, nodes).start()

    async def start_sweep(self, overrides: dict[str, Any], telemetry: Mapping[str, NodeTelemetry]) -> SweepStarted:
        """Plan a run here (bad input shows at once), then run it in a process of its own that outlives the app,
        as `cluster sweep resume RUN_DIR` would; the dashboard follows it through its files."""
        from cockpit.sweep.plan import plan

        sweep = await asyncio.to_thread(plan, self.settings, telemetry=dict(telemetry), **overrides)
        command = [sys.executable, "-m", "cockpit.cli"]
        if self.settings.source is not None:
            command += ["--config", str(self.settings.source)]
        command += ["sweep", "resume", str(sweep.run_dir)]
        log = sweep.run_dir / "sweep.log"
        with log.open("ab") as out:
            subprocess.Popen(
                command,
                env=local_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # it runs on when the app quits, like a submitted job
            )
        run_id = sweep.settings.run_id
        started = f"{run_id}: started ({', '.join(s.strategy_id for s in sweep.strategies())})"
        return SweepStarted(run_id, "\n".join([started, *sweep.manifest.memory_lines()]))

    async def cancel_job(self, job_id: str) -> ActionResult:
        try:
            await asyncio.to_thread(self.jobs.cancel, job_id)
        except Exception as err:
            return ActionResult("cancelled", (), ((f"job {job_id}", str(err)),))
        return ActionResult("cancel sent to job", (job_id,))

    def _placed(self, logs: JobLogs) -> JobLogs:
        """With staged run folders (no storage shared with the nodes) a running job's logs are on its nodes."""
        from cockpit.sweep.staging import on_nodes

        staged = self.settings.cluster.scheduler == "slurm" and self.settings.file.paths.run_storage == "staged"
        return on_nodes(logs) if staged else logs

    async def job_logs(self, job_id: str) -> JobLogs:
        return self._placed(await asyncio.to_thread(self.jobs.logs, job_id))

    async def strategy_logs(self, run_dir: Path, strategy_id: str) -> JobLogs:
        from cockpit.sweep.manifest import Manifest

        return self._placed(await asyncio.to_thread(lambda: Manifest.load(run_dir).logs(strategy_id)))

    async def read_log(self, log: JobLog, offset: int | None) -> LogChunk:
        if log.node is None:
            return await asyncio.to_thread(read_log, log.path, offset)
        node = self._nodes([log.node], "read a log on its node")[0]
        command = tail_command(log.path, offset)
        result = await self.pool.run(node, command, timeout_s=self.settings.ssh.command_timeout_s, binary=True)
        if not result.ok:
            raise OperationFailed(f"{log.node}: reading {log.path}: {result.error or f'exit {result.exit_status}'}")
        try:
            return parse_tail(result.data, offset)
        except ValueError as err:
            raise OperationFailed(f"{log.node}: reading {log.path}: {err}") from None

    def shell_argv(self, name: str, command: str | None = None) -> list[str]:
        """ssh to the node as the pool reaches it (or `command` run there in place of a login shell)."""
        (node,) = self._nodes([name], "open a shell")
        ssh = self.settings.ssh
        return shell_argv(
            node, self.settings.known_hosts, ssh.connect_timeout_s, command, os.environ.get("SHELL", "/bin/sh")
        )

    async def close(self) -> None:
        await self.pool.close()

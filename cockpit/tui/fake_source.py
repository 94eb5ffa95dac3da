"""A fake cluster for snapshots and benchmarks: fixed, deterministic data in the shape `LiveSource` returns,
for any number of nodes, GPUs and jobs, and actions that are only recorded. Nothing here touches the machine or
the network."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cockpit.jobs.queue import QueueRow
from cockpit.nodes.power import PowerAction
from cockpit.nodes.probe_script import NO_BUILD
from cockpit.nodes.telemetry import GpuTelemetry, NodeSample, NodeTelemetry, RuntimeBuild
from cockpit.sweep.progress import RankProgress, StrategyProgress, SweepProgress
from cockpit.tui.fake_provision import FakeProvisionRun
from cockpit.tui.sources import ActionResult

if TYPE_CHECKING:
    from cockpit.analysis.results import RunInfo, RunResults

STATES = ("RUNNING", "PENDING", "PENDING", "RUNNING", "COMPLETING")


def fake_telemetry(name: str, index: int, gpus: int, tick: int) -> NodeTelemetry:
    """A node's readings that change with `tick`, so sparklines move the same way on every run."""
    cards = tuple(
        GpuTelemetry(
            index=g,
            vendor="intel",
            name="Arc A770",
            source="xpu-smi",
            pci_bus_id=f"0000:{3 + g:02x}:00.0",
            util_pct=float((index * 17 + g * 29 + tick * 13) % 101),
            memory_used_mib=float(1024 + (index * 311 + tick * 97) % 14000),
            memory_total_mib=16384.0,
            temperature_c=float(40 + (index + tick) % 35),
            power_w=float(60 + (index * 7 + tick * 11) % 150),
            energy_j=None,
        )
        for g in range(gpus)
    )
    load = (round(0.2 + index % 7 * 0.5, 2), 0.5, 0.4)
    return NodeTelemetry(name, 86400.0 + index, load, 16, 65536.0, 40960.0 - index * 64, cards, ())


def fake_jobs(count: int) -> list[QueueRow]:
    return [
        QueueRow(
            job_id=str(1000 + i),
            name=f"llama8b_pp2_tp1_n2_{i}",
            user="admin",
            state=STATES[i % len(STATES)],
            partition="gpu",
            nodes=f"node[{(2 * i) % 64}-{(2 * i) % 64 + 1}]" if STATES[i % len(STATES)] == "RUNNING" else None,
            elapsed_s=float(i * 37 % 5000) if STATES[i % len(STATES)] == "RUNNING" else None,
            time_limit_s=3600.0,
            reason="Resources" if STATES[i % len(STATES)] == "PENDING" else None,
            submitted_at=1_700_000_000.0 + i,
        )
        for i in range(count)
    ]


def fake_sweep(taken_at: float) -> SweepProgress:
    """A sweep halfway: the reference done, TP-2 running with a stalled rank, PP-2 pending."""

    def rank(r: int, written: int, expected: int, rate: float, stalled: str | None = None) -> RankProgress:
        eta = None if not rate or expected == written else (expected - written) / max(rate / 32, 0.01)
        phase = "done" if written == expected and expected else "decode"
        return RankProgress(r, phase, written, expected, rate, taken_at - 1, eta, stalled is not None, stalled)

    done = (rank(0, 40, 40, 950.0),)
    strategies = (
        StrategyProgress("tiny_pp1_tp1_n1", "reference", "COMPLETED", "1001", done, 40, 40, 950.0, 0.0),
        StrategyProgress(
            "tiny_pp1_tp2_n2", "tp_nodes", "RUNNING", "1002",
            (rank(0, 24, 40, 610.0), rank(1, 0, 0, 0.0, "no heartbeat for 42 s")), 24, 40, 610.0, 30.0,
        ),
        StrategyProgress("tiny_pp2_tp1_n2", "pp_nodes", "PENDING", "1003", (), 0, 0, 0.0, None),
    )  # fmt: skip
    return SweepProgress("run_20261123-101500", Path("/srv/cockpit/runs/run_20261123-101500"), "running",
                         strategies, taken_at)  # fmt: skip


class FakeClusterSource:
    """`nodes` x `gpus` fake nodes, `jobs` fake queued jobs and one fake sweep; every poll advances `tick`. With
    `installed` (node name to build id; a node left out has none) the nodes report their runtime builds, and
    `built` is the build made here."""

    def __init__(
        self,
        nodes: int = 2,
        gpus: int = 1,
        jobs: int = 4,
        unreachable: tuple[str, ...] = (),
        failing: tuple[str, ...] = (),
        installed: Mapping[str, str] | None = None,
        built: str | None = None,
    ) -> None:
        self.node_names = [f"node{i}" for i in range(nodes)]
        self.gpus = gpus
        self.jobs = fake_jobs(jobs)
        self.unreachable = set(unreachable)
        self.failing = set(failing)  # they answer, with garbage
        self.installed = installed
        self.built = built
        self.tick = 0
        self.actions: list[tuple[str, ...]] = []  # what the app asked for, in order

    def _sample(self, index: int, name: str) -> NodeSample:
        if name in self.unreachable:
            return NodeSample(name, None, "no answer within 5 s (connect timeout)", None)
        if name in self.failing:
            return NodeSample(name, None, f"{name}: probe output is not JSON: 'Segmentation fault'", 3.0)
        telemetry = fake_telemetry(name, index, self.gpus, self.tick)
        if self.installed is not None:
            build = self.installed.get(name)
            telemetry = replace(
                telemetry, runtime=RuntimeBuild(build, "xpu" if build else None, None if build else NO_BUILD)
            )
        return NodeSample(name, telemetry, None, 2.0 + index % 5)

    async def nodes(self) -> list[NodeSample]:
        self.tick += 1
        return [self._sample(i, name) for i, name in enumerate(self.node_names)]

    async def runtime_build(self) -> str | None:
        return self.built

    async def queue(self) -> list[QueueRow]:
        return self.jobs

    async def sweep(self) -> SweepProgress | None:
        return fake_sweep(1_700_000_000.0)

    async def runs(self) -> list[RunInfo]:
        from cockpit.tui.fake_results import fake_runs  # pandas, as with the live source: only when asked

        return fake_runs()

    async def results(self, run_dir: Path) -> RunResults:
        from cockpit.tui.fake_results import fake_results

        return fake_results(run_dir)

    async def wake(self, names: Sequence[str]) -> ActionResult:
        self.actions.append(("wake", *names))
        return ActionResult("magic packets sent", tuple(names))

    async def power(self, names: Sequence[str], action: PowerAction) -> ActionResult:
        self.actions.append((action, *names))
        return ActionResult("shutting down" if action == "off" else "restarting", tuple(names))

    async def configure(self, names: Sequence[str]) -> FakeProvisionRun:
        self.actions.append(("configure", *names))
        return FakeProvisionRun()

    async def start_sweep(self, overrides: dict[str, Any]) -> str:
        self.actions.append(("sweep", *(f"{k}={v}" for k, v in sorted(overrides.items()))))
        return "run_20261123-101500: started (fake)"

    async def cancel_job(self, job_id: str) -> ActionResult:
        self.actions.append(("cancel", job_id))
        return ActionResult("cancel sent to job", (job_id,))

    async def finished(self) -> list[QueueRow]:
        return [replace(job, state="COMPLETED", reason=None) for job in self.jobs[:3]]

    async def close(self) -> None:
        return None

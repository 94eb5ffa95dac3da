"""The seam between the app and the world: what the dashboard polls. `LiveSource` asks the nodes (one probe per
node over the ssh pool), the scheduler (squeue or the local job records) and the active run's progress files;
tests and benchmarks hand the app a fake with fixed data instead (`cockpit.tui.fake_source`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Protocol

from cockpit.config import Settings
from cockpit.experiments.progress import ProgressTracker, SweepProgress, find_active_run
from cockpit.jobs.queue import QueueRow, queue_source
from cockpit.nodes.inventory import Inventory
from cockpit.nodes.ssh import SshPool
from cockpit.nodes.telemetry import NodeSample, probe_nodes


class ClusterSource(Protocol):
    """Everything the dashboard shows, one awaitable per panel; each call is one poll."""

    node_names: list[str]

    async def nodes(self) -> list[NodeSample]: ...

    async def queue(self) -> list[QueueRow]: ...

    async def sweep(self) -> SweepProgress | None: ...

    async def close(self) -> None: ...


class LiveSource:
    """The configured cluster: inventory nodes over ssh, its scheduler's queue, the newest running sweep."""

    def __init__(self, settings: Settings) -> None:
        self.inventory = Inventory.load(settings.inventory)
        self.node_names = [node.name for node in self.inventory.compute]
        ssh = settings.ssh
        self.pool = SshPool(
            settings.known_hosts,
            connect_timeout_s=ssh.connect_timeout_s,
            command_timeout_s=ssh.command_timeout_s,
            concurrency=ssh.concurrency,
        )
        self.jobs = queue_source(settings)
        self.runs_dir = settings.runs_dir
        self._tracker: ProgressTracker | None = None

    async def nodes(self) -> list[NodeSample]:
        return await probe_nodes(self.pool, self.inventory.compute)

    async def queue(self) -> list[QueueRow]:
        return await asyncio.to_thread(self.jobs.active)

    async def sweep(self) -> SweepProgress | None:
        return await asyncio.to_thread(self._sweep)

    def _sweep(self) -> SweepProgress | None:
        run: Path | None = find_active_run(self.runs_dir)
        if run is None:
            return None if self._tracker is None else self._tracker.poll()  # the last run, as it ended
        if self._tracker is None or self._tracker.run_dir != run:
            self._tracker = ProgressTracker(run)
        return self._tracker.poll()

    async def close(self) -> None:
        await self.pool.close()

"""The cockpit application: polls its sources in workers and tells the dashboard (and a node view, while one is
shown) which panel has new data, and runs the actions (each in a worker of its own, its outcome a notification)
that the dashboard asks for with its messages and the command palette with its commands; a shell on a node it runs
in its own terminal, suspended meanwhile. A sweep started from its form opens the results screen on its own once
the sweep feed says it completed."""

from __future__ import annotations

import asyncio
import gc
import shlex
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

from textual import on
from textual.app import App, SuspendNotSupported, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from cockpit.config import Settings
from cockpit.jobs.output import JobLogs
from cockpit.tui.feeds import Feed
from cockpit.tui.node_board import NodeBoard
from cockpit.tui.screens.dashboard import DashboardScreen, Panel
from cockpit.tui.screens.help import HelpScreen, key_groups
from cockpit.tui.screens.info import InfoScreen
from cockpit.tui.screens.log import LogScreen
from cockpit.tui.screens.provision import ProvisionScreen
from cockpit.tui.screens.sweep_form import SweepFormScreen, start_hint
from cockpit.tui.sources import ActionResult, ClusterSource, ProvisionRun

POWER_TITLES = {"off": "shut down", "reboot": "restart"}  # a power action's notification title
PANEL_OF_FEED: dict[str, Panel] = {
    "nodes": "nodes",
    "runtime": "nodes",
    "model": "nodes",
    "leases": "nodes",
    "queue": "queue",
    "sweep": "sweep",
}


class CockpitApp(App[None]):
    """The GPU cluster cockpit."""

    CSS_PATH = "cockpit.tcss"
    TITLE = "cockpit"
    BINDINGS = [  # in the footer after the screen's own; with them 80 columns hold every key shown
        Binding("s", "sweep", "Sweep"),
        Binding("o", "results", "Results"),
        Binding("question_mark", "help", "Help"),
        Binding("i", "info", "Cluster info", show=False),
        Binding("q", "quit", "Quit"),
    ]
    # what the command palette offers besides Textual's own: (title, help, action on the screen or the app)
    PALETTE = (
        ("Wake the selected nodes", "Wake-on-LAN magic packets to the marked node(s), else the one under the cursor",
         "screen.wake"),
        ("Wake all nodes", "Wake-on-LAN magic packets to every compute node", "screen.wake_all"),
        ("Configure the selected nodes", "Run the compute playbooks (ansible-runner)", "screen.configure"),
        ("Restart the selected nodes", "shutdown -r now over ssh", "screen.restart"),
        ("Shut down the selected nodes", "shutdown -h now over ssh", "screen.shutdown"),
        ("Shell on the node under the cursor", "ssh there with the cockpit's known_hosts, strict host keys",
         "screen.shell"),
        ("Cancel the job under the cursor", "scancel, or the local scheduler's cancel", "screen.cancel_job"),
        ("Show the job's output", "Its log followed live (each rank's own for a sweep's job)", "screen.log"),
        ("Show finished jobs", "sacct: the jobs that ended in the last hour", "screen.finished"),
        ("Start a sweep", "The strategies of [sweep] on the configured scheduler", "sweep"),
        ("Open results", "Runs on disk: summary, plots, completion diffs", "results"),
        ("Cluster info", "The effective configuration and the model", "info"),
    )  # fmt: skip

    def __init__(
        self,
        settings: Settings,
        source: ClusterSource,
        read_only: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.source = source
        self.read_only = read_only
        mode = " · read-only" if read_only else ""
        self.sub_title = f"cluster {settings.cluster.name} · {settings.cluster.scheduler} scheduler{mode}"
        refresh, ssh = settings.refresh, settings.ssh
        self.board = NodeBoard(source.node_names, clock=clock, runtime=settings.runtime.delivery != "shared")
        self.provisioning: list[ProvisionRun] = []  # the playbook runs this app started
        self.awaited_run: str | None = None  # the sweep the form started, its results opened when it completes
        self._frozen = False
        self.feeds: dict[str, Feed[Any]] = {
            "nodes": Feed("nodes", source.nodes, refresh.nodes_s, ssh.connect_timeout_s + ssh.command_timeout_s, clock),
            "model": Feed("model", source.model_gaps, refresh.nodes_s, 10.0, clock),  # a file read here, no ssh
            "leases": Feed("leases", source.unknown_hosts, refresh.nodes_s, 10.0, clock),  # dnsmasq's, read here
            "queue": Feed("queue", source.queue, refresh.squeue_s, 10.0, clock),
            "sweep": Feed("sweep", source.sweep, refresh.shards_s, 10.0, clock),
        }
        if self.board.runtime:  # the build the nodes should run, for the nodes table's runtime column
            self.feeds["runtime"] = Feed("runtime", source.runtime_build, refresh.nodes_s, 10.0, clock)
        self.dashboard = DashboardScreen(self.board, self.feeds, read_only, start_hint(settings, read_only))

    def get_default_screen(self) -> Screen:
        return self.dashboard

    def on_mount(self) -> None:
        for feed in self.feeds.values():
            self.poll(feed)
            self.set_interval(feed.interval_s, lambda feed=feed: self.poll(feed))

    async def on_unmount(self) -> None:
        for run in self.provisioning:  # ansible-runner's thread would keep the process alive
            if run.status in ("pending", "running"):
                run.cancel()
        await self.source.close()

    def poll(self, feed: Feed[Any]) -> None:
        """One poll of `feed` in a worker; skipped while the previous one is still out."""
        if not feed.in_flight:
            self.run_worker(self._poll(feed), group=feed.name, exit_on_error=False)

    async def _poll(self, feed: Feed[Any]) -> None:
        if await feed.poll():
            if feed.name == "nodes" and feed.error is None:
                self.board.ingest(feed.value or [])
            elif feed.name == "runtime" and feed.error is None:
                self.board.set_control_build(feed.value)
            elif feed.name == "model" and feed.error is None:
                self.board.set_model_gaps(feed.value or {})
            elif feed.name == "leases":  # a lease file that cannot be read is a problem the nodes panel names
                self.board.set_unknown_hosts(feed.value or [], feed.error)
            elif feed.name == "sweep" and feed.value is not None and feed.value.run_id == self.awaited_run:
                self._sweep_ended(feed.value.state, feed.value.run_dir)
            self.dashboard.post_message(DashboardScreen.PanelChanged(PANEL_OF_FEED[feed.name]))
            if self.screen is not self.dashboard:  # a node view follows its node (other screens ignore this)
                self.screen.post_message(DashboardScreen.PanelChanged(PANEL_OF_FEED[feed.name]))
            if not self._frozen and all(f.polls and not f.in_flight for f in self.feeds.values()):
                # what the first full paint built lives as long as the app: keep it out of the collector's full
                # passes, which otherwise cost a 64-node dashboard 100-300 ms spikes every few refreshes. Frozen
                # once the dashboard has taken in the data (its messages come first).
                self.dashboard.call_later(gc.freeze)
                self._frozen = True

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action == "sweep" and self.read_only)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for title, help_text, action in self.PALETTE:
            node, name = (screen, action.removeprefix("screen.")) if action.startswith("screen.") else (self, action)
            if hasattr(node, f"action_{name}") and node.check_action(name, ()):
                yield SystemCommand(title, help_text, partial(self.run_action, action))

    def action_help(self) -> None:
        self.push_screen(HelpScreen(key_groups(self.screen)))

    def action_info(self) -> None:
        self.push_screen(InfoScreen(self.settings, self.read_only))

    def action_sweep(self) -> None:
        async def work(overrides: dict[str, Any]) -> str:
            started = await self.source.start_sweep(overrides, self.board.good)
            self.awaited_run = started.run_id
            return started.message

        def start(overrides: dict[str, Any] | None) -> None:
            if overrides is not None:
                self.act(work(overrides), "sweep")

        form = SweepFormScreen(self.settings, self.board.good, quick=self.settings.embedded)
        self.push_screen(form, start)

    def _sweep_ended(self, state: str, run_dir: Path) -> None:
        """The awaited sweep's results once it completed; a word when it failed or was cancelled."""
        if state == "completed":
            self.awaited_run = None
            self.open_results(run_dir)
        elif state in ("failed", "cancelled"):
            self.awaited_run = None
            self.notify(f"{run_dir.name} {state}: o opens what it collected", title="sweep", severity="warning")

    def action_results(self) -> None:
        self.open_results(None)

    @on(DashboardScreen.ResultsRequested)
    def _results_requested(self, request: DashboardScreen.ResultsRequested) -> None:
        self.open_results(request.run_dir)

    def open_results(self, run_dir: Path | None) -> None:
        from cockpit.tui.screens.results import ResultsScreen  # it brings pandas: not needed for the first paint

        self.push_screen(ResultsScreen(self.source, run_dir))

    @on(DashboardScreen.NodeViewRequested)
    def open_node(self, request: DashboardScreen.NodeViewRequested) -> None:
        from cockpit.tui.screens.node import NodeScreen  # it brings plotext: not needed for the first paint

        scheduler = self.settings.cluster.scheduler
        self.push_screen(NodeScreen(request.name, self.board, self.feeds, scheduler, self.read_only))

    @on(DashboardScreen.ShellRequested)
    def shell(self, request: DashboardScreen.ShellRequested) -> None:
        """A shell on the node in this terminal, the app suspended until it ends (as k9s does). The event loop
        waits for it on purpose: nothing is drawn meanwhile, and the polls go on once the app is back."""
        try:
            argv = self.source.shell_argv(request.name)
            with self.suspend():
                done = subprocess.run(argv, check=False)
        except SuspendNotSupported:
            self.notify("a shell needs the cockpit in a terminal (not in a browser)", severity="warning")
        except Exception as err:  # no inventory entry, no ssh client, a demo node: said, never raised
            self.notify(str(err), title=f"shell on {request.name} failed", severity="error", timeout=12)
        else:
            if done.returncode:
                said = f"{shlex.join(argv)} exited {done.returncode}"
                self.notify(said, title=f"shell on {request.name}", severity="warning", timeout=12)

    # ---- actions: each in a worker, its outcome a notification

    def act(self, work: Awaitable[ActionResult | str | None], what: str) -> None:
        """Run one action off the event loop; what it says, or why it failed, becomes a notification."""

        async def run() -> None:
            try:
                outcome = await work
            except Exception as err:  # an action's failure is reported, never raised into the app
                self.notify(str(err), title=f"{what} failed", severity="error", timeout=12)
                return
            if isinstance(outcome, ActionResult):
                severity = "information" if outcome.ok else "error"
                self.notify(outcome.message(), title=what, severity=severity, timeout=12 if outcome.failed else 6)
            elif outcome:
                self.notify(outcome, title=what)

        self.run_worker(run(), group="actions", exit_on_error=False)

    @on(DashboardScreen.WakeRequested)
    def wake(self, request: DashboardScreen.WakeRequested) -> None:
        async def work() -> ActionResult:
            outcome = await self.source.wake(request.names)
            self.board.expect(outcome.done, "waking")
            self.dashboard.post_message(DashboardScreen.PanelChanged("nodes"))
            return outcome

        self.act(work(), "wake")

    @on(DashboardScreen.PowerRequested)
    def power(self, request: DashboardScreen.PowerRequested) -> None:
        async def work() -> ActionResult:
            outcome = await self.source.power(request.names, request.action)
            self.board.expect(outcome.done, "off" if request.action == "off" else "waking")
            self.dashboard.post_message(DashboardScreen.PanelChanged("nodes"))
            return outcome

        self.act(work(), POWER_TITLES[request.action])

    @on(DashboardScreen.ConfigureRequested)
    def configure(self, request: DashboardScreen.ConfigureRequested) -> None:
        async def work() -> None:
            run = await self.source.configure(request.names)
            self.provisioning.append(run)
            await self.push_screen(ProvisionScreen(run, request.names))

        self.act(work(), "configure")

    @on(DashboardScreen.JobCancelRequested)
    def cancel_job(self, request: DashboardScreen.JobCancelRequested) -> None:
        async def work() -> ActionResult:
            outcome = await self.source.cancel_job(request.job_id)
            self.poll(self.feeds["queue"])
            return outcome

        self.act(work(), "cancel")

    @on(DashboardScreen.JobLogRequested)
    def open_job_log(self, request: DashboardScreen.JobLogRequested) -> None:
        job_id = request.job_id
        self.push_screen(LogScreen(self.source, lambda: self.source.job_logs(job_id), f"job {job_id}"))

    @on(DashboardScreen.StrategyLogRequested)
    def open_strategy_log(self, request: DashboardScreen.StrategyLogRequested) -> None:
        def locate() -> Awaitable[JobLogs]:
            return self.source.strategy_logs(request.run_dir, request.strategy_id)

        first = None if request.rank is None else f"rank {request.rank}"
        self.push_screen(LogScreen(self.source, locate, request.strategy_id, first))

    @on(DashboardScreen.FinishedJobsRequested)
    def load_finished(self) -> None:
        """The finished jobs (sacct), once, for the dashboard to show in place of the queue until `f` again."""

        async def work() -> None:
            rows = await asyncio.wait_for(self.source.finished(), self.feeds["queue"].timeout_s)
            self.dashboard.post_message(DashboardScreen.FinishedJobsLoaded(rows))

        self.act(work(), "finished jobs")

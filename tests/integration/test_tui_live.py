"""The app on real sources: the embedded default (this machine, the local scheduler) and the two sshd test hosts,
one of which loses its link while the app watches."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from textual.drivers.headless_driver import HeadlessDriver
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from cockpit.config import load_settings
from cockpit.tui.app import CockpitApp
from cockpit.tui.screens.log import AnsiLog, LogScreen
from cockpit.tui.screens.node import NodeScreen
from cockpit.tui.sources import LiveSource
from tests.infra.services import SlurmCluster, TestHosts

SIZE = (120, 36)


async def wait_until(pilot: Pilot, check, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await pilot.pause(0.1)


def hosts_app(
    test_hosts: TestHosts,
    tmp: Path,
    *,
    scheduler: str = "local",
    ssh: str = "",
    refresh: str = "",
    source: type[LiveSource] = LiveSource,
) -> CockpitApp:
    """The app on the two sshd test hosts (their host keys trusted), with extra [ssh] and [refresh] lines."""
    known = tmp / "known_hosts"
    shutil.copy(test_hosts.known_hosts, known)
    config = tmp / "cockpit.toml"
    config.write_text(
        f'[cluster]\nscheduler = "{scheduler}"\ninventory = "{test_hosts.inventory}"\n'
        f'[paths]\ndata_dir = "{tmp / "data"}"\n[ssh]\nknown_hosts = "{known}"\n{ssh}[refresh]\n{refresh}'
    )
    settings = load_settings(config)
    return CockpitApp(settings, source(settings))


def job_script(tmp: Path, name: str, sleep_s: int) -> Path:
    script = tmp / f"{name}.slurm"
    script.write_text(
        f"#!/bin/bash\n#SBATCH --job-name={name}\n#SBATCH --time=00:05:00\n"
        f"#SBATCH --output={tmp}/slurm-%j.out\nsleep {sleep_s}\n"
    )
    return script


def state(app: CockpitApp, row: str) -> str:
    return str(app.screen.query_one("#nodes", DataTable).get_cell(row, "state"))


@pytest.mark.usefixtures("isolated_home")
async def test_embedded_default_shows_this_machine() -> None:
    settings = load_settings()
    app = CockpitApp(settings, LiveSource(settings))
    async with app.run_test(size=SIZE) as pilot:
        nodes = app.screen.query_one("#nodes", DataTable)
        await wait_until(pilot, lambda: "localhost/-" in [k.value for k in nodes.rows], 20, "localhost's row")
        await wait_until(pilot, lambda: state(app, "localhost/-") == "up", 20, "localhost up")
        await wait_until(pilot, lambda: app.feeds["queue"].polls and app.feeds["sweep"].polls, 20, "queue, sweep")
        await pilot.pause(0.2)
        assert str(app.screen.query_one("#queue-title", Static).render()) == "Queue · 0 job(s), 0 running"
        assert str(app.screen.query_one("#sweep-title", Static).render()) == "Sweep · none running"
        assert app.screen.query_one("#sweep-hint", Static).display  # what s starts, in the sweep table's place


@pytest.mark.infra
async def test_test_hosts_up_then_a_cut_link_is_unreachable(test_hosts: TestHosts, tmp_path: Path) -> None:
    timeouts = "connect_timeout_s = 1\ncommand_timeout_s = 5\n"
    app = hosts_app(test_hosts, tmp_path, ssh=timeouts, refresh="nodes_s = 1.0\n")
    async with app.run_test(size=SIZE) as pilot:
        nodes = app.screen.query_one("#nodes", DataTable)
        await wait_until(pilot, lambda: len(nodes.rows) == 2, 20, "both nodes' rows")
        await wait_until(pilot, lambda: state(app, "node0/-") == state(app, "node1/-") == "up", 20, "both up")
        subprocess.run(["ip", "link", "set", "ck-node1", "down"], check=True)
        try:
            polls = app.feeds["nodes"].polls
            # two refreshes: the poll in flight when the link went, and the next one (each at most 1 s connect)
            await wait_until(pilot, lambda: state(app, "node1/-").startswith("unreachable"), 2 * 1.0 + 2 * 1.0 + 2,
                             "node1 unreachable")  # fmt: skip
            assert app.feeds["nodes"].polls - polls <= 2
            assert state(app, "node0/-") == "up"
        finally:
            subprocess.run(["ip", "link", "set", "ck-node1", "up"], check=True)


@pytest.mark.infra
async def test_slurm_job_in_the_queue_until_completed(
    slurm_cluster: SlurmCluster, test_hosts: TestHosts, tmp_path: Path
) -> None:
    """Both nodes up (one drained for a moment: marked, with Slurm's reason); a submitted job shows in the queue,
    leaves it when done, and is COMPLETED among the finished."""
    app = hosts_app(test_hosts, tmp_path, scheduler="slurm", refresh="nodes_s = 1.0\nsqueue_s = 0.5\n")
    script = job_script(tmp_path, "cockpit-tui-sleep", 3)
    async with app.run_test(size=SIZE) as pilot:
        nodes = app.screen.query_one("#nodes", DataTable)
        queue = app.screen.query_one("#queue", DataTable)
        await wait_until(pilot, lambda: len(nodes.rows) == 2, 20, "both nodes' rows")
        await wait_until(pilot, lambda: state(app, "node0/-") == state(app, "node1/-") == "up", 20, "both up")
        slurm_cluster.run("scontrol", "update", "nodename=node1", "state=drain", "reason=tui check")
        try:
            await wait_until(pilot, lambda: state(app, "node1/-") == "up · drained", 20, "node1 marked drained")
            problems = app.screen.query_one("#nodes-problems", Static)
            assert "node1: Slurm: drained (tui check)" in str(problems.render())
        finally:
            slurm_cluster.run("scontrol", "update", "nodename=node1", "state=resume")
        await wait_until(pilot, lambda: state(app, "node1/-") == "up", 20, "node1 back in service")
        job_id = slurm_cluster.submit(script)
        await wait_until(pilot, lambda: job_id in [k.value for k in queue.rows], 20, f"job {job_id} in the queue")
        assert str(queue.get_cell(job_id, "name")) == "cockpit-tui-sleep"
        await wait_until(pilot, lambda: str(queue.get_cell(job_id, "state")) == "RUNNING", 20, f"job {job_id} running")
        await wait_until(pilot, lambda: job_id not in [k.value for k in queue.rows], 40, f"job {job_id} to end")
        slurm_cluster.wait_settled(job_id)
        await pilot.press("f")
        await wait_until(pilot, lambda: job_id in [k.value for k in queue.rows], 20, f"job {job_id} among finished")
        assert str(queue.get_cell(job_id, "state")) == "COMPLETED"


@pytest.mark.infra
async def test_x_cancels_a_slurm_job(slurm_cluster: SlurmCluster, test_hosts: TestHosts, tmp_path: Path) -> None:
    app = hosts_app(test_hosts, tmp_path, scheduler="slurm", refresh="squeue_s = 0.5\n")
    script = job_script(tmp_path, "cockpit-tui-long", 120)
    async with app.run_test(size=SIZE) as pilot:
        queue = app.screen.query_one("#queue", DataTable)
        job_id = slurm_cluster.submit(script)
        await wait_until(pilot, lambda: job_id in [k.value for k in queue.rows], 20, f"job {job_id} in the queue")
        queue.focus()
        queue.move_cursor(row=queue.get_row_index(job_id))
        await pilot.press("x")
        await pilot.pause()
        await pilot.press("y")
        await wait_until(pilot, lambda: job_id not in [k.value for k in queue.rows], 20, f"job {job_id} to go")
        slurm_cluster.wait_settled(job_id)
        await pilot.press("f")
        await wait_until(pilot, lambda: job_id in [k.value for k in queue.rows], 20, f"job {job_id} among finished")
        assert str(queue.get_cell(job_id, "state")) == "CANCELLED"


class HostnameShellSource(LiveSource):
    """The live source whose node shell runs `hostname` there in place of an interactive login shell."""

    def shell_argv(self, name: str, command: str | None = None) -> list[str]:
        return super().shell_argv(name, "hostname")


@pytest.mark.infra
async def test_s_opens_a_shell_on_the_node_with_strict_host_keys(
    test_hosts: TestHosts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """`enter` on node0, then `S`: ssh runs on node0 (the command in place of a shell), the app suspended; with
    node0's key gone from the cockpit's known_hosts, ssh refuses it and the app says how it ended."""
    monkeypatch.setattr(HeadlessDriver, "can_suspend", property(lambda _: True))  # a Pilot has no terminal: fake it
    app = hosts_app(test_hosts, tmp_path, source=HostnameShellSource)
    async with app.run_test(size=SIZE) as pilot:
        nodes = app.screen.query_one("#nodes", DataTable)
        await wait_until(pilot, lambda: "node0/-" in [k.value for k in nodes.rows], 20, "node0's row")  # no probe
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, NodeScreen), 5, "node0's view")
        capfd.readouterr()
        await pilot.press("S")
        await pilot.pause()
        assert capfd.readouterr().out == "node0\n" and not app._notifications
        (tmp_path / "known_hosts").write_text("")
        await pilot.press("S")
        await pilot.pause()
        assert "Host key verification failed." in capfd.readouterr().err
        (note,) = app._notifications
        assert note.title == "shell on node0" and note.message.endswith(" -- 10.77.0.10 hostname exited 255")


@pytest.mark.infra
async def test_l_follows_a_running_slurm_jobs_output(
    slurm_cluster: SlurmCluster, test_hosts: TestHosts, tmp_path: Path
) -> None:
    """`l` on a running job opens its output where scontrol says it is, and a line the job writes while it is
    shown appears (the job waits for a file the test makes once the first line shows)."""
    app = hosts_app(test_hosts, tmp_path, scheduler="slurm", refresh="squeue_s = 0.5\n")
    go = tmp_path / "go"
    script = tmp_path / "talk.slurm"
    script.write_text(
        f"#!/bin/bash\n#SBATCH --job-name=cockpit-tui-talk\n#SBATCH --time=00:05:00\n"
        f"#SBATCH --output={tmp_path}/slurm-%j.out\n"
        f"echo first line\nuntil [ -e {go} ]; do sleep 0.1; done\necho second line\n"
    )
    async with app.run_test(size=SIZE) as pilot:
        queue = app.screen.query_one("#queue", DataTable)
        job_id = slurm_cluster.submit(script)
        try:
            await wait_until(pilot, lambda: job_id in [k.value for k in queue.rows], 20, f"job {job_id} in the queue")
            await wait_until(pilot, lambda: str(queue.get_cell(job_id, "state")) == "RUNNING", 20, "it running")
            queue.focus()
            queue.move_cursor(row=queue.get_row_index(job_id))
            await pilot.press("l")
            await wait_until(pilot, lambda: isinstance(app.screen, LogScreen), 5, "the log screen")
            view = app.screen.query_one("#log", AnsiLog)
            await wait_until(pilot, lambda: view.lines == ["first line"], 20, "the first line")
            title = str(app.screen.query_one("#log-title", Static).render())
            assert title.startswith(f"job {job_id} cockpit-tui-talk · RUNNING on node")
            assert str(tmp_path / f"slurm-{job_id}.out") in str(app.screen.query_one("#log-status", Static).render())
            go.touch()
            await wait_until(pilot, lambda: view.lines == ["first line", "second line"], 20, "the second line")
        finally:
            subprocess.run(["scancel", job_id], check=False)

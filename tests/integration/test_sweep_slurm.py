"""From bare hosts to a whole sweep across them, with the project's own commands only: `cluster control
configure` and `cluster compute configure` bring Slurm up on the two sshd test hosts (whatever Slurm the harness
ran is stopped first), the runtime build is deployed to them and the model pushed, and the sweep runs as jobs by
sbatch with states from sacct; its process is killed outright (SIGKILL: no chance to clean up) while its job runs
on, then resumed by re-attaching to that job. The sweep is profiled: srun starts each rank through
profile_rank.sh on its node.

Its run folder is staged and, like the model, node-local: each host's copy is its own, so every file a rank reads
got there by the staging or the push, and every shard, metric, log and trace the report uses came back by it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cockpit.config import load_settings
from cockpit.jobs.records import JobError
from cockpit.jobs.slurm import SlurmJobManager
from cockpit.jobs.watch import SqueueWatch
from cockpit.sweep.manifest import Manifest
from cockpit.sweep.progress import StrategyProgress
from cockpit.tui.app import CockpitApp
from cockpit.tui.sources import LiveSource
from tests.infra.services import SlurmCluster, TestHosts, pid_alive, slurm_inventory, stop_slurm
from tests.integration import sweeps
from tests.integration.conftest import DeployedRuntime
from tests.integration.test_tui_live import SIZE, wait_until

pytestmark = [pytest.mark.infra, pytest.mark.slow]


@pytest.fixture
def node_local(test_hosts: TestHosts, tmp_path: Path) -> Iterator[Path]:
    """A folder at a path every test host (and this machine) has its own copy of; all copies go after."""
    relative = f"test-{tmp_path.name}"
    yield test_hosts.node_local / relative
    for folder in [test_hosts.node_local, *(test_hosts.local_folder(host.name) for host in test_hosts.hosts)]:
        shutil.rmtree(folder / relative, ignore_errors=True)


def cluster_inventory(test_hosts: TestHosts, folder: Path) -> Path:
    """The test hosts with this machine as their control node, as an operator would write it for them: the Slurm
    settings of a cluster without systemd or GPUs (services.slurm_inventory), no PXE server (the control node is
    the machine the tests run on), per-host folders for what the namespaces would otherwise share, and no
    Wake-on-LAN (a veth has none)."""
    text = slurm_inventory(test_hosts).read_text()
    for host in test_hosts.hosts:
        state = folder / host.name
        text = text.replace(
            f"\n{host.name} ",
            f"\n{host.name} node_base_state_dir={state} wol_systemd_dir={state / 'systemd'} "
            f"wol_record_dir={folder / 'recorded'} wol_required=False ",
        )
    text = text.replace("[control:vars]\n", "[control:vars]\npxe_server_wanted=false\n")
    inventory = folder / "inventory.ini"
    inventory.write_text(text)
    return inventory


@pytest.fixture
def bare_hosts(test_hosts: TestHosts) -> Iterator[TestHosts]:
    """The test hosts with no Slurm running (stopped if the harness ran it); left as the test leaves them, unless
    there was no Slurm before, which is how the test ends then too."""
    running = pid_alive(Path("/run/slurmctld.pid"))
    stop_slurm()
    yield test_hosts
    if not running:
        stop_slurm()


async def dashboard_sees_ranks_running(config: Path) -> tuple[str, int]:
    """The app on the sweep's configuration until its sweep view shows a running job's ranks with heartbeats:
    that strategy, and how many of its ranks it shows so."""
    settings = load_settings(config)
    app = CockpitApp(settings, LiveSource(settings))
    async with app.run_test(size=SIZE) as pilot:
        feed = app.feeds["sweep"]

        def running() -> list[StrategyProgress]:
            shown = feed.value.strategies if feed.value is not None else ()
            return [s for s in shown if s.status == "RUNNING" and any(r.phase is not None for r in s.ranks)]

        await wait_until(pilot, lambda: bool(running()), 240, "a running job's ranks on the dashboard")
        (strategy,) = running()
        return strategy.strategy_id, sum(r.phase is not None for r in strategy.ranks)


def test_from_bare_hosts_to_a_staged_sweep_killed_and_resumed(
    bare_hosts: TestHosts,
    deployed_runtime: DeployedRuntime,
    node_local: Path,
    tmp_path: Path,
    tiny_model_dir: Path,
) -> None:
    model = node_local / "models" / "tiny-llama"
    shutil.copytree(tiny_model_dir, model)  # here only: the nodes get theirs from `model push`
    inventory = cluster_inventory(bare_hosts, tmp_path)
    config = sweeps.write_config(
        tmp_path,
        model,
        scheduler="slurm",
        extra=deployed_runtime.lines.replace(f'"{bare_hosts.inventory}"', f'"{inventory}"'),
        paths=f'runs_dir = "{node_local / "runs"}"\nrun_storage = "staged"',
        precision="int8",  # weight-only: every rank of every strategy quantizes its own slice on its node
    )
    for command in (("control", "configure"), ("compute", "configure")):
        done = sweeps.cluster(config, *command)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sinfo = subprocess.run(["sinfo", "-N", "-h", "-o", "%N %t %G"], capture_output=True, text=True, check=True)
    assert sinfo.stdout.split("\n")[:2] == ["node0 idle gpu:2", "node1 idle gpu:2"], sinfo.stdout
    pushed = sweeps.cluster(config, "model", "push")
    assert pushed.returncode == 0, pushed.stdout[-2000:] + pushed.stderr[-2000:]
    sweep = sweeps.start(config, "sweep", "run", "--profile", "torch,perf")
    # the dashboard, open meanwhile, follows the ranks of a running job: their heartbeats reach this machine's copy
    # of the run folder only through the staging's mirror
    watched, ranks = asyncio.run(dashboard_sees_ranks_running(config))
    assert ranks >= 1, watched
    sweeps.wait_for(lambda: sweeps.entries(sweeps.run_dir(config))[1].status == "RUNNING", 240, "the second job")
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.communicate(timeout=30)
    run = sweeps.run_dir(config)
    killed = Manifest.load(run)
    first, second = list(killed.strategies.values())[:2]
    assert killed.state == "running" and first.done and second.status == "RUNNING"  # as the kill left it

    done = sweeps.cluster(config, "sweep", "resume", str(run), "--json")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert f"re-attaching to job {second.job_id}" in done.stderr
    assert f"{second.strategy_id} staged: " in done.stderr and "back from node[0-1]" in done.stderr
    out = json.loads(done.stdout)
    assert [row["kind"] for row in out["strategies"]] == ["reference", "tp_nodes", "pp_nodes", "tp_node", "hybrid"]
    assert all(row["attempts"] == 1 and row["collected"] for row in out["strategies"])  # nothing ran twice
    manifest = Manifest.load(run)
    assert manifest.state == "completed" and list(manifest.strategies.values())[1].job_id == second.job_id
    slurm = SlurmCluster(tuple(host.name for host in bare_hosts.hosts))
    for entry in manifest.strategies.values():
        (record,) = json.loads(slurm.run("sacct", "--json", "-j", str(entry.job_id)).stdout)["jobs"]
        assert record["state"]["current"] == "COMPLETED" and record["name"] == entry.strategy_id
        assert entry.attempts[0].elapsed_s == record["time"]["elapsed"]
    hosts = {json.loads(p.read_text())["hostname"] for p in run.glob("tiny_pp2_tp2_n2/metrics/metrics_rank_*.json")}
    assert hosts == {"node0", "node1"}
    # every rank ran the verified build: a Python that exists only in the nodes' own node-local folders
    build = deployed_runtime.build.build_id
    python = deployed_runtime.install_root / build / "venv" / "bin" / "python"
    wrapper = run / "tiny_pp2_tp2_n2" / "profile_rank.sh"
    assert (
        not python.exists()
        and f"srun --kill-on-bad-exit=1 {wrapper} {python} -m runtime"
        in (run / "tiny_pp2_tp2_n2" / "job.slurm").read_text()
    )
    assert {json.loads(p.read_text())["runtime_build"] for p in run.glob("*/metrics/metrics_rank_*.json")} == {build}
    # every rank's trace, named by its Slurm rank, summarized on its own node
    listed = json.loads(sweeps.cluster(config, "traces", str(run), "--json").stdout)
    hybrid = {(t["rank"], t["tool"]): t for t in listed if t["strategy_id"] == "tiny_pp2_tp2_n2"}
    assert {rank for rank, tool in hybrid if tool == "torch"} == {0, 1, 2, 3}
    assert {t["summary"]["hostname"] for t in hybrid.values() if t["summary"]} == {"node0", "node1"}
    assert all(t["summary"]["comm_share"] > 0 for t in hybrid.values() if t["summary"])
    assert f"runtime verified: {build} (venv, cpu)" in done.stderr  # resume verified the nodes again
    sweeps.assert_parity(run, sweeps.expected_tokens(tiny_model_dir, precision="int8"), strategies=5)
    report = Path(out["report"]["markdown"]).read_text()
    assert report.count("| 100.0% |") == 5
    assert "| tiny_pp2_tp2_n2 | node0: 0, 1; node1: 2, 3 |" in report  # where each rank ran


@pytest.mark.usefixtures("slurm_cluster")
def test_job_unknown_to_slurm_is_named(tmp_path: Path) -> None:
    manager = SlurmJobManager(SqueueWatch(tmp_path), unknown_grace_s=0)
    with pytest.raises(JobError, match="job 987654: neither squeue nor sacct knows it"):
        manager.status("987654")


def test_a_drained_node_stops_the_sweep_before_any_job(
    slurm_cluster: SlurmCluster, tmp_path: Path, tiny_model_dir: Path
) -> None:
    config = sweeps.write_config(tmp_path, tiny_model_dir, scheduler="slurm")
    slurm_cluster.run("scontrol", "update", "nodename=node1", "state=drain", "reason=fan failed")
    try:
        done = sweeps.cluster(config, "sweep", "run")
    finally:
        slurm_cluster.run("scontrol", "update", "nodename=node1", "state=resume")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Slurm: the sweep needs 2 node(s) that can take jobs, 1 can (node0)" in done.stderr
    assert "node1  drained (fan failed)" in done.stderr and "no job was submitted" in done.stderr
    assert not any(entry.job_id for entry in sweeps.entries(sweeps.run_dir(config)))


def test_a_node_whose_disk_is_full_is_named_with_its_free_space_before_any_job(
    slurm_cluster: SlurmCluster, test_hosts: TestHosts, node_local: Path, tmp_path: Path, tiny_model_dir: Path
) -> None:
    node_local_runs = node_local / "runs"
    lines = f'inventory = "{test_hosts.inventory}"\n[ssh]\nknown_hosts = "{test_hosts.known_hosts}"\n'
    paths = f'runs_dir = "{node_local_runs}"\nrun_storage = "staged"'
    config = sweeps.write_config(tmp_path, tiny_model_dir, scheduler="slurm", extra=lines, paths=paths)
    pushed = sweeps.cluster(config, "model", "push")  # staged: the sweep checks the nodes' model first
    assert pushed.returncode == 0, pushed.stderr[-2000:]
    full = test_hosts.ssh("node1", f"mkdir -p {node_local_runs} && mount -t tmpfs -o size=4k tmpfs {node_local_runs}")
    assert full.returncode == 0, full.stderr
    try:
        done = sweeps.cluster(config, "sweep", "run")
    finally:
        test_hosts.ssh("node1", f"umount {node_local_runs}")
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "its job files did not reach every node it may run on" in done.stderr
    assert re.search(r"node1: \S+/prompts.parquet: No space left on device \([\d.]+ kB free there\)", done.stderr)
    assert "no job was submitted" in done.stderr and "node0" not in done.stderr.split("did not reach")[1]
    assert not any(entry.job_id for entry in sweeps.entries(sweeps.run_dir(config)))

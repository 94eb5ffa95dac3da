"""A whole sweep on the real Slurm's two nodes, on the runtime build deployed to them: jobs by sbatch, states from
sacct, and a sweep process killed outright (SIGKILL: no chance to clean up) while its job runs on, then resumed by
re-attaching to that job. The sweep is profiled: srun starts each rank through profile_rank.sh on its node.

Its run folder is staged: each node's copy is its own (node-local), so every file a rank reads got there by the
staging, and every shard, metric, log and trace the report uses came back by it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from cockpit.jobs.records import JobError
from cockpit.jobs.slurm import SlurmJobManager
from cockpit.sweep.manifest import Manifest
from runtime.contract import ExperimentConfig
from tests.infra.services import SlurmCluster, TestHosts
from tests.integration import sweeps
from tests.integration.conftest import DeployedRuntime

pytestmark = [pytest.mark.infra, pytest.mark.slow]


@pytest.fixture
def node_local_runs(test_hosts: TestHosts, tmp_path: Path) -> Iterator[Path]:
    """A runs folder at a path every test host (and this machine) has its own copy of; all copies go after."""
    relative = f"runs-{tmp_path.name}"
    yield test_hosts.node_local / relative
    for folder in [test_hosts.node_local, *(test_hosts.local_folder(host.name) for host in test_hosts.hosts)]:
        shutil.rmtree(folder / relative, ignore_errors=True)


def test_staged_sweep_killed_and_resumed_on_slurm(
    slurm_cluster: SlurmCluster,
    deployed_runtime: DeployedRuntime,
    node_local_runs: Path,
    tmp_path: Path,
    tiny_model_dir: Path,
) -> None:
    runs_dir = node_local_runs
    config = sweeps.write_config(
        tmp_path,
        tiny_model_dir,
        scheduler="slurm",
        extra=deployed_runtime.lines,
        paths=f'runs_dir = "{runs_dir}"\nrun_storage = "staged"',
    )
    sweep = sweeps.start(config, "sweep", "run", "--profile", "torch,perf")
    sweeps.wait_for(lambda: sweeps.entries(sweeps.run_dir(config))[1].status == "RUNNING", 240, "the second job")
    # while the job runs, its ranks' heartbeats reach this machine's copy of the run folder
    second = sweeps.entries(sweeps.run_dir(config))[1]
    heartbeats = ExperimentConfig.load(second.exp_config_path).progress_path
    sweeps.wait_for(lambda: any(heartbeats(rank).exists() for rank in range(4)), 120, "mirrored progress")
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
    for entry in manifest.strategies.values():
        (record,) = json.loads(slurm_cluster.run("sacct", "--json", "-j", str(entry.job_id)).stdout)["jobs"]
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
    sweeps.assert_parity(run, sweeps.expected_tokens(tiny_model_dir), strategies=5)
    assert Path(out["report"]["markdown"]).read_text().count("| 100.0% |") == 5


@pytest.mark.usefixtures("slurm_cluster")
def test_job_unknown_to_slurm_is_named() -> None:
    manager = SlurmJobManager(unknown_grace_s=0)
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
    slurm_cluster: SlurmCluster, test_hosts: TestHosts, node_local_runs: Path, tmp_path: Path, tiny_model_dir: Path
) -> None:
    lines = f'inventory = "{test_hosts.inventory}"\n[ssh]\nknown_hosts = "{test_hosts.known_hosts}"\n'
    paths = f'runs_dir = "{node_local_runs}"\nrun_storage = "staged"'
    config = sweeps.write_config(tmp_path, tiny_model_dir, scheduler="slurm", extra=lines, paths=paths)
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

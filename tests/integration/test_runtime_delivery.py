"""Runtime delivery end to end: the CPU runtime built here, deployed to both sshd test hosts (each its own copy in
its own node-local folder), verified there; a changed, corrupt or missing copy and an unreachable node are named,
and a sweep stops before submitting any job; an image copied to shared storage and checked on every node. (The
sweep that runs on the deployed build: test_sweep_slurm.py.)"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import pytest

from cockpit.delivery.tree_digest import LISTING_NAME, digest_of, file_sha256, listing
from cockpit.sweep.manifest import Manifest
from runtime.contract import BuildManifest
from tests.infra.services import SlurmCluster, TestHosts
from tests.integration import sweeps
from tests.integration.conftest import DeployedRuntime
from tests.unit.test_delivery import BUILD

pytestmark = [pytest.mark.infra, pytest.mark.slow]


def copy_on(test_hosts: TestHosts, host: str, deployed: DeployedRuntime) -> Path:
    """The build's folder on `host`, as this machine sees it."""
    return test_hosts.local_folder(host) / "runtime" / deployed.build.build_id


def test_build_manifest_describes_the_build(deployed_runtime: DeployedRuntime) -> None:
    build, folder = deployed_runtime.build, deployed_runtime.folder
    assert (build.device, build.delivery, build.deepspeed, build.transformers) == ("cpu", "venv", "0.19.8", "5.23.0")
    assert build.torch.startswith("2.13.0")
    lines, total = listing(folder)  # the digest is of the files as they are: recomputed, it is the same
    assert (build.digest, build.files, build.bytes) == (digest_of(lines), len(lines), total)
    assert (folder / LISTING_NAME).read_text().splitlines() == lines
    assert build.build_id == f"{metadata.version('gpu-cockpit')}-{build.digest.removeprefix('sha256:')[:12]}"
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert build.git_commit is not None and build.git_commit.split("+")[0] == head


def test_each_node_runs_its_own_verified_copy(deployed_runtime: DeployedRuntime, test_hosts: TestHosts) -> None:
    build = deployed_runtime.build
    for host in ("node0", "node1"):
        assert (copy_on(test_hosts, host, deployed_runtime) / "venv" / "bin" / "python").exists()
        assert (test_hosts.local_folder(host) / "runtime" / "current").readlink() == Path(build.build_id)
    assert not (test_hosts.node_local / "runtime").exists()  # the copies are the nodes': none is this machine's
    where = deployed_runtime.install_root / build.build_id
    probe = f"PYTHONPATH={where}/src {where}/venv/bin/python -c 'import torch, runtime; print(runtime.__file__)'"
    ran = test_hosts.ssh("node1", probe, timeout=120)
    assert ran.returncode == 0 and ran.stdout.strip() == f"{where}/src/runtime/__init__.py", ran.stderr
    done = sweeps.cluster(deployed_runtime.config, "runtime", "verify", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [(n["node"], n["state"], n["current"]) for n in report["nodes"]] == [
        ("node0", "ok", build.build_id),
        ("node1", "ok", build.build_id),
    ]
    probed = sweeps.cluster(deployed_runtime.config, "nodes", "probe", "--json")  # what the nodes table shows
    assert probed.returncode == 0, probed.stderr
    runtimes = [node["telemetry"]["runtime"] for node in json.loads(probed.stdout)["nodes"]]
    assert runtimes == [{"build_id": build.build_id, "device": "cpu", "error": None}] * 2


def test_a_changed_copy_is_named_and_deploy_repairs_it(
    deployed_runtime: DeployedRuntime, test_hosts: TestHosts
) -> None:
    changed = copy_on(test_hosts, "node1", deployed_runtime) / "src" / "runtime" / "generate.py"
    original = changed.read_bytes()
    config = deployed_runtime.config
    try:
        changed.write_bytes(original + b"\n# changed on node1\n")
        done = sweeps.cluster(config, "runtime", "verify")
        assert done.returncode == 1
        assert "node0  ok" in done.stderr
        assert "node1  differs" in done.stderr and "changed: src/runtime/generate.py" in done.stderr
        assert f"cluster --config {config} runtime deploy node1" in done.stderr
        repaired = sweeps.cluster(config, "runtime", "deploy", "node1")
        assert repaired.returncode == 0, repaired.stdout[-2000:] + repaired.stderr[-2000:]
        assert changed.read_bytes() == original
    finally:
        changed.write_bytes(original)


@pytest.mark.parametrize(
    ("change", "state", "message"),
    [
        ("{not json", "corrupt", "build_manifest.json: not valid JSON"),
        ("xpu", "wrong device", "build_manifest.json: built for xpu, not cpu"),
        (None, "corrupt", "build_manifest.json: no such file"),
    ],
    ids=["corrupt", "another-device", "missing"],
)
def test_a_bad_installed_manifest_is_named(
    deployed_runtime: DeployedRuntime, test_hosts: TestHosts, change: str | None, state: str, message: str
) -> None:
    manifest = copy_on(test_hosts, "node1", deployed_runtime) / "build_manifest.json"
    original = manifest.read_text()
    try:
        if change is None:
            manifest.unlink()
        elif change == "xpu":
            manifest.write_text(json.dumps({**json.loads(original), "device": "xpu"}))
        else:
            manifest.write_text(change)
        done = sweeps.cluster(deployed_runtime.config, "runtime", "verify")
        assert done.returncode == 1
        assert f"node1  {state}" in done.stderr
        assert f"node1:{deployed_runtime.install_root}/{deployed_runtime.build.build_id}/{message}" in done.stderr
    finally:
        manifest.write_text(original)


def assert_no_job(config: Path) -> None:
    run = sweeps.run_dir(config)
    assert all(entry.job_id is None for entry in Manifest.load(run).strategies.values())
    assert not list(run.glob("*/job.slurm"))


def test_sweep_stops_before_any_job_when_a_node_differs(
    deployed_runtime: DeployedRuntime,
    slurm_cluster: SlurmCluster,  # the sweep checks its nodes against Slurm first: up, whatever ran before
    test_hosts: TestHosts,
    tmp_path: Path,
    tiny_model_dir: Path,
) -> None:
    manifest = copy_on(test_hosts, "node1", deployed_runtime) / "build_manifest.json"
    original = manifest.read_text()
    config = sweeps.write_config(tmp_path, tiny_model_dir, scheduler="slurm", extra=deployed_runtime.lines)
    try:
        manifest.write_text("{not json")
        done = sweeps.cluster(config, "sweep", "run")
    finally:
        manifest.write_text(original)
    assert done.returncode == 2
    assert "node0  ok" in done.stderr and "node1  corrupt" in done.stderr and "no job was submitted" in done.stderr
    assert_no_job(config)


def test_sweep_stops_when_a_node_does_not_answer(
    deployed_runtime: DeployedRuntime,
    slurm_cluster: SlurmCluster,
    test_hosts: TestHosts,
    tmp_path: Path,
    tiny_model_dir: Path,
) -> None:
    inventory = tmp_path / "inventory.ini"  # node1 on a port where nothing listens
    inventory.write_text(
        test_hosts.inventory.read_text().replace("ansible_host=10.77.0.11", "ansible_host=10.77.0.11 ansible_port=2222")
    )
    lines = deployed_runtime.lines.replace(str(test_hosts.inventory), str(inventory))
    config = sweeps.write_config(tmp_path, tiny_model_dir, scheduler="slurm", extra=lines)
    done = sweeps.cluster(config, "sweep", "run")
    assert done.returncode == 2
    assert "node1  unreachable" in done.stderr and "connection refused on port 2222" in done.stderr
    assert f"cluster --config {config} compute up node1" in done.stderr
    assert_no_job(config)


def test_manifest_problems_here_are_named(deployed_runtime: DeployedRuntime, tmp_path: Path) -> None:
    def verify(build_dir: Path) -> subprocess.CompletedProcess[str]:
        lines = deployed_runtime.lines.replace(str(deployed_runtime.folder.parent), str(build_dir))
        config = tmp_path / f"{build_dir.name}.toml"
        config.write_text(f'[cluster]\n{lines}[paths]\ndata_dir = "{tmp_path / "data"}"\n')
        return sweeps.cluster(config, "runtime", "verify")

    missing = verify(tmp_path / "none")
    assert missing.returncode == 2
    assert f"{tmp_path}/none/venv-cpu/build_manifest.json: no venv runtime built for cpu" in missing.stderr
    corrupt = tmp_path / "corrupt" / "venv-cpu" / "build_manifest.json"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_text('{"build_id": ')
    done = verify(tmp_path / "corrupt")
    assert done.returncode == 2 and f"{corrupt}: not valid JSON" in done.stderr
    other = tmp_path / "other" / "venv-cpu" / "build_manifest.json"
    other.parent.mkdir(parents=True)
    other.write_text(
        json.dumps({**json.loads((deployed_runtime.folder / "build_manifest.json").read_text()), "device": "xpu"})
    )
    done = verify(tmp_path / "other")
    assert done.returncode == 2 and f"{other}: a venv build for xpu, not venv for cpu" in done.stderr


def test_an_image_goes_to_shared_storage_and_every_node_checks_it(test_hosts: TestHosts, tmp_path: Path) -> None:
    """No apptainer here: a stand-in file takes the built image's place (test_delivery.py has the build itself);
    its copy to the shared storage and its check on every node are what they are for a real image."""
    folder = tmp_path / "data" / "runtime" / "apptainer-cpu"
    folder.mkdir(parents=True)
    (folder / "runtime.sif").write_bytes(os.urandom(1 << 20))
    digest = f"sha256:{file_sha256(folder / 'runtime.sif')}"
    build = replace(BUILD, build_id=BuildManifest.make_id("0.1.0", digest), delivery="apptainer", digest=digest)
    build.write(folder / "build_manifest.json")
    images = tmp_path / "images"  # the nodes share this machine's filesystem: storage they all mount
    images.mkdir()
    config = tmp_path / "cockpit.toml"
    config.write_text(
        f'[cluster]\ninventory = "{test_hosts.inventory}"\n[paths]\ndata_dir = "{tmp_path / "data"}"\n'
        f'[ssh]\nknown_hosts = "{test_hosts.known_hosts}"\n'
        f'[runtime]\ndelivery = "apptainer"\nimage_dir = "{images}"\n'
    )
    done = sweeps.cluster(config, "runtime", "deploy", "--json")
    assert done.returncode == 0, done.stderr
    assert [node["state"] for node in json.loads(done.stdout)["nodes"]] == ["ok", "ok"]
    image = images / f"cockpit-runtime-{build.build_id}.sif"
    assert image.read_bytes() == (folder / "runtime.sif").read_bytes()
    assert BuildManifest.load(images / "current.json") == build == BuildManifest.load(image.with_suffix(".json"))
    with image.open("r+b") as handle:
        handle.write(b"changed")
    done = sweeps.cluster(config, "runtime", "verify")
    assert done.returncode == 1
    assert (
        "node0  differs" in done.stderr and "node1  differs" in done.stderr and "its digest is sha256:" in done.stderr
    )

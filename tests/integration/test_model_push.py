"""The model on every node, end to end against the two sshd test hosts, each with its own copy in its own node-local
folder: `cluster model push` copies it with mtimes kept (a link into a cache as the file it points to), `model
verify` checks sizes and mtimes, a file changed on one node (its size, its mtime) is named with the push that
repairs it, a change that keeps both is found by `--full` only and repaired by `push --full`, and a sweep's check
(`require_model`, over the real ssh pool) refuses a node whose copy is gone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cockpit.config import load_settings
from cockpit.delivery.model import require_model
from cockpit.errors import BadInput
from cockpit.nodes.inventory import Inventory
from cockpit.nodes.ssh import pool_for
from tests.infra.services import TestHosts
from tests.integration import sweeps
from tests.integration.conftest import cluster_json

pytestmark = [pytest.mark.infra, pytest.mark.slow]
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")


@dataclass(frozen=True)
class PushedModel:
    config: Path
    folder: Path  # the model here; the same path on every node is that node's own folder
    relative: Path  # the folder below node_local, to find each node's copy from here

    def on(self, test_hosts: TestHosts, host: str) -> Path:
        """`host`'s copy, as this machine sees it."""
        return test_hosts.local_folder(host) / self.relative


@pytest.fixture(scope="module")
def pushed_model(test_hosts: TestHosts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushedModel]:
    """A small checkpoint-shaped folder here, pushed to node0 and node1 by the real command."""
    root = tmp_path_factory.mktemp("model")
    relative = Path(f"models-{root.name}") / "fake-llama"
    folder = test_hosts.node_local / relative
    folder.mkdir(parents=True)
    blob = folder.parent / "blobs" / "config-blob"  # as in a Hugging Face snapshot: a link into the cache
    blob.parent.mkdir()
    blob.write_text('{"model_type": "llama", "hidden_size": 64}\n')
    (folder / "config.json").symlink_to(Path("..") / "blobs" / blob.name)
    for shard, size in zip(SHARDS, (2 << 20, 1 << 20), strict=True):
        (folder / shard).write_bytes(os.urandom(size))
    config = root / "cockpit.toml"
    config.write_text(
        f'[cluster]\ninventory = "{test_hosts.inventory}"\nscheduler = "slurm"\n'
        f'[paths]\ndata_dir = "{root / "data"}"\n[ssh]\nknown_hosts = "{test_hosts.known_hosts}"\n'
        f'[model]\nname = "fake-llama"\npath = "{folder}"\n'
    )
    pushed = cluster_json(config, "model", "push")
    assert [(n["node"], n["state"]) for n in pushed["nodes"]] == [("node0", "ok"), ("node1", "ok")], pushed
    yield PushedModel(config, folder, relative)
    for top in [test_hosts.node_local, *(test_hosts.local_folder(host.name) for host in test_hosts.hosts)]:
        shutil.rmtree(top / relative.parent, ignore_errors=True)


def verify(model: PushedModel, *args: str) -> subprocess.CompletedProcess[str]:
    return sweeps.cluster(model.config, "model", "verify", *args)


def test_each_node_has_its_own_copy_with_the_mtimes_kept(pushed_model: PushedModel, test_hosts: TestHosts) -> None:
    for host in ("node0", "node1"):
        copy = pushed_model.on(test_hosts, host)
        for name in ("config.json", *SHARDS):
            here, there = pushed_model.folder / name, copy / name
            assert not there.is_symlink()  # the file itself: the node has no cache to point into
            assert there.read_bytes() == here.read_bytes()
            assert there.stat().st_mtime_ns == here.stat().st_mtime_ns
    report = cluster_json(pushed_model.config, "model", "verify")
    assert [(n["node"], n["state"], n["detail"]) for n in report["nodes"]] == [
        (host, "ok", "3 files, 3.1 MB, sizes and mtimes unchanged") for host in ("node0", "node1")
    ]


def test_a_file_changed_on_a_node_is_named_and_push_repairs_it(
    pushed_model: PushedModel, test_hosts: TestHosts
) -> None:
    grown = pushed_model.on(test_hosts, "node1") / SHARDS[1]
    grown.write_bytes(grown.read_bytes() + b"\0")
    touched = pushed_model.on(test_hosts, "node0") / "config.json"
    os.utime(touched, ns=(0, touched.stat().st_mtime_ns + 1_000_000_000))
    done = verify(pushed_model)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"node0  differs  {pushed_model.folder}: changed: config.json" in done.stderr
    assert f"node1  differs  {pushed_model.folder}: changed: {SHARDS[1]}" in done.stderr
    assert done.stderr.rstrip().endswith(f"cluster --config {pushed_model.config} model push node[0-1]")
    repaired = sweeps.cluster(pushed_model.config, "model", "push", "node[0-1]")
    assert repaired.returncode == 0, repaired.stdout[-2000:] + repaired.stderr[-2000:]
    assert grown.read_bytes() == (pushed_model.folder / SHARDS[1]).read_bytes()
    assert verify(pushed_model).returncode == 0


def test_only_a_full_check_finds_a_change_that_keeps_size_and_mtime(
    pushed_model: PushedModel, test_hosts: TestHosts
) -> None:
    shard = pushed_model.on(test_hosts, "node0") / SHARDS[0]
    info, data = shard.stat(), bytearray(shard.read_bytes())
    data[1000] ^= 0xFF
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert verify(pushed_model).returncode == 0  # the cheap check cannot see it: that is what --full is for
    done = verify(pushed_model, "--full")
    assert done.returncode == 2
    assert f"node0  differs  {pushed_model.folder}: changed: {SHARDS[0]}" in done.stderr
    assert "node1  ok       3 files, 3.1 MB hashed" in done.stderr
    assert done.stderr.rstrip().endswith(f"cluster --config {pushed_model.config} model push --full node0")
    repaired = sweeps.cluster(pushed_model.config, "model", "push", "--full", "node0")
    assert repaired.returncode == 0, repaired.stdout[-2000:] + repaired.stderr[-2000:]
    assert shard.read_bytes() == (pushed_model.folder / SHARDS[0]).read_bytes()
    assert [n["state"] for n in cluster_json(pushed_model.config, "model", "verify", "--full")["nodes"]] == ["ok"] * 2


async def test_a_sweeps_check_refuses_a_node_without_the_model(
    pushed_model: PushedModel, test_hosts: TestHosts
) -> None:
    settings = load_settings(pushed_model.config)
    nodes = Inventory.load(settings.inventory).compute
    copy = pushed_model.on(test_hosts, "node1")
    shutil.rmtree(copy)
    try:
        async with pool_for(settings) as pool:
            with pytest.raises(BadInput) as caught:
                await require_model(pool, nodes, settings)
    finally:
        pushed = cluster_json(pushed_model.config, "model", "push", "node1")
    message = str(caught.value)
    assert "node0  ok " in message and f"node1  missing  {pushed_model.folder} is not there" in message
    assert message.endswith("model push node1\nno job was submitted")
    assert [n["state"] for n in pushed["nodes"]] == ["ok"]
    async with pool_for(settings) as pool:
        assert (await require_model(pool, nodes, settings)).path == str(pushed_model.folder)
    assert json.loads((copy / "config.json").read_text())["model_type"] == "llama"

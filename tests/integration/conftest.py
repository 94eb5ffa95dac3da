"""Fixtures shared by the runtime's integration tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from runtime.contract import BuildManifest
from runtime.schema import parse
from tests.infra.services import TestHosts
from tests.integration import runs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder per test module, holding the prompt table every strategy of the module reads."""
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    runs.write_prompt_table(path / "prompts.parquet")
    return path


@pytest.fixture(scope="session")
def reference(tiny_model_dir: Path) -> dict[int, list[int]]:
    """What single-process HF `generate` decodes from runs.PROMPTS: the tokens every strategy must match."""
    return runs.hf_reference(tiny_model_dir, runs.PROMPTS, max_new_tokens=12, batch_size=4)


@dataclass(frozen=True)
class DeployedRuntime:
    """The CPU runtime built here once per session, deployed to both test hosts, and the settings that did it."""

    lines: str  # cockpit.toml lines for [cluster] and the tables after it: inventory, [ssh], [runtime]
    config: Path  # a cockpit.toml with those lines
    build: BuildManifest
    folder: Path  # the build, here
    install_root: Path  # the same path on every node, each node's own folder there


def cluster_json(config: Path, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(REPO / "cluster.py"), "--config", str(config), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, f"cluster {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout)


@pytest.fixture(scope="session")
def deployed_runtime(test_hosts: TestHosts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployedRuntime]:
    """`cluster runtime build`, then `cluster runtime deploy` to node0 and node1: the real commands."""
    root = tmp_path_factory.mktemp("runtime")
    install_root = test_hosts.node_local / "runtime"
    lines = (
        f'inventory = "{test_hosts.inventory}"\n'
        f'[ssh]\nknown_hosts = "{test_hosts.known_hosts}"\n'
        f'[runtime]\ndelivery = "venv"\ninstall_root = "{install_root}"\nbuild_dir = "{root / "builds"}"\n'
    )
    config = root / "cockpit.toml"
    config.write_text(f'[cluster]\n{lines}[paths]\ndata_dir = "{root / "data"}"\n')
    built = cluster_json(config, "runtime", "build")
    deployed = cluster_json(config, "runtime", "deploy")
    assert deployed["ok"] and [n["state"] for n in deployed["nodes"]] == ["ok", "ok"], deployed
    build = parse(BuildManifest, built["manifest"], "cluster runtime build --json")
    yield DeployedRuntime(lines, config, build, Path(built["folder"]), install_root)
    for host in test_hosts.hosts:  # a GB per copy: the nodes' copies and the build go with the session
        shutil.rmtree(test_hosts.local_folder(host.name) / "runtime", ignore_errors=True)
    shutil.rmtree(root / "builds", ignore_errors=True)

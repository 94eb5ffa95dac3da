"""The project's Ansible tree: both clusters' inventories load through the cockpit's inventory reader, and the
compute playbook passes ansible-playbook's syntax check against each."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cockpit.nodes.inventory import Inventory
from cockpit.provision.runner import compute_playbook

REPO = Path(__file__).resolve().parents[2]
INVENTORIES = sorted((REPO / "ansible" / "inventories").glob("*/hosts.yml"))


def test_both_clusters_have_an_inventory() -> None:
    assert [path.parent.name for path in INVENTORIES] == ["arc", "ryzen"]


@pytest.mark.parametrize("path", INVENTORIES, ids=lambda p: p.parent.name)
def test_inventory_loads_with_compute_nodes(path: Path) -> None:
    inventory = Inventory.load(path)
    compute = inventory.compute
    assert compute and all(node.user == "admin" and node.gpu_kind for node in compute)
    assert [node.name for node in inventory.nodes if node.local] == [n.name for n in inventory.select(["control"])]


@pytest.mark.parametrize("path", INVENTORIES, ids=lambda p: p.parent.name)
def test_compute_playbook_syntax(path: Path) -> None:
    playbook = compute_playbook(REPO)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "--syntax-check", "-i", str(path), str(playbook)],
        cwd=playbook.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr

"""The project's Ansible tree: both clusters' inventories load through the cockpit's inventory reader, every
top-level playbook passes ansible-playbook's syntax check against each, and the tree is ansible-lint clean at
the production profile (ansible/.ansible-lint)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cockpit.nodes.inventory import Inventory
from cockpit.provision.runner import compute_playbook

REPO = Path(__file__).resolve().parents[2]
ANSIBLE = REPO / "ansible"
INVENTORIES = sorted((ANSIBLE / "inventories").glob("*/hosts.yml"))
PLAYBOOKS = sorted(ANSIBLE.glob("*.yml"))
BIN = Path(sys.executable).parent


def test_both_clusters_have_an_inventory() -> None:
    assert [path.parent.name for path in INVENTORIES] == ["arc", "ryzen"]


@pytest.mark.parametrize("path", INVENTORIES, ids=lambda p: p.parent.name)
def test_inventory_loads_with_compute_nodes(path: Path) -> None:
    inventory = Inventory.load(path)
    compute = inventory.compute
    assert compute and all(node.user == "admin" and node.gpu_kind for node in compute)
    assert [node.name for node in inventory.nodes if node.local] == [n.name for n in inventory.select(["control"])]


def test_the_playbooks_are_there() -> None:
    assert {p.name for p in PLAYBOOKS} >= {"site.yml", "control.yml", "compute.yml"}
    assert compute_playbook(REPO) in PLAYBOOKS


@pytest.mark.parametrize("inventory", INVENTORIES, ids=lambda p: p.parent.name)
@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=lambda p: p.name)
def test_playbook_syntax(playbook: Path, inventory: Path) -> None:
    done = subprocess.run(
        [str(BIN / "ansible-playbook"), "--syntax-check", "-i", str(inventory), str(playbook)],
        cwd=ANSIBLE,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_ansible_lint_production_profile() -> None:
    done = subprocess.run(
        [str(BIN / "ansible-lint"), "--nocolor"],
        cwd=ANSIBLE,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Profile 'production' was required, and it passed." in done.stdout + done.stderr

"""Reading `sinfo --json` into node states: 22.05's shape (captured from the test cluster) and 23.02+'s list; a
cluster whose nodes come from Slurm alone, on the dashboard and refused what needs ssh."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cockpit.cli import main
from cockpit.config import load_settings
from cockpit.errors import EXIT_BAD_INPUT
from cockpit.jobs.slurm_nodes import SlurmNode, nodes_from_sinfo, nodes_named, partition_nodes
from cockpit.nodes.slurmd_log import complaint
from cockpit.tui.node_board import NodeBoard
from cockpit.tui.sources import slurm_sample


def sinfo_node(name: str, state: object = "idle", flags: list[str] | None = None, reason: str = "") -> dict:
    """The parts of a real 22.05 `sinfo --json` node record that are read (captured from the test cluster)."""
    return {"name": name, "state": state, "state_flags": flags or [], "reason": reason, "partitions": ["debug"]}


def test_idle_nodes_are_usable_and_listed_once_per_name() -> None:
    nodes = nodes_from_sinfo({"nodes": [sinfo_node("node0"), sinfo_node("node1"), sinfo_node("node0")]})
    assert list(nodes) == ["node0", "node1"]
    assert nodes["node0"] == SlurmNode("node0", "idle", partitions=("debug",)) and nodes["node0"].usable
    assert nodes["node0"].describe() == "idle"


def test_drained_down_and_silent_nodes_are_named_with_their_reason() -> None:
    nodes = nodes_from_sinfo(
        {
            "nodes": [
                sinfo_node("node0", "idle", ["DRAIN"], "Kill task failed"),
                sinfo_node("node1", "allocated", ["DRAIN"], "maintenance "),
                sinfo_node("node2", "down", ["NOT_RESPONDING"], "Not responding"),
                sinfo_node("node3", "mixed"),
            ]
        }
    )
    assert [n.describe() for n in nodes.values()] == [
        "drained (Kill task failed)",
        "draining (maintenance)",
        "down* (Not responding)",
        "mixed",
    ]
    assert [n.usable for n in nodes.values()] == [False, False, False, True]


def test_slurm_23_state_list() -> None:
    nodes = nodes_from_sinfo({"nodes": [sinfo_node("node0", ["IDLE", "DRAIN"], None, "disk")]})
    assert nodes["node0"] == SlurmNode("node0", "idle", ("DRAIN",), "disk", ("debug",))
    assert nodes["node0"].label == "drained"


def test_a_partition_names_its_nodes() -> None:
    nodes = nodes_from_sinfo({"nodes": [sinfo_node("node0"), {**sinfo_node("gpu9"), "partitions": ["big"]}]})
    assert [n.name for n in partition_nodes(nodes, "debug")] == ["node0"]
    assert [n.name for n in partition_nodes(nodes, None)] == ["node0", "gpu9"]


def test_a_node_slurm_does_not_list_takes_no_job() -> None:
    named = nodes_named(nodes_from_sinfo({"nodes": [sinfo_node("node0")]}), ["node0", "node7"])
    assert [(n.describe(), n.usable) for n in named.values()] == [("idle", True), ("not in slurm.conf", False)]


def test_slurmd_complaint_names_a_munge_key_that_differs() -> None:
    log = (
        "[2026-12-03T09:40:01.123] slurmd version 22.05.8 started\n"
        "[2026-12-03T09:40:11.002] error: Munge decode failed: Invalid credential\n"
        "[2026-12-03T09:40:11.002] error: slurm_receive_msg_and_forward: Protocol authentication error\n"
    )
    said = complaint(log, "node1", " --config /c/cockpit.toml")
    assert said == (
        "its munge key differs from the control node's (slurmd: error: slurm_receive_msg_and_forward: Protocol "
        "authentication error); cluster --config /c/cockpit.toml compute configure node1 copies the control node's"
    )
    assert complaint("[t] error: Unable to register: Connection refused\n", "node0") == (
        "slurmd: error: Unable to register: Connection refused"
    )
    assert complaint("[t] slurmd started\n", "node0") is None


SINFO_22_05 = Path(__file__).parent / "fixtures" / "slurm" / "sinfo-22.05-drained.json"  # captured: see its test


def test_sinfo_22_05_captured_gives_cpus_memory_load_and_gres() -> None:
    """`sinfo --json` as the test cluster's Slurm 22.05.8 printed it (tests.infra.services), with node1 drained by
    `scontrol update nodename=node1 state=drain reason="fan failure"`."""
    nodes = nodes_from_sinfo(json.loads(SINFO_22_05.read_text()))
    node0, node1 = nodes["node0"], nodes["node1"]
    assert (node0.cpus, node0.alloc_cpus, node0.memory_mib, node0.free_memory_mib) == (2, 0, 23081, 20177)
    assert (node0.memory_used_mib, node0.cpu_load, node0.gres, node0.partitions) == (2904, 1.8, "gpu:2", ("debug",))
    assert node0.usable and not node1.usable and node1.describe() == "drained (fan failure)"


def test_a_node_slurm_cannot_hear_has_no_figures() -> None:
    """22.05 writes NO_VAL for what a silent slurmd never reported; 23.02+ an unset number object."""
    silent = {**sinfo_node("node2", "down", ["NOT_RESPONDING"]), "cpu_load": 0xFFFFFFFE, "free_mem": {"set": False}}
    node = nodes_from_sinfo({"nodes": [silent]})["node2"]
    assert (node.cpu_load, node.free_memory_mib, node.memory_used_mib, node.silent) == (None, None, None, True)


def test_the_dashboard_shows_slurm_nodes_without_a_probe() -> None:
    """No inventory: rows from sinfo alone; up while slurmd answers, drained and silent nodes marked with why."""
    nodes = nodes_from_sinfo(json.loads(SINFO_22_05.read_text()))
    silent = nodes_from_sinfo({"nodes": [sinfo_node("node2", "down", ["NOT_RESPONDING"], "Not responding")]})
    board = NodeBoard(["node0", "node1", "node2"])
    board.ingest([slurm_sample(node) for node in [*nodes.values(), *silent.values()]])
    rows = {key: [str(cell) for cell in cells] for key, cells in board.rows()}
    assert rows["node0/-"][:6] == ["node0", "up", "-", "1.80", "2.8/22.5", "0/2 CPUs · gpu:2"]
    assert rows["node1/-"][1] == "up · drained" and rows["node2/-"][1] == "unreachable · down*"
    assert board.problems() == [("node1", "Slurm: drained (fan failure)"), ("node2", "Slurm: down* (Not responding)")]


def test_without_an_inventory_actions_over_ssh_say_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "cockpit.toml"
    config.write_text(f'[cluster]\nscheduler = "slurm"\n[paths]\ndata_dir = "{tmp_path}"\n')
    assert load_settings(config).describe()["inventory"] == "none: the nodes Slurm lists (sinfo), without ssh"
    for command in (["compute", "up"], ["compute", "configure"], ["nodes", "probe"], ["nodes", "run", "--", "id"]):
        assert main(["--config", str(config), *command]) == EXIT_BAD_INPUT
        said = capsys.readouterr().err.splitlines()
        assert said == [
            f"cluster: this command needs ssh to the nodes, and {config}: [cluster] names no "
            "inventory (the nodes are Slurm's, seen through sinfo): set [cluster] inventory to an Ansible "
            "inventory of them"
        ]

"""Reading `sinfo --json` into node states: 22.05's shape (captured from the test cluster) and 23.02+'s list."""

from __future__ import annotations

from cockpit.jobs.slurm_nodes import SlurmNode, nodes_from_sinfo, nodes_named, partition_nodes
from cockpit.nodes.slurmd_log import complaint


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

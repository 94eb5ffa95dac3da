"""The ssh pool on the sshd test hosts: one connection per node, reused, and a fresh one after the node drops it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cockpit.nodes.inventory import Inventory
from cockpit.nodes.ssh import SshPool
from tests.infra.services import TestHosts

pytestmark = pytest.mark.infra


async def test_connections_are_reused_and_rebuilt_after_loss(test_hosts: TestHosts) -> None:
    nodes = Inventory.load(test_hosts.inventory).compute
    async with SshPool(test_hosts.known_hosts) as pool:
        first = await pool.run_all(nodes, "echo $SSH_CLIENT")
        again = await pool.run_all(nodes, "echo $SSH_CLIENT")
        assert all(r.ok for r in first + again) and pool.connected == ["node0", "node1"]
        # same client port: the second command went over the first connection
        assert [r.stdout for r in first] == [r.stdout for r in again]

        dropped = await pool.run(nodes[0], "kill $PPID")  # the session's sshd: the node hangs up on us
        assert not dropped.ok
        for _ in range(50):  # the pool forgets a connection as soon as asyncssh sees it closed
            if "node0" not in pool.connected:
                break
            await asyncio.sleep(0.1)
        back = await pool.run(nodes[0], "echo $SSH_CLIENT")
        assert back.ok and back.stdout != first[0].stdout  # a new connection, from a new client port
        assert (await pool.run(nodes[1], "echo $SSH_CLIENT")).stdout == first[1].stdout  # node1's untouched


async def test_concurrency_is_bounded(tmp_path: Path, test_hosts: TestHosts) -> None:
    nodes = Inventory.load(test_hosts.inventory).compute
    async with SshPool(test_hosts.known_hosts, concurrency=1) as pool:
        await pool.run_all(nodes, "true")  # connect first: time only the commands
        started = asyncio.get_running_loop().time()
        results = await pool.run_all(nodes, "sleep 0.5")
        elapsed = asyncio.get_running_loop().time() - started
    assert all(r.ok for r in results) and elapsed >= 1.0  # one at a time

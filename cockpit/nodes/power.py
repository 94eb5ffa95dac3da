"""Node state over ssh: who answers (status), and shutting down or restarting nodes.

The cockpit never powers off the machine it runs on: a local node (the embedded default's localhost) is
refused by name.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Callable, Sequence
from typing import Literal

from cockpit.nodes.inventory import Node
from cockpit.nodes.ssh import CONNECTION_LOST, CommandResult, SshPool

PowerAction = Literal["off", "reboot"]
STATUS_COMMAND = "cat /proc/uptime"


async def status(pool: SshPool, nodes: Sequence[Node]) -> list[CommandResult]:
    """One ssh round trip per node; a node answers when its result is ok."""
    return await pool.run_all(nodes, STATUS_COMMAND)


async def wait_until_up(
    pool: SshPool,
    nodes: Sequence[Node],
    *,
    interval_s: float = 1.0,
    on_round: Callable[[list[CommandResult]], None] | None = None,
) -> list[CommandResult]:
    """Poll status every `interval_s` until every node answers (cancel or Ctrl-C to stop waiting)."""
    while True:
        started = asyncio.get_running_loop().time()
        results = await status(pool, nodes)
        if on_round is not None:
            on_round(results)
        if all(result.ok for result in results):
            return results
        await asyncio.sleep(max(0.0, interval_s - (asyncio.get_running_loop().time() - started)))


def power_command(node: Node, action: PowerAction) -> str:
    """The node's shutdown or reboot command, through `sudo -n` unless it logs in as root."""
    command = node.power_off_command if action == "off" else node.reboot_command
    user = node.user or getpass.getuser()
    return command if user == "root" else f"sudo -n {command}"


async def power(pool: SshPool, nodes: Sequence[Node], action: PowerAction) -> list[CommandResult]:
    """Shut down or restart each node. A connection the node closes while doing so counts as done."""

    async def one(node: Node) -> CommandResult:
        command = power_command(node, action)
        if node.local:
            return CommandResult(
                node.name, node.target, command, None, "", "",
                "this is the control node itself: refusing to power it off or restart it from the cockpit", 0.0,
            )  # fmt: skip
        result = await pool.run(node, command)
        if result.error == CONNECTION_LOST:
            return CommandResult(node.name, node.target, command, 0, result.stdout, result.stderr, None, 0.0)
        return result

    return list(await asyncio.gather(*(one(node) for node in nodes)))

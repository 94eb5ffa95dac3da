"""Why a node's slurmd does not serve slurmctld, in slurmd's own words: the last error in its log.

A node that is down or does not answer in Slurm's view says little by itself ("Not responding"); slurmd's log on
the node says why. The commonest cause on a cluster built by hand, a munge key that differs from the control
node's, reads there as an authentication error, and is said so, with the command that copies the right key.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

from cockpit.config import Settings
from cockpit.nodes.inventory import Inventory, Node
from cockpit.nodes.ssh import pool_for

SLURMD_LOG = "/var/log/slurm/slurmd.log"  # the slurm role's SlurmdLogFile
TAIL_LINES = 200
MUNGE_REFUSED = re.compile(r"Invalid credential|Protocol authentication error|Munge decode failed", re.IGNORECASE)
STAMP = re.compile(r"^\[[^\]]*\]\s*")


def complaint(log_tail: str, node: str, config_flag: str = "") -> str | None:
    """The last error or fatal line of a slurmd log's tail, said plainly; None when it has none."""
    errors = [line for line in log_tail.splitlines() if "error:" in line or "fatal:" in line]
    if not errors:
        return None
    said = STAMP.sub("", errors[-1]).strip()
    if MUNGE_REFUSED.search(said):
        fix = f"cluster{config_flag} compute configure {node}"
        return f"its munge key differs from the control node's (slurmd: {said}); {fix} copies the control node's"
    return f"slurmd: {said}"


async def _complaints(settings: Settings, nodes: Sequence[Node], config_flag: str) -> dict[str, str]:
    async with pool_for(settings) as pool:
        results = await pool.run_all(nodes, f"tail -n {TAIL_LINES} {SLURMD_LOG}", timeout_s=10.0)
    said = {result.node: complaint(result.stdout, result.node, config_flag) for result in results if result.ok}
    return {node: text for node, text in said.items() if text}


def slurmd_complaints(settings: Settings, names: Sequence[str], config_flag: str = "") -> dict[str, str]:
    """Each named node's slurmd complaint, read over ssh from the nodes the inventory names (others and nodes
    that do not answer are left out: their Slurm state says enough)."""
    if not names or settings.inventory is None:
        return {}
    nodes = [node for node in Inventory.load(settings.inventory).compute if node.name in names and not node.local]
    return asyncio.run(_complaints(settings, nodes, config_flag)) if nodes else {}

"""The ssh host keys the control node issues to the compute nodes' live boots, pinned in the cockpit's known_hosts.

The pxe_server role (`cluster control configure`) makes one ed25519 key per compute node, once, in
`<data_dir>/host_keys/<node>/`, and serves it in the live seed of each node whose MAC is known, so such a node
presents the same key at every boot. After the role, each of those nodes' issued public key goes into known_hosts
under the node's name and address, so the first connection needs no `--accept-new`. The issued key is trusted only
for a node known_hosts has no key for yet: a different recorded key (from a boot before the node's MAC was known,
say) stays as it is and is named, never silently replaced, as ssh refuses a changed key.

A node that netboots the golden image shows the image's own key instead (one for every node: the root is shared and
read-only). Once the image is built, that key, read from the image on the control node, is trusted for every
compute node beside its issued one, so switching between the live and the golden boot needs no `--accept-new`.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from pathlib import Path

import asyncssh

from cockpit.config import Settings
from cockpit.errors import BadInput
from cockpit.nodes.inventory import Inventory, Node
from cockpit.nodes.ssh import KnownHosts, host_patterns

HOST_PUBLIC_KEY = "ssh_host_ed25519_key.pub"  # as sshd, the pxe_server role and an image name it


def host_key_dir(settings: Settings) -> Path:
    """Where the pxe_server role keeps each compute node's host keys, a folder per node."""
    return settings.data_dir / "host_keys"


def golden_image_key(inventory: Inventory) -> Path | None:
    """The golden image's own ed25519 host public key on the control node, which every node netbooting the image
    shows; None without a control node."""
    root = inventory.control_setting("golden_image_root", "golden_image")
    return None if root is None else Path(root) / "etc" / "ssh" / HOST_PUBLIC_KEY


def _public_key(path: Path) -> asyncssh.SSHKey:
    try:
        return asyncssh.read_public_key(path)
    except (asyncssh.KeyImportError, ValueError) as err:
        raise BadInput(f"{path}: not an ssh public key ({err}): delete {path.parent} and run again") from None


async def pin_host_keys(
    known_hosts: KnownHosts, key_dir: Path, nodes: Iterable[Node], image_key: Path | None = None
) -> tuple[list[str], list[str]]:
    """Record in known_hosts the issued key of each node that boots with it (its MAC known, its key made) and has
    no recorded key yet, and, once the golden image is built (`image_key` exists), the image's key for every node
    beside it. Returns the nodes recorded now, and a warning for each node whose recorded key differs."""
    image = _public_key(image_key) if image_key is not None and image_key.exists() else None
    recorded: list[str] = []
    warnings: list[str] = []
    for node in nodes:
        path = key_dir / node.name / HOST_PUBLIC_KEY
        trusted = known_hosts.trusted(node)
        own = [key for key in trusted if key != image]  # what the node's live boots showed before
        if node.mac is not None and path.exists():
            issued = _public_key(path)
            if not own:
                await known_hosts.record(node, issued)
                recorded.append(node.name)
            elif issued not in own:
                removals = "; ".join(
                    shlex.join(["ssh-keygen", "-R", host, "-f", str(known_hosts.path)]) for host in host_patterns(node)
                )
                warnings.append(
                    f"{node.target}: {known_hosts.path} holds another host key for it than the one issued in {path}, "
                    f"and keeps it: once the node boots with its issued key, it is refused. If the recorded key is "
                    f"stale (the node booted before its MAC was known), remove it ({removals}) and run "
                    "`cluster control configure` again"
                )
        if image is not None and image not in trusted:
            await known_hosts.record(node, image)
            recorded.append(node.name)
    return list(dict.fromkeys(recorded)), warnings

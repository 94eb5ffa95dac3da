"""`cluster control configure|golden-image`: the control node's playbooks (PXE boot server, golden image);
`configure --boot golden|live` makes the golden image (or the live one) the PXE menu's default, which the
pxe_server role records so later runs keep it.

After either, the host keys the PXE server issues to the compute nodes, and the golden image's own once it is
built, go into the cockpit's known_hosts (cockpit.nodes.host_keys)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from cockpit.cli.common import follow_playbook
from cockpit.config import Settings
from cockpit.errors import EXIT_OK
from cockpit.nodes.host_keys import golden_image_key, host_key_dir, pin_host_keys
from cockpit.nodes.inventory import CONTROL_GROUP, Inventory
from cockpit.nodes.nodeset import fold
from cockpit.nodes.ssh import KnownHosts
from cockpit.provision.compute import PROJECT_ROOT, compute_run


def _pin_host_keys(args: argparse.Namespace, settings: Settings, inventory: Inventory) -> None:
    known_hosts, image_key = KnownHosts(settings.known_hosts), golden_image_key(inventory)
    recorded, warnings = asyncio.run(pin_host_keys(known_hosts, host_key_dir(settings), inventory.compute, image_key))
    if recorded:
        print(
            f"host keys of {fold(recorded)} (issued, or the golden image's) recorded in {settings.known_hosts}",
            file=sys.stderr if args.json else sys.stdout,
        )
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


def _control_playbook(playbook: str, verb: str, also: Sequence[str]) -> Callable[[argparse.Namespace, Settings], int]:
    def command(args: argparse.Namespace, settings: Settings) -> int:
        inventory = Inventory.load(settings.inventory)
        nodes = inventory.select([CONTROL_GROUP])
        boot = getattr(args, "boot", None)
        extravars = {"pxe_server_default_boot": boot} if boot else None
        run = compute_run(settings, nodes, args.playbook or PROJECT_ROOT / "ansible" / playbook, also, extravars)
        code = follow_playbook(args, run, nodes, verb)
        if code == EXIT_OK:
            _pin_host_keys(args, settings, inventory)
        return code

    command.__doc__ = f"Run ansible/{playbook} on the inventory's control node."
    return command


def register(name: str, parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """`control configure`, `control golden-image`."""
    actions = parser.add_subparsers(dest="control_command", required=True, metavar="ACTION")
    for action, playbook, also, text in (
        ("configure", "control.yml", (), "the PXE boot server and gateway of the compute nodes (ansible/control.yml)"),
        # the image is a host the playbook adds (chroot connection): the limit must let it in
        ("golden-image", "golden_image.yml", ("golden_image",), "build, configure and export the golden image"),
    ):
        p = actions.add_parser(action, parents=[common], help=text)
        p.add_argument("--playbook", type=Path, help=f"run this playbook instead of ansible/{playbook}")
        if action == "configure":
            p.add_argument(
                "--boot",
                choices=("golden", "live"),
                help="what the PXE menu boots by default from now on (golden: once `control golden-image` built it)",
            )
        p.set_defaults(handler=_control_playbook(playbook, f"control {action}", also))

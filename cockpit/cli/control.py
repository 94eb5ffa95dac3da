"""`cluster control configure|golden-image`: the control node's playbooks (PXE boot server, golden image)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from cockpit.cli.common import follow_playbook
from cockpit.config import Settings
from cockpit.nodes.inventory import CONTROL_GROUP, Inventory
from cockpit.provision.compute import PROJECT_ROOT, compute_run


def _control_playbook(playbook: str, verb: str, also: Sequence[str]) -> Callable[[argparse.Namespace, Settings], int]:
    def command(args: argparse.Namespace, settings: Settings) -> int:
        nodes = Inventory.load(settings.inventory).select([CONTROL_GROUP])
        run = compute_run(settings, nodes, args.playbook or PROJECT_ROOT / "ansible" / playbook, also)
        return follow_playbook(args, run, nodes, verb)

    command.__doc__ = f"Run ansible/{playbook} on the inventory's control node."
    return command


def register(name: str, parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """`control configure`, `control golden-image`."""
    actions = parser.add_subparsers(dest="control_command", required=True, metavar="ACTION")
    for action, playbook, also, text in (
        ("configure", "control.yml", (), "the PXE boot server the compute nodes boot from (ansible/control.yml)"),
        # the image is a host the playbook adds (chroot connection): the limit must let it in
        ("golden-image", "golden_image.yml", ("golden_image",), "build, configure and export the golden image"),
    ):
        p = actions.add_parser(action, parents=[common], help=text)
        p.add_argument("--playbook", type=Path, help=f"run this playbook instead of ansible/{playbook}")
        p.set_defaults(handler=_control_playbook(playbook, f"control {action}", also))

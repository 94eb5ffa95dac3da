"""`cluster runtime build|deploy|verify`: the node runtime built once here, installed on every node, verified there.

Exit codes: 0 done (every node has the build), 1 some node does not (each named, with the command that fixes
it), 2 bad input (no build, a corrupt manifest, a delivery that needs a setting), 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict

from cockpit.cli.common import print_verdict, run_playbook, selected_nodes, ssh_flags, with_pool
from cockpit.config import Settings
from cockpit.delivery import build as builds
from cockpit.delivery.deploy import copy_image, venv_run
from cockpit.delivery.verify import Verification, config_flag, verify
from cockpit.errors import EXIT_FAILED, EXIT_OK, BadInput
from runtime.contract import BuildManifest
from runtime.schema import to_plain


def _delivery(settings: Settings) -> str:
    delivery = settings.runtime.delivery
    if delivery == "shared":
        raise BadInput(
            f'{settings.source or "embedded default"}: [runtime] delivery is "shared" (the nodes run this tree '
            'as it is); set delivery = "venv" or "apptainer" to build and deploy a runtime'
        )
    return delivery


def cmd_build(args: argparse.Namespace, settings: Settings) -> int:
    """Build the runtime for a device kind and write its manifest."""
    delivery, device = _delivery(settings), settings.runtime_device(args.device)
    log = sys.stderr if args.json else sys.stdout

    def progress(line: str) -> None:
        print(f"build: {line}", file=log, flush=True)

    make = builds.build_venv if delivery == "venv" else builds.build_image
    manifest = make(settings, device, progress)
    folder = builds.build_folder(settings, manifest.delivery, device)
    if args.json:
        print(json.dumps({"folder": str(folder), "manifest": to_plain(manifest)}, indent=2))
    else:
        print(
            f"built {manifest.build_id} ({manifest.delivery}, {device}): torch {manifest.torch}, deepspeed "
            f"{manifest.deepspeed}, transformers {manifest.transformers}, Python {manifest.python}; "
            f"{manifest.files:,} files, {manifest.bytes / 1e9:.2f} GB in {folder}"
        )
    return EXIT_OK


def _verification_json(verification: Verification) -> dict[str, object]:
    return {
        "ok": verification.ok,
        "build": to_plain(verification.build),
        "path": verification.target.path,
        "nodes": [asdict(check) for check in verification.checks],
    }


def _print_verification(args: argparse.Namespace, settings: Settings, verification: Verification) -> int:
    return print_verdict(args, verification, _verification_json(verification), config_flag(settings), EXIT_FAILED)


def _built(args: argparse.Namespace, settings: Settings) -> BuildManifest:
    return builds.built(settings, _delivery(settings), settings.runtime_device(args.device))  # type: ignore[arg-type]


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    """Hash every node's copy of the build at once; exit 0 iff all of them match it."""
    build, nodes = _built(args, settings), selected_nodes(args, settings)
    verification = asyncio.run(with_pool(args, settings, lambda pool: verify(pool, nodes, settings, build)))
    return _print_verification(args, settings, verification)


def cmd_deploy(args: argparse.Namespace, settings: Settings) -> int:
    """Install the build on the nodes (the runtime role, or rsync of the image), then verify it on every one."""
    build, nodes = _built(args, settings), selected_nodes(args, settings)
    if build.delivery == "venv":
        ok, result = run_playbook(args, venv_run(settings, nodes, build), nodes, "runtime deploy")
        if not ok:
            if args.json:
                print(json.dumps({"ok": False, "playbook": result}, indent=2))
            return EXIT_FAILED
    else:
        path = copy_image(settings, build)
        print(f"runtime deploy: {build.build_id} copied to {path}", file=sys.stderr if args.json else sys.stdout)
    verification = asyncio.run(with_pool(args, settings, lambda pool: verify(pool, nodes, settings, build)))
    return _print_verification(args, settings, verification)


def register(name: str, parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """`runtime build|deploy|verify`."""
    actions = parser.add_subparsers(dest="runtime_command", required=True, metavar="ACTION")
    device_help = "the device kind: cpu, cuda or xpu (default: [sweep] device)"
    p = actions.add_parser("build", parents=[common], help="build the runtime here and write build_manifest.json")
    p.add_argument("--device", choices=("cpu", "cuda", "xpu"), help=device_help)
    p.set_defaults(handler=cmd_build)
    pattern_help = "nodes or groups: node0, node[0-3], compute (default: the compute group)"
    for action, handler, text in (
        ("deploy", cmd_deploy, "install the build on the nodes, then verify it there"),
        ("verify", cmd_verify, "check that every node has exactly the build (exit 1 naming those that differ)"),
    ):
        p = actions.add_parser(action, parents=[common, ssh_flags()], help=text)
        p.add_argument("nodes", nargs="*", metavar="NODES", help=pattern_help)
        p.add_argument("--device", choices=("cpu", "cuda", "xpu"), help=device_help)
        p.set_defaults(handler=handler)

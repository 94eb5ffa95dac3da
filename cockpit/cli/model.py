"""`cluster model build-tiny|push|verify`: the built-in small model built offline in the runtime's environment; the
configured model copied to the same path on every compute node, and checked there.

Exit codes: push 0 when every node has the model, 1 when the copy or a node's check failed; verify 0 when every
node has it, 2 when one lacks it or does not answer (what a sweep refuses to start on); 2 for bad input (no model
folder, a node pattern that matches nothing, a corrupt push record); 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from cockpit.cli.common import NODES_HELP, emit, print_verdict, run_playbook, selected_nodes, ssh_flags, with_pool
from cockpit.config import Settings
from cockpit.delivery import model
from cockpit.delivery.verify import config_flag
from cockpit.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK


def cmd_model_build_tiny(args: argparse.Namespace, settings: Settings) -> int:
    """Build the built-in small model (in the runtime's environment: the cockpit never imports torch)."""
    out_dir = args.dir or settings.model_path
    if out_dir.exists() and not args.force:
        emit(
            args,
            {"path": str(out_dir), "built": False, "reason": "exists"},
            [f"{out_dir}: already built (use --force to rebuild)"],
        )
        return EXIT_OK
    command = [sys.executable, "-m", "runtime.tiny_model", str(out_dir), "--seed", str(args.seed)]
    command += ["--force"] if args.force else []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "build-tiny failed", file=sys.stderr)
        return EXIT_FAILED if done.returncode != EXIT_BAD_INPUT else EXIT_BAD_INPUT
    emit(args, {"path": str(out_dir), "built": True}, [f"built {out_dir}"])
    return EXIT_OK


def _check_json(verdict: model.ModelCheck) -> dict[str, object]:
    return {
        "ok": verdict.ok,
        "path": verdict.path,
        "digest": verdict.record.digest if verdict.record else None,
        "full": verdict.full,
        "changed_here": list(verdict.changed_here),
        "nodes": [asdict(check) for check in verdict.checks],
    }


def _print_check(args: argparse.Namespace, settings: Settings, verdict: model.ModelCheck, failed: int) -> int:
    return print_verdict(args, verdict, _check_json(verdict), config_flag(settings), failed)


def cmd_model_push(args: argparse.Namespace, settings: Settings) -> int:
    """Hash the model here (unless unchanged since the last push), copy it to the nodes, check every copy."""
    nodes = selected_nodes(args, settings)
    log = sys.stderr if args.json else sys.stdout
    record = model.hash_here(settings, full=args.full, progress=lambda line: print(f"model push: {line}", file=log))
    model.write_record(settings, record)
    ok, result = run_playbook(args, model.push_run(settings, nodes, args.full), nodes, "model push")
    if not ok:
        if args.json:
            print(json.dumps({"ok": False, "playbook": result}, indent=2))
        return EXIT_FAILED
    check = model.check_pushed
    verdict = asyncio.run(with_pool(args, settings, lambda pool: check(pool, nodes, settings, record, full=args.full)))
    return _print_check(args, settings, verdict, EXIT_FAILED)


def cmd_model_verify(args: argparse.Namespace, settings: Settings) -> int:
    """Check every node's copy against the push record, as a sweep does (--full: every file hashed)."""
    nodes = selected_nodes(args, settings)
    verdict = asyncio.run(with_pool(args, settings, lambda pool: model.check(pool, nodes, settings, full=args.full)))
    return _print_check(args, settings, verdict, EXIT_BAD_INPUT)


def register(name: str, parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """`model build-tiny|push|verify`."""
    actions = parser.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    p = actions.add_parser("build-tiny", parents=[common], help="build the built-in small model offline")
    p.add_argument("dir", nargs="?", type=Path, help="where to build it (default: the configured model path)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="rebuild even if it exists")
    p.set_defaults(handler=cmd_model_build_tiny)
    for action, handler, text, full_help in (
        ("push", cmd_model_push, "copy the model to the same path on the nodes, then check every copy",
         "hash the model here again, compare files by content and hash every copy"),
        ("verify", cmd_model_verify, "check that every node has the model as pushed (exit 2 naming those that lack it)",
         "hash every file, here and on each node, instead of comparing sizes and mtimes"),
    ):  # fmt: skip
        p = actions.add_parser(action, parents=[common, ssh_flags()], help=text)
        p.add_argument("nodes", nargs="*", metavar="NODES", help=NODES_HELP)
        p.add_argument("--full", action="store_true", help=full_help)
        p.set_defaults(handler=handler)

"""`cluster model build-tiny [DIR]`: the built-in small model, built offline in the runtime's environment."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from cockpit.cli.common import emit
from cockpit.config import Settings
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


def register(name: str, parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """`model build-tiny`."""
    actions = parser.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    p = actions.add_parser("build-tiny", parents=[common], help="build the built-in small model offline")
    p.add_argument("dir", nargs="?", type=Path, help="where to build it (default: the configured model path)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="rebuild even if it exists")
    p.set_defaults(handler=cmd_model_build_tiny)

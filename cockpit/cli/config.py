"""`cluster config` and `cluster check FILE...`: the effective configuration, and files validated one line each."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cockpit.cli.common import emit
from cockpit.config import CONFIG_NAME, Settings, parse_config
from cockpit.errors import BAD_INPUT, EXIT_BAD_INPUT, EXIT_OK, BadInput
from runtime.contract import ExperimentConfig, read_text


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    """Show the effective configuration and where it came from."""
    info = settings.describe()
    width = max(len(k) for k in info)
    emit(args, info, [f"{key:<{width}}  {value}" for key, value in info.items()])
    return EXIT_OK


def check_file(path: Path) -> str:
    """Validate one cockpit.toml or exp_config.json; a one-line summary, or a BadInput."""
    if path.suffix == ".toml":
        settings = parse_config(read_text(path), path)
        return (
            f"{path}: ok (cluster {settings.cluster.name!r}, scheduler {settings.cluster.scheduler}, "
            f"run folders {settings.file.paths.run_storage})"
        )
    if path.suffix == ".json":
        exp = ExperimentConfig.load(path)
        return (
            f"{path}: ok ({exp.strategy_id}: tp={exp.tp_size} pp={exp.pp_size} dp={exp.dp_size}, "
            f"{exp.num_nodes} node(s) x {exp.gpus_per_node})"
        )
    raise BadInput(f"{path}: expected a {CONFIG_NAME} (.toml) or an exp_config.json (.json)")


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    """Validate files; every file is checked, the exit code is 2 if any is bad."""
    results = []
    for path in args.files:
        try:
            results.append({"file": str(path), "ok": True, "message": check_file(path)})
        except BAD_INPUT as err:
            results.append({"file": str(path), "ok": False, "message": str(err)})
    ok = all(r["ok"] for r in results)
    if args.json:
        print(json.dumps({"ok": ok, "files": results}, indent=2))
    else:
        for r in results:
            print(r["message"], file=sys.stdout if r["ok"] else sys.stderr)
    return EXIT_OK if ok else EXIT_BAD_INPUT


def register(name: str, parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """`config`, or `check FILE...`."""
    if name == "config":
        parser.set_defaults(handler=cmd_config)
        return
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.set_defaults(handler=cmd_check)

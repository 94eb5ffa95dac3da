"""`cluster`: the cockpit's powers without a screen. Scriptable: `--json` output, exit codes 0/1/2.

Never imports textual (checked by a test), so it starts fast and runs where no terminal UI is wanted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from cockpit import nodes_cli, runtime_cli, sweep_cli
from cockpit.config import CONFIG_NAME, Settings, load_settings, parse_config
from cockpit.errors import BAD_INPUT, EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, BadInput, run_main
from runtime.contract import ExperimentConfig, read_text

Handler = Callable[[argparse.Namespace, Settings], int]


def _emit(args: argparse.Namespace, data: dict[str, object], lines: list[str]) -> None:
    print(json.dumps(data, indent=2) if args.json else "\n".join(lines))


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    """Show the effective configuration and where it came from."""
    info = settings.describe()
    width = max(len(k) for k in info)
    _emit(args, info, [f"{key:<{width}}  {value}" for key, value in info.items()])
    return EXIT_OK


def check_file(path: Path) -> str:
    """Validate one cockpit.toml or exp_config.json; a one-line summary, or a BadInput."""
    if path.suffix == ".toml":
        settings = parse_config(read_text(path), path)
        return f"{path}: ok (cluster {settings.cluster.name!r}, scheduler {settings.cluster.scheduler})"
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


def cmd_model_build_tiny(args: argparse.Namespace, settings: Settings) -> int:
    """Build the built-in small model (in the runtime's environment: the cockpit never imports torch)."""
    out_dir = args.dir or settings.model_path
    if out_dir.exists() and not args.force:
        _emit(
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
    _emit(args, {"path": str(out_dir), "built": True}, [f"built {out_dir}"])
    return EXIT_OK


def _common_flags(top_level: bool) -> argparse.ArgumentParser:
    """Flags accepted before and after the command. Below the top level they default to SUPPRESS, or a
    subcommand's default would overwrite a value given before it (`cluster --json config`)."""
    flags = argparse.ArgumentParser(add_help=False)
    unset = {} if top_level else {"default": argparse.SUPPRESS}
    flags.add_argument(
        "--config",
        metavar="PATH",
        help=f"configuration file (default: ./{CONFIG_NAME}, "
        f"then ~/.config/cockpit/{CONFIG_NAME}, else the embedded default)",
        **unset,
    )
    flags.add_argument("--json", action="store_true", help="machine-readable output", **unset)
    flags.add_argument("--debug", action="store_true", help="show tracebacks", **unset)
    return flags


def build_parser() -> argparse.ArgumentParser:
    common = _common_flags(top_level=False)
    parser = argparse.ArgumentParser(
        prog="cluster",
        parents=[_common_flags(top_level=True)],
        description="Run and inspect a GPU cluster and its inference sweeps.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("config", parents=[common], help="show the effective configuration")
    p.set_defaults(handler=cmd_config)

    p = sub.add_parser("check", parents=[common], help="validate cockpit.toml or exp_config.json files")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.set_defaults(handler=cmd_check)

    model = sub.add_parser("model", parents=[common], help="models the cluster runs")
    model_sub = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    p = model_sub.add_parser("build-tiny", parents=[common], help="build the built-in small model offline")
    p.add_argument("dir", nargs="?", type=Path, help="where to build it (default: the configured model path)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="rebuild even if it exists")
    p.set_defaults(handler=cmd_model_build_tiny)

    nodes_cli.add_commands(sub, common)
    runtime_cli.add_commands(sub, common)
    sweep_cli.add_commands(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return run_main("cluster", args.debug, lambda: handler(args, load_settings(args.config)))


if __name__ == "__main__":
    sys.exit(main())

"""`cluster`: the cockpit's powers without a screen. Scriptable: `--json` output, exit codes 0 done, 1 failed,
2 bad input, 130 interrupted (cockpit.errors).

One module per command group, imported only when its command runs (like pip's `commands_dict`), so
`cluster --help` and every command start fast. Never imports textual (checked by a test).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from typing import NamedTuple

from cockpit.config import CONFIG_NAME, Settings, load_settings
from cockpit.errors import run_main

Handler = Callable[[argparse.Namespace, Settings], int]


class Command(NamedTuple):
    module: str  # registers the command's arguments and handlers: `register(name, parser, common)`
    help: str


COMMANDS: dict[str, Command] = {
    "config": Command("cockpit.cli.config", "show the effective configuration"),
    "check": Command("cockpit.cli.config", "validate cockpit.toml or exp_config.json files"),
    "model": Command("cockpit.cli.model", "models the cluster runs"),
    "compute": Command("cockpit.cli.compute", "wake, stop, check and configure compute nodes"),
    "control": Command("cockpit.cli.control", "configure the control node: PXE server, golden image"),
    "nodes": Command("cockpit.cli.nodes", "the inventory's nodes: list, probe, run commands"),
    "runtime": Command("cockpit.cli.runtime", "build the node runtime, deploy it, verify the nodes"),
    "sweep": Command("cockpit.cli.sweep", "run the parallelism strategies as a sweep"),
    "report": Command("cockpit.cli.sweep", "correctness, strategy table and plots for a run"),
    "traces": Command("cockpit.cli.sweep", "a run's per-rank profiler traces and their summaries"),
}


def common_flags(top_level: bool) -> argparse.ArgumentParser:
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


def chosen_command(argv: list[str]) -> str | None:
    """The command named on the command line (the first word that is one; --config's value is skipped)."""
    words = iter(argv)
    for word in words:
        if word == "--config":
            next(words, None)
        elif word in COMMANDS:
            return word
    return None


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The `cluster` parser: every command listed, only the chosen one's module imported and its arguments added."""
    common = common_flags(top_level=False)
    parser = argparse.ArgumentParser(
        prog="cluster",
        parents=[common_flags(top_level=True)],
        description="Run and inspect a GPU cluster and its inference sweeps.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = chosen_command(argv)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, parents=[common], help=command.help, description=command.help)
        if name == chosen:
            importlib.import_module(command.module).register(name, p, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    handler: Handler = args.handler
    return run_main("cluster", args.debug, lambda: handler(args, load_settings(args.config)))

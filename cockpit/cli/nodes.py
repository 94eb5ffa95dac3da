"""`cluster nodes list|probe|run`: the inventory's nodes (Slurm's where there is no inventory), their health, and a
command on many of them."""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys

from rich.console import Console
from rich.table import Table

from cockpit.cli.common import NODES_HELP, result_json, selected_nodes, slurm_selected, ssh_flags, with_pool
from cockpit.config import Settings
from cockpit.delivery.verify import current_manifest_path
from cockpit.errors import EXIT_FAILED, EXIT_OK, BadInput
from cockpit.nodes.inventory import Inventory
from cockpit.nodes.ssh import group_identical
from cockpit.nodes.telemetry import fixed, gib_pair, probe_nodes, telemetry_table, telemetry_to_json


def cmd_nodes_list(args: argparse.Namespace, settings: Settings) -> int:
    """The inventory's nodes as the cockpit reaches them; with none, Slurm's as sinfo lists them."""
    if settings.nodes_from_slurm:
        return _slurm_list(args, settings)
    inventory = Inventory.load(settings.inventory)
    nodes = inventory.select(args.nodes) if args.nodes else list(inventory.nodes)
    if args.json:
        rows = [
            {"name": n.name, "address": n.address, "port": n.port, "user": n.user, "mac": n.mac,
             "gpu_kind": n.gpu_kind, "groups": list(n.groups), "local": n.local}
            for n in nodes
        ]  # fmt: skip
        print(json.dumps({"inventory": inventory.where, "nodes": rows}, indent=2))
        return EXIT_OK
    table = Table(title=f"nodes of {inventory.where}", title_justify="left")
    for column in ("node", "address", "user", "mac", "gpu", "groups"):
        table.add_column(column)
    for n in nodes:
        address = "this machine" if n.local else n.endpoint
        table.add_row(n.name, address, n.user or "-", n.mac or "-", n.gpu_kind or "-", ",".join(n.groups))
    Console().print(table)
    return EXIT_OK


def _slurm_list(args: argparse.Namespace, settings: Settings) -> int:
    """The nodes sinfo lists: state, CPUs in use, memory, GRES, partitions."""
    nodes = slurm_selected(args, settings).values()
    if args.json:
        rows = [
            {"name": n.name, "state": n.describe(), "usable": n.usable, "cpus": n.cpus, "alloc_cpus": n.alloc_cpus,
             "memory_mib": n.memory_mib, "free_memory_mib": n.free_memory_mib, "cpu_load": n.cpu_load,
             "gres": n.gres, "partitions": list(n.partitions)}
            for n in nodes
        ]  # fmt: skip
        print(json.dumps({"inventory": None, "source": "sinfo", "nodes": rows}, indent=2))
        return EXIT_OK
    table = Table(title="nodes Slurm lists (no inventory: sinfo, no ssh)", title_justify="left")
    for column in ("node", "state", "cpus", "mem GiB", "gres", "partitions"):
        table.add_column(column)
    for n in nodes:
        cpus = f"{fixed(n.alloc_cpus)}/{fixed(n.cpus)}"
        memory = gib_pair(n.memory_used_mib, n.memory_mib)
        table.add_row(n.name, n.describe(), cpus, memory, n.gres or "-", ",".join(n.partitions))
    Console().print(table)
    return EXIT_OK


def cmd_nodes_probe(args: argparse.Namespace, settings: Settings) -> int:
    """Uptime, load, memory, every GPU's health and the runtime build, one ssh round trip per node."""
    nodes = selected_nodes(args, settings)
    manifest = current_manifest_path(settings.runtime)  # each node's runtime build too, when one is delivered
    samples = asyncio.run(with_pool(args, settings, lambda pool: probe_nodes(pool, nodes, manifest)))
    failed = sum(1 for s in samples if s.telemetry is None)
    if args.json:
        out = [
            {"node": s.name, "ok": s.telemetry is not None, "error": s.error,
             "telemetry": None if s.telemetry is None else telemetry_to_json(s.telemetry)}
            for s in samples
        ]  # fmt: skip
        print(json.dumps({"ok": not failed, "nodes": out}, indent=2))
    else:
        rows = [(s.name, s.telemetry if s.telemetry is not None else s.error or "") for s in samples]
        Console(width=max(140, Console().width)).print(telemetry_table(rows))
    return EXIT_OK if not failed else EXIT_FAILED


def cmd_nodes_run(args: argparse.Namespace, settings: Settings) -> int:
    """A shell command on every selected node, output folded like `dshbak -c` (identical outputs once)."""
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise BadInput("nodes run: no command given (cluster nodes run -w NODES -- COMMAND)")
    line = command[0] if len(command) == 1 else shlex.join(command)  # like remote.py: words quoted one by one
    nodes = selected_nodes(args, settings)
    results = asyncio.run(with_pool(args, settings, lambda pool: pool.run_all(nodes, line)))
    if args.json:
        print(json.dumps({"ok": all(r.ok for r in results), "nodes": [result_json(r) for r in results]}, indent=2))
    else:
        for header, result in group_identical(results):
            outcome = result.error or f"exit {result.exit_status}"
            print(f"---------------\n{header} ({outcome})\n---------------")
            sys.stdout.write(result.stdout)
            sys.stderr.write(result.stderr)
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def register(name: str, parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """`nodes list|probe|run`."""
    ssh = ssh_flags()
    actions = parser.add_subparsers(dest="nodes_command", required=True, metavar="ACTION")
    p = actions.add_parser("list", parents=[common], help="the nodes of the inventory")
    p.add_argument("nodes", nargs="*", metavar="NODES", help=NODES_HELP)
    p.set_defaults(handler=cmd_nodes_list)
    p = actions.add_parser("probe", parents=[common, ssh], help="uptime, load, memory and GPU health per node")
    p.add_argument("nodes", nargs="*", metavar="NODES", help=NODES_HELP)
    p.set_defaults(handler=cmd_nodes_probe)
    p = actions.add_parser("run", parents=[common, ssh], help="run a shell command on nodes (like clush -b)")
    p.add_argument("-w", "--nodes", action="append", default=[], metavar="NODES", help=NODES_HELP)
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command")
    p.set_defaults(handler=cmd_nodes_run)

"""`cluster compute up|down|restart|status|configure|discover`: wake, stop, check (ssh, and Slurm's node state)
and configure the compute nodes, and find the ones not yet known (DHCP leases) and record their MACs.

Success is one short line; a failure prints everything needed to debug it (node, command, exit status or
error, stderr). Exit codes: 0 every node did it, 1 some did not (each named), 2 bad input, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from cockpit.cli.common import (
    NODES_HELP,
    follow_playbook,
    report_results,
    selected_nodes,
    slurm_selected,
    ssh_flags,
    with_pool,
)
from cockpit.config import Settings
from cockpit.delivery.verify import config_flag
from cockpit.errors import EXIT_FAILED, EXIT_OK, BadInput
from cockpit.nodes import power
from cockpit.nodes.inventory import CONTROL_GROUP, Inventory
from cockpit.nodes.leases import UNKNOWN, Lease, lease_file, read_leases, record_mac, wanted_macs
from cockpit.nodes.nodeset import fold
from cockpit.nodes.slurmd_log import slurmd_complaints
from cockpit.nodes.ssh import CommandResult, SshPool
from cockpit.nodes.wol import wake
from cockpit.provision.compute import compute_run

if TYPE_CHECKING:
    from cockpit.jobs.slurm_nodes import SlurmNode


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 iff every selected node answers over ssh and, with Slurm, can take jobs (where the nodes come from
    Slurm, that alone: there is no ssh to check)."""
    if settings.nodes_from_slurm:
        states = slurm_selected(args, settings)
        if args.json:
            shown = {n.name: {"state": n.label, "reason": n.reason, "usable": n.usable} for n in states.values()}
            print(json.dumps({"ok": all(n.usable for n in states.values()), "slurm": shown}, indent=2))
        else:
            _print_slurm_states(states, None, {})
        return EXIT_OK if all(node.usable for node in states.values()) else EXIT_FAILED
    nodes = selected_nodes(args, settings)
    results = asyncio.run(with_pool(args, settings, lambda pool: power.status(pool, nodes)))
    if settings.cluster.scheduler != "slurm":
        return report_results(args, results, "every node answers")
    states, problem = _slurm_states([node.name for node in nodes])
    shown = {name: {"state": node.label, "reason": node.reason, "usable": node.usable} for name, node in states.items()}
    said = slurmd_complaints(settings, [n.name for n in states.values() if n.silent], config_flag(settings))
    for name, text in said.items():
        shown[name]["slurmd"] = text
    answered = report_results(args, results, "every node answers", {"slurm": shown, "slurm_error": problem})
    if not args.json:
        _print_slurm_states(states, problem, said)
    usable = problem is None and all(node.usable for node in states.values())
    return answered if usable else EXIT_FAILED


def _slurm_states(names: list[str]) -> tuple[dict[str, SlurmNode], str | None]:
    """Each node's Slurm state (sinfo), or why there is none."""
    from cockpit.jobs.records import JobError
    from cockpit.jobs.slurm_nodes import nodes_named, slurm_nodes

    try:
        return nodes_named(slurm_nodes(), names), None
    except JobError as err:
        return {}, str(err)


def _print_slurm_states(states: dict[str, SlurmNode], problem: str | None, said: dict[str, str]) -> None:
    if problem is not None:
        print(f"slurm: {problem}", file=sys.stderr)
        return
    by_state: dict[str, list[SlurmNode]] = {}
    for node in states.values():
        by_state.setdefault(node.describe(), []).append(node)
    for words, nodes in by_state.items():
        print(f"slurm: {fold(n.name for n in nodes)} {words}", file=sys.stdout if nodes[0].usable else sys.stderr)
    for name, text in said.items():
        print(f"slurm: {name} {text}", file=sys.stderr)


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    """Wake the nodes, then poll once a second until every one answers (or Ctrl-C, or --timeout)."""
    nodes = selected_nodes(args, settings)
    woken = wake(nodes, settings.wake_on_lan)
    sent = [w for w in woken if w.ok]
    log = sys.stderr if args.json else sys.stdout
    if sent:
        wol = settings.wake_on_lan
        where = f"{wol.broadcast}:{wol.port}"
        print(f"wake-on-lan: {wol.repeat} packet(s) each to {fold(w.node for w in sent)} via {where}", file=log)
    for missing in (w for w in woken if not w.ok):
        print(f"wake-on-lan: {missing.node}: {missing.error}; cannot wake it", file=sys.stderr, flush=True)
    started = time.monotonic()
    seen_up: set[str] = set()

    def progress(results: list[CommandResult]) -> None:
        for result in results:
            if result.ok and result.node not in seen_up:
                seen_up.add(result.node)
                print(f"{result.node} up after {time.monotonic() - started:.1f} s", file=log, flush=True)

    async def work(pool: SshPool) -> list[CommandResult]:
        waiting = power.wait_until_up(pool, nodes, on_round=progress)
        try:
            return await asyncio.wait_for(waiting, args.timeout) if args.timeout else await waiting
        except TimeoutError:
            return await power.status(pool, nodes)

    print(f"waiting for {fold(n.name for n in nodes)} to answer (Ctrl-C to stop)", file=log, flush=True)
    results = asyncio.run(with_pool(args, settings, work))
    woke = {"woken": [{"node": w.node, "mac": w.mac, "packets": w.packets, "error": w.error} for w in woken]}
    return report_results(args, results, f"up in {time.monotonic() - started:.1f} s", woke)


def _power(action: power.PowerAction, what: str) -> Callable[[argparse.Namespace, Settings], int]:
    def command(args: argparse.Namespace, settings: Settings) -> int:
        nodes = selected_nodes(args, settings)
        results = asyncio.run(with_pool(args, settings, lambda pool: power.power(pool, nodes, action)))
        return report_results(args, results, what)

    command.__doc__ = f"Ask each node to {what} (`shutdown` over ssh, through sudo unless root)."
    return command


def cmd_configure(args: argparse.Namespace, settings: Settings) -> int:
    """Check that every node answers, then run the compute playbooks on them through ansible-runner."""
    nodes = selected_nodes(args, settings)
    checked = asyncio.run(with_pool(args, settings, lambda pool: power.status(pool, nodes)))
    if not all(r.ok for r in checked):
        print("configure: not every node answers; fix that first (cluster compute status)", file=sys.stderr)
        return report_results(args, checked, "")
    return follow_playbook(args, compute_run(settings, nodes, args.playbook), nodes, "configure")


def cmd_discover(args: argparse.Namespace, settings: Settings) -> int:
    """The control node's DHCP leases, each with the inventory node its MAC is; with --write, MACs recorded for the
    nodes named (checked first: each node known, each MAC well formed and no other node's)."""
    inventory = Inventory.load(settings.inventory)
    path = lease_file(inventory)
    if path is None:
        raise BadInput(f"{inventory.where}: no control node (group {CONTROL_GROUP}), whose DHCP leases discovery reads")
    wanted = wanted_macs(inventory, args.write or [])
    leases = read_leases(path, inventory)
    held = {lease.mac for lease in leases}
    warnings = [f"{mac} ({name}) holds no lease in {path}: check it, and that {name} is on the compute network"
                for name, mac in wanted.items() if mac not in held]  # fmt: skip
    for warning in warnings:
        print(f"discover: warning: {warning}", file=sys.stderr)
    written = [(name, mac, record_mac(inventory, name, mac)) for name, mac in wanted.items()]
    owner = {mac: name for name, mac in wanted.items()}
    leases = [replace(x, node=owner.get(x.mac, None if x.node in wanted else x.node)) for x in leases]
    if args.json:
        recorded = [{"node": name, "mac": mac, "file": str(file)} for name, mac, file in written]
        data = {"lease_file": str(path), "leases": [x.to_json() for x in leases], "written": recorded}
        print(json.dumps({**data, "warnings": warnings}, indent=2))
        return EXIT_OK
    _print_leases(path, leases)
    for name, mac, file in written:
        print(f"recorded {name}'s MAC {mac} in {file}")
    if written:
        names = fold(name for name, _, _ in written)
        print(f"next: cluster control configure, so dnsmasq gives {names} the inventory's address(es) from now on")
    elif any(x.node is None for x in leases):
        print("record which node an unknown host is: cluster compute discover --write NODE=MAC")
    return EXIT_OK


def _print_leases(path: Path, leases: list[Lease]) -> None:
    if not leases:
        print(f"no DHCP leases in {path}: nothing on the compute network has asked for an address")
        return
    table = Table(title=f"DHCP leases in {path}", title_justify="left")
    for column in ("mac", "address", "dhcp name", "expires", "node"):
        # whole MACs and addresses on any terminal; a long DHCP name or node folds rather than loses its end
        table.add_column(column, no_wrap=column in ("mac", "address", "expires"), overflow="fold")
    for x in leases:
        expires = "never" if x.expires is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(x.expires))
        node = Text(UNKNOWN, style="yellow") if x.node is None else x.node
        table.add_row(x.mac, x.address, x.hostname or "-", expires, node)
    console = Console()  # a terminal's own width, the table folding to it; a pipe or log gets one line a lease
    (console if console.is_terminal else Console(width=max(120, console.width))).print(table)


def register(name: str, parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """`compute ACTION [NODES]`."""
    ssh = ssh_flags()
    actions = parser.add_subparsers(dest="compute_command", required=True, metavar="ACTION")
    for action, handler, text in (
        ("up", cmd_up, "Wake-on-LAN, then wait until every node answers"),
        ("down", _power("off", "shut down"), "shut the nodes down over ssh"),
        ("restart", _power("reboot", "restart"), "restart the nodes over ssh"),
        ("status", cmd_status, "exit 0 iff every node answers over ssh"),
        ("configure", cmd_configure, "run the compute playbooks (after a status check)"),
    ):
        p = actions.add_parser(action, parents=[common, ssh], help=text)
        p.add_argument("nodes", nargs="*", metavar="NODES", help=NODES_HELP)
        p.set_defaults(handler=handler)
        if action == "up":
            p.add_argument("--timeout", type=float, metavar="S", help="give up after S seconds (exit 1)")
        if action == "configure":
            p.add_argument("--playbook", type=Path, help="run this playbook instead of ansible/compute.yml")
    p = actions.add_parser("discover", parents=[common], help="what is on compute_interface now (DHCP leases)")
    p.add_argument("--write", nargs="+", metavar="NODE=MAC", help="record these nodes' MACs where the wol role does")
    p.set_defaults(handler=cmd_discover)

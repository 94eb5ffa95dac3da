"""`cluster compute up|down|restart|status|configure`, `cluster control configure|golden-image` and
`cluster nodes list|probe|run`: the nodes, headless.

Success is one short line; a failure prints everything needed to debug it (node, command, exit status or
error, stderr). Exit codes: 0 every node did it, 1 some did not (each named), 2 bad input, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.table import Table

from cockpit.config import Settings
from cockpit.delivery.verify import current_manifest_path
from cockpit.errors import EXIT_FAILED, EXIT_OK, BadInput
from cockpit.nodes import power
from cockpit.nodes.inventory import CONTROL_GROUP, Inventory, Node
from cockpit.nodes.nodeset import fold
from cockpit.nodes.ssh import CommandResult, SshPool, group_identical, pool_for
from cockpit.nodes.telemetry import probe_nodes, telemetry_table, telemetry_to_json
from cockpit.nodes.wol import wake
from cockpit.provision.compute import PROJECT_ROOT, compute_run
from cockpit.provision.events import HostResult, Recap, describe, failure_details
from cockpit.provision.runner import PlaybookRun

T = TypeVar("T")


def selected_nodes(args: argparse.Namespace, settings: Settings) -> list[Node]:
    return Inventory.load(settings.inventory).select(args.nodes)


def ssh_pool(args: argparse.Namespace, settings: Settings) -> SshPool:
    return pool_for(
        settings,
        accept_new=args.accept_new,
        connect_timeout_s=args.connect_timeout,
        command_timeout_s=args.command_timeout,
    )


def _result_json(result: CommandResult) -> dict[str, object]:
    return {
        "node": result.node,
        "ok": result.ok,
        "command": result.command,
        "exit_status": result.exit_status,
        "error": result.error,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "elapsed_ms": round(result.elapsed_s * 1000, 1),
    }


def _report(args: argparse.Namespace, results: Sequence[CommandResult], what: str, extra: dict | None = None) -> int:
    """One line when every node did `what`; otherwise each failure in full, then who failed."""
    failed = [r for r in results if not r.ok]
    if args.json:
        print(json.dumps({"ok": not failed, **(extra or {}), "nodes": [_result_json(r) for r in results]}, indent=2))
    elif not failed:
        slowest = max((r.elapsed_s for r in results), default=0.0)
        print(f"{fold(r.node for r in results)}: {what} ({len(results)} node(s), slowest {slowest * 1000:.0f} ms)")
    else:
        for result in failed:
            print(result.failure(), file=sys.stderr)
        print(
            f"{len(failed)} of {len(results)} node(s) failed: {fold(r.node for r in failed)}",
            file=sys.stderr,
        )
    return EXIT_OK if not failed else EXIT_FAILED


async def with_pool(args: argparse.Namespace, settings: Settings, work: Callable[[SshPool], Awaitable[T]]) -> T:
    async with ssh_pool(args, settings) as pool:
        return await work(pool)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 iff every selected node answers over ssh."""
    nodes = selected_nodes(args, settings)
    results = asyncio.run(with_pool(args, settings, lambda pool: power.status(pool, nodes)))
    return _report(args, results, "every node answers")


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
    return _report(args, results, f"up in {time.monotonic() - started:.1f} s", woke)


def _power(action: power.PowerAction, what: str) -> Callable[[argparse.Namespace, Settings], int]:
    def command(args: argparse.Namespace, settings: Settings) -> int:
        nodes = selected_nodes(args, settings)
        results = asyncio.run(with_pool(args, settings, lambda pool: power.power(pool, nodes, action)))
        return _report(args, results, what)

    command.__doc__ = f"Ask each node to {what} (`shutdown` over ssh, through sudo unless root)."
    return command


def cmd_configure(args: argparse.Namespace, settings: Settings) -> int:
    """Check that every node answers, then run the compute playbooks on them through ansible-runner."""
    nodes = selected_nodes(args, settings)
    checked = asyncio.run(with_pool(args, settings, lambda pool: power.status(pool, nodes)))
    if not all(r.ok for r in checked):
        print("configure: not every node answers; fix that first (cluster compute status)", file=sys.stderr)
        return _report(args, checked, "")
    return _follow(args, compute_run(settings, nodes, args.playbook), nodes, "configure")


def _control_playbook(playbook: str, verb: str, also: Sequence[str]) -> Callable[[argparse.Namespace, Settings], int]:
    def command(args: argparse.Namespace, settings: Settings) -> int:
        nodes = Inventory.load(settings.inventory).select([CONTROL_GROUP])
        run = compute_run(settings, nodes, args.playbook or PROJECT_ROOT / "ansible" / playbook, also)
        return _follow(args, run, nodes, verb)

    command.__doc__ = f"Run ansible/{playbook} on the inventory's control node."
    return command


def run_playbook(args: argparse.Namespace, run: PlaybookRun, nodes: Sequence[Node], verb: str) -> tuple[bool, dict]:
    """Start `run` and print its tasks and results as they come (to stderr under --json); whether every node did
    it, and the run as JSON. Failures are printed in full."""
    run.start()
    log = sys.stderr if args.json else sys.stdout
    print(f"{verb}: {run.playbook} on {fold(n.name for n in nodes)} (artifacts in {run.artifact_dir})", file=log)
    failures: list[HostResult] = []
    recap: Recap | None = None
    try:
        for event in run.events():
            if isinstance(event, HostResult) and event.status in ("failed", "unreachable") and not event.ignored:
                failures.append(event)
            recap = event if isinstance(event, Recap) else recap
            line = describe(event)
            if line is not None:
                print(line, file=log, flush=True)
    except KeyboardInterrupt:
        run.cancel()
        raise
    # ansible-playbook calls a run that matched no host successful; here it configured nothing, so it is not
    ok = run.status == "successful" and not failures and recap is not None and bool(recap.hosts)
    if not ok:
        for failure in failures:
            print(failure_details(failure), file=sys.stderr)
        if not failures:  # a playbook that does not load sends no events: its reason is only in the output
            print(run.output_tail(), file=sys.stderr)
        print(f"{verb}: {run.status} (rc {run.rc}); full log: {run.stdout_path}", file=sys.stderr)
    stats = {host: vars(s) for host, s in recap.hosts.items()} if recap else {}
    return ok, {"ok": ok, "status": run.status, "rc": run.rc, "artifact_dir": str(run.artifact_dir),
                "recap": stats, "failures": [vars(f) for f in failures]}  # fmt: skip


def _follow(args: argparse.Namespace, run: PlaybookRun, nodes: Sequence[Node], verb: str) -> int:
    """Run the playbook to its end; one line when every node did it, else every failure in full."""
    ok, result = run_playbook(args, run, nodes, verb)
    if args.json:
        print(json.dumps(result, indent=2))
    elif ok:
        print(f"{verb}: {fold(n.name for n in nodes)} configured")
    return EXIT_OK if ok else EXIT_FAILED


def cmd_nodes_list(args: argparse.Namespace, settings: Settings) -> int:
    """The inventory's nodes as the cockpit reaches them."""
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
    nodes = Inventory.load(settings.inventory).select(args.nodes)
    results = asyncio.run(with_pool(args, settings, lambda pool: pool.run_all(nodes, line)))
    if args.json:
        print(json.dumps({"ok": all(r.ok for r in results), "nodes": [_result_json(r) for r in results]}, indent=2))
    else:
        for header, result in group_identical(results):
            outcome = result.error or f"exit {result.exit_status}"
            print(f"---------------\n{header} ({outcome})\n---------------")
            sys.stdout.write(result.stdout)
            sys.stderr.write(result.stderr)
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def ssh_flags() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("--accept-new", action="store_true", help="record the host key of a node not yet known")
    flags.add_argument("--connect-timeout", type=float, metavar="S", help="seconds to wait for a node's ssh")
    flags.add_argument("--command-timeout", type=float, metavar="S", help="seconds a command may run")
    return flags


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register `compute ...` and `nodes ...` on the `cluster` parser."""
    ssh = ssh_flags()
    pattern_help = "nodes or groups: node0, node[0-3], compute, 'compute:!node1' (default: the compute group)"
    compute = sub.add_parser("compute", parents=[common], help="wake, stop, check and configure compute nodes")
    actions = compute.add_subparsers(dest="compute_command", required=True, metavar="ACTION")
    for name, handler, text in (
        ("up", cmd_up, "Wake-on-LAN, then wait until every node answers"),
        ("down", _power("off", "shut down"), "shut the nodes down over ssh"),
        ("restart", _power("reboot", "restart"), "restart the nodes over ssh"),
        ("status", cmd_status, "exit 0 iff every node answers over ssh"),
        ("configure", cmd_configure, "run the compute playbooks (after a status check)"),
    ):
        p = actions.add_parser(name, parents=[common, ssh], help=text)
        p.add_argument("nodes", nargs="*", metavar="NODES", help=pattern_help)
        p.set_defaults(handler=handler)
        if name == "up":
            p.add_argument("--timeout", type=float, metavar="S", help="give up after S seconds (exit 1)")
        if name == "configure":
            p.add_argument("--playbook", type=Path, help="run this playbook instead of ansible/compute.yml")

    control = sub.add_parser("control", parents=[common], help="configure the control node: PXE server, golden image")
    actions = control.add_subparsers(dest="control_command", required=True, metavar="ACTION")
    for name, playbook, also, text in (
        ("configure", "control.yml", (), "the PXE boot server the compute nodes boot from (ansible/control.yml)"),
        # the image is a host the playbook adds (chroot connection): the limit must let it in
        ("golden-image", "golden_image.yml", ("golden_image",), "build, configure and export the golden image"),
    ):
        p = actions.add_parser(name, parents=[common], help=text)
        p.add_argument("--playbook", type=Path, help=f"run this playbook instead of ansible/{playbook}")
        p.set_defaults(handler=_control_playbook(playbook, f"control {name}", also))

    nodes = sub.add_parser("nodes", parents=[common], help="the inventory's nodes: list, probe, run commands")
    actions = nodes.add_subparsers(dest="nodes_command", required=True, metavar="ACTION")
    p = actions.add_parser("list", parents=[common], help="the nodes of the inventory")
    p.add_argument("nodes", nargs="*", metavar="NODES", help=pattern_help)
    p.set_defaults(handler=cmd_nodes_list)
    p = actions.add_parser("probe", parents=[common, ssh], help="uptime, load, memory and GPU health per node")
    p.add_argument("nodes", nargs="*", metavar="NODES", help=pattern_help)
    p.set_defaults(handler=cmd_nodes_probe)
    p = actions.add_parser("run", parents=[common, ssh], help="run a shell command on nodes (like clush -b)")
    p.add_argument("-w", "--nodes", action="append", default=[], metavar="NODES", help=pattern_help)
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command")
    p.set_defaults(handler=cmd_nodes_run)

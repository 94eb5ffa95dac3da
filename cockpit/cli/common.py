"""What the `cluster` commands share: --json or plain output, the ssh flags, node selection (from the inventory, or
from Slurm where there is none), the ssh pool, a fan-out's results reported, and a playbook run followed to its
end."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

from cockpit.config import Settings
from cockpit.errors import EXIT_FAILED, EXIT_OK, BadInput
from cockpit.nodes.inventory import Inventory, Node
from cockpit.nodes.nodeset import expand, fold
from cockpit.nodes.ssh import CommandResult, SshPool, pool_for
from cockpit.provision.events import HostResult, Recap, describe, failure_details
from cockpit.provision.runner import PlaybookRun

if TYPE_CHECKING:
    from cockpit.jobs.slurm_nodes import SlurmNode

T = TypeVar("T")
NODES_HELP = "nodes or groups: node0, node[0-3], compute, 'compute:!node1' (default: the compute group)"


def emit(args: argparse.Namespace, data: dict[str, object], lines: list[str]) -> None:
    print(json.dumps(data, indent=2) if args.json else "\n".join(lines))


class Verdict(Protocol):
    """What a check of every node says (a runtime verification, a model check)."""

    @property
    def ok(self) -> bool: ...

    def summary(self, config_flag: str = "") -> str: ...

    def table(self) -> str: ...


def print_verdict(
    args: argparse.Namespace, verdict: Verdict, data: dict[str, object], fix_flag: str, failed: int
) -> int:
    """A check's outcome: `data` as JSON, or its summary and table when every node passed, else its summary with
    the commands that fix it (`fix_flag`: what they need to reach this configuration) on stderr; the exit code."""
    if args.json:
        print(json.dumps(data, indent=2))
    elif verdict.ok:
        print(verdict.summary())
        print(verdict.table())
    else:
        print(verdict.summary(fix_flag), file=sys.stderr)
    return EXIT_OK if verdict.ok else failed


def ssh_flags() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("--accept-new", action="store_true", help="record the host key of a node not yet known")
    flags.add_argument("--connect-timeout", type=float, metavar="S", help="seconds to wait for a node's ssh")
    flags.add_argument("--command-timeout", type=float, metavar="S", help="seconds a command may run")
    return flags


def selected_nodes(args: argparse.Namespace, settings: Settings) -> list[Node]:
    """The inventory's nodes `args.nodes` names, to reach over ssh; refused in one line where the nodes come from
    Slurm (no inventory says how to reach them)."""
    if settings.nodes_from_slurm:
        raise BadInput(settings.needs_ssh("this command"))
    return Inventory.load(settings.inventory).select(args.nodes)


def slurm_selected(args: argparse.Namespace, settings: Settings) -> dict[str, SlurmNode]:
    """Where the nodes come from Slurm: those `args.nodes` names (`node[0-3]` expanded; one sinfo does not list
    is said so), else every node of the configured partition. A JobError naming sinfo when it fails."""
    from cockpit.jobs.slurm_nodes import nodes_named, partition_nodes, slurm_nodes

    known = slurm_nodes()
    if args.nodes:
        return nodes_named(known, [name for item in args.nodes for part in item.split(",") for name in expand(part)])
    return {node.name: node for node in partition_nodes(known, settings.cluster.partition)}


def ssh_pool(args: argparse.Namespace, settings: Settings) -> SshPool:
    return pool_for(
        settings,
        accept_new=args.accept_new,
        connect_timeout_s=args.connect_timeout,
        command_timeout_s=args.command_timeout,
    )


async def with_pool(args: argparse.Namespace, settings: Settings, work: Callable[[SshPool], Awaitable[T]]) -> T:
    async with ssh_pool(args, settings) as pool:
        return await work(pool)


def result_json(result: CommandResult) -> dict[str, object]:
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


def report_results(
    args: argparse.Namespace, results: Sequence[CommandResult], what: str, extra: dict | None = None
) -> int:
    """One line when every node did `what`; otherwise each failure in full, then who failed."""
    failed = [r for r in results if not r.ok]
    if args.json:
        print(json.dumps({"ok": not failed, **(extra or {}), "nodes": [result_json(r) for r in results]}, indent=2))
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


def follow_playbook(args: argparse.Namespace, run: PlaybookRun, nodes: Sequence[Node], verb: str) -> int:
    """Run the playbook to its end; one line when every node did it, else every failure in full."""
    ok, result = run_playbook(args, run, nodes, verb)
    if args.json:
        print(json.dumps(result, indent=2))
    elif ok:
        print(f"{verb}: {fold(n.name for n in nodes)} configured")
    return EXIT_OK if ok else EXIT_FAILED

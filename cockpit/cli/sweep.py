"""`cluster sweep run|status|resume|cancel`, `cluster report` and `cluster traces`: a sweep headless, scriptable.

Exit codes: 0 every strategy completed and collected whole; 1 some failed or came back partial; 2 bad input;
130 interrupted (the running job cancelled, the manifest consistent). `traces`: 0 when the run has traces, 1 not.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from cockpit.analysis.report import report
from cockpit.analysis.summary import human_bytes
from cockpit.config import Settings
from cockpit.errors import EXIT_FAILED, EXIT_OK, BadInput
from cockpit.sweep import execute
from cockpit.sweep.collect import ResultCollector, TraceFile, how_to_open
from cockpit.sweep.manifest import MANIFEST_NAME, Manifest
from cockpit.sweep.pipeline import SweepEvent
from cockpit.sweep.plan import Sweep, load, plan
from runtime.contract import PROFILER_FILES, Profiler
from runtime.schema import to_plain

OVERRIDES = {
    "nodes": int,
    "gpus_per_node": int,
    "batch_size": int,
    "max_new_tokens": int,
    "prompts_per_file": int,
    "prompt_limit": int,
    "time_limit": str,
    "device": str,
    "precision": str,
    "quant_group_size": int,
    "repeats": int,
    "warmup_batches": int,
}


def latest_run(settings: Settings) -> Path:
    """The newest run folder under the configured runs_dir."""
    runs = sorted(p.parent for p in settings.runs_dir.glob(f"run_*/{MANIFEST_NAME}"))
    if not runs:
        raise BadInput(f"{settings.runs_dir}: no sweep runs yet (start one: cluster sweep run)")
    return runs[-1]


def _run_dir(args: argparse.Namespace, settings: Settings) -> Path:
    return args.run_dir if args.run_dir is not None else latest_run(settings)


def _printer(args: argparse.Namespace) -> Any:
    def show(event: SweepEvent) -> None:
        if not args.json:  # --json prints one document at the end; events go to stderr then
            print(f"{event.strategy_id:<22} {event.kind:<10} {event.message}", flush=True)
        else:
            print(f"{event.strategy_id} {event.kind}: {event.message}", file=sys.stderr, flush=True)

    return show


def _memory_bandwidths(settings: Settings) -> dict[str, float]:
    """The inventory's `memory_bandwidth_gbps` by node, for the performance analysis (none without one)."""
    from cockpit.nodes.inventory import Inventory

    return Inventory.load(settings.inventory).memory_bandwidths() if settings.inventory else {}


def _outcome(args: argparse.Namespace, settings: Settings, sweep: Sweep) -> int:
    """Report after a run or resume, then the status; the exit code says whether everything came back whole."""
    manifest: Manifest = sweep.manifest
    report_files: dict[str, str] = {}
    if any(entry.collected for entry in manifest.strategies.values()):
        built = report(sweep, _memory_bandwidths(settings))
        report_files = {name: str(path) for name, path in built.files.items()}
        if not args.json:
            print()
            print(built.summary.markdown())
    state = execute.status(sweep)
    whole = all(entry.done and not entry.partial for entry in manifest.strategies.values())
    if args.json:
        print(json.dumps({**state, "report": report_files}, indent=2))
    else:
        print(f"\n{manifest.run_id}: {manifest.state}; files in {manifest.run_dir}")
    return EXIT_OK if whole else EXIT_FAILED


def profilers(text: str) -> tuple[Profiler, ...]:
    """`--profile torch,perf`: the profilers named, checked."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in PROFILER_FILES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected some of {', '.join(PROFILER_FILES)}, got {text!r}")
    return names  # type: ignore[return-value]


def cmd_sweep_run(args: argparse.Namespace, settings: Settings) -> int:
    """Plan a new run and execute it."""
    overrides = {key: getattr(args, key) for key in OVERRIDES if getattr(args, key, None) is not None}
    if args.profile:
        overrides.update(profile=True, profilers=args.profile)
    if args.fast_decode is not None:
        overrides.update(fast_decode=args.fast_decode)
    sweep = plan(settings, **overrides)
    if not args.json:
        strategies = ", ".join(s.strategy_id for s in sweep.strategies())
        print(f"{sweep.settings.run_id}: {strategies} on the {sweep.manifest.backend} backend", flush=True)
    execute.execute(sweep, settings, _printer(args))
    return _outcome(args, settings, sweep)


def cmd_sweep_resume(args: argparse.Namespace, settings: Settings) -> int:
    """Run what an earlier sweep left undone (done strategies are skipped, running jobs re-attached)."""
    sweep = load(_run_dir(args, settings))
    execute.execute(sweep, settings, _printer(args))
    return _outcome(args, settings, sweep)


def cmd_sweep_status(args: argparse.Namespace, settings: Settings) -> int:
    """Where a run stands, strategy by strategy."""
    state = execute.status(load(_run_dir(args, settings)))
    if args.json:
        print(json.dumps(state, indent=2))
        return EXIT_OK
    print(f"{state['run_id']}  {state['state']}  ({state['backend']})  {state['run_dir']}")
    for row in state["strategies"]:
        progress = row["progress"] or "-"
        flags = " partial" if row["partial"] else ""
        print(
            f"  {row['strategy']:<20} {row['kind']:<10} {row['status']:<12} job {row['job_id'] or '-':<14} "
            f"attempts {row['attempts']}  rows {progress}{flags}"
        )
        for problem in row["problems"]:
            print(f"      {problem}")
    return EXIT_OK


def cmd_sweep_cancel(args: argparse.Namespace, settings: Settings) -> int:
    """Cancel a run: its sweep process if alive, else any job it left behind."""
    done = execute.cancel(load(_run_dir(args, settings)))
    if args.json:
        print(json.dumps({"cancelled": done}, indent=2))
    else:
        print("\n".join(done) if done else "nothing was running")
    return EXIT_OK


def _plain(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    """Correctness, the strategy table and plots for a run (written under results/, shown here)."""
    built = report(load(_run_dir(args, settings)), _memory_bandwidths(settings))
    if args.json:
        table = [{k: _plain(v) for k, v in row.items()} for row in built.table.to_dict(orient="records")]
        files = {name: str(path) for name, path in built.files.items()}
        reference = built.summary.reference.sentence if built.summary.reference else None
        out = {"strategies": table, "winner": built.summary.winner(), "reference": reference, "files": files}
        print(json.dumps(out, indent=2))
        return EXIT_OK
    print(built.summary.markdown())
    if args.plots:
        built.summary.show()
    print("\n".join(f"{name}: {path}" for name, path in built.files.items()))
    return EXIT_OK


def _trace_line(trace: TraceFile) -> str:
    """One trace as `cluster traces` lists it: who, what, how big, and what its summary says."""
    head = f"  {trace.strategy_id:<20} rank {trace.rank:<3} {trace.tool:<6} {human_bytes(trace.bytes):>10}"
    s = trace.summary
    if s is None:
        said = f"  ⚠ {trace.problem}" if trace.problem else ""
        return f"{head}{said}\n      {trace.path}"
    top = f"{s.top_ops[0].name} {s.top_ops[0].share:.0%}" if s.top_ops else "-"
    busy = "" if s.device_busy_share is None else f", device busy {s.device_busy_share:.0%}"
    return (
        f"{head}  {s.hostname}: {s.steps} steps in {s.window_ms:.1f} ms, comm {s.comm_share:.0%}, "
        f"idle {s.idle_share:.0%} ({s.gaps} gap{'s' * (s.gaps != 1)}, longest {s.longest_gap_ms:.2f} ms){busy}; "
        f"top {top}\n"
        f"      {trace.path}"
    )


def cmd_traces(args: argparse.Namespace, settings: Settings) -> int:
    """The profiler outputs of a run's ranks, each torch trace with its summary, and what opens them."""
    sweep = load(_run_dir(args, settings))
    traces = list(ResultCollector.iter_traces(sweep.strategies()))
    if args.json:
        plain = [{**to_plain(t), "path": str(t.path), "opens_with": t.opens_with} for t in traces]
        print(json.dumps(plain, indent=2))
        return EXIT_OK if traces else EXIT_FAILED
    if not traces:
        print(f"{sweep.run_dir}: no traces (profile a sweep: cluster sweep run --profile torch[,nsys,perf])")
        return EXIT_FAILED
    print(f"{sweep.settings.run_id}: {len(traces)} trace(s)")
    print("\n".join(_trace_line(t) for t in traces))
    print("\n" + "\n".join(how_to_open(traces)))
    return EXIT_OK


def register(name: str, parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """`sweep run|resume|status|cancel`, `report [RUN_DIR]`, `traces [RUN_DIR]`."""
    if name != "sweep":
        parser.add_argument("run_dir", nargs="?", type=Path, help="the run folder (default: the newest)")
        if name == "report":
            parser.add_argument("--plots", action="store_true", help="also draw the plots here")
        parser.set_defaults(handler=cmd_report if name == "report" else cmd_traces)
        return
    actions = parser.add_subparsers(dest="sweep_command", required=True, metavar="ACTION")
    p = actions.add_parser("run", parents=[common], help="start a new sweep and run it to the end")
    for key, kind in OVERRIDES.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=kind, dest=key, help=f"override [sweep] {key}")
    p.add_argument(
        "--fast-decode",
        action=argparse.BooleanOptionalAction,
        help="the runtime's static-cache decode step (default [sweep] fast_decode, true); --no-fast-decode: HF's",
    )
    p.add_argument(
        "--profile",
        nargs="?",
        const=("torch",),
        type=profilers,
        metavar="TOOLS",
        help="profile every rank's decode steps with TOOLS (torch, nsys, perf; default torch); see cluster traces",
    )
    p.set_defaults(handler=cmd_sweep_run)
    for action, handler, text in (
        ("resume", cmd_sweep_resume, "finish a sweep: skip what is done, re-attach to running jobs"),
        ("status", cmd_sweep_status, "show a sweep's strategies, jobs and progress"),
        ("cancel", cmd_sweep_cancel, "cancel a sweep and its running job"),
    ):
        p = actions.add_parser(action, parents=[common], help=text)
        p.add_argument("run_dir", nargs="?", type=Path, help="the run folder (default: the newest)")
        p.set_defaults(handler=handler)

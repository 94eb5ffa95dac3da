"""The experiment pipeline's own costs.

collect:        shard rows into the results table through pyarrow's JSON reader (what ResultCollector does),
                against pandas.read_json(lines=True), the peer; goal >= 5x faster at 1,000,000 rows.
orchestration:  on a real Slurm, from a job's end (its ranks' last heartbeat) to its rows collected, per
                strategy, beside the job's own run time; goal < 2 s. Needs Slurm: as root, the test cluster is started
                through the slurm role (tests/infra/services.py) when none runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from bench.report import RESULTS_DIR, ratio_line, table
from cockpit.jobs.factory import RuntimeEnvironment, SlurmJobFactory
from cockpit.jobs.slurm import SlurmJobManager
from cockpit.sweep.collect import ResultCollector, read_shard
from cockpit.sweep.manifest import Manifest, now_iso
from cockpit.sweep.pipeline import DistributedExperimentPipeline, SweepEvent
from cockpit.sweep.prompt_table import build_prompt_table, save_prompt_table
from cockpit.sweep.prompts import PromptRecord
from cockpit.sweep.strategies import SweepSettings, sweep_strategies
from runtime.outputs import last_progress


def write_shard(path: Path, rows: int) -> int:
    """`rows` shard lines as the runtime writes them (8 generated tokens, a short completion); the file size."""
    with path.open("w") as out:
        for i in range(rows):
            tokens = ",".join(str((i * 7 + k) % 1024) for k in range(8))
            out.write(
                f'{{"prompt_id":{i},"variant":"2k","strategy_id":"bench_pp1_tp2_n2","rank":0,'
                f'"completion":"completion number {i} with a few words","token_ids":[{tokens}],'
                f'"latency_ms":{i % 997 + 0.5},"ttft_ms":{i % 89 + 0.25},"tokens_generated":8,"prompt_tokens":2048,'
                f'"batch_index":{i // 4},"finish_reason":"length","gpu_id":0}}\n'
            )
    return path.stat().st_size


def collect(quick: bool) -> dict:
    rows = 300_000 if quick else 1_000_000
    repeats = 2  # interleaved; the first of each pays for imports and a cold page cache
    with tempfile.TemporaryDirectory(prefix="bench-collect-") as tmp:
        shard = Path(tmp) / "shard_0.jsonl"
        size = write_shard(shard, rows)
        ours, peer = [], []
        for _ in range(repeats):  # interleaved, so both see the same page cache and machine state
            started = time.perf_counter()
            frame = read_shard(shard).table.to_pandas()
            ours.append(time.perf_counter() - started)
            started = time.perf_counter()
            theirs = pd.read_json(shard, lines=True)
            peer.append(time.perf_counter() - started)
        assert len(frame) == len(theirs) == rows and frame["completion"].equals(theirs["completion"])
    speedup = min(peer) / min(ours)
    print(f"collecting {rows:,} shard rows ({size / 1e6:.0f} MB of JSON lines) into a DataFrame:")
    print(
        table(
            ["reader", "seconds", "rows/s"],
            [
                ["pyarrow.json (ResultCollector)", f"{min(ours):.2f}", f"{rows / min(ours):,.0f}"],
                ["pandas.read_json(lines=True)", f"{min(peer):.2f}", f"{rows / min(peer):,.0f}"],
            ],
        )
    )
    print(ratio_line("pyarrow JSON reader", speedup, "pandas.read_json(lines=True)", goal=5.0))
    return {"rows": rows, "bytes": size, "ours_s": min(ours), "pandas_s": min(peer), "speedup": speedup}


def _slurm_ready() -> str | None:
    """Why this machine cannot run the orchestration bench, or None when it can."""
    if not all(shutil.which(c) for c in ("sbatch", "squeue", "sacct")):
        return "no Slurm commands on PATH"
    done = subprocess.run(["sinfo", "-h", "-o", "%D %t"], capture_output=True, text=True, check=False, timeout=20)
    if done.returncode != 0 or "idle" not in done.stdout:
        return f"no idle Slurm nodes ({(done.stderr or done.stdout).strip() or 'sinfo gave nothing'})"
    return None


@contextmanager
def _slurm_to_measure() -> Iterator[str | None]:
    """The Slurm running here, else (as root) the test cluster started through the project's slurm role and stopped
    afterwards; yields why there is none, or None."""
    reason = _slurm_ready()
    if reason is None or os.geteuid() != 0:
        yield reason
        return
    from tests.infra import services

    hosts, hosts_started = services.start_test_hosts()
    try:
        _cluster, slurm_started = services.start_slurm(hosts)
        try:
            yield _slurm_ready()
        finally:
            if slurm_started:
                services.stop_slurm()
    finally:
        if hosts_started:
            services.stop_test_hosts()


def orchestration(quick: bool) -> dict:
    with _slurm_to_measure() as reason:
        if reason:
            print(f"skipped: {reason} (as root, the bench starts the test cluster itself)")
            return {"skipped": reason}
        return _orchestration(quick)


def _orchestration(quick: bool) -> dict:
    from runtime.tiny_model import build_tiny_model

    model = RESULTS_DIR / "tiny-llama"
    if not model.exists():
        build_tiny_model(model)
    with tempfile.TemporaryDirectory(prefix="bench-orchestration-", dir=RESULTS_DIR) as tmp:
        run_dir = Path(tmp)
        records = [PromptRecord(i, "2k", f"prompt {i}: the control node wakes node {i}", 2048) for i in range(4)]
        prompts = build_prompt_table(records)
        save_prompt_table(prompts, run_dir / "prompts.parquet")
        settings = SweepSettings(
            model_name="tiny-llama",
            model_path=str(model),
            model_tag="tiny",
            run_id="run_bench",
            run_dir=run_dir,
            prompt_df_path=run_dir / "prompts.parquet",
            nodes=2,
            gpus_per_node=1,
            max_new_tokens=8,
            precision="fp32",
            device="cpu",
        )
        strategies = sweep_strategies(settings)[: 1 if quick else 3]
        collected_at: dict[str, float] = {}
        final_at: dict[str, float] = {}

        def seen(event: SweepEvent) -> None:
            if event.kind == "collected":
                collected_at[event.strategy_id] = time.time()
            if event.job is not None and event.job.final:
                final_at.setdefault(event.strategy_id, time.time())

        manifest = Manifest("run_bench", str(run_dir), "slurm", now_iso())
        DistributedExperimentPipeline(
            strategies,
            SlurmJobFactory(RuntimeEnvironment()),
            SlurmJobManager(),
            ResultCollector(prompts, run_dir / "results", "bench", "run_bench"),
            manifest,
            on_event=seen,
        ).run()
        rows, figures = [], {}
        for strategy in strategies:
            entry = manifest.strategies[strategy.strategy_id]
            beats = [last_progress(strategy.config().progress_path(r)) for r in range(strategy.world_size)]
            ended = max(b.ts for b in beats if b is not None)
            sid = strategy.strategy_id
            overhead, seen_s = collected_at[sid] - ended, final_at[sid] - ended
            elapsed = entry.attempts[-1].elapsed_s
            figures[sid] = {"job_elapsed_s": elapsed, "overhead_s": overhead, "final_seen_s": seen_s}
            rows.append([sid, entry.status, f"{elapsed:.0f} s", f"{seen_s:.2f} s", f"{overhead:.2f} s"])
    print("orchestration on Slurm, per strategy (job end = its ranks' last heartbeat; includes process teardown):")
    print(table(["strategy", "state", "job run time (sacct)", "end -> final state seen", "end -> collected"], rows))
    worst = max(f["overhead_s"] for f in figures.values())
    print(f"worst overhead {worst:.2f} s (goal < 2 s)")
    return {"strategies": figures, "worst_overhead_s": worst}

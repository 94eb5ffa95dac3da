"""The experiment pipeline's own costs.

collect:        shard rows into the results table through pyarrow's JSON reader (what ResultCollector does),
                against pandas.read_json(lines=True), the peer; goal >= 5x faster at 1,000,000 rows.
orchestration:  on a real Slurm, from a job's end (its ranks' last heartbeat) to its rows collected, per
                strategy, beside the job's own run time; goal < 2 s. Needs Slurm: as root, the test cluster is started
                through the slurm role (tests/infra/services.py) when none runs. On the test cluster the same
                strategies run again with staged run folders (node-local on each test host): the copies out and
                back per job against the job's run time (goal < 5% of it and < 2 s), and the end -> collected
                overhead against the shared run's, the peer.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from bench.report import RESULTS_DIR, ratio_line, table
from cockpit.jobs.factory import JobFiles, RuntimeEnvironment, SlurmJobFactory
from cockpit.jobs.records import JobRecord
from cockpit.jobs.slurm import SlurmJobManager
from cockpit.jobs.watch import SqueueWatch
from cockpit.nodes.inventory import Inventory, Node
from cockpit.nodes.ssh import SshPool
from cockpit.sweep.collect import ResultCollector, read_shard
from cockpit.sweep.manifest import Manifest, now_iso
from cockpit.sweep.pipeline import DistributedExperimentPipeline, SweepEvent
from cockpit.sweep.prompt_table import build_prompt_table, save_prompt_table
from cockpit.sweep.prompts import PromptRecord
from cockpit.sweep.staging import Fetched, RunStorage, SharedRunStorage, StagedRunStorage
from cockpit.sweep.strategies import ParallelismStrategy, SweepSettings, sweep_strategies
from runtime.outputs import last_progress

if TYPE_CHECKING:
    from tests.infra.services import TestHosts


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
def _slurm_to_measure() -> Iterator[tuple[str | None, TestHosts | None]]:
    """The Slurm running here, else (as root) the test cluster started through the project's slurm role and stopped
    afterwards; yields why there is none (or None), and the test hosts when they are its nodes."""
    reason = _slurm_ready()
    if os.geteuid() != 0:
        yield reason, None
        return
    from tests.infra import services

    if reason is None:  # a Slurm runs already: its nodes are the test hosts only if those are up
        yield None, services.running_test_hosts()
        return
    hosts, hosts_started = services.start_test_hosts()
    try:
        _cluster, slurm_started = services.start_slurm(hosts)
        try:
            yield _slurm_ready(), hosts
        finally:
            if slurm_started:
                services.stop_slurm()
    finally:
        if hosts_started:
            services.stop_test_hosts()


def orchestration(quick: bool) -> dict:
    from runtime.tiny_model import build_tiny_model

    with _slurm_to_measure() as (reason, hosts):
        if reason:
            print(f"skipped: {reason} (as root, the bench starts the test cluster itself)")
            return {"skipped": reason}
        model = RESULTS_DIR / "tiny-llama"
        if not model.exists():
            build_tiny_model(model)
        with tempfile.TemporaryDirectory(prefix="bench-orchestration-", dir=RESULTS_DIR) as tmp:
            shared = _orchestration(quick, model, Path(tmp), SharedRunStorage())
        staged = (
            _staged_on_test_hosts(quick, model, hosts) if hosts else "the Slurm here does not run on the test hosts"
        )
    print("orchestration on Slurm, per strategy (job end = its ranks' last heartbeat; includes process teardown):")
    rows = [
        [sid, f"{f['job_elapsed_s']:.0f} s", f"{f['final_seen_s']:.2f} s", f"{f['overhead_s']:.2f} s"]
        for sid, f in shared.items()
    ]
    print(table(["strategy", "job run time (sacct)", "end -> final state seen", "end -> collected"], rows))
    worst = max(f["overhead_s"] for f in shared.values())
    print(f"worst overhead {worst:.2f} s (goal < 2 s)")
    result: dict = {"strategies": shared, "worst_overhead_s": worst}
    if isinstance(staged, str):
        print(f"staged run folders: skipped: {staged}")
        return {**result, "staged": {"skipped": staged}}
    print("\nstaged run folders (each test host's own copy), per job: the copies against the job's run time")
    rows = []
    for sid, f in staged.items():
        share = f["staging_s"] / f["job_elapsed_s"]
        times = [f["job_elapsed_s"], f["send_s"], f["fetch_s"], f["staging_s"]]
        rows.append(
            [sid, *(f"{t:.2f} s" for t in times), f"{share:.1%}", f"{f['overhead_s']:.2f} s",
             f"{shared[sid]['overhead_s']:.2f} s"]
        )  # fmt: skip
    headers = ["strategy", "job run time", "copy out", "copy back", "staging", "of run time"]
    print(table([*headers, "end -> collected (staged)", "(shared)"], rows))
    floor = next(iter(staged.values()))["ssh_floor_s"]
    print(f"(each copy is one ssh command per node: `true` alone takes {floor:.2f} s on these hosts)")
    worst_staging = max(f["staging_s"] for f in staged.values())
    worst_share = max(f["staging_s"] / f["job_elapsed_s"] for f in staged.values())
    print(f"worst staging cost {worst_staging:.2f} s (goal < 2 s), {worst_share:.1%} of its job's run time (goal < 5%)")
    extra = max(staged[sid]["overhead_s"] / max(shared[sid]["overhead_s"], 1e-3) for sid in staged)
    print(ratio_line("end -> collected with staged run folders, worst strategy", extra, "the shared run's time"))
    return {**result, "staged": staged, "worst_staging_s": worst_staging, "worst_staging_share": worst_share}


class _TimedStorage:
    """A run storage whose copies out and back are timed per strategy (the pipeline sees the storage unchanged)."""

    def __init__(self, inner: RunStorage) -> None:
        self.inner, self.kind = inner, inner.kind
        self.sent: dict[str, float] = {}
        self.fetched: dict[str, float] = {}

    def send(self, strategy: ParallelismStrategy, files: JobFiles) -> str | None:
        started = time.perf_counter()
        try:
            return self.inner.send(strategy, files)
        finally:
            self.sent[strategy.strategy_id] = time.perf_counter() - started

    def mirror(self, strategy: ParallelismStrategy, job: JobRecord) -> None:
        self.inner.mirror(strategy, job)

    def fetch(self, strategy: ParallelismStrategy, job: JobRecord) -> Fetched | None:
        started = time.perf_counter()
        try:
            return self.inner.fetch(strategy, job)
        finally:
            self.fetched[strategy.strategy_id] = time.perf_counter() - started

    def close(self) -> None:
        self.inner.close()


def _staged_on_test_hosts(quick: bool, model: Path, hosts: TestHosts) -> dict:
    """The strategies again with staged run folders, node-local on each test host; the copies' times added."""
    nodes = Inventory.load(hosts.inventory).compute
    floor = asyncio.run(_ssh_floor(SshPool(hosts.known_hosts), nodes))
    run_dir = hosts.node_local / f"bench-staged-{os.getpid()}"
    storage = _TimedStorage(StagedRunStorage(run_dir, nodes, SshPool(hosts.known_hosts)))
    try:
        figures = _orchestration(quick, model, run_dir, storage)
    finally:
        storage.close()
        for folder in [hosts.node_local, *(hosts.local_folder(host.name) for host in hosts.hosts)]:
            shutil.rmtree(folder / run_dir.name, ignore_errors=True)
    for sid, f in figures.items():
        f.update(send_s=storage.sent[sid], fetch_s=storage.fetched[sid], ssh_floor_s=floor)
        f["staging_s"] = f["send_s"] + f["fetch_s"]
    return figures


async def _ssh_floor(pool: SshPool, nodes: list[Node]) -> float:
    """The least time one command (`true`) takes on every node at once over the pool's open connections: what
    each copy pays before moving a byte (the node's login shell starting, mostly)."""
    async with pool:
        await pool.run_all(nodes, "true")  # connect
        times = []
        for _ in range(5):
            started = time.perf_counter()
            await pool.run_all(nodes, "true")
            times.append(time.perf_counter() - started)
    return min(times)


def _orchestration(quick: bool, model: Path, run_dir: Path, storage: RunStorage) -> dict:
    """The bench's strategies through the pipeline into `run_dir`; per strategy its job's run time and the
    seconds from its end to its final state seen and to its rows collected."""
    run_dir.mkdir(parents=True, exist_ok=True)
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
        SlurmJobManager(SqueueWatch(run_dir.parent)),
        ResultCollector(prompts, run_dir / "results", "bench", "run_bench"),
        manifest,
        on_event=seen,
        storage=storage,
    ).run()
    figures = {}
    for strategy in strategies:
        entry = manifest.strategies[strategy.strategy_id]
        beats = [last_progress(strategy.config().progress_path(r)) for r in range(strategy.world_size)]
        ended = max(b.ts for b in beats if b is not None)
        sid = strategy.strategy_id
        overhead, seen_s = collected_at[sid] - ended, final_at[sid] - ended
        elapsed = entry.attempts[-1].elapsed_s
        figures[sid] = {"job_elapsed_s": elapsed, "overhead_s": overhead, "final_seen_s": seen_s}
    return figures

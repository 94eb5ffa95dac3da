"""The across-nodes strategies on a real Slurm: srun starts one rank per task on the namespace nodes node0 and
node1, which reach each other over their own LAN; tokens must equal the single-process HF `generate` output."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from cockpit.jobs.factory import RuntimeEnvironment, SlurmJobFactory
from cockpit.sweep.strategies import STRATEGIES, SweepSettings
from runtime.local_launch import local_env
from tests.infra.services import SlurmCluster
from tests.integration import runs

pytestmark = [pytest.mark.infra, pytest.mark.slow]


def run_on_slurm(cluster: SlurmCluster, config: Path, nodes: int, tasks_per_node: int) -> dict:
    script = config.parent / "job.slurm"
    script.write_text(
        textwrap.dedent(f"""\
        #!/bin/bash
        #SBATCH --job-name=test-{config.parent.name}
        #SBATCH --nodes={nodes}
        #SBATCH --ntasks-per-node={tasks_per_node}
        #SBATCH --output={config.parent}/slurm-%j.out
        srun --kill-on-bad-exit=1 {sys.executable} -m runtime --config {config}
        """)
    )
    job_id = cluster.submit(script, env=local_env())
    record = cluster.wait_settled(job_id, timeout=240)
    log = (config.parent / f"slurm-{job_id}.out").read_text()
    assert record["state"]["current"] == "COMPLETED", f"job {job_id} {record['state']}:\n{log[-5000:]}"
    return {"record": record, "log": log}


def hosts(config: Path) -> list[tuple[int, str]]:
    return [(m["rank"], m["hostname"]) for m in runs.metrics(config)]


@pytest.mark.parametrize(
    ("strategy", "tp", "pp", "tasks_per_node", "placement"),
    [
        ("tiny_tp2_nodes", 2, 1, 1, [(0, "node0"), (1, "node1")]),
        ("tiny_pp2_nodes", 1, 2, 1, [(0, "node0"), (1, "node1")]),
        ("tiny_pp2_tp2", 2, 2, 2, [(0, "node0"), (1, "node0"), (2, "node1"), (3, "node1")]),
    ],
)
def test_across_nodes(
    slurm_cluster: SlurmCluster,
    run_dir: Path,
    tiny_model_dir: Path,
    reference: dict[int, list[int]],
    strategy: str,
    tp: int,
    pp: int,
    tasks_per_node: int,
    placement: list[tuple[int, str]],
) -> None:
    config = runs.write_config(run_dir, tiny_model_dir, strategy, tp=tp, pp=pp, nodes=2)
    job = run_on_slurm(slurm_cluster, config, nodes=2, tasks_per_node=tasks_per_node)
    assert "slurm: rank 0/" in job["log"]
    assert runs.shard_tokens(config) == reference
    assert hosts(config) == placement  # TP groups inside a node for the hybrid, across nodes for TP-only
    runs.assert_holds_share(config, tiny_model_dir, 1 / (tp * pp))
    if tp > 1:
        assert "all-reduce via process group" in job["log"]  # never the single-node shared-memory path


@pytest.mark.parametrize("kind", ["tp_nodes", "hybrid"])
def test_rendered_job_runs_as_it_is(
    slurm_cluster: SlurmCluster, run_dir: Path, tiny_model_dir: Path, reference: dict[int, list[int]], kind: str
) -> None:
    """The job factory's exp_config.json and job.slurm, submitted unchanged, decode HF's tokens across nodes."""
    settings = SweepSettings(
        model_name="tiny-llama",
        model_path=str(tiny_model_dir),
        model_tag="tiny",
        run_id="factory",
        run_dir=run_dir / "factory",
        prompt_df_path=run_dir / "prompts.parquet",
        nodes=2,
        gpus_per_node=2,
        batch_size=4,
        max_new_tokens=12,
        precision="fp32",
        device="cpu",
    )
    strategy = STRATEGIES[kind](settings)
    files = SlurmJobFactory(RuntimeEnvironment()).render(strategy.job_spec())
    job_id = slurm_cluster.submit(files.script, env=local_env())
    record = slurm_cluster.wait_settled(job_id, timeout=240)
    log = Path(files.log_pattern.replace("%j", job_id)).read_text()
    assert record["state"]["current"] == "COMPLETED", log[-5000:]
    assert record["name"] == strategy.strategy_id
    assert runs.shard_tokens(files.config) == reference
    assert sorted({host for _, host in hosts(files.config)}) == ["node0", "node1"]

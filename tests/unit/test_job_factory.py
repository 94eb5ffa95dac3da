"""Job assets rendered for a strategy: the config the runtime reads and a script bash accepts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cockpit.experiments.strategies import STRATEGIES, ParallelismStrategy, SweepSettings
from cockpit.jobs.factory import RuntimeEnvironment, SlurmJobFactory
from runtime.contract import ExperimentConfig
from runtime.schema import InputError


def strategy(tmp_path: Path, kind: str = "hybrid", **changes: object) -> ParallelismStrategy:
    settings = SweepSettings(
        model_name="tiny-llama",
        model_path=str(tmp_path / "model"),
        model_tag="tiny",
        run_id="run_1",
        run_dir=tmp_path / "run_1",
        prompt_df_path=tmp_path / "run_1" / "prompts.parquet",
        nodes=2,
        gpus_per_node=2,
        **{"device": "cpu", **changes},
    )
    return STRATEGIES[kind](settings)


def test_srun_job(tmp_path: Path) -> None:
    hybrid = strategy(tmp_path)
    files = SlurmJobFactory(RuntimeEnvironment(python="/opt/venv/bin/python")).render(hybrid)
    assert ExperimentConfig.load(files.config) == hybrid.config()
    script = files.script.read_text()
    assert files.script.stat().st_mode & 0o111
    assert "#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=2\n" in script and "--gres" not in script
    assert f"#SBATCH --output={tmp_path}/run_1/tiny_pp2_tp2_n2/logs/slurm-%j.out" in script
    assert script.rstrip().endswith(
        f"srun --kill-on-bad-exit=1 /opt/venv/bin/python -m runtime --config {files.config}"
    )
    assert subprocess.run(["bash", "-n", str(files.script)], check=False).returncode == 0


def test_deepspeed_launcher_job_inside_apptainer(tmp_path: Path) -> None:
    tp = strategy(tmp_path, "tp_nodes", device="cuda", container_image="/images/runtime.sif")
    files = SlurmJobFactory(RuntimeEnvironment(python="python3", launcher="deepspeed")).render(tp)
    script = files.script.read_text()
    assert "#SBATCH --gres=gpu:1" in script
    assert "slots=1/' > " in script and "scontrol show hostnames" in script
    assert (
        "apptainer exec --nv --bind " in script and "/images/runtime.sif python3 -m deepspeed.launcher.runner" in script
    )
    assert "--num_nodes=2 --num_gpus=1" in script and "run_distributed_inference.py --config" in script
    assert subprocess.run(["bash", "-n", str(files.script)], check=False).returncode == 0


def test_a_container_needs_a_named_device(tmp_path: Path) -> None:
    tp = strategy(tmp_path, "tp_nodes", device="auto", container_image="/images/runtime.sif")
    with pytest.raises(InputError, match="tiny_pp1_tp2_n2: a container image needs the device named"):
        SlurmJobFactory(RuntimeEnvironment()).render(tp)

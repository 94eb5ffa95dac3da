"""Job assets rendered for a strategy: the config the runtime reads and a script bash accepts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cockpit.delivery.build import IMAGE_PYTHON, IMAGE_SOURCE
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


IMAGE = "/shared/images/cockpit-runtime-0.1.0-0123456789ab.sif"


def image_runtime(launcher: str = "srun") -> RuntimeEnvironment:
    return RuntimeEnvironment(IMAGE_PYTHON, IMAGE_SOURCE, launcher, image=IMAGE, build_id="0.1.0-0123456789ab")


def test_deepspeed_launcher_job_inside_apptainer(tmp_path: Path) -> None:
    tp = strategy(tmp_path, "tp_nodes", device="cuda")
    files = SlurmJobFactory(image_runtime("deepspeed")).render(tp)
    script = files.script.read_text()
    assert "#SBATCH --gres=gpu:1" in script
    assert "slots=1/' > " in script and "scontrol show hostnames" in script
    binds = f"{tmp_path}/run_1,{tmp_path}/model"
    assert f"apptainer exec --nv --bind {binds} {IMAGE} {IMAGE_PYTHON} -m deepspeed" in script
    assert "--num_nodes=2 --num_gpus=1" in script
    assert "/opt/cockpit/src/runtime/run_distributed_inference.py --config" in script
    assert ExperimentConfig.load(files.config).container_image == IMAGE  # the config records what ran
    assert subprocess.run(["bash", "-n", str(files.script)], check=False).returncode == 0


@pytest.mark.parametrize(("device", "flags"), [("cuda", "--nv "), ("xpu", "--bind /dev/dri "), ("cpu", "")])
def test_srun_job_inside_apptainer_gets_the_device_kinds_gpu_flags(tmp_path: Path, device: str, flags: str) -> None:
    hybrid = strategy(tmp_path, device=device)
    script = SlurmJobFactory(image_runtime()).render(hybrid).script.read_text()
    binds = f"{tmp_path}/run_1,{tmp_path}/model"
    assert f"srun --kill-on-bad-exit=1 apptainer exec {flags}--bind {binds} {IMAGE} {IMAGE_PYTHON} -m runtime" in script
    assert "export PYTHONPATH=/opt/cockpit/src\n" in script
    assert "export COCKPIT_RUNTIME_BUILD=0.1.0-0123456789ab\n" in script
    # the image is read-only: DeepSpeed compiles its ops under the run's folder
    assert f"export TORCH_EXTENSIONS_DIR={tmp_path}/run_1/.cache/torch_extensions\n" in script


def test_job_of_a_deployed_venv_runs_the_build_by_its_id(tmp_path: Path) -> None:
    build = "/opt/cockpit/runtime/0.1.0-0123456789ab"
    runtime = RuntimeEnvironment(
        f"{build}/venv/bin/python", f"{build}/src", build_id="0.1.0-0123456789ab", extensions_dir=f"{build}/.cache/ext"
    )
    script = SlurmJobFactory(runtime).render(strategy(tmp_path)).script.read_text()
    assert (
        f"export PYTHONPATH={build}/src\n" in script and f"export TORCH_EXTENSIONS_DIR={build}/.cache/ext\n" in script
    )
    assert script.rstrip().endswith(
        f"{build}/venv/bin/python -m runtime --config {tmp_path}/run_1/tiny_pp2_tp2_n2/exp_config.json"
    )
    assert "apptainer" not in script


def test_a_container_needs_a_named_device(tmp_path: Path) -> None:
    tp = strategy(tmp_path, "tp_nodes", device="auto")
    with pytest.raises(InputError, match="tiny_pp1_tp2_n2: a container image needs the device named"):
        SlurmJobFactory(image_runtime()).render(tp)

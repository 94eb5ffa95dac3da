"""Job assets rendered for a strategy: the config the runtime reads and a script bash accepts, which exports the
interface the ranks talk over between nodes as the inventory names it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from cockpit.delivery.build import IMAGE_PYTHON, IMAGE_SOURCE
from cockpit.errors import BadInput
from cockpit.jobs.factory import PROFILE_WRAPPER, RanksLink, RuntimeEnvironment, SlurmJobFactory
from cockpit.nodes.inventory import Inventory
from cockpit.sweep.execute import ranks_link
from cockpit.sweep.strategies import STRATEGIES, ParallelismStrategy, SweepSettings
from runtime.contract import ExperimentConfig


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
    files = SlurmJobFactory(RuntimeEnvironment(python="/opt/venv/bin/python")).render(hybrid.job_spec())
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
    files = SlurmJobFactory(image_runtime("deepspeed")).render(tp.job_spec())
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
    script = SlurmJobFactory(image_runtime()).render(hybrid.job_spec()).script.read_text()
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
    script = SlurmJobFactory(runtime).render(strategy(tmp_path).job_spec()).script.read_text()
    assert (
        f"export PYTHONPATH={build}/src\n" in script and f"export TORCH_EXTENSIONS_DIR={build}/.cache/ext\n" in script
    )
    assert script.rstrip().endswith(
        f"{build}/venv/bin/python -m runtime --config {tmp_path}/run_1/tiny_pp2_tp2_n2/exp_config.json"
    )
    assert "apptainer" not in script


def test_a_container_needs_a_named_device(tmp_path: Path) -> None:
    tp = strategy(tmp_path, "tp_nodes", device="auto")
    with pytest.raises(BadInput, match="tiny_pp1_tp2_n2: a container image needs the device named"):
        SlurmJobFactory(image_runtime()).render(tp.job_spec())


def profiled(tmp_path: Path, kind: str = "hybrid", tools: tuple[str, ...] = ("torch", "nsys", "perf")):
    return strategy(tmp_path, kind, profiling_enabled=True, profilers=tools)


def test_only_nsys_or_perf_wrap_the_ranks(tmp_path: Path) -> None:
    factory = SlurmJobFactory(RuntimeEnvironment(python="/opt/venv/bin/python"))
    for unwrapped in (strategy(tmp_path), profiled(tmp_path, tools=("torch",))):
        files = factory.render(unwrapped.job_spec())
        assert PROFILE_WRAPPER not in files.script.read_text()
        assert not (files.config.parent / PROFILE_WRAPPER).exists()
    files = factory.render(profiled(tmp_path).job_spec())
    wrapper = files.config.parent / PROFILE_WRAPPER
    assert wrapper.stat().st_mode & 0o111 and subprocess.run(["bash", "-n", str(wrapper)], check=False).returncode == 0
    text = wrapper.read_text()
    assert text.index("exec nsys profile") < text.index("exec perf record")  # the config's order
    assert (
        files.script.read_text()
        .rstrip()
        .endswith(f"srun --kill-on-bad-exit=1 {wrapper} /opt/venv/bin/python -m runtime --config {files.config}")
    )


def test_launchers_start_the_wrapper_which_starts_python(tmp_path: Path) -> None:
    tp = profiled(tmp_path, "tp_node", tools=("perf",))
    wrapper = tp.output_root / PROFILE_WRAPPER
    local = SlurmJobFactory(RuntimeEnvironment(python="/py", launcher="local")).render(tp.job_spec()).script.read_text()
    assert f"--no_python --no_local_rank {wrapper} /py -m runtime --config" in local
    script = SlurmJobFactory(image_runtime("deepspeed")).render(tp.job_spec()).script.read_text()
    # the launcher runs inside the image, so the ranks it starts are wrapped there
    assert (
        f"--no_python --no_local_rank {wrapper} {IMAGE_PYTHON} {IMAGE_SOURCE}/runtime/run_distributed_inference.py"
        in script
    )
    srun = SlurmJobFactory(image_runtime("srun")).render(tp.job_spec()).script.read_text()
    assert f"srun --kill-on-bad-exit=1 {wrapper} apptainer exec" in srun  # the node's own perf, outside


def run_wrapper(tmp_path: Path, path_dirs: list[Path], **env: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    files = SlurmJobFactory(RuntimeEnvironment()).render(profiled(tmp_path, "reference", ("nsys", "perf")).job_spec())
    wrapper = files.config.parent / PROFILE_WRAPPER
    environment = {"PATH": ":".join(map(str, path_dirs)), **env}
    done = subprocess.run(
        [str(wrapper), "sh", "-c", "echo ran; exit 3"], env=environment, capture_output=True, text=True, check=False
    )
    return done, files.config.parent / "profiling"


def test_without_nsys_or_perf_the_rank_runs_as_it_is_and_the_log_says_why(tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("bash", "sh", "mkdir", "hostname"):  # what the wrapper itself needs
        (bare / tool).symlink_to(shutil.which(tool))
    done, profiling = run_wrapper(tmp_path, [bare], SLURM_PROCID="3")
    assert (done.returncode, done.stdout) == (3, "ran\n")  # the rank's own exit status
    assert "rank 3 on " in done.stderr and "nsys and perf cannot run here; the rank runs without" in done.stderr
    assert (profiling / "rank_3").is_dir() and not any((profiling / "rank_3").iterdir())


def test_perf_records_the_rank_where_it_works(tmp_path: Path) -> None:
    """Real perf (installed by scripts/setup). Where the kernel forbids perf events the wrapper must say so."""
    perf = shutil.which("perf")
    assert perf, "perf is missing: scripts/setup test installs linux-perf"
    done, profiling = run_wrapper(tmp_path, [Path(perf).parent, Path("/bin"), Path("/usr/bin")], RANK="1")
    assert (done.returncode, done.stdout) == (3, "ran\n")
    works = subprocess.run(["perf", "record", "-q", "-o", "/dev/null", "--", "true"], capture_output=True, check=False)
    if works.returncode == 0:
        assert (profiling / "rank_1" / "perf.data").stat().st_size > 0
    else:
        assert "cannot run here" in done.stderr


USB4 = RanksLink("thunderbolt0", {"node0": "10.99.0.10", "node1": "10.99.0.11"})
LINK_VARS = ("CCL_KVS_IFACE", "FI_TCP_IFACE", "GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")


def environment(script: str, node: str) -> subprocess.CompletedProcess[str]:
    """What the script's lines before its `cd` leave in the environment on `node`, as Slurm names the batch host."""
    head = script.split("\ncd ", 1)[0].replace("set -euo pipefail\n", "")
    shown = " ".join(f"{var}=${var}" for var in (*LINK_VARS, "MASTER_ADDR"))
    return subprocess.run(
        ["bash", "-c", f'{head}\necho "{shown}"'],
        env={"PATH": "/usr/bin:/bin", "SLURMD_NODENAME": node},
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_job_across_nodes_talks_over_the_ranks_link_with_the_rendezvous_on_it(tmp_path: Path) -> None:
    hybrid = strategy(tmp_path)
    script = SlurmJobFactory(RuntimeEnvironment(link=USB4)).render(hybrid.job_spec()).script.read_text()
    for node, address in USB4.addresses.items():
        done = environment(script, node)
        assert done.stdout.split() == [*(f"{var}=thunderbolt0" for var in LINK_VARS), f"MASTER_ADDR={address}"]
    stranger = environment(script, "node7")
    assert stranger.returncode == 2
    assert stranger.stderr.strip() == (
        "job.slurm: node7 has no address on thunderbolt0 in the inventory (cluster_link_address)"
    )
    launched = SlurmJobFactory(RuntimeEnvironment(launcher="deepspeed", link=USB4)).render(hybrid.job_spec())
    assert ' --master_addr="$MASTER_ADDR" ' in launched.script.read_text()  # the launcher's own rendezvous too


def test_the_link_leaves_jobs_on_one_node_and_local_jobs_alone(tmp_path: Path) -> None:
    one_node = strategy(tmp_path, "tp_node")
    for runtime, spec in (
        (RuntimeEnvironment(link=USB4), one_node.job_spec()),
        (RuntimeEnvironment(launcher="local", link=USB4), strategy(tmp_path).job_spec()),
        (RuntimeEnvironment(launcher="deepspeed"), strategy(tmp_path).job_spec()),
    ):
        script = SlurmJobFactory(runtime).render(spec).script.read_text()
        assert "SOCKET_IFNAME" not in script and "MASTER_ADDR" not in script
    unaddressed = SlurmJobFactory(RuntimeEnvironment(link=RanksLink("eth1"))).render(strategy(tmp_path).job_spec())
    assert environment(unaddressed.script.read_text(), "node0").stdout.split()[-1] == "MASTER_ADDR="


def link_inventory(tmp_path: Path, node1: dict[str, str]) -> Path:
    path = tmp_path / "hosts.yml"
    node0 = {"cluster_link_address": "10.99.0.10/24"}
    hosts = {"node0": node0, "node1": node1}
    link = {"cluster_link_interface": "thunderbolt0", "ranks_interface": "thunderbolt0"}
    path.write_text(json.dumps({"all": {"children": {"compute": {"hosts": hosts, "vars": link}}}}))
    return path


def test_the_sweep_takes_the_ranks_link_from_the_inventory(tmp_path: Path) -> None:
    inventory = link_inventory(tmp_path, {"cluster_link_address": "10.99.0.11/24"})
    assert ranks_link(Inventory.load(inventory).compute, str(inventory)) == USB4
    other = link_inventory(tmp_path, {"ranks_interface": "eth0"})
    with pytest.raises(BadInput, match=r"hosts.yml: the compute nodes name different ranks_interface values "):
        ranks_link(Inventory.load(other).compute, str(other))
    assert ranks_link(Inventory.load(None).compute, "embedded default") is None

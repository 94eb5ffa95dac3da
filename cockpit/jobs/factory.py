"""Job assets for one run of the runtime: `exp_config.json` and `job.slurm` in the config's output folder.

The factory renders a plain `JobSpec` (the config, the #SBATCH options, a title) and knows nothing of the
strategies that make them (cockpit.sweep.strategies builds the specs).

The same script runs under Slurm (`sbatch job.slurm`) and on this machine (`bash job.slurm`, the local backend,
where the #SBATCH lines are comments but for the time limit). Ranks start one per GPU through `srun`, through the
deepspeed launcher with a hostfile generated from the allocation, or, for the local backend, through the
deepspeed launcher's local mode; inside an Apptainer image when one is set. A run profiled with nsys or perf
starts each rank through `profile_rank.sh`, which picks, on the rank's own node, the first of them that works.
A job across nodes of an inventory that names the ranks' interface (`ranks_interface`, e.g. the USB4 cluster
link's) tells every backend to use it and, where the nodes' addresses on it are known, puts the rendezvous there.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cockpit.errors import BadInput
from runtime.atomic import atomic_write_text
from runtime.contract import EXP_CONFIG_NAME, RUNTIME_BUILD_VAR, ExperimentConfig
from runtime.launch import INTERFACE_VARS

PROJECT = Path(__file__).resolve().parents[2]
Launcher = Literal["srun", "deepspeed", "local"]
# what `apptainer exec` needs to see the node's GPUs, per device kind
APPTAINER_GPU_FLAGS = {"cuda": ["--nv"], "xpu": ["--bind", "/dev/dri"], "cpu": []}
FREE_PORT = shlex.join(
    ["python3", "-c", "import socket; s = socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])"]
)
PROFILE_WRAPPER = "profile_rank.sh"
# per tool that wraps a whole rank: a check that it can run on this node, and the command that precedes the rank's
# (`$out`: the rank's trace folder); output names as runtime.contract.PROFILER_FILES has them
RANK_PROFILERS = {
    "nsys": (
        "command -v nsys >/dev/null 2>&1",
        'nsys profile --trace=cuda,nvtx,osrt --force-overwrite=true -o "$out/nsys"',
    ),
    "perf": ("perf record -q -o /dev/null -- true >/dev/null 2>&1", 'perf record -g -q -o "$out/perf.data" --'),
}


@dataclass(frozen=True)
class RanksLink:
    """The interface the ranks' traffic between nodes goes over, and each node's address on it (node name ->
    address; empty where the inventory gives none: the rendezvous then stays where the launcher puts it)."""

    interface: str
    addresses: Mapping[str, str] = field(default_factory=dict)

    def exports(self) -> list[str]:
        """The job script's lines: every backend's interface variable, then the rendezvous on the batch host's
        address on the link (the batch host is the allocation's first node, where rank 0 runs)."""
        names = sorted({var for names in INTERFACE_VARS.values() for var in names})
        lines = [f"export {var}={shlex.quote(self.interface)}" for var in names]
        if not self.addresses:
            return lines
        said = f"has no address on {self.interface} in the inventory (cluster_link_address)"
        cases = [
            f"  {shlex.quote(node)}) export MASTER_ADDR={shlex.quote(ip)} ;;" for node, ip in self.addresses.items()
        ]
        return [
            *lines,
            'case "${SLURMD_NODENAME:-$(hostname)}" in',
            *cases,
            f'  *) echo "job.slurm: ${{SLURMD_NODENAME:-$(hostname)}} {said}" >&2; exit 2 ;;',
            "esac",
        ]


@dataclass(frozen=True)
class RuntimeEnvironment:
    """How the nodes run the runtime: which Python, where its source is, which variables, which launcher.

    The default is this tree as it is (the embedded default, or nodes that share its filesystem); a deployed
    build (cockpit.delivery) names its own Python and source on the nodes, or an Apptainer image holding them."""

    python: str = sys.executable
    source_dir: str = str(PROJECT)  # on PYTHONPATH: the folder that holds the `runtime` package
    launcher: Launcher = "srun"
    env: Mapping[str, str] = field(default_factory=dict)  # never secrets: the script is a plain file
    image: str | None = None  # apptainer exec'd with the device's GPU flags; python and source_dir are inside it
    build_id: str | None = None  # the verified build (the runtime records it in its metrics)
    extensions_dir: str | None = None  # DeepSpeed's compiled ops; default: the tree's .cache, or the run's for images
    link: RanksLink | None = None  # the interface the ranks of a job across nodes talk over

    def torch_extensions(self, run_dir: Path) -> str:
        """Where DeepSpeed compiles its ops: writable, and kept between jobs."""
        if self.extensions_dir:
            return self.extensions_dir
        return str((run_dir if self.image else PROJECT) / ".cache" / "torch_extensions")


@dataclass(frozen=True)
class JobSpec:
    """One job to render: the config its ranks run (its node and GPU counts included), the #SBATCH options it
    asks the scheduler for, and a title saying, for people reading the script, what the job is."""

    config: ExperimentConfig
    sbatch: Mapping[str, str | int]
    title: str


@dataclass(frozen=True)
class JobFiles:
    config: Path
    script: Path
    log_pattern: str  # where Slurm writes the job's output (%j: the job id)

    def log(self, job_id: str) -> Path:
        """The job's output file."""
        return job_log(self.log_pattern, job_id)


def job_log(log_pattern: str, job_id: str) -> Path:
    """A log pattern (`%j`: the job id, as Slurm writes it) filled in for one job."""
    return Path(log_pattern.replace("%j", job_id))


class SlurmJobFactory:
    """Renders a job's config and script into the config's output folder (both written atomically)."""

    def __init__(self, runtime: RuntimeEnvironment) -> None:
        self.runtime = runtime

    def files(self, config: ExperimentConfig) -> JobFiles:
        """Where the job's files go (deterministic: the config's output folder)."""
        folder = Path(config.output_root)
        return JobFiles(folder / EXP_CONFIG_NAME, folder / "job.slurm", str(folder / "logs" / "slurm-%j.out"))

    def config(self, spec: JobSpec) -> ExperimentConfig:
        """The job's config as this runtime runs it (the image it runs in, if any)."""
        return dataclasses.replace(spec.config, container_image=self.runtime.image)

    def render(self, spec: JobSpec) -> JobFiles:
        config = self.config(spec)
        files = self.files(config)
        files.config.parent.joinpath("logs").mkdir(parents=True, exist_ok=True)
        # paths into the run relative to the file (the runtime takes them against its folder): they move with the run
        config.relative(files.config.parent, Path(config.output_root).parent).write(files.config)
        wrapper = profile_wrapper(config)
        if wrapper:
            atomic_write_text(files.config.parent / PROFILE_WRAPPER, wrapper, perms=0o755)
        atomic_write_text(files.script, self.script(spec, files), perms=0o755)
        return files

    def script(self, spec: JobSpec, files: JobFiles) -> str:
        config = self.config(spec)
        header = [f"#SBATCH --{key}={value}" for key, value in spec.sbatch.items()]
        header.append(f"#SBATCH --output={files.log_pattern}")
        exports = {
            "PYTHONPATH": self.runtime.source_dir,
            "HF_HUB_OFFLINE": "1",
            "TORCH_EXTENSIONS_DIR": self.runtime.torch_extensions(Path(config.output_root).parent),
            **({RUNTIME_BUILD_VAR: self.runtime.build_id} if self.runtime.build_id else {}),
            **self.runtime.env,
        }
        lines = [
            "#!/bin/bash",
            f"# {spec.title}",
            *header,
            "set -euo pipefail",
            *(f"export {name}={shlex.quote(value)}" for name, value in exports.items()),
            *(self.runtime.link.exports() if self._over_link(config) else []),
            f"cd {shlex.quote(str(config.output_root))}",
            *self._launch(config, files),
        ]
        return "\n".join(lines) + "\n"

    def _over_link(self, config: ExperimentConfig) -> bool:
        """Whether the job's ranks talk over the ranks' link: they span nodes, started by srun or the launcher."""
        return self.runtime.link is not None and config.num_nodes > 1 and self.runtime.launcher != "local"

    def _launch(self, config: ExperimentConfig, files: JobFiles) -> list[str]:
        container = []
        if config.container_image:
            if config.device not in APPTAINER_GPU_FLAGS:
                raise BadInput(
                    f"{config.strategy_id}: a container image needs the device named (cuda, xpu or cpu), "
                    f"not {config.device!r}: it decides which GPU flags apptainer gets"
                )
            flags = APPTAINER_GPU_FLAGS[config.device]
            # the run's folder (config, prompts, outputs) and the model are all the job reads or writes
            binds = ",".join(dict.fromkeys([str(Path(config.output_root).parent), config.model_path]))
            container = ["apptainer", "exec", *flags, "--bind", binds, config.container_image]
        python = [*container, self.runtime.python]
        run_config = ["runtime", "--config", str(files.config)]
        # each rank through the profiler wrapper; ranks started by srun or from this script are wrapped outside any
        # container (the node's own tools), those a launcher starts inside its container
        wrapped = [str(Path(config.output_root) / PROFILE_WRAPPER)] if profile_wrapper(config) else []
        rank = [*wrapped, *python]
        launched = ["--no_python", "--no_local_rank", *wrapped, self.runtime.python] if wrapped else []
        if self.runtime.launcher == "local":
            if config.world_size == 1:
                return [shlex.join([*rank, "-m", *run_config])]
            # every rank on this machine: the deepspeed launcher's local mode (shared-memory all-reduce on CPUs)
            local = [self.runtime.python, "-m", "deepspeed.launcher.runner", f"--num_gpus={config.world_size}"]
            user = [*launched, "-m", *run_config] if wrapped else ["--module", *run_config]
            return [f"{shlex.join([*container, *local])} --master_port=$({FREE_PORT}) {shlex.join(user)}"]
        if self.runtime.launcher == "srun":
            command = ["srun", "--kill-on-bad-exit=1", *rank, "-m", *run_config]
            return [shlex.join(command)]
        # the deepspeed launcher starts the ranks itself, over ssh, from a hostfile of the allocation's nodes
        entry = str(Path(self.runtime.source_dir) / "runtime" / "run_distributed_inference.py")
        hostfile = Path(config.output_root) / "hostfile"
        launcher = [*python, "-m", "deepspeed.launcher.runner", f"--hostfile={hostfile}", *deepspeed_args(config)]
        user = [*launched, entry]
        slots = f"sed 's/$/ slots={config.gpus_per_node}/'"
        # the launcher's own rendezvous goes where the script put it: otherwise the first node's first address
        master = ' --master_addr="$MASTER_ADDR"' if self._over_link(config) and self.runtime.link.addresses else ""
        return [
            f'scontrol show hostnames "$SLURM_JOB_NODELIST" | {slots} > {shlex.quote(str(hostfile))}',
            shlex.join(launcher) + master + " " + shlex.join([*user, "--config", str(files.config)]),
        ]


def deepspeed_args(config: ExperimentConfig) -> list[str]:
    """Arguments for the deepspeed launcher when it, not srun, starts the ranks (one process per GPU)."""
    return [f"--num_nodes={config.num_nodes}", f"--num_gpus={config.gpus_per_node}"]


def profile_wrapper(config: ExperimentConfig) -> str | None:
    """`profile_rank.sh` for a run profiled with nsys or perf (None otherwise): on the rank's node it runs the rank
    under the first of them, in the config's order, that works there, and says so when none does."""
    tools = [tool for tool in config.profilers if tool in RANK_PROFILERS] if config.profiling_enabled else []
    if not tools:
        return None
    lines = [
        "#!/bin/bash",
        f"# {config.strategy_id}: one rank under the first of {', '.join(tools)} that runs on this node",
        "rank=${RANK:-${SLURM_PROCID:-0}}",
        f"out={shlex.quote(str(config.profiling_path))}/rank_$rank",
        'mkdir -p "$out"',
    ]
    for tool in tools:
        check, command = RANK_PROFILERS[tool]
        lines += [f"if {check}; then", f'  exec {command} "$@"', "fi"]
    lines += [
        f'echo "{PROFILE_WRAPPER}: rank $rank on $(hostname): {" and ".join(tools)} cannot run here; '
        'the rank runs without"  >&2',
        'exec "$@"',
    ]
    return "\n".join(lines) + "\n"

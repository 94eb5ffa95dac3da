"""`cockpit.toml`: which cluster, which scheduler, where things live, how often to poll.

Searched in order: `--config PATH`, `$COCKPIT_CONFIG`, `./cockpit.toml`, `$XDG_CONFIG_HOME/cockpit/cockpit.toml`.
With no file at all the embedded default applies: this machine as a one-node cluster, the local scheduler and
the built-in small model. Secrets never live here: the baseline key comes from an environment variable or a
file only its owner can read.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cockpit.errors import BadInput
from runtime.contract import Device, DeviceKind, Precision, Profiler, read_text
from runtime.schema import SchemaError, parse, to_plain

CONFIG_NAME = "cockpit.toml"
PROJECT_DATA = Path(__file__).resolve().parents[1] / "data"
EMBEDDED_MODEL = "tiny-llama"
PROJECT_VARIANTS = ("2k", "4k")  # the prompt files in PROJECT_DATA, prompts_<variant>.txt
RunStorageKind = Literal["shared", "staged"]


@dataclass(frozen=True)
class ClusterSection:
    name: str = "local"
    inventory: str | None = None  # an Ansible inventory; none = this machine only
    scheduler: Literal["local", "slurm"] = "local"
    partition: str | None = None
    account: str | None = None
    # each GPU's memory (on CPU nodes, each node's host memory), for the memory plan of a sweep; an inventory
    # host's `device_memory_gib` wins; none: this machine's memory on the local scheduler with a CPU, else unchecked
    device_memory_gib: float | None = None

    def check(self, source: str, prefix: str = "") -> None:
        if self.device_memory_gib is not None and not self.device_memory_gib > 0:
            raise SchemaError(
                source, prefix + "device_memory_gib", f"expected a positive number of GiB, got {self.device_memory_gib}"
            )


@dataclass(frozen=True)
class PathsSection:
    data_dir: str | None = None  # default: $XDG_DATA_HOME/cockpit
    runs_dir: str | None = None  # default: <data_dir>/runs
    # shared: every node mounts runs_dir at the same path (the `nfs` role exports it from the control node);
    # staged: a Slurm job's files are copied to its nodes and its outputs back (cockpit.sweep.staging)
    run_storage: RunStorageKind = "shared"


@dataclass(frozen=True)
class ModelSection:
    name: str = EMBEDDED_MODEL
    path: str | None = None  # default: <data_dir>/models/tiny-llama, made by `cluster model build-tiny`


@dataclass(frozen=True)
class RefreshSection:
    nodes_s: float = 2.0
    squeue_s: float = 3.0
    squeue_max_s: float = 8.0  # the longest a sweep's job watch goes without squeue while the queue does not change
    shards_s: float = 2.0

    def check(self, source: str, prefix: str = "") -> None:
        for key in ("nodes_s", "squeue_s", "squeue_max_s", "shards_s"):
            if getattr(self, key) < 0.1:
                raise SchemaError(source, prefix + key, f"expected at least 0.1 seconds, got {getattr(self, key)}")


@dataclass(frozen=True)
class WakeOnLanSection:
    broadcast: str | None = None  # e.g. "192.168.1.255"; no magic packet is sent until this is set
    port: int = 9
    repeat: int = 3

    def check(self, source: str, prefix: str = "") -> None:
        if self.broadcast is not None:
            try:
                ipaddress.IPv4Address(self.broadcast)
            except ValueError:
                raise SchemaError(
                    source, prefix + "broadcast", f"expected an IPv4 address like 192.168.1.255, got {self.broadcast!r}"
                ) from None
        if not 1 <= self.port <= 65535:
            raise SchemaError(source, prefix + "port", f"expected a port 1-65535, got {self.port}")
        if not 1 <= self.repeat <= 20:
            raise SchemaError(source, prefix + "repeat", f"expected 1-20 packets per node, got {self.repeat}")


@dataclass(frozen=True)
class SshSection:
    """How the cockpit reaches nodes (users, keys and addresses come from the inventory)."""

    known_hosts: str | None = None  # the cockpit's own known_hosts; default <data_dir>/known_hosts
    connect_timeout_s: float = 5.0
    command_timeout_s: float = 30.0
    concurrency: int = 64

    def check(self, source: str, prefix: str = "") -> None:
        for key in ("connect_timeout_s", "command_timeout_s"):
            if getattr(self, key) <= 0:
                raise SchemaError(
                    source, prefix + key, f"expected a positive number of seconds, got {getattr(self, key)}"
                )
        if self.concurrency < 1:
            raise SchemaError(source, prefix + "concurrency", f"expected at least 1, got {self.concurrency}")


@dataclass(frozen=True)
class BaselineSection:
    """An OpenAI-compatible endpoint for baseline completions; none = the cluster's own single-process run."""

    base_url: str | None = None  # $COCKPIT_BASELINE_URL overrides
    model: str | None = None  # $COCKPIT_BASELINE_MODEL overrides
    api_key_env: str = "OPENAI_API_KEY"
    api_key_file: str | None = None  # must be mode 0600
    rate_limit_per_s: float | None = None  # requests per second; none = as fast as concurrency allows
    concurrency: int = 4
    max_attempts: int = 5
    timeout_s: float = 120.0

    def check(self, source: str, prefix: str = "") -> None:
        for key in ("concurrency", "max_attempts"):
            if getattr(self, key) < 1:
                raise SchemaError(source, prefix + key, f"expected at least 1, got {getattr(self, key)}")
        if self.timeout_s <= 0 or (self.rate_limit_per_s is not None and self.rate_limit_per_s <= 0):
            raise SchemaError(source, prefix + "timeout_s", "timeout_s and rate_limit_per_s must be positive")


@dataclass(frozen=True)
class SweepSection:
    """What a sweep runs. With the local scheduler, `nodes` x `gpus_per_node` ranks all run on this machine
    (nodes in name only), so every strategy's code path runs on one box; with Slurm they are real."""

    prompt_files: dict[str, str] = field(default_factory=dict)  # variant -> file; default: the project's data/
    token_budgets: dict[str, int] = field(default_factory=dict)  # variant -> tokens; default: from 'Nk' in the name
    prompts_per_file: int = 20
    prompt_limit: int = 0  # run only the first N prompts of each file (a quick look); 0: all of them
    nodes: int = 2
    gpus_per_node: int = 2
    batch_size: int = 4
    max_new_tokens: int = 32
    precision: Precision = "fp32"  # int8 / int4: weight-only, activations fp32 on a CPU, bf16 on a GPU
    quant_group_size: int | None = None  # int8/int4: weights per scale; default: the largest fitting every TP size
    device: Device = "cpu"
    fast_decode: bool = True  # the runtime's static-cache decode step; false: Hugging Face's forward (to compare)
    time_limit: str = "01:00:00"
    launcher: Literal["srun", "deepspeed"] = "srun"  # how Slurm jobs start their ranks
    model_tag: str | None = None  # short name in strategy ids; default: from the model's name
    max_attempts: int = 3
    profile: bool = False  # record every rank's decode steps (traces under each strategy's profiling/)
    profilers: tuple[Profiler, ...] = ("torch",)  # torch: in the runtime; nsys, perf: wrap each rank, where found
    profile_steps: int = 8  # decode steps recorded, after the warm-up
    warmup_batches: int = 1  # untimed passes over the first batch's shapes before each strategy's clock starts
    repeats: int | None = None  # timed passes over the prompts in one job; default 3, 1 on a CPU (a quick look)

    @property
    def timed_repeats(self) -> int:
        return self.repeats if self.repeats is not None else 1 if self.device == "cpu" else 3

    def check(self, source: str, prefix: str = "") -> None:
        for key in (
            "prompts_per_file",
            "nodes",
            "gpus_per_node",
            "batch_size",
            "max_new_tokens",
            "max_attempts",
            "profile_steps",
            "timed_repeats",
        ):
            if getattr(self, key) < 1:
                name = "repeats" if key == "timed_repeats" else key
                raise SchemaError(source, prefix + name, f"expected at least 1, got {getattr(self, key)}")
        if self.warmup_batches < 0:
            raise SchemaError(
                source, prefix + "warmup_batches", f"expected 0 (none) or more, got {self.warmup_batches}"
            )
        if self.prompt_limit < 0:
            raise SchemaError(source, prefix + "prompt_limit", f"expected 0 (all) or more, got {self.prompt_limit}")
        variants = list(self.prompt_files) or list(PROJECT_VARIANTS)
        for variant, budget in self.token_budgets.items():
            key = f"{prefix}token_budgets.{variant}"
            if variant not in variants:
                raise SchemaError(source, key, f"not a variant of prompt_files ({', '.join(variants)})")
            if budget < 1:
                raise SchemaError(source, key, f"expected a number of tokens, at least 1, got {budget}")


@dataclass(frozen=True)
class RuntimeSection:
    """How the compute nodes get the runtime: `cluster runtime build`, then `deploy`; every sweep verifies it.

    shared: the nodes run this tree and its .venv as they are (this machine, or a filesystem the nodes share);
    venv: a virtual environment built here and copied to `install_root` on each node by the `runtime` role;
    apptainer: an image built here from the project's definition file and copied to `image_dir`, storage every
    node mounts."""

    delivery: Literal["shared", "venv", "apptainer"] = "shared"
    install_root: str = "/opt/cockpit/runtime"  # venv: the same path on every node; one folder per build below it
    image_dir: str | None = None  # apptainer: where the images go (a shared filesystem, same path everywhere)
    build_dir: str | None = None  # where builds are made here; default <data_dir>/runtime
    python: str | None = None  # venv: the interpreter to build from (default: the cockpit's own base Python);
    # every node needs the same one at the same path
    extra_index_urls: dict[str, str] = field(default_factory=dict)  # per device kind: where pip finds its torch,
    # e.g. { xpu = "https://download.pytorch.org/whl/xpu" }
    keep_builds: int = 2  # per node: older builds are removed on deploy
    verify_timeout_s: float = 300.0  # hashing a node's install (a GB or more) before each sweep

    def check(self, source: str, prefix: str = "") -> None:
        if not self.install_root.startswith("/"):
            raise SchemaError(source, prefix + "install_root", f"expected an absolute path, got {self.install_root!r}")
        unknown = sorted(set(self.extra_index_urls) - {"cpu", "cuda", "xpu"})
        if unknown:
            raise SchemaError(source, prefix + "extra_index_urls", f"keys are device kinds (cpu, cuda, xpu): {unknown}")
        if self.keep_builds < 1:
            raise SchemaError(source, prefix + "keep_builds", f"expected at least 1, got {self.keep_builds}")
        if self.verify_timeout_s <= 0:
            raise SchemaError(source, prefix + "verify_timeout_s", "expected a positive number of seconds")


@dataclass(frozen=True)
class CockpitFile:
    """The shape of `cockpit.toml`."""

    cluster: ClusterSection = field(default_factory=ClusterSection)
    paths: PathsSection = field(default_factory=PathsSection)
    model: ModelSection = field(default_factory=ModelSection)
    refresh: RefreshSection = field(default_factory=RefreshSection)
    wake_on_lan: WakeOnLanSection = field(default_factory=WakeOnLanSection)
    ssh: SshSection = field(default_factory=SshSection)
    baseline: BaselineSection = field(default_factory=BaselineSection)
    sweep: SweepSection = field(default_factory=SweepSection)
    runtime: RuntimeSection = field(default_factory=RuntimeSection)


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


@dataclass(frozen=True)
class Settings:
    """The effective configuration: a file's values (or the embedded default) with paths resolved."""

    file: CockpitFile = field(default_factory=CockpitFile)
    source: Path | None = None  # None: the embedded default

    def _path(self, value: str) -> Path:
        path = Path(value).expanduser()
        if not path.is_absolute() and self.source is not None:
            path = self.source.parent / path
        return path

    @property
    def embedded(self) -> bool:
        return self.source is None

    @property
    def cluster(self) -> ClusterSection:
        return self.file.cluster

    @property
    def refresh(self) -> RefreshSection:
        return self.file.refresh

    @property
    def wake_on_lan(self) -> WakeOnLanSection:
        return self.file.wake_on_lan

    @property
    def ssh(self) -> SshSection:
        return self.file.ssh

    @property
    def known_hosts(self) -> Path:
        """The known_hosts file the cockpit checks node keys against (and records accepted ones in)."""
        value = self.ssh.known_hosts
        return self._path(value) if value else self.data_dir / "known_hosts"

    @property
    def sweep(self) -> SweepSection:
        return self.file.sweep

    def prompt_files(self) -> dict[str, Path]:
        """The sweep's prompt files by variant: configured ones relative to cockpit.toml, else the project's."""
        configured = self.sweep.prompt_files
        if configured:
            return {variant: self._path(path) for variant, path in configured.items()}
        return {variant: PROJECT_DATA / f"prompts_{variant}.txt" for variant in PROJECT_VARIANTS}

    @property
    def runtime(self) -> RuntimeSection:
        return self.file.runtime

    @property
    def runtime_build_dir(self) -> Path:
        """Where `cluster runtime build` makes its builds, one folder per device kind."""
        value = self.runtime.build_dir
        return self._path(value) if value else self.data_dir / "runtime"

    def runtime_device(self, device: str | None = None) -> DeviceKind:
        """The device kind a build is for: `device`, else the sweep's device; "auto" names none."""
        chosen = device or self.sweep.device
        if chosen not in ("cpu", "cuda", "xpu"):
            raise BadInput(f"runtime: a build is for one device kind (cpu, cuda or xpu), not {chosen!r}")
        return chosen  # type: ignore[return-value]

    @property
    def inventory(self) -> Path | None:
        return None if self.cluster.inventory is None else self._path(self.cluster.inventory)

    @property
    def nodes_from_slurm(self) -> bool:
        """Slurm with no inventory: the nodes are those sinfo lists, shown without ssh (nothing says how to reach
        them), so the actions that need ssh are refused (`needs_ssh`)."""
        return self.cluster.scheduler == "slurm" and self.inventory is None

    @property
    def _no_inventory(self) -> str:
        return (
            "none: the nodes Slurm lists (sinfo), without ssh" if self.nodes_from_slurm else "this machine (localhost)"
        )

    def needs_ssh(self, action: str) -> str:
        """Why `action` cannot run when the nodes come from Slurm, in one line."""
        return (
            f"{action} needs ssh to the nodes, and {self.source}: [cluster] names no inventory (the nodes are "
            "Slurm's, seen through sinfo): set [cluster] inventory to an Ansible inventory of them"
        )

    @property
    def data_dir(self) -> Path:
        value = self.file.paths.data_dir
        return self._path(value) if value else _xdg("XDG_DATA_HOME", ".local/share") / "cockpit"

    @property
    def runs_dir(self) -> Path:
        value = self.file.paths.runs_dir
        return self._path(value) if value else self.data_dir / "runs"

    @property
    def model_path(self) -> Path:
        value = self.file.model.path
        return self._path(value) if value else self.data_dir / "models" / EMBEDDED_MODEL

    @property
    def baseline_url(self) -> str | None:
        return os.environ.get("COCKPIT_BASELINE_URL") or self.file.baseline.base_url

    @property
    def baseline_model(self) -> str | None:
        return os.environ.get("COCKPIT_BASELINE_MODEL") or self.file.baseline.model

    def baseline_api_key(self) -> str | None:
        """The endpoint's key from its 0600 file or its environment variable; never logged or stored."""
        baseline = self.file.baseline
        if baseline.api_key_file:
            path = self._path(baseline.api_key_file)
            try:
                mode = path.stat().st_mode
            except FileNotFoundError:
                raise BadInput(f"{path}: api_key_file does not exist") from None
            if stat.S_IMODE(mode) & 0o077:
                raise BadInput(f"{path}: api_key_file must be readable by its owner only (chmod 600 {path})")
            return read_text(path).strip() or None
        return os.environ.get(baseline.api_key_env) or None

    def describe(self) -> dict[str, object]:
        """The effective values for display; secrets appear only as set/unset."""
        return {
            "source": str(self.source) if self.source else "embedded default (no cockpit.toml found)",
            "cluster": self.cluster.name,
            "inventory": str(self.inventory) if self.inventory else self._no_inventory,
            "scheduler": self.cluster.scheduler,
            "partition": self.cluster.partition,
            "account": self.cluster.account,
            "data_dir": str(self.data_dir),
            "runs_dir": str(self.runs_dir),
            "run_storage": self.file.paths.run_storage,
            "model": self.file.model.name,
            "model_path": str(self.model_path),
            "refresh": to_plain(self.refresh),
            "wake_on_lan": to_plain(self.wake_on_lan),
            "known_hosts": str(self.known_hosts),
            "baseline_url": self.baseline_url or "none: the single-process reference run",
            "baseline_model": self.baseline_model,
            "baseline_key": "set" if self._key_is_configured() else "unset",
            "runtime_delivery": self.runtime.delivery,
            "runtime_build_dir": str(self.runtime_build_dir),
        }

    def _key_is_configured(self) -> bool:
        baseline = self.file.baseline
        return bool(baseline.api_key_file) or bool(os.environ.get(baseline.api_key_env))


def parse_config(text: str, source: Path) -> Settings:
    """Parse `cockpit.toml` text; errors name the file and the key (the shared parser's SchemaError)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SchemaError(str(source), "", f"not valid TOML: {err}") from None
    if isinstance(data.get("baseline"), dict) and "api_key" in data["baseline"]:
        raise SchemaError(
            str(source),
            "baseline.api_key",
            "secrets never go in cockpit.toml: set the "
            "variable named by api_key_env, or point api_key_file at a file with mode 0600",
        )
    return Settings(parse(CockpitFile, data, str(source)), source.resolve())


def find_config(explicit: str | Path | None = None) -> Path | None:
    """The configuration file in effect, or None for the embedded default."""
    chosen = explicit or os.environ.get("COCKPIT_CONFIG")
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise BadInput(f"{path}: configuration file not found")
        return path
    for candidate in (Path.cwd() / CONFIG_NAME, _xdg("XDG_CONFIG_HOME", ".config") / "cockpit" / CONFIG_NAME):
        if candidate.is_file():
            return candidate
    return None


def load_settings(explicit: str | Path | None = None) -> Settings:
    """Find and parse the configuration; the embedded default when there is none."""
    path = find_config(explicit)
    return Settings() if path is None else parse_config(read_text(path), path)

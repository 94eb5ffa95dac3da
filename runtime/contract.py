"""The contract between the control node and the node runtime: the one place where the two sides meet.

The cockpit writes an `ExperimentConfig` as `exp_config.json`; the runtime reads it, and every result-owning
rank writes `ShardRow` lines, `ProgressLine` lines and one `RankMetrics` file, which the cockpit follows and
collects. Pure Python (no torch), so the control node can import it without the runtime's dependencies.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from runtime.atomic import atomic_write_text
from runtime.schema import InputError, SchemaError, parse, to_plain

T = TypeVar("T")

EXP_CONFIG_NAME = "exp_config.json"
BUILD_MANIFEST_NAME = "build_manifest.json"
CURRENT_IMAGE_MANIFEST = "current.json"  # beside the images: the manifest of the one deployed last
RUNTIME_BUILD_VAR = "COCKPIT_RUNTIME_BUILD"  # set by job scripts to the verified build's id; recorded in metrics
Precision = Literal["fp32", "bf16", "fp16", "int8", "int4"]  # int8/int4: weight-only, activations as compute_dtype
# bits per weight as stored; a quantized weight also keeps its share of its group's scale (runtime.model_shape)
PRECISION_BITS: dict[str, int] = {"fp32": 32, "bf16": 16, "fp16": 16, "int8": 8, "int4": 4}
QUANTIZED = ("int8", "int4")
Device = Literal["auto", "cpu", "cuda", "xpu"]
DeviceKind = Literal["cpu", "cuda", "xpu"]  # what a runtime build targets: a device, named
Delivery = Literal["venv", "apptainer"]
Profiler = Literal["torch", "nsys", "perf"]
# what each profiler leaves in a rank's trace folder (ExperimentConfig.trace_path), and what opens it
PROFILER_FILES: dict[Profiler, str] = {"torch": "torch.trace.json", "nsys": "nsys.nsys-rep", "perf": "perf.data"}
PROFILER_VIEWERS: dict[Profiler, str] = {
    "torch": "ui.perfetto.dev (Open trace file)",
    "nsys": "nsys-ui, or nsys stats",
    "perf": "perf report -i, or ui.perfetto.dev",
}
# the record_function ranges the runtime marks in a profiled run; comm ranges count towards the comm share
PROFILE_RANGES = ("compute", "all_reduce", "send_recv", "sampling")
COMM_RANGES = ("all_reduce", "send_recv")
Phase = Literal["starting", "loading", "warmup", "running", "done", "failed"]
FinishReason = Literal["eos", "length"]


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SLURM_TIME = re.compile(r"^(\d+-)?\d+(:\d\d){0,2}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def _require(ok: bool, source: str, key: str, problem: str) -> None:
    if not ok:
        raise SchemaError(source, key, problem)


@dataclass(frozen=True)
class ExperimentConfig:
    """One strategy's run: everything the entry script needs.

    Relative paths in `exp_config.json` are relative to the file's folder; `logs_dir`, `profiling_dir` and
    the shard, metrics and progress patterns are relative to `output_root`.
    """

    strategy_id: str
    run_id: str
    model_name: str
    model_path: str
    prompt_df_path: str
    output_root: str
    num_nodes: int
    gpus_per_node: int
    tp_size: int
    pp_size: int
    dp_size: int = 1
    world_size: int | None = None  # pp * tp * dp; filled in when left out
    batch_size: int = 1
    micro_batches: int | None = None  # in flight per pipeline; default: pp_size (1 without a pipeline)
    max_new_tokens: int = 128
    precision: Precision = "bf16"
    quant_group_size: int | None = None  # int8/int4: weights per scale; default: from the model (the same for all)
    device: Device = "auto"  # auto: cuda, else xpu, else cpu
    fast_decode: bool = True  # the static-cache step and packed CPU weights (runtime.decoder); false: HF's forward
    seed: int = 0
    warmup_batches: int = 1  # untimed passes over the first batch's shapes before the clock starts; tokens discarded
    repeats: int = 1  # timed passes over the whole share, in one job: one load, one join
    profiling_enabled: bool = False
    profilers: tuple[Profiler, ...] = ("torch",)
    profile_steps: int = 8
    logs_dir: str = "logs"
    profiling_dir: str = "profiling"
    slurm_time_limit: str = "01:00:00"
    partition: str | None = None
    account: str | None = None
    container_image: str | None = None
    deepspeed_config_path: str | None = None
    output_shard_pattern: str = "outputs/shard_{rank}.jsonl"
    metrics_file: str = "metrics/metrics_rank_{rank}.json"
    progress_file: str = "progress/progress_rank_{rank}.jsonl"

    def __post_init__(self) -> None:
        if self.world_size is None:
            object.__setattr__(self, "world_size", self.pp_size * self.tp_size * self.dp_size)

    def check(self, source: str, prefix: str = "") -> None:
        """Cross-field rules; raises SchemaError naming the key."""
        for key in ("strategy_id", "run_id"):
            _require(
                bool(_NAME.match(getattr(self, key))),
                source,
                prefix + key,
                "expected letters, digits, '_', '-' or '.' (it names files and jobs)",
            )
        for key in ("model_name", "model_path", "prompt_df_path", "output_root"):
            _require(bool(getattr(self, key).strip()), source, prefix + key, "expected a non-empty string")
        for key in (
            "num_nodes",
            "gpus_per_node",
            "tp_size",
            "pp_size",
            "dp_size",
            "world_size",
            "batch_size",
            "max_new_tokens",
            "repeats",
            "profile_steps",
        ):
            value = getattr(self, key)
            _require(value >= 1, source, prefix + key, f"expected a positive integer, got {value}")
        _require(
            self.warmup_batches >= 0,
            source,
            prefix + "warmup_batches",
            f"expected 0 or more, got {self.warmup_batches}",
        )
        if self.quant_group_size is not None:
            _require(
                self.quant_group_size >= 1,
                source,
                prefix + "quant_group_size",
                f"expected a positive integer or null, got {self.quant_group_size}",
            )
        if self.micro_batches is not None:
            _require(self.micro_batches >= 1, source, prefix + "micro_batches", "expected a positive integer or null")
        product = self.pp_size * self.tp_size * self.dp_size
        _require(
            self.world_size == product,
            source,
            prefix + "world_size",
            f"expected pp_size*tp_size*dp_size = {self.pp_size}*{self.tp_size}*{self.dp_size} = "
            f"{product}, got {self.world_size}",
        )
        slots = self.num_nodes * self.gpus_per_node
        _require(
            slots == self.world_size,
            source,
            prefix + "gpus_per_node",
            f"expected num_nodes*gpus_per_node = world_size ({self.world_size}), got "
            f"{self.num_nodes}*{self.gpus_per_node} = {slots}",
        )
        _require(
            bool(_SLURM_TIME.match(self.slurm_time_limit)),
            source,
            prefix + "slurm_time_limit",
            f"expected a Slurm time like 30, 01:00:00 or 1-12:00, got {self.slurm_time_limit!r}",
        )
        for key in ("output_shard_pattern", "metrics_file", "progress_file"):
            pattern = getattr(self, key)
            try:
                ok = "{rank}" in pattern and pattern.format(rank=0) != pattern
            except (KeyError, IndexError, ValueError):
                ok = False
            _require(
                ok,
                source,
                prefix + key,
                f"expected a relative path with '{{rank}}' and no other placeholder, got {pattern!r}",
            )

    # ---- paths
    def resolved(self, base: Path) -> ExperimentConfig:
        """The same config with relative paths made absolute against `base`."""

        def absolute(value: str | None) -> str | None:
            return value if value is None or Path(value).is_absolute() else str((base / value).resolve())

        return self._paths(absolute)

    def relative(self, base: Path, root: Path) -> ExperimentConfig:
        """The same config with the paths that point inside `root` (the run folder) made relative to `base` (the
        file's folder), as `exp_config.json` stores them: the folder can move; paths outside it stay absolute."""
        return self._paths(lambda value: None if value is None else stored_path(value, base, root))

    def _paths(self, change: Callable[[str | None], str | None]) -> ExperimentConfig:
        return dataclasses.replace(
            self,
            model_path=change(self.model_path),
            prompt_df_path=change(self.prompt_df_path),
            output_root=change(self.output_root),
            deepspeed_config_path=change(self.deepspeed_config_path),
        )

    def _under_root(self, relative: str) -> Path:
        return Path(self.output_root) / relative

    def shard_path(self, rank: int) -> Path:
        return self._under_root(self.output_shard_pattern.format(rank=rank))

    def metrics_path(self, rank: int) -> Path:
        return self._under_root(self.metrics_file.format(rank=rank))

    def progress_path(self, rank: int) -> Path:
        return self._under_root(self.progress_file.format(rank=rank))

    @property
    def micro_batches_in_flight(self) -> int:
        return self.micro_batches or self.pp_size

    @property
    def logs_path(self) -> Path:
        return self._under_root(self.logs_dir)

    def rank_log_path(self, rank: int) -> Path:
        """A rank's own log (its log lines, beside the job's combined output in the same folder)."""
        return self.logs_path / f"rank_{rank}.log"

    @property
    def profiling_path(self) -> Path:
        return self._under_root(self.profiling_dir)

    def trace_path(self, rank: int) -> Path:
        """The folder of a rank's profiler outputs, when profiling is on (PROFILER_FILES names them)."""
        return self.profiling_path / f"rank_{rank}"

    def profile_summary_path(self, rank: int) -> Path:
        """A rank's `ProfileSummary`, beside its metrics."""
        return self.metrics_path(rank).with_name(f"profile_rank_{rank}.json")

    # ---- JSON
    def to_json(self) -> str:
        return json.dumps(to_plain(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "exp_config.json") -> ExperimentConfig:
        return loads(cls, text, source)

    @classmethod
    def load(cls, path: str | Path) -> ExperimentConfig:
        """Read and validate `exp_config.json`; relative paths are taken against its folder."""
        path = Path(path)
        return cls.from_json(read_text(path), str(path)).resolved(path.parent.resolve())

    def write(self, path: str | Path) -> None:
        atomic_write_text(path, self.to_json())


@dataclass(frozen=True)
class ShardRow:
    """One prompt's result, one JSON line in `outputs/shard_<rank>.jsonl`."""

    prompt_id: int
    variant: str
    strategy_id: str
    rank: int
    completion: str
    token_ids: list[int]
    latency_ms: float
    ttft_ms: float
    tokens_generated: int
    prompt_tokens: int = 0
    batch_index: int = 0
    finish_reason: FinishReason = "length"
    gpu_id: int | None = None

    def check(self, source: str, prefix: str = "") -> None:
        _require(
            self.tokens_generated == len(self.token_ids),
            source,
            prefix + "tokens_generated",
            f"expected len(token_ids) = {len(self.token_ids)}, got {self.tokens_generated}",
        )
        for key in ("latency_ms", "ttft_ms"):
            _require(getattr(self, key) >= 0, source, prefix + key, "expected a non-negative number")


@dataclass(frozen=True)
class ProgressLine:
    """A rank's heartbeat, one JSON line in `progress/progress_rank_<rank>.jsonl`, written per batch."""

    rank: int
    ts: float
    phase: Phase
    rows_written: int = 0
    rows_expected: int = 0
    tokens_generated: int = 0
    tokens_per_s: float = 0.0
    message: str | None = None
    compute_ms_per_step: float | None = None  # so far in the timed passes, where measured (CPU): stragglers show


@dataclass(frozen=True)
class Percentiles:
    p50: float
    p95: float
    p99: float
    mean: float


@dataclass(frozen=True)
class TimeSplit:
    """Where a rank's wall time went: its own compute, waiting on communication, and idle (pipeline bubble); and
    the forward steps it took (one per micro-batch per token) with the median time of one (its all-reduces left
    out), so ranks compare compute per step without their bookkeeping, I/O, or a moment's preemption."""

    compute_s: float
    comm_s: float
    idle_s: float
    steps: float | None = None
    step_ms: float | None = None


@dataclass(frozen=True)
class LinkFit:
    """A link as the strategy's own ranks measured it just before decoding: one operation's time fitted to
    the alpha-beta model (AR(m, N) = 2(N-1) alpha + 2(N-1)/N m / beta; P2P(m) = alpha + m / beta)."""

    op: Literal["all_reduce", "send_recv"]
    impl: str  # what carried it: "shm_all_reduce", "gloo_all_reduce", "nccl_send_recv", ...
    ranks: int  # ranks in one operation: the TP group's size, or 2 for a stage boundary
    intra_node: bool  # every rank of it on one host
    alpha_s: float
    beta_Bps: float
    interface: str | None = None  # across hosts: the network interface it crossed (the ranks' comm_interface)


@dataclass(frozen=True)
class RepeatFigures:
    """One timed pass over a rank's whole share: its wall time and, on a rank that owns results, the tokens it
    generated, the medians over its rows of the time to first token and the inter-token latency, and the pass cut
    into its phases: prefill (each batch until its every row has a first token) over the prompts' own tokens, and
    the rest, decode."""

    wall_s: float
    tokens: int = 0
    ttft_ms: float | None = None
    itl_ms: float | None = None  # (latency - TTFT) / (tokens - 1), rows of one token left out
    rows: int = 0
    prompt_tokens: int = 0  # unpadded
    prefill_s: float | None = None


@dataclass(frozen=True)
class RankMetrics:
    """`metrics/metrics_rank_<rank>.json`, written once at the end. Unmeasurable values are null, not guessed.

    A rank decodes its share `repeats` times after its warm-up: `repeats` keeps each pass's figures; wall time,
    tokens and tokens/s are the median pass's, latency and TTFT percentiles the first pass's rows (the shard's),
    the time split and energy a pass's mean."""

    strategy_id: str
    run_id: str
    rank: int
    world_size: int
    tp_rank: int
    pp_rank: int
    dp_rank: int
    hostname: str
    device: str
    backend: str
    precision: Precision
    prompts: int
    tokens_generated: int
    wall_time_s: float
    tokens_per_s: float
    started_at: str
    finished_at: str
    latency_ms: Percentiles | None = None
    ttft_ms: Percentiles | None = None
    load_s: float | None = None
    weight_bytes: int | None = None  # of the model's weights, what this rank holds (its stage, its TP slice)
    quant_group_size: int | None = None  # int8/int4: the weights each scale covered
    peak_memory_bytes: int | None = None
    time_split: TimeSplit | None = None
    energy_j: float | None = None  # this rank's own device's counter over the decode
    host_energy_j: float | None = None  # the host's package counter (RAPL), by the host's local rank 0 only
    energy_source: str | None = None  # the counter read: "nvml:<bus>", "hwmon:card1", "rapl:intel-rapl:0+..."
    # why this rank has neither figure (no counter, one went backwards); null too when another rank of its host
    # reads the host's counter
    energy_why: str | None = None
    device_name: str | None = None  # "NVIDIA H100 80GB HBM3", the CPU's model name, ...
    host_cpus: int | None = None  # CPUs this rank's process may run on
    memory_bandwidth_Bps: float | None = None  # the probe's figure, taken by single-rank runs (the reference)
    # int8/int4: weights dequantized per second, its own layers' dequantize() timed by a single-rank run with
    # its threads, and on a CPU with one
    dequant_weights_per_s: float | None = None
    dequant_one_cpu_weights_per_s: float | None = None
    # int8/int4, with those rates: whether its one-token steps dequantize too (false: they read the codes through
    # the CPU kernel, and only prefills dequantize)
    decode_dequantizes: bool | None = None
    links: tuple[LinkFit, ...] = ()  # the strategy's own TP all-reduce and stage-boundary send/recv
    runtime_build: str | None = None  # the BuildManifest.build_id this rank ran from; null: an unbuilt tree
    warmup_s: float | None = None  # the untimed warm-up's wall time: first-use costs, visible rather than hidden
    repeats: tuple[RepeatFigures, ...] = ()
    repeat_mismatch: str | None = None  # a later pass's tokens that differ from the first's: a correctness failure
    # the network interface its collectives' sockets used (between hosts: the link they crossed) and its address
    # there; null for a rank alone
    comm_interface: str | None = None
    comm_address: str | None = None


@dataclass(frozen=True)
class OpTime:
    """One operator's share of a profiled window: its self time (children excluded), summed over its calls."""

    name: str
    calls: int
    self_ms: float
    share: float  # of the window


@dataclass(frozen=True)
class ProfileSummary:
    """`metrics/profile_rank_<rank>.json`: what a rank's torch.profiler trace says, so the report and the
    performance analysis need not open the trace. Times are within the profiled window of decode steps."""

    strategy_id: str
    run_id: str
    rank: int
    hostname: str
    trace: str  # the Chrome trace, relative to output_root
    steps: int  # decode steps profiled
    window_ms: float  # their wall time
    ranges_ms: dict[str, float]  # PROFILE_RANGES: time inside each (all_reduce nests in compute, sends in sampling)
    comm_share: float  # COMM_RANGES' time over the window
    idle_share: float  # of the window on the decoding thread outside every named range (host overhead)
    gaps: int  # stretches of that idle time of at least `gap_threshold_ms`
    gap_threshold_ms: float
    longest_gap_ms: float
    device_busy_share: float | None  # the union of device kernels over the window; null on CPU
    top_ops: tuple[OpTime, ...]  # the operators with the most self time, most first

    @classmethod
    def load(cls, path: Path) -> ProfileSummary:
        return loads(cls, read_text(path), str(path))


@dataclass(frozen=True)
class BuildManifest:
    """`build_manifest.json`: one runtime build, as `cluster runtime build` made it.

    The control node keeps it beside the build; every node keeps the copy that came with its install, and a
    sweep runs only where the two digests agree. Job scripts pass `build_id` to the runtime ($COCKPIT_RUNTIME_BUILD),
    which records it in its metrics, so every result names the build that produced it.
    """

    build_id: str  # "<runtime_version>-<first 12 hex digits of the digest>": the install's folder on the nodes
    runtime_version: str
    git_commit: str | None  # the tree's commit, "+dirty" when it had uncommitted changes; null outside git
    python: str
    torch: str
    deepspeed: str
    transformers: str
    device: DeviceKind
    delivery: Delivery
    digest: str  # "sha256:<hex>": of the environment's files (venv) or of the image file (apptainer)
    built_at: str  # ISO 8601, UTC
    files: int = 0
    bytes: int = 0
    base_python: str | None = None  # venv: the interpreter it was made from; every node needs it at this path

    def check(self, source: str, prefix: str = "") -> None:
        _require(bool(_DIGEST.match(self.digest)), source, prefix + "digest", "expected 'sha256:' and 64 hex digits")
        expected = self.make_id(self.runtime_version, self.digest)
        _require(self.build_id == expected, source, prefix + "build_id", f"expected {expected!r}")

    @staticmethod
    def make_id(runtime_version: str, digest: str) -> str:
        """The build id of a version and a digest."""
        return f"{runtime_version}-{digest.removeprefix('sha256:')[:12]}"

    @classmethod
    def load(cls, path: Path) -> BuildManifest:
        """Read and validate a manifest; errors name the file."""
        return loads(cls, read_text(path), str(path))

    def write(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(to_plain(self), indent=2) + "\n")


def first_divergence(tokens: Sequence[int], reference: Sequence[int]) -> int | None:
    """The first index where the two differ; the shorter length if one is a strict prefix; None when equal."""
    for index, (ours, theirs) in enumerate(zip(tokens, reference, strict=False)):
        if ours != theirs:
            return index
    return None if len(tokens) == len(reference) else min(len(tokens), len(reference))


def stored_path(path: str, base: Path, root: Path | None = None) -> str:
    """`path` as a file in `base` stores it: relative to `base` when it points inside the folder `root` (`base`
    itself by default), so that the folder can be moved or copied whole; any other path as it is."""
    if not Path(path).is_absolute() or not Path(path).is_relative_to(root or base):
        return path
    return os.path.relpath(path, base)


def found_path(stored: str, base: Path, written_in: Path | None = None) -> str:
    """A path a file in `base` stored, where it is now: a relative one taken against `base`; an absolute one
    inside `written_in` (where a file written before paths were stored relative lived) as the same path under
    `base`; any other absolute path as it is."""
    path = Path(stored)
    if not path.is_absolute():
        return str(base / path)
    if written_in is not None and written_in.is_absolute() and path.is_relative_to(written_in):
        return str(base / path.relative_to(written_in))
    return stored


def read_text(path: Path) -> str:
    """A file's text, or an InputError naming the file."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise InputError(f"{path}: {err.strerror}") from None


def loads(cls: type[T], text: str, source: str) -> T:
    """Parse one JSON document (a whole file or one line) into `cls`, naming `source` on any error."""
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as err:
        raise SchemaError(source, "", f"not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    return parse(cls, data, source)


def dumps_line(record: object) -> str:
    """One record as a JSON line, newline included: the unit every writer appends."""
    return json.dumps(to_plain(record), ensure_ascii=False, separators=(",", ":")) + "\n"

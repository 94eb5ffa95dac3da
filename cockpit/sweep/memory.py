"""The memory plan: what each rank of a strategy will hold, held against the memory of the nodes it runs on,
before anything is submitted. Pure arithmetic on the model's config.json (read as JSON), the sweep's settings
and the nodes' memory figures (their last telemetry, else the configured ones); I/O only in `read_model_shape` and
`node_memory`.

A rank holds (runtime/checkpoint.py, runtime/tensor_parallel.py):

    weights      its stage's decoder layers, their attention and MLP linears cut 1/tp by AutoTP, at the run's
                 precision (int8/int4 with a scale per group, in the compute dtype, the group size the runtime
                 picks: runtime.model_shape.weight_bytes_per_param);
                 the first stage the embedding, WHOLE on every TP rank (AutoTP does not slice it), in the compute
                 dtype; the last stage the final norm and the LM head, cut 1/tp, at the run's precision
    kv_cache     stage layers x 2 x kv_heads/tp x head_dim x compute bytes x batch x (longest prompt + new tokens):
                 every micro-batch of a pipeline is in flight at once, so the cache covers the whole batch
    activations  one micro-batch's prefill at a time: rows x seq x (4 x hidden + 3 x intermediate/tp) x compute
                 bytes (hidden states, residual, attention output; gate, up and their product), plus the last
                 token's logits, rows x vocab x 4 bytes (float32, gathered whole on the last stage)
    overhead     what a rank process holds beyond that: on a CPU, measured (RANK_OVERHEAD_BYTES); on a GPU, the
                 device context (DEVICE_CONTEXT_BYTES, an assumption), which torch's peak does not count

The compute dtype is the precision's own for fp32/bf16/fp16; for int8/int4 (weight-only) it is float32 on a CPU
and bfloat16 on a GPU.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cockpit.errors import BadInput
from runtime.contract import PRECISION_BITS, QUANTIZED
from runtime.model_shape import ModelShape, activation_bytes, weight_bytes_per_param
from runtime.topology import Topology, stage_layers

if TYPE_CHECKING:
    from cockpit.config import Settings
    from cockpit.nodes.telemetry import NodeTelemetry
    from cockpit.sweep.strategies import ParallelismStrategy

GIB = 1024**3
MIB = 1024**2
# the built-in tokenizer packs about 4.1 characters into a token (runtime/tiny_model.py); prompts are counted in
# characters, so the longest one in tokens is taken as its characters over this
CHARS_PER_TOKEN = 4.1
# Measured on the built-in model (fp32, 4 prompts, 12 new tokens, CPU, torch 2.13, deepspeed 0.19.8, transformers
# 5.23): peak_memory_bytes (ru_maxrss) minus weight_bytes of a real run's metrics: a single rank 475 MB; each rank
# of a TP-2 run (DeepSpeed imported) 513 MB. The tiny model's cache and activations are under 2 MB of that.
RANK_OVERHEAD_BYTES = {"single": 475_000_000, "tensor_parallel": 513_000_000}
# A GPU's context (driver, kernels, allocator pools): an assumption, not measured here; torch's
# max_memory_allocated (the peak a GPU rank reports) leaves it out, so check it against nvidia-smi / xpu-smi
DEVICE_CONTEXT_BYTES = {"cuda": 600_000_000, "xpu": 600_000_000}
Verdict = Literal["fits", "shrunk", "skipped", "unchecked"]
# where a node's memory figure comes from: its last good telemetry reading, the inventory's device_memory_gib,
# `[cluster] device_memory_gib`, or this machine's memory (the local scheduler with a CPU)
MemorySource = Literal["telemetry", "inventory", "cluster", "this machine"]


def read_model_shape(model_path: Path) -> ModelShape:
    """The model's shape from its config.json; BadInput naming the file and the key."""
    path = model_path / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        return ModelShape.from_config(config)
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file (the model's shape is read from it)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadInput(f"{path}: not JSON ({err})") from None
    except KeyError as err:
        raise BadInput(f"{path}: no {err.args[0]} (the model's shape needs it)") from None
    except (TypeError, ValueError) as err:
        raise BadInput(f"{path}: a model size that is not a number ({err})") from None


def longest_prompt_tokens(prompts: Sequence[str]) -> int:
    """The longest prompt in tokens, from its characters (CHARS_PER_TOKEN), its BOS token included."""
    return max((math.ceil(len(text) / CHARS_PER_TOKEN) for text in prompts), default=0) + 1


@dataclass(frozen=True)
class RankEstimate:
    """One rank's bytes, by what holds them. `context` is outside what the rank's peak_memory_bytes measures."""

    rank: int
    weights: int
    kv_cache: int
    activations: int
    overhead: int
    context: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations + self.overhead + self.context

    @property
    def comparable_to_peak(self) -> int:
        """What the rank's measured peak should read: on a GPU torch's peak leaves the context out."""
        return self.total - self.context


@dataclass(frozen=True)
class Workload:
    """What decides the cache and activations: rows per batch, micro-batches in flight, tokens per row."""

    batch_size: int
    micro_batches: int
    prompt_tokens: int
    max_new_tokens: int

    @property
    def sequence(self) -> int:
        return self.prompt_tokens + self.max_new_tokens


def estimate_rank(
    model: ModelShape,
    topo: Topology,
    work: Workload,
    precision: str,
    device: str,
    share: Callable[[int], int],
    group_size: int | None = None,
) -> RankEstimate:
    """One rank's estimate; `share(n)` is a rank's part of n cut across its TP group; `group_size`: int8/int4
    weights per scale, else the model's default (as the runtime picks it)."""
    m, tp, act = model, topo.tp_size, activation_bytes(precision, device)
    linear = weight_bytes_per_param(precision, device, group_size or m.default_group_size())
    layers = len(stage_layers(m.num_layers, topo.pp_size, topo.pp_rank))
    first, last = topo.is_first_stage, topo.is_last_stage
    weights = layers * (m.layer_linear_params(tp) * linear + 2 * m.hidden_size * act)
    if first:
        weights += m.vocab_size * m.hidden_size * act
    if last:
        shared_head = m.tied_embeddings and first and tp == 1 and precision not in QUANTIZED
        weights += m.hidden_size * act + (0 if shared_head else share(m.vocab_size) * m.hidden_size * linear)
    kv_cache = layers * 2 * share(m.num_kv_heads) * m.head_dim * act * work.batch_size * work.sequence
    rows = math.ceil(work.batch_size / work.micro_batches)
    activations = rows * work.sequence * (4 * m.hidden_size + 3 * share(m.intermediate_size)) * act
    if last:
        activations += rows * m.vocab_size * 4
    if device == "cpu":
        overhead, context = RANK_OVERHEAD_BYTES["tensor_parallel" if tp > 1 else "single"], 0
    else:
        overhead, context = 0, DEVICE_CONTEXT_BYTES.get(device, DEVICE_CONTEXT_BYTES["cuda"])
    return RankEstimate(topo.rank, round(weights), kv_cache, activations, overhead, context)


def estimate_strategy(
    model: ModelShape, tp: int, pp: int, work: Workload, precision: str, device: str, group_size: int | None = None
) -> list[RankEstimate]:
    """Every rank's estimate for a TP x PP strategy (ranks TP-innermost, as runtime.topology lays them out)."""

    def share(n: int) -> int:
        return math.ceil(n / tp)

    return [
        estimate_rank(model, Topology(tp, pp, 1, rank), work, precision, device, share, group_size)
        for rank in range(tp * pp)
    ]


@dataclass(frozen=True)
class NodeMemory:
    """The memory a strategy's ranks are held against: per device (a GPU each), or per host (a CPU node's ranks
    share its memory); the smallest figure of the nodes a job may get, and whose it is."""

    bytes: int
    node: str  # "node0", "this machine"
    device: str  # "A770", "host memory"
    per_host: bool  # the ranks of one host share it (CPU), or each rank has its own (GPU)
    source: MemorySource = "cluster"


@dataclass(frozen=True)
class MemoryPlan:
    """A strategy's plan as the manifest keeps it: its verdict, the batch it runs with, the sentence that says
    so (empty when it fits as asked), and the per-rank estimate at that batch (the report puts it beside peaks)."""

    verdict: Verdict
    batch_size: int
    sentence: str = ""
    needed_bytes: int = 0  # at the batch asked for: the most on one device (or one host)
    capacity_bytes: int | None = None
    ranks: list[RankEstimate] | None = None


def gib(value: float) -> str:
    return f"{value / GIB:.1f} GiB"


def needed(estimates: Sequence[RankEstimate], ranks_per_host: int, per_host: bool) -> int:
    """The most any one memory must hold: a rank's own device, or the sum of the ranks sharing a host."""
    if not per_host:
        return max(e.total for e in estimates)
    hosts: dict[int, int] = {}
    for e in estimates:
        hosts[e.rank // ranks_per_host] = hosts.get(e.rank // ranks_per_host, 0) + e.total
    return max(hosts.values())


def plan_strategy(
    label: str,
    model: ModelShape,
    shape: tuple[int, int],
    work: Workload,
    precision: str,
    device: str,
    memory: NodeMemory | None,
    ranks_per_host: int,
    group_size: int | None = None,
) -> MemoryPlan:
    """Fits as asked; fits only with a smaller batch (the largest that does); or cannot fit, with what would
    (int8/int4 where that precision fits at batch 1, computed). `shape`: (tp, pp); `group_size`: int8/int4
    weights per scale (None: the model's default). Unchecked without a figure."""
    tp, pp = shape

    def need_at(batch: int, at: str = precision) -> tuple[int, list[RankEstimate]]:
        ranks = estimate_strategy(model, tp, pp, _with_batch(work, batch), at, device, group_size)
        return needed(ranks, ranks_per_host, memory.per_host if memory else False), ranks

    asked, ranks = need_at(work.batch_size)
    if memory is None:
        return MemoryPlan("unchecked", work.batch_size, needed_bytes=asked, ranks=ranks)
    have = f"{memory.node}'s {memory.device} has {gib(memory.bytes)}"
    if asked <= memory.bytes:
        return MemoryPlan("fits", work.batch_size, "", asked, memory.bytes, ranks)
    for batch in range(work.batch_size - 1, 0, -1):
        smaller, ranks = need_at(batch)
        if smaller <= memory.bytes:
            sentence = (
                f"{label}: needs {gib(asked)} at batch {work.batch_size}, {have}: runs with batch {batch} "
                f"({gib(smaller)})"
            )
            return MemoryPlan("shrunk", batch, sentence, asked, memory.bytes, ranks)
    quantizable = bool(group_size or model.default_group_size())
    lighter = [q for q in QUANTIZED if PRECISION_BITS[q] < PRECISION_BITS[precision] and quantizable]
    would = [q for q in lighter if need_at(1, q)[0] <= memory.bytes]
    advice = f"use {would[0]} or a smaller model" if would else "use a smaller model"
    sentence = f"{label}: needs {gib(asked)}, {have}: skipped; {advice}"
    return MemoryPlan("skipped", work.batch_size, sentence, asked, memory.bytes, need_at(work.batch_size)[1])


def _with_batch(work: Workload, batch: int) -> Workload:
    return Workload(batch, min(work.micro_batches, batch), work.prompt_tokens, work.max_new_tokens)


def host_memory_bytes() -> int:
    """This machine's physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def device_label(device: str, gpu_kind: str | None) -> str:
    """How the sentence names the memory: 'host memory' on a CPU; the GPU's model from the inventory's gpu_kind
    ('intel-arc-a770' -> 'A770'), else 'GPU'."""
    if device == "cpu":
        return "host memory"
    return gpu_kind.rsplit("-", 1)[-1].upper() if gpu_kind else "GPU"


def telemetry_memory(name: str, reading: NodeTelemetry, device: str) -> NodeMemory | None:
    """A node's memory as its last good telemetry reading has it: on a CPU its host memory, on a GPU its smallest
    GPU's; None where the reading has no such figure."""
    from cockpit.nodes.telemetry import gpu_name

    if device == "cpu":
        total, label = reading.memory_total_mib, "host memory"
    else:
        gpus = [gpu for gpu in reading.gpus if gpu.memory_total_mib]
        smallest = min(gpus, key=lambda gpu: gpu.memory_total_mib or 0.0, default=None)
        total, label = (smallest.memory_total_mib, gpu_name(smallest)) if smallest else (None, "")
    return NodeMemory(round(total * MIB), name, label, device == "cpu", "telemetry") if total else None


def node_memory(
    settings: Settings, device: str, telemetry: Mapping[str, NodeTelemetry] | None = None
) -> NodeMemory | None:
    """The memory each strategy is held against, the smallest of the nodes a job may get (a CPU node's figure is
    its host memory): per node its last good `telemetry` reading, else the inventory's `device_memory_gib`, else
    `[cluster] device_memory_gib`; with none of these, on the local scheduler with a CPU, this machine's memory;
    else None (nothing to check against)."""
    from cockpit.nodes.inventory import Inventory

    cluster = settings.cluster.device_memory_gib
    read = [m for name, reading in (telemetry or {}).items() if (m := telemetry_memory(name, reading, device))]
    measured = {m.node for m in read}
    nodes = Inventory.load(settings.inventory).compute if settings.inventory else []
    configured = [
        NodeMemory(
            round(figure * GIB),
            node.name,
            device_label(device, node.gpu_kind),
            device == "cpu",
            "inventory" if node.device_memory_gib else "cluster",
        )
        for node in nodes
        if node.name not in measured and (figure := node.device_memory_gib or cluster)
    ]
    if read or configured:
        return min([*read, *configured], key=lambda m: m.bytes)
    local = settings.cluster.scheduler == "local"
    if cluster:
        return NodeMemory(
            round(cluster * GIB), "this machine" if local else "each node", device_label(device, None), device == "cpu"
        )
    if local and device == "cpu":
        return NodeMemory(host_memory_bytes(), "this machine", "host memory", True, "this machine")
    return None


def plan_label(strategy: ParallelismStrategy) -> str:
    """How a plan's sentences name the strategy: 'single-device reference', 'TP-2 in one node'."""
    return "single-device reference" if strategy.kind == "reference" else strategy.label(strategy.shape())


def plan_memory(
    strategies: Sequence[ParallelismStrategy], prompts: Sequence[str], memory: NodeMemory | None, local: bool
) -> dict[str, MemoryPlan]:
    """Each strategy's plan, by strategy id: the model's shape from its config.json, the longest of `prompts`
    plus max_new_tokens for every row (unchecked for a model folder without one); `local`: every rank of a
    strategy runs on this machine (the local scheduler), so on a CPU they all share its memory."""
    plans: dict[str, MemoryPlan] = {}
    for strategy in strategies:
        s, config = strategy.settings, strategy.config()
        if not (Path(s.model_path) / "config.json").is_file():  # the runtime names it; nothing to plan from
            plans[strategy.strategy_id] = MemoryPlan("unchecked", s.batch_size)
            continue
        model = read_model_shape(Path(s.model_path))
        work = Workload(s.batch_size, config.micro_batches_in_flight, longest_prompt_tokens(prompts), s.max_new_tokens)
        label = plan_label(strategy)
        per_host = strategy.world_size if local else strategy.gpus_per_node
        device = _device_kind(s.device)
        plans[strategy.strategy_id] = plan_strategy(
            label,
            model,
            (strategy.tp_size, strategy.pp_size),
            work,
            s.precision,
            device,
            memory,
            per_host,
            s.quant_group_size,
        )
    return plans


def _device_kind(device: str) -> str:
    """The sweep's device as the estimate takes it: "auto" is planned as a GPU (CUDA)."""
    return "cuda" if device == "auto" else device

"""Where the time goes: each strategy's prefill and decode predicted from the hardware, as parts one can name.

A forward pass on a rank costs a fixed overhead (framework dispatch, kernel launches) plus its share of the work:
decode reads every weight and the KV cache once per token, t_mem(X) = X / (eta * B_mem); prefill is matrix work,
2 FLOPs per parameter per prompt token plus attention's 4 L T^2 d per sequence, at F FLOP/s. Communication is the
alpha-beta model: all-reduce AR(m, N) = 2(N-1) alpha + 2(N-1)/N * m / beta, point-to-point P2P(m) = alpha + m/beta.

One stage's turn on one micro-batch (a *slot*) is its 1/(tp * pp) of the work, 2L/pp all-reduces of the
activations over its TP group and one hand-on to the next stage:
- TP-N: slot = t_mem((W + KV) / N) + 2L * AR(m, N); one slot per token.
- PP-N: slot = t_mem((W + KV) / N) + P2P(m); a token passes all N stages (the last hands the token back to the
  first), so a round takes max(micro-batches, N) slots: only micro-batches in flight fill the stages.
- Hybrid, TP-t in each node and PP-p across nodes: both, per slot.
A prefill of `mb` micro-batches through p stages takes p + mb - 1 slots (the pipeline fills).

At int8/int4 weight-only a pass may also dequantize the weights a rank holds (WeightOnlyLinear rebuilds each
dense weight per call): Q / (tp * pp) weights at the rate D the reference measured, t_dq = Q / (tp * pp) / D, a
cost that splits with the weights, unlike the per-pass overhead. Every prefill pays it; a decode step pays it
unless it reads the codes through the CPU kernel (the reference says which: `decode_dequantizes`). On a CPU it
is elementwise work on small tensors, which gains little from threads: a rank's rate D follows its threads
(`dequant_rate`), so two one-thread TP ranks on a 2-core host dequantize their halves side by side.

Ranks on one CPU host share its cores and memory: each gets 1/k of the host's rate when k of them are busy at once
(more ranks than cores also stretch the overhead). An accelerator belongs to its rank alone. The rates and
overheads are fitted from the single-device reference; alpha and beta come from the strategy's own link timings,
each named by the interface it crossed between hosts (two strategies over different links each get their own).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from runtime.model_shape import ModelShape

GB = 1e9
OVERHEAD, COMPUTE, MEMORY, DEQUANT, LATENCY, BANDWIDTH = (
    "per-pass overhead",
    "compute",
    "memory bandwidth",
    "dequantization",
    "link latency",
    "link bandwidth",
)
PARTS = (OVERHEAD, COMPUTE, MEMORY, DEQUANT, LATENCY, BANDWIDTH)
PHASES = ("prefill", "decode")  # a slot's phase: the prompt's pass, or one token's

# Peak memory bandwidth (bytes/s) of devices this project meets, by a fragment of the device's name (first match
# wins, so the more specific comes first); an inventory's `memory_bandwidth_gbps` wins over the table.
KNOWN_MEMORY_BANDWIDTH_BPS: dict[str, float] = {
    "a770": 560 * GB,  # Intel Arc A770 16 GB
    "ryzen ai max": 256 * GB,  # AMD Ryzen AI Max+ 395, LPDDR5X-8000
    "gh200": 4000 * GB,
    "h100 pcie": 2000 * GB,
    "h100 nvl": 3900 * GB,
    "h100": 3350 * GB,  # SXM, HBM3
    "h200": 4800 * GB,
    "a100-sxm4-40gb": 1555 * GB,
    "a100-pcie-40gb": 1555 * GB,
    "a100": 2039 * GB,  # 80 GB
    "4090": 1008 * GB,
}


def known_memory_bandwidth(device_name: str) -> float | None:
    """The table's peak bandwidth for a device name ("NVIDIA H100 80GB HBM3" -> 3.35 TB/s), None if unknown."""
    name = device_name.lower()
    return next((bps for fragment, bps in KNOWN_MEMORY_BANDWIDTH_BPS.items() if fragment in name), None)


@dataclass(frozen=True)
class Comm:
    """Communication time in the alpha-beta model's two parts: latency (alpha terms) and transfer (m / beta)."""

    latency_s: float
    transfer_s: float

    @property
    def total_s(self) -> float:
        return self.latency_s + self.transfer_s

    def __add__(self, other: Comm) -> Comm:
        return Comm(self.latency_s + other.latency_s, self.transfer_s + other.transfer_s)

    def __mul__(self, times: float) -> Comm:
        return Comm(self.latency_s * times, self.transfer_s * times)


NO_COMM = Comm(0.0, 0.0)


@dataclass(frozen=True)
class Link:
    """One hop in the alpha-beta model: alpha the latency of a message (s), beta the bandwidth (bytes/s)."""

    name: str
    alpha_s: float
    beta_Bps: float

    def p2p(self, message_bytes: float) -> Comm:
        return Comm(self.alpha_s, message_bytes / self.beta_Bps)

    def all_reduce(self, message_bytes: float, ranks: int) -> Comm:
        """Ring all-reduce: 2(N-1) steps, each moving m/N bytes; nothing to do for one rank."""
        if ranks <= 1:
            return NO_COMM
        return Comm(2 * (ranks - 1) * self.alpha_s, 2 * (ranks - 1) / ranks * message_bytes / self.beta_Bps)


# Interface name prefixes -> the kind of link the report names: thunderbolt_net's interfaces are thunderbolt<N>.
LINK_KINDS = {"thunderbolt": "usb4"}


def link_label(interface: str) -> str:
    """How the report names a network interface: `usb4 (thunderbolt0)`, or the interface alone (`eth0`)."""
    kind = next((kind for prefix, kind in LINK_KINDS.items() if interface.startswith(prefix)), None)
    return f"{kind} ({interface})" if kind else interface


# For what-ifs only: nominal line rates and typical small-message latencies through a kernel TCP stack; a sweep's
# own figures come from the ranks' link timings.
NOMINAL_LINKS: dict[str, Link] = {
    "1gbe": Link("1 GbE", 50e-6, 1e9 / 8),
    "2.5gbe": Link("2.5 GbE", 40e-6, 2.5e9 / 8),
    "10gbe": Link("10 GbE", 20e-6, 10e9 / 8),
    "usb4": Link("USB4 (40 Gb/s)", 20e-6, 40e9 / 8),
}


@dataclass(frozen=True)
class ModelCost:
    """A model as the formulas see it: its shape and, at the run's precision, a linear weight's bytes (its share
    of the quantization scales included), an activation's (a KV value's, an unquantized weight's), and whether
    each pass dequantizes its linear weights (int8/int4 weight-only: WeightOnlyLinear rebuilds every dense
    weight on every call, a cost per weight held that no byte count shows)."""

    shape: ModelShape
    bytes_per_element: float = 2
    activation_bytes: float | None = None  # None: as the weights'
    dequantizes: bool = False
    decode_dequantizes: bool = True  # with `dequantizes`: one-token steps too (not where a kernel reads the codes)

    @property
    def layers(self) -> int:
        return self.shape.num_layers

    @property
    def element_bytes(self) -> float:
        return self.bytes_per_element if self.activation_bytes is None else self.activation_bytes

    @property
    def weight_bytes(self) -> float:
        """W: every weight read for one token (embedding lookups aside)."""
        return self.shape.weight_bytes_per_token(self.bytes_per_element, self.element_bytes)

    def dequantized_weights(self, phase: str) -> int:
        """Weights one pass of `phase` ("prefill", "decode") dequantizes: every linear of the decoder layers and
        the LM head, or none."""
        dequantizes = self.dequantizes and (phase == "prefill" or self.decode_dequantizes)
        return self.shape.quantized_params if dequantizes else 0

    @property
    def kv_bytes_per_token(self) -> float:
        return self.shape.kv_bytes_per_token(self.element_bytes)

    def decode_bytes(self, batch: int, context: float) -> float:
        """Bytes one decode step reads: the weights once, and every sequence's KV cache."""
        return self.weight_bytes + self.kv_bytes_per_token * batch * context

    def prefill_flops(self, batch: int, width: int) -> float:
        """FLOPs of a prefill of `batch` prompts padded to `width` tokens: the matrix products and attention's
        scores and weighted sum over the whole (masked, not skipped) square."""
        parameters = self.shape.weight_bytes_per_token(1)
        attention = 4 * self.layers * width**2 * self.shape.attention_width
        return batch * (2 * parameters * width + attention)

    def message_bytes(self, batch: int, tokens: int) -> float:
        """One activation message: `tokens` hidden states of every sequence."""
        return batch * tokens * self.shape.hidden_size * self.element_bytes


@dataclass(frozen=True)
class Rate:
    """A device at one phase: a pass costs `overhead_s` plus its work (bytes for decode, FLOPs for prefill) at
    `per_s` per second."""

    overhead_s: float
    per_s: float
    separated: bool = True  # told apart by passes of different sizes; False: split by an assumption

    def time(self, work: float) -> float:
        return self.overhead_s + work / self.per_s


def fit_rate(works: Sequence[float], seconds: Sequence[float], ceiling: float | None = None) -> Rate:
    """t = a + work / r by least squares over measured passes, a >= 0. Where the passes cannot separate the two
    (one size of pass, or a negative intercept), the device is taken to work at `ceiling` (a measured peak) and
    the rest of the time is overhead; with no ceiling the line goes through the origin."""
    n = len(works)
    if n == 0 or len(seconds) != n:
        raise ValueError("fit_rate needs as many passes as timings, at least one")
    mean_w, mean_t = sum(works) / n, sum(seconds) / n
    spread = sum((w - mean_w) ** 2 for w in works)
    slope = sum((w - mean_w) * (t - mean_t) for w, t in zip(works, seconds, strict=True)) / spread if spread else 0.0
    intercept = mean_t - slope * mean_w
    if spread and intercept >= 0 and slope > 0:
        return Rate(intercept, 1 / slope)
    if ceiling:
        rate = max(ceiling, sum(works) / sum(seconds))  # faster than the "peak": the peak was underestimated
        return Rate(max(mean_t - mean_w / rate, 0.0), rate, separated=False)
    return Rate(0.0, sum(works) / sum(seconds), False) if sum(works) else Rate(mean_t, math.inf, False)


@dataclass(frozen=True)
class Hardware:
    """What the reference's device does per pass, fitted, and whether ranks share it (a CPU host's cores)."""

    decode: Rate
    prefill: Rate
    cpu_cores: int | None = None  # a CPU host's cores; None for an accelerator, one per rank
    # int8/int4: weights the reference's rank dequantized per second with all its threads, and with one
    dequant_per_s: float | None = None
    dequant_one_cpu_per_s: float | None = None


def dequant_s(model: ModelCost, phase: str, per_s: float | None, share: float = 1.0) -> float:
    """Seconds a pass spends dequantizing `share` of the model's quantized weights at `per_s` weights a second;
    0 where it has none, or no rate was measured."""
    return model.dequantized_weights(phase) * share / per_s if per_s else 0.0


@dataclass(frozen=True)
class Placement:
    """A strategy on the cluster: its shape, what shares a host, and the links its traffic crosses."""

    tp: int
    pp: int
    micro_batches: int = 1  # in flight per pipeline
    ranks_per_host: int = 1
    tp_link: Link | None = None  # None where tp is 1
    pp_link: Link | None = None  # None where pp is 1


@dataclass(frozen=True)
class Breakdown:
    """Predicted seconds per part of the time (PARTS)."""

    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        return sum(self.seconds.values())

    def __add__(self, other: Breakdown) -> Breakdown:
        return Breakdown({p: self.seconds.get(p, 0.0) + other.seconds.get(p, 0.0) for p in PARTS})

    def __mul__(self, times: float) -> Breakdown:
        return Breakdown({p: s * times for p, s in self.seconds.items()})

    def share(self, part: str) -> float:
        return self.seconds.get(part, 0.0) / self.total_s if self.total_s else 0.0

    @property
    def comm_share(self) -> float:
        return self.share(LATENCY) + self.share(BANDWIDTH)

    @property
    def bottleneck(self) -> str:
        """The part that takes the most time."""
        return max(PARTS, key=lambda p: self.seconds.get(p, 0.0))


def busy_per_host(where: Placement) -> int:
    """Ranks of one host working at once in steady state: the active stage's TP group, times as many of the
    host's stages as there are micro-batches in flight to keep them busy, never more than the host holds."""
    stages_here = max(1, where.ranks_per_host // where.tp)
    return min(where.ranks_per_host, where.tp * min(where.micro_batches, stages_here))


def dequant_rate(hw: Hardware, where: Placement) -> float | None:
    """Weights a rank dequantizes per second. On a CPU host each rank computes with cores / ranks_per_host
    threads (runtime/rank.py), and small elementwise work does not speed up with threads as reading memory does:
    between the reference's one-thread and all-thread rates by its threads (without a one-thread figure, as if
    threads scaled perfectly), time-shared where the busy ranks' threads outnumber the cores. An accelerator's
    rate is its own."""
    if not hw.dequant_per_s or not hw.cpu_cores:
        return hw.dequant_per_s
    cores, every = hw.cpu_cores, hw.dequant_per_s
    one = hw.dequant_one_cpu_per_s or every / cores
    threads = max(1, cores // where.ranks_per_host)
    rate = one + (every - one) * (threads - 1) / (cores - 1) if cores > 1 else one
    return rate * min(1.0, cores / (busy_per_host(where) * threads))


def slot(model: ModelCost, hw: Hardware, where: Placement, phase: str, batch: int, tokens: int) -> Breakdown:
    """One stage's turn on one micro-batch of `batch` sequences: its 1/(tp*pp) of the work, 2L/pp all-reduces over
    its TP group, one hand-on. Prefill: `tokens` is the padded prompt width; decode: the mean context."""
    busy = busy_per_host(where)
    share, stretch = (busy, max(1.0, busy / hw.cpu_cores)) if hw.cpu_cores else (1.0, 1.0)
    if phase == "prefill":
        rate, part, work, message = hw.prefill, COMPUTE, model.prefill_flops(batch, tokens), (batch, tokens)
    else:
        rate, part, work, message = hw.decode, MEMORY, model.decode_bytes(batch, tokens), (batch, 1)
    m = model.message_bytes(*message)
    comm = NO_COMM
    if where.tp_link and where.tp > 1:
        comm = comm + where.tp_link.all_reduce(m, where.tp) * (2 * model.layers / where.pp)
    if where.pp_link and where.pp > 1:
        comm = comm + where.pp_link.p2p(m)
    return Breakdown(
        {
            OVERHEAD: rate.overhead_s / where.pp * stretch,
            part: work / (where.tp * where.pp) * share / rate.per_s,
            DEQUANT: dequant_s(model, phase, dequant_rate(hw, where), 1 / (where.tp * where.pp)),
            LATENCY: comm.latency_s,
            BANDWIDTH: comm.transfer_s,
        }
    )


@dataclass(frozen=True)
class BatchTime:
    prefill: Breakdown  # to the first token
    decode: Breakdown  # every later token

    @property
    def total(self) -> Breakdown:
        return self.prefill + self.decode


def batch_time(
    model: ModelCost, hw: Hardware, where: Placement, micro_batches: Sequence[Sequence[int]], new_tokens: int
) -> BatchTime:
    """One batch, given as micro-batches of prompt lengths (each left-padded to its longest), generating
    `new_tokens` tokens: the prefill fills the pipeline, then each round moves every micro-batch one token."""
    count = len(micro_batches)
    steps = max(new_tokens - 1, 0)

    def mean_slot(phase: str, tokens: Sequence[float]) -> Breakdown:
        slots = [slot(model, hw, where, phase, len(mb), t) for mb, t in zip(micro_batches, tokens, strict=True)]
        return sum(slots, Breakdown()) * (1 / count)

    widths = [max(mb) for mb in micro_batches]
    prefill = mean_slot("prefill", widths) * (where.pp + count - 1)
    decode = mean_slot("decode", [w + new_tokens / 2 for w in widths]) * (max(count, where.pp) * steps)
    return BatchTime(prefill, decode)

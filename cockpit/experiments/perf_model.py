"""Where the time goes: each strategy's decode and prefill time predicted from the hardware.

A decoder at small batch reads every weight (and its KV cache) once per token, so a token costs
t_mem(X) = X / (eta * B_mem) for the X bytes a rank reads, plus communication in the alpha-beta model:
all-reduce AR(m, N) = 2(N-1) alpha + 2(N-1)/N * m / beta, point-to-point P2P(m) = alpha + m / beta.
- TP-N: t = t_mem((W + KV) / N) + 2L * AR(m, N) (one all-reduce after attention, one after the MLP, per layer).
- PP-N: t = t_mem(W + KV) + (N-1) * P2P(m): stages run one after the other for one token; only micro-batches in
  flight turn the N stages into throughput.
- Hybrid, TP-t in each node and PP-p across nodes: t = t_mem((W + KV) / t) + 2L * AR(m, t) + (p-1) * P2P(m).
Prefill is the same with the prompt's tokens in each message and compute, not memory, bounding the matrix work.
eta is fitted per device from the single-device run; alpha and beta come from the runtime's microbenchmark.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cockpit.experiments.strategies import Shape

GB = 1e9

# Peak memory bandwidth (bytes/s) of devices this project meets; an inventory's `memory_bandwidth_Bps` wins.
KNOWN_MEMORY_BANDWIDTH_BPS: dict[str, float] = {
    "intel-arc-a770": 560 * GB,
    "amd-ryzen-ai-max-395": 256 * GB,
    "nvidia-h100-sxm": 3350 * GB,
    "nvidia-h100-pcie": 2000 * GB,
    "nvidia-h200": 4800 * GB,
    "nvidia-a100-80gb": 2039 * GB,
    "nvidia-rtx-4090": 1008 * GB,
}


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
            return Comm(0.0, 0.0)
        return Comm(2 * (ranks - 1) * self.alpha_s, 2 * (ranks - 1) / ranks * message_bytes / self.beta_Bps)


# For what-ifs only, nominal line rates and typical small-message latencies through a kernel TCP stack; a sweep's
# own figures come from the runtime's microbenchmark.
NOMINAL_LINKS: dict[str, Link] = {
    "1gbe": Link("1 GbE", 50e-6, 1e9 / 8),
    "2.5gbe": Link("2.5 GbE", 40e-6, 2.5e9 / 8),
    "10gbe": Link("10 GbE", 20e-6, 10e9 / 8),
    "usb4": Link("USB4 (40 Gb/s)", 20e-6, 40e9 / 8),
}


@dataclass(frozen=True)
class Device:
    """What bounds one rank's own work: memory bandwidth (with eta, the share a decoder reaches) and compute."""

    name: str
    memory_bandwidth_Bps: float
    efficiency: float = 1.0  # eta
    flops: float | None = None  # sustained matrix FLOP/s; None: prefill bounded by memory alone

    def read_time(self, nbytes: float) -> float:
        return nbytes / (self.efficiency * self.memory_bandwidth_Bps)


@dataclass(frozen=True)
class ModelShape:
    """The bytes and sizes the model is made of, as the formulas need them."""

    layers: int
    hidden_size: int
    weight_bytes: float  # W: every weight, once
    kv_bytes_per_token: float  # K and V of one token in every layer
    bytes_per_element: int = 2

    @property
    def parameters(self) -> float:
        return self.weight_bytes / self.bytes_per_element


@dataclass(frozen=True)
class Placement:
    """A strategy on the cluster: its shape and the links its TP group and its stage boundaries use."""

    shape: Shape
    tp_link: Link | None  # None where TP is 1
    pp_link: Link | None  # None where PP is 1


@dataclass(frozen=True)
class Prediction:
    """Time of one step (a decode token or a prefill): a rank's own work, bound by memory or compute, and its
    communication."""

    work_s: float
    comm: Comm
    work_bound: str = "memory bandwidth"  # or "compute"

    @property
    def total_s(self) -> float:
        return self.work_s + self.comm.total_s

    @property
    def comm_share(self) -> float:
        return self.comm.total_s / self.total_s if self.total_s else 0.0

    @property
    def bottleneck(self) -> str:
        """What limits the step most: memory bandwidth, compute, link latency or link bandwidth."""
        parts = {
            self.work_bound: self.work_s,
            "link latency": self.comm.latency_s,
            "link bandwidth": self.comm.transfer_s,
        }
        return max(parts, key=parts.__getitem__)


def placement(shape: Shape, gpus_per_node: int, intra: Link, inter: Link) -> Placement:
    """Which link each kind of traffic crosses: TP inside a node when its group fits there, stages across nodes
    when there is more than one node."""
    tp_nodes = max(1, shape.nodes // shape.pp)
    tp_link = None if shape.tp == 1 else inter if tp_nodes > 1 and shape.tp > gpus_per_node else intra
    pp_link = None if shape.pp == 1 else inter if shape.nodes > 1 else intra
    return Placement(shape, tp_link, pp_link)


def decode_step(model: ModelShape, where: Placement, device: Device, batch: int, context: int) -> Prediction:
    """One decode step for `batch` sequences at `context` tokens each: every rank reads its share of the
    weights and the KV cache; TP all-reduces the activations 2L times, PP hands them on p-1 times."""
    read = (model.weight_bytes + model.kv_bytes_per_token * context * batch) / where.shape.tp
    message = batch * model.hidden_size * model.bytes_per_element
    return Prediction(device.read_time(read), _comm(model, where, message))


def prefill(model: ModelShape, where: Placement, device: Device, batch: int, prompt: int) -> Prediction:
    """The prompt's forward pass: the weights are read once, the matrix work is 2 FLOPs per parameter per token
    (on each rank, its 1/tp share); messages carry every prompt token."""
    tp = where.shape.tp
    read = device.read_time(model.weight_bytes / tp)
    compute = 2 * model.parameters * batch * prompt / tp / device.flops if device.flops else 0.0
    message = batch * prompt * model.hidden_size * model.bytes_per_element
    bound = "compute" if compute > read else "memory bandwidth"
    return Prediction(max(read, compute), _comm(model, where, message), bound)


def _comm(model: ModelShape, where: Placement, message_bytes: float) -> Comm:
    tp, pp = where.shape.tp, where.shape.pp
    none = Comm(0.0, 0.0)
    all_reduces = where.tp_link.all_reduce(message_bytes, tp) * (2 * model.layers) if where.tp_link else none
    hand_offs = where.pp_link.p2p(message_bytes) * (pp - 1) if where.pp_link else none
    return all_reduces + hand_offs


def fit_efficiency(model: ModelShape, device: Device, seconds_per_token: float, batch: int, context: int) -> Device:
    """The device with eta fitted to a measured single-device decode step (no communication in it)."""
    ideal = decode_step(model, Placement(Shape(1, 1, 1), None, None), replace(device, efficiency=1.0), batch, context)
    return replace(device, efficiency=ideal.work_s / seconds_per_token)


def tokens_per_s(step: Prediction, batch: int, micro_batches_in_flight: int = 1, stages: int = 1) -> float:
    """Generated tokens per second: `batch` tokens per step; with micro-batches in flight a pipeline overlaps up
    to `stages` of them, so its steady state is bounded by one stage's share of the step."""
    overlap = min(micro_batches_in_flight, stages)
    return batch * overlap / step.total_s if step.total_s else 0.0

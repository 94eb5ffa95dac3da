"""A run's strategies measured against the performance model (perf_model): predicted and measured tokens/s, the
bottleneck in words, the measured split of each rank's time, and what-ifs on other links and more nodes.

The model is fitted to the run itself: the reference's batches give the device's rate and overhead per pass (its
prefill and decode timings, against the FLOPs and bytes each pass needed), each strategy's ranks timed their own
links before decoding, and its placement (ranks per host) comes from the ranks' host names. Nothing of a
strategy's own decoding goes into its prediction.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cockpit.analysis import performance_model as pm
from cockpit.analysis.spread import Spread, json_list, spread
from cockpit.analysis.stragglers import straggler
from cockpit.errors import BAD_INPUT, BadInput
from cockpit.sweep.memory import read_model_shape
from cockpit.sweep.strategies import STRATEGIES, Shape, SweepSettings
from runtime.contract import QUANTIZED
from runtime.model_shape import activation_bytes, weight_bytes_per_param
from runtime.prompts import split_evenly

REFERENCE = "reference"
WHAT_IF_LINKS = ("1gbe", "2.5gbe", "10gbe", "usb4")
SPLIT_PARTS = ("compute_s", "comm_s", "idle_s")
WITHIN_MODEL = (0.5, 2.0)  # measured over predicted tokens/s outside this: the model misses something


def model_cost(
    model_path: str | Path, precision: str, device: str = "cpu", group_size: int | None = None
) -> pm.ModelCost:
    """The model's shape from its config.json and its bytes at `precision`: int8/int4 weights with their scales
    (groups of `group_size`, else the model's default, as the runtime picks them) and dequantized every pass;
    activations and the KV cache in the compute dtype (int8/int4: fp32 on a CPU, 16 bits on an accelerator)."""
    shape = read_model_shape(Path(model_path))
    quantized = precision in QUANTIZED
    group = (group_size or shape.default_group_size()) if quantized else None
    if quantized and group is None:
        raise BadInput(f"{model_path}: no group size fits the model's layer widths, so it cannot run at {precision}")
    return pm.ModelCost(
        shape,
        weight_bytes_per_param(precision, device, group),
        activation_bytes(precision, device),
        dequantizes=quantized,
    )


@dataclass(frozen=True)
class Batch:
    """One batch as the runtime ran it: micro-batches of prompt lengths, tokens generated, and the timings its
    rows carry (seconds to the first token, to the last)."""

    micro_batches: list[list[int]]
    new_tokens: int
    ttft_s: float
    latency_s: float

    @property
    def prompt_lengths(self) -> list[int]:
        return [n for mb in self.micro_batches for n in mb]

    def recut(self, micro_batches: int) -> Batch:
        """The same prompts cut into another number of micro-batches."""
        lengths = self.prompt_lengths
        return dataclasses.replace(self, micro_batches=split_evenly(lengths, min(micro_batches, len(lengths))))


def batches(rows: pd.DataFrame, micro_batches: int) -> list[Batch]:
    """A strategy's rows regrouped into its batches, cut into micro-batches as runtime.generate cuts them."""
    out = []
    for _, group in rows.sort_values(["batch_index", "variant", "prompt_id"]).groupby("batch_index", sort=True):
        whole = Batch(
            micro_batches=[[int(n) for n in group["prompt_tokens"]]],
            new_tokens=int(group["tokens_generated"].max()),
            ttft_s=float(group["ttft_ms"].min()) / 1000,
            latency_s=float(group["latency_ms"].max()) / 1000,
        )
        out.append(whole.recut(micro_batches))
    return out


def fit_hardware(
    model: pm.ModelCost,
    reference: list[Batch],
    cpu_cores: int | None,
    memory_bandwidth_Bps: float | None = None,
    dequant_per_s: float | None = None,
    dequant_one_cpu_per_s: float | None = None,
) -> pm.Hardware:
    """The reference device's rates: its prefills (time to first token) against their FLOPs, its decode steps
    against the bytes each read (no faster than the measured memory bandwidth, when known); at int8/int4 each
    pass less its dequantization at the rate the reference measured, which the model adds back per strategy."""
    prefill_dequant_s, decode_dequant_s = (pm.dequant_s(model, phase, dequant_per_s) for phase in pm.PHASES)
    prefill = [
        (model.prefill_flops(len(b.micro_batches[0]), max(b.micro_batches[0])), b.ttft_s - prefill_dequant_s)
        for b in reference
    ]
    decode = [
        (
            model.decode_bytes(len(b.micro_batches[0]), max(b.micro_batches[0]) + b.new_tokens / 2),
            (b.latency_s - b.ttft_s) / (b.new_tokens - 1) - decode_dequant_s,
        )
        for b in reference
        if b.new_tokens > 1
    ]
    no_decode = pm.Rate(0.0, math.inf)
    return pm.Hardware(
        decode=pm.fit_rate(*zip(*decode, strict=True), ceiling=memory_bandwidth_Bps) if decode else no_decode,
        prefill=pm.fit_rate(*zip(*prefill, strict=True)),
        cpu_cores=cpu_cores,
        dequant_per_s=dequant_per_s,
        dequant_one_cpu_per_s=dequant_one_cpu_per_s,
    )


def measured_links(metrics_row: pd.Series) -> dict[str, dict]:
    """The strategy's own link timings by operation ("all_reduce", "send_recv")."""
    return {fit["op"]: fit for fit in json.loads(metrics_row.get("links") or "[]")}


def timed_link(fit: dict | None) -> pm.Link | None:
    """A timed link for the model, named by what carried it and, across hosts, the interface it crossed."""
    if not fit:
        return None
    over = f" over {pm.link_label(fit['interface'])}" if fit.get("interface") else ""
    return pm.Link(fit["impl"] + over, fit["alpha_s"], fit["beta_Bps"])


@dataclass(frozen=True)
class StrategyPerformance:
    """One strategy: prediction, measurement, and what limits it."""

    strategy: str
    kind: str
    label: str
    tokens: int
    predicted: pm.Breakdown  # the whole run's time, by part
    predicted_ttft_s: float
    measured_wall_s: float | None
    measured_ttft_s: float | None
    measured_split: dict[str, float] | None  # share of a rank's wall time: compute_s, comm_s, idle_s
    sentence: str
    what_if: dict[str, float]  # "<link> x<nodes>" -> predicted tokens/s
    oversubscribed: bool = False  # its ranks wait for CPU time on a host (see `contention`): outside the model
    measured_spread: Spread | None = None  # tokens/s over the timed passes, where there were several

    @property
    def predicted_tokens_per_s(self) -> float:
        return self.tokens / self.predicted.total_s if self.predicted.total_s else math.nan

    @property
    def measured_tokens_per_s(self) -> float:
        return self.tokens / self.measured_wall_s if self.measured_wall_s else math.nan

    @property
    def ratio(self) -> float:
        """Measured over predicted tokens/s: above 1, faster than the model says."""
        return self.measured_tokens_per_s / self.predicted_tokens_per_s

    @property
    def ratio_interval(self) -> tuple[float, float]:
        """The ratio at both ends of the measurement's 95% interval; the ratio itself without a spread."""
        spread = self.measured_spread
        if spread is None or not spread.measured or math.isnan(self.predicted_tokens_per_s):
            return self.ratio, self.ratio
        return spread.low / self.predicted_tokens_per_s, spread.high / self.predicted_tokens_per_s

    @property
    def explained(self) -> bool:
        """Whether the measurement, within its spread, reaches WITHIN_MODEL of the prediction (an unknown ratio
        does not)."""
        low, high = self.ratio_interval
        return low <= WITHIN_MODEL[1] and high >= WITHIN_MODEL[0]


@dataclass(frozen=True)
class Performance:
    """A run's strategies against the model, with the fitted device in words."""

    hardware: str
    strategies: list[StrategyPerformance]
    skipped: list[str]  # strategies with no prediction, and why

    def table(self) -> pd.DataFrame:
        """One row per strategy: predicted and measured tokens/s and TTFT, their ratio, the shares of time."""
        return pd.DataFrame(
            [
                {
                    "strategy": s.strategy,
                    "kind": s.kind,
                    "predicted_tokens_per_s": s.predicted_tokens_per_s,
                    "measured_tokens_per_s": s.measured_tokens_per_s,
                    "ratio": s.ratio,
                    "ratio_low": s.ratio_interval[0],
                    "ratio_high": s.ratio_interval[1],
                    "predicted_ttft_ms": s.predicted_ttft_s * 1000,
                    "measured_ttft_ms": (s.measured_ttft_s or math.nan) * 1000,
                    "predicted_comm_share": s.predicted.comm_share,
                    **{
                        f"measured_{k.removesuffix('_s')}_share": (s.measured_split or {}).get(k, math.nan)
                        for k in SPLIT_PARTS
                    },
                    "bottleneck": s.predicted.bottleneck,
                    "oversubscribed": s.oversubscribed,
                }
                for s in self.strategies
            ]
        )

    def what_if_table(self) -> pd.DataFrame:
        """Predicted tokens/s per strategy (rows) on each nominal link at the sweep's nodes and twice as many; and,
        where a rank straggles, the measured tokens/s without it (WITHOUT_STRAGGLER)."""
        return pd.DataFrame([{"strategy": s.strategy, **s.what_if} for s in self.strategies])


def for_run(
    rows: pd.DataFrame,
    metrics: pd.DataFrame | None,
    settings: SweepSettings,
    peaks: Mapping[str, float] | None = None,
) -> Performance | str:
    """`analyse` for a sweep's tables, or why there is no analysis (never raises on a bad model folder)."""
    if metrics is None or metrics.empty:
        return "no prediction: no strategy's metrics are collected"
    try:
        model = model_cost(settings.model_path, settings.precision, settings.device, settings.quant_group_size)
    except BAD_INPUT as err:
        return f"no prediction: {err}"
    return analyse(rows, metrics, settings, model, peaks)


def measured_split(row: pd.Series) -> dict[str, float] | None:
    """A rank's shares of compute, comm and idle: from its timers over the whole run (CPUs), else from its profiled
    window (devices, whose work the timers cannot see; there waiting on a neighbour stage counts as comm and idle
    is the host's own gaps)."""
    wall = row.get("wall_time_s")
    values = [row.get(k) for k in SPLIT_PARTS]
    if wall and all(pd.notna(v) for v in values):
        return {k: float(v) / wall for k, v in zip(SPLIT_PARTS, values, strict=True)}
    comm, idle = row.get("profiled_comm_share"), row.get("profiled_idle_share")
    if pd.notna(comm) and pd.notna(idle):
        return {"compute_s": max(0.0, 1.0 - comm - idle), "comm_s": float(comm), "idle_s": float(idle)}
    return None


def contention(hw: pm.Hardware, where: pm.Placement) -> str | None:
    """Why the ranks of a CPU host wait for CPU time, which the model leaves out: more busy ranks than CPUs,
    or as many while their messages go through gloo, whose transport threads then find no free core (on this
    project's 2-CPU test VM, PP-2 with two micro-batches in flight ran 1.5x slower than with one)."""
    if not hw.cpu_cores:
        return None
    busy = pm.busy_per_host(where)
    if busy > hw.cpu_cores:
        return f"{busy} busy ranks on {hw.cpu_cores} CPUs: every message may wait for a descheduled partner"
    gloo = any(link.name.startswith("gloo") for link in (where.tp_link, where.pp_link) if link)
    if gloo and busy == hw.cpu_cores:
        return f"{busy} busy ranks on {hw.cpu_cores} CPUs leave no core for gloo's transport threads"
    return None


def _predict(model: pm.ModelCost, hw: pm.Hardware, where: pm.Placement, runs: list[Batch]) -> list[pm.BatchTime]:
    return [pm.batch_time(model, hw, where, b.micro_batches, b.new_tokens) for b in runs]


def _sentence(
    name: str, what: str, total: pm.Breakdown, hw: pm.Hardware, where: pm.Placement, model: pm.ModelCost
) -> str:
    part = total.bottleneck
    share = total.share(part)
    if part == pm.LATENCY:
        per_token = []
        if where.tp > 1 and where.tp_link:
            each = where.tp_link.all_reduce(0, where.tp).latency_s
            per_token.append(f"{2 * model.layers} all-reduces per token at {each * 1e6:,.0f} us each")
        if where.pp > 1 and where.pp_link:
            per_token.append(f"{where.pp} hand-ons per token at {where.pp_link.alpha_s * 1e6:,.0f} us each")
        detail = " and ".join(per_token)
    elif part == pm.BANDWIDTH:
        links = [link for link in (where.tp_link, where.pp_link) if link]
        detail = "activations by " + ", ".join(f"{link.name} at {link.beta_Bps / 1e9:.2f} GB/s" for link in links)
    elif part == pm.COMPUTE:
        detail = f"prefill matrix work at {hw.prefill.per_s / 1e9:,.1f} GFLOP/s per device"
    elif part == pm.DEQUANT:
        passes = "every pass" if model.decode_dequantizes else "every prefill (decode steps read the codes)"
        detail = (
            f"{passes} dequantizes its {model.dequantized_weights('prefill') / (where.tp * where.pp) / 1e6:,.2f} M "
            f"weights at {(pm.dequant_rate(hw, where) or math.nan) / 1e9:,.2f} G/s each"
        )
    elif part == pm.MEMORY:
        detail = f"every decode step reads weights and KV cache at {hw.decode.per_s / 1e9:,.1f} GB/s"
    else:
        detail = f"{hw.decode.overhead_s * 1e3:.2f} ms per decode pass whatever its size (dispatch, launches)"
    shared = ""
    if hw.cpu_cores and where.ranks_per_host > 1:
        shared = f"; {where.ranks_per_host} ranks share one host's {hw.cpu_cores} CPUs"
    if why := contention(hw, where):
        shared += f"; {why}, which the model leaves out"
    return f"{name} ({what}) is {part}-bound, {share:.0%} of its predicted time: {detail}{shared}."


def analyse(
    rows: pd.DataFrame,
    metrics: pd.DataFrame,
    settings: SweepSettings,
    model: pm.ModelCost,
    peaks: Mapping[str, float] | None = None,
) -> Performance | str:
    """Every collected strategy against the model fitted to this run; a sentence saying why when there is
    nothing to fit (no reference collected). `peaks`: host name -> the inventory's peak memory bandwidth."""
    metrics = metrics.drop_duplicates("strategy", keep="last").set_index("strategy")
    by_strategy = dict(tuple(rows.groupby("strategy")))
    reference = metrics.index[metrics["strategy_kind"] == REFERENCE]
    if len(reference) != 1 or reference[0] not in by_strategy:
        return "no prediction: the reference strategy is not collected, and the model is fitted to it"
    ref_row = metrics.loc[reference[0]]
    decode_dequantizes = ref_row.get("decode_dequantizes")
    if decode_dequantizes is not None and pd.notna(decode_dequantizes) and not decode_dequantizes:
        model = dataclasses.replace(model, decode_dequantizes=False)  # its one-token steps read the codes (CPU)
    hw = _reference_hardware(model, ref_row, by_strategy[reference[0]])
    intra = _intra_node_links(metrics)
    skipped, out = [], []
    for name, row in metrics.iterrows():
        if name not in by_strategy:
            continue
        predicted = _strategy_performance(str(name), row, by_strategy[name], settings, model, hw, intra)
        if isinstance(predicted, str):
            skipped.append(predicted)
        else:
            out.append(predicted)
    return Performance(_hardware_sentence(ref_row, hw, peaks or {}), out, skipped)


def _reference_hardware(model: pm.ModelCost, ref_row: pd.Series, ref_rows: pd.DataFrame) -> pm.Hardware:
    """The device's rates and overheads, fitted to the reference's batches (its CPUs counted on a CPU host)."""
    cpu = str(ref_row.get("device") or "").startswith("cpu")
    cores = int(ref_row["host_cpus"]) if cpu and pd.notna(ref_row.get("host_cpus")) else None
    probe, dequant, one = (
        float(v) if v is not None and pd.notna(v) else None
        for v in (
            ref_row.get("memory_bandwidth_Bps"),
            ref_row.get("dequant_weights_per_s"),
            ref_row.get("dequant_one_cpu_weights_per_s"),
        )
    )
    return fit_hardware(model, batches(ref_rows, 1), cores, probe, dequant, one if cores else None)


def _intra_node_links(metrics: pd.DataFrame) -> dict[str, dict]:
    """op -> a fit measured inside one host by any strategy, for the what-ifs' in-node traffic."""
    intra: dict[str, dict] = {}
    for name in metrics.index:
        for op, fit in measured_links(metrics.loc[name]).items():
            if fit.get("intra_node"):
                intra.setdefault(op, fit)
    return intra


def _strategy_performance(
    name: str,
    row: pd.Series,
    rows_of: pd.DataFrame,
    settings: SweepSettings,
    model: pm.ModelCost,
    hw: pm.Hardware,
    intra: dict[str, dict],
) -> StrategyPerformance | str:
    """One strategy predicted and set beside its measurement; why not, when its ranks did not time a link it uses."""
    shape = Shape(int(row["tp_size"]), int(row["pp_size"]), int(row["num_nodes"]))
    links = measured_links(row)
    missing = [op for op, n in (("all_reduce", shape.tp), ("send_recv", shape.pp)) if n > 1 and op not in links]
    if missing:
        return f"{name}: no prediction, its ranks did not time their {' or '.join(missing)}"
    where = pm.Placement(
        tp=shape.tp,
        pp=shape.pp,
        micro_batches=int(row.get("micro_batches") or 1),
        ranks_per_host=int(row.get("ranks_per_host") or 1),
        tp_link=timed_link(links.get("all_reduce")),
        pp_link=timed_link(links.get("send_recv")),
    )
    runs = batches(rows_of, where.micro_batches)
    times = _predict(model, hw, where, runs)
    total = sum((t.total for t in times), pm.Breakdown())
    kind = str(row["strategy_kind"])
    what = STRATEGIES[kind].label(shape)
    ttfts = [t.prefill.total_s for t, b in zip(times, runs, strict=True) for _ in b.prompt_lengths]
    return StrategyPerformance(
        strategy=name,
        kind=kind,
        label=what,
        tokens=int(rows_of["tokens_generated"].sum()),
        predicted=total,
        predicted_ttft_s=statistics.median(ttfts),
        measured_wall_s=float(row["wall_time_s"]) if pd.notna(row.get("wall_time_s")) else None,
        measured_ttft_s=float(rows_of["ttft_ms"].median()) / 1000,
        measured_split=measured_split(row),
        sentence=_sentence(name, what, total, hw, where, model),
        oversubscribed=contention(hw, where) is not None,
        what_if=_what_if(kind, settings, model, hw, runs, links, intra)
        | _without_straggler(name, row, int(rows_of["tokens_generated"].sum())),
        measured_spread=spread(json_list(row.get("pass_tokens_per_s"))),
    )


WITHOUT_STRAGGLER = "without its straggler"


def _without_straggler(name: str, row: pd.Series, tokens: int) -> dict[str, float]:
    """The tokens/s the strategy would measure with every rank as fast as its peers' median, where one straggles
    (stragglers.py): its measured time less the straggler's excess compute."""
    found = straggler({**row.to_dict(), "strategy": name, "tokens_generated": tokens})
    return {WITHOUT_STRAGGLER: found.without_tokens_per_s} if found and found.without_tokens_per_s else {}


def _what_if(
    kind: str,
    settings: SweepSettings,
    model: pm.ModelCost,
    hw: pm.Hardware,
    runs: list[Batch],
    links: dict[str, dict],
    intra: dict[str, dict],
) -> dict[str, float]:
    """Predicted tokens/s with every node a separate host like the reference's, nodes joined by each nominal
    link, at the sweep's node count and at twice as many; traffic inside a node keeps the measured figures."""
    tokens = sum(len(b.prompt_lengths) * b.new_tokens for b in runs)
    in_node = {op: timed_link(links.get(op) or intra.get(op)) for op in ("all_reduce", "send_recv")}
    out = {}
    for nodes in (settings.nodes, 2 * settings.nodes):
        shape = STRATEGIES[kind](dataclasses.replace(settings, nodes=nodes)).shape()
        per_host = shape.tp * shape.pp // shape.nodes
        micro = shape.pp  # the runtime's default: as many micro-batches in flight as stages
        recut = [b.recut(micro) for b in runs]
        for key in WHAT_IF_LINKS:
            wire = pm.NOMINAL_LINKS[key]
            where = pm.Placement(
                tp=shape.tp,
                pp=shape.pp,
                micro_batches=micro,
                ranks_per_host=per_host,
                tp_link=wire if shape.tp > per_host else in_node["all_reduce"],
                pp_link=wire if shape.nodes > 1 else in_node["send_recv"],
            )
            total = sum((t.total for t in _predict(model, hw, where, recut)), pm.Breakdown())
            out[f"{wire.name} x{nodes}"] = tokens / total.total_s if total.total_s else math.nan
    return out


def peak_memory_bandwidth(ref: pd.Series, peaks: Mapping[str, float]) -> float | None:
    """The reference device's peak: the inventory's for its host, else the table's for its name, else the
    bandwidth its rank measured."""
    hosts = json.loads(ref.get("hostnames") or "[]")
    chosen = next((peaks[h] for h in hosts if h in peaks), None)
    chosen = chosen or pm.known_memory_bandwidth(str(ref.get("device_name") or ""))
    probe = ref.get("memory_bandwidth_Bps")
    return chosen or (float(probe) if probe is not None and pd.notna(probe) else None)


def _hardware_sentence(ref: pd.Series, hw: pm.Hardware, peaks: Mapping[str, float]) -> str:
    name = ref.get("device_name") or ref.get("device") or "the reference device"
    peak = peak_memory_bandwidth(ref, peaks)
    parts = [f"Reference device: {name}"]
    if hw.cpu_cores:
        parts.append(f"{hw.cpu_cores} CPUs")
    decode = f"decode reads at {hw.decode.per_s / 1e9:,.1f} GB/s"
    if peak and pd.notna(peak) and math.isfinite(hw.decode.per_s):
        decode += f" (eta {hw.decode.per_s / float(peak):.0%} of {float(peak) / 1e9:,.1f} GB/s)"
    if not hw.decode.separated:
        decode += ", assumed: its batches were too alike to tell the rate from the overhead"
    if hw.dequant_per_s:
        one = f" ({hw.dequant_one_cpu_per_s / 1e9:,.2f} G on one CPU)" if hw.dequant_one_cpu_per_s else ""
        parts.append(f"dequantizes {hw.dequant_per_s / 1e9:,.2f} G weights/s{one}")
    parts += [
        decode,
        f"prefill computes at {hw.prefill.per_s / 1e9:,.1f} GFLOP/s",
        f"overhead {hw.decode.overhead_s * 1e3:.2f} ms per decode pass, "
        f"{hw.prefill.overhead_s * 1e3:.1f} ms per prefill",
    ]
    return "; ".join(parts) + "."

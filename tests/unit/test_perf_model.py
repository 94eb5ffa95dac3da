"""The performance model's formulas against cases worked by hand (the arithmetic in the comments)."""

from __future__ import annotations

import math

import pytest

from cockpit.analysis.performance_model import (
    BANDWIDTH,
    COMPUTE,
    DEQUANT,
    KNOWN_MEMORY_BANDWIDTH_BPS,
    LATENCY,
    MEMORY,
    NO_COMM,
    NOMINAL_LINKS,
    OVERHEAD,
    PARTS,
    BatchTime,
    Breakdown,
    Comm,
    Hardware,
    Link,
    ModelCost,
    Placement,
    Rate,
    batch_time,
    busy_per_host,
    dequant_rate,
    fit_rate,
    known_memory_bandwidth,
    slot,
)
from runtime.model_shape import ModelShape

# A toy decoder small enough to work by hand: L=2, d=8, ffn 16, 2 query heads of 4, 1 KV head, vocab 10, bf16.
# Per layer: q = 2*4 = 8, kv = 1*4 = 4; h*q + 2*h*kv + q*h + 3*h*i + 2h = 64 + 64 + 64 + 384 + 16 = 592.
# Parameters: 2*592 + 8 (final norm) + 10*8 (lm head) = 1272; W = 1272 * 2 = 2544 bytes.
# K+V per token: 2 * 2 layers * 1 head * 4 * 2 bytes = 32 bytes.
TOY_CONFIG: dict[str, object] = {
    "num_hidden_layers": 2,
    "hidden_size": 8,
    "intermediate_size": 16,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 4,
    "vocab_size": 10,
}
TOY = ModelCost(ModelShape.from_config(TOY_CONFIG), bytes_per_element=2)

# Decode: 1 ms per pass + bytes at 1 MB/s; prefill: 2 ms per pass + FLOPs at 10 MFLOP/s.
GPU = Hardware(decode=Rate(1e-3, 1e6), prefill=Rate(2e-3, 1e7))
LINK = Link("test", alpha_s=1e-5, beta_Bps=1e8)  # 10 us, 100 MB/s


def parts(breakdown: Breakdown) -> dict[str, float]:
    """Every part's seconds, zero where the breakdown does not name it."""
    return {p: breakdown.seconds.get(p, 0.0) for p in PARTS}


def expect(**seconds: float) -> dict[str, float]:
    """Every part's expected seconds, by keyword: overhead, compute, memory, latency, bandwidth."""
    names = {"overhead": OVERHEAD, "compute": COMPUTE, "memory": MEMORY, "latency": LATENCY, "bandwidth": BANDWIDTH}
    given = {names[k]: v for k, v in seconds.items()}
    return pytest.approx({p: given.get(p, 0.0) for p in PARTS}, rel=1e-9, abs=1e-15)


# --- communication -------------------------------------------------------------------------------------------


def test_comm_adds_and_scales() -> None:
    comm = Comm(1.0, 2.0) + Comm(0.5, 0.25)
    assert comm == Comm(1.5, 2.25) and comm.total_s == 3.75
    assert Comm(1.0, 2.0) * 3 == Comm(3.0, 6.0)
    assert NO_COMM.total_s == 0.0


def test_ring_all_reduce() -> None:
    link = Link("test", alpha_s=100e-6, beta_Bps=1e8)
    # AR(1 MB, 2) = 2*1*100 us + 2*1/2 * 1e6/1e8 = 200 us + 10 ms
    ar2 = link.all_reduce(1e6, 2)
    assert ar2.latency_s == pytest.approx(200e-6) and ar2.transfer_s == pytest.approx(0.01)
    # AR(1 MB, 4) = 2*3*100 us + 2*3/4 * 10 ms = 600 us + 15 ms
    ar4 = link.all_reduce(1e6, 4)
    assert ar4.latency_s == pytest.approx(600e-6) and ar4.transfer_s == pytest.approx(0.015)
    assert ar4.total_s == pytest.approx(0.0156)


def test_all_reduce_over_one_rank_costs_nothing() -> None:
    assert LINK.all_reduce(1e6, 1) == NO_COMM
    assert LINK.all_reduce(1e6, 0) == NO_COMM


def test_p2p() -> None:
    # P2P(1 MB) = 10 us + 1e6/1e8 = 10 us + 10 ms
    hop = LINK.p2p(1e6)
    assert hop.latency_s == pytest.approx(1e-5) and hop.transfer_s == pytest.approx(0.01)
    assert hop.total_s == pytest.approx(0.01001)


def test_nominal_links_are_line_rates_in_bytes() -> None:
    assert NOMINAL_LINKS["1gbe"].beta_Bps == pytest.approx(125e6)  # 1 Gb/s / 8
    assert NOMINAL_LINKS["10gbe"].beta_Bps == pytest.approx(1.25e9)
    assert NOMINAL_LINKS["usb4"].beta_Bps == pytest.approx(5e9)  # 40 Gb/s / 8


# --- the device table ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "bps"),
    [
        ("NVIDIA H100 80GB HBM3", 3350e9),
        ("NVIDIA H100 PCIe", 2000e9),  # the more specific fragment comes first
        ("NVIDIA H200", 4800e9),
        ("NVIDIA A100-SXM4-80GB", 2039e9),
        ("NVIDIA GeForce RTX 4090", 1008e9),
        ("Intel(R) Arc(TM) A770 Graphics", 560e9),
        ("AMD Ryzen AI Max+ 395 w/ Radeon 8060S", 256e9),
    ],
)
def test_known_memory_bandwidth(name: str, bps: float) -> None:
    assert known_memory_bandwidth(name) == pytest.approx(bps)


@pytest.mark.parametrize("name", ["Some Unknown Accelerator", "cpu", ""])
def test_unknown_memory_bandwidth_is_none(name: str) -> None:
    assert known_memory_bandwidth(name) is None


def test_table_is_in_bytes_per_second() -> None:
    assert KNOWN_MEMORY_BANDWIDTH_BPS["a770"] == pytest.approx(560e9)


# --- the model's sizes ---------------------------------------------------------------------------------------


def test_from_config_reads_the_sizes() -> None:
    assert TOY.shape == ModelShape(
        vocab_size=10,
        hidden_size=8,
        intermediate_size=16,
        num_layers=2,
        num_heads=2,
        num_kv_heads=1,
        head_dim=4,
        tied_embeddings=False,
    )
    assert TOY.layers == 2


def test_from_config_defaults_to_full_attention_heads() -> None:
    config = {k: v for k, v in TOY_CONFIG.items() if k not in ("head_dim", "num_key_value_heads")}
    model = ModelCost(ModelShape.from_config(config), bytes_per_element=4)
    assert model.shape.num_kv_heads == 2  # as many as the query heads
    assert model.shape.head_dim == 4  # d / heads = 8 / 2
    # Per layer: q = kv = 8; 64 + 2*8*8 + 64 + 384 + 16 = 656; 2*656 + 8 + 80 = 1400 parameters, 4 bytes each
    assert model.weight_bytes == 5600
    assert model.kv_bytes_per_token == 2 * 2 * 2 * 4 * 4  # 128


def test_explicit_head_dim_wins_over_hidden_by_heads() -> None:
    model = ModelCost(ModelShape.from_config({**TOY_CONFIG, "head_dim": 16}), bytes_per_element=2)
    # q = 2*16 = 32, kv = 16: 8*32 + 2*8*16 + 32*8 + 384 + 16 = 1168; 2*1168 + 88 = 2424 parameters
    assert model.weight_bytes == 2424 * 2
    assert model.kv_bytes_per_token == 2 * 2 * 1 * 16 * 2  # 128


def test_weight_and_kv_bytes() -> None:
    assert TOY.weight_bytes == 2544
    assert TOY.kv_bytes_per_token == 32


def test_decode_bytes() -> None:
    # W + KV * batch * context = 2544 + 32 * 3 * 10 = 3504
    assert TOY.decode_bytes(batch=3, context=10) == pytest.approx(3504)
    assert TOY.decode_bytes(batch=2, context=6.5) == pytest.approx(2544 + 32 * 13)  # a mean context: 2960
    assert TOY.decode_bytes(batch=1, context=0) == pytest.approx(2544)


def test_prefill_flops() -> None:
    # Per prompt of width 5: 2 * 1272 params * 5 + 4 * 2 layers * 5^2 * 2 heads * 4 = 12720 + 1600 = 14320
    assert TOY.prefill_flops(batch=2, width=5) == pytest.approx(2 * 14320)
    # width 4: 2 * 1272 * 4 + 4 * 2 * 16 * 2 * 4 = 10176 + 1024
    assert TOY.prefill_flops(batch=1, width=4) == pytest.approx(11200)


def test_message_bytes() -> None:
    assert TOY.message_bytes(batch=3, tokens=5) == 3 * 5 * 8 * 2  # 240
    assert TOY.message_bytes(batch=1, tokens=1) == 16


# --- fitting a device's rate ---------------------------------------------------------------------------------


def test_rate_time() -> None:
    assert Rate(0.01, 1e9).time(2e9) == pytest.approx(2.01)


def test_fit_recovers_an_exact_line() -> None:
    # t = 10 ms + w / 1e11: 1e9 -> 20 ms, 2e9 -> 30 ms, 4e9 -> 50 ms
    rate = fit_rate([1e9, 2e9, 4e9], [0.02, 0.03, 0.05])
    assert rate.overhead_s == pytest.approx(0.01) and rate.per_s == pytest.approx(1e11)


def test_fit_of_two_points_ignores_the_ceiling() -> None:
    # t = 5 ms + w / 2e9: 1e9 -> 505 ms, 3e9 -> 1.505 s; the ceiling matters only when the line cannot be fitted
    rate = fit_rate([1e9, 3e9], [0.505, 1.505], ceiling=1e12)
    assert rate.overhead_s == pytest.approx(0.005) and rate.per_s == pytest.approx(2e9)


def test_one_point_with_a_ceiling_is_work_at_the_ceiling_plus_overhead() -> None:
    # 2e9 at 1e11/s is 20 ms of the 50 ms measured; the other 30 ms is overhead
    rate = fit_rate([2e9], [0.05], ceiling=1e11)
    assert rate.overhead_s == pytest.approx(0.03) and rate.per_s == pytest.approx(1e11)


def test_one_size_of_pass_with_a_ceiling() -> None:
    # two passes of the same size: no spread; mean 50 ms, 20 ms of it work at 1e11/s
    rate = fit_rate([2e9, 2e9], [0.04, 0.06], ceiling=1e11)
    assert rate.overhead_s == pytest.approx(0.03) and rate.per_s == pytest.approx(1e11)


def test_one_point_without_a_ceiling_goes_through_the_origin() -> None:
    rate = fit_rate([2e9], [0.05])
    assert rate.overhead_s == 0.0 and rate.per_s == pytest.approx(4e10)  # 2e9 / 50 ms


def test_negative_intercept_without_a_ceiling_goes_through_the_origin() -> None:
    # 1e9 -> 10 ms, 2e9 -> 30 ms: slope 2e-11, intercept 20 ms - 2e-11 * 1.5e9 = -10 ms
    rate = fit_rate([1e9, 2e9], [0.01, 0.03])
    assert rate.overhead_s == 0.0 and rate.per_s == pytest.approx(7.5e10)  # 3e9 / 40 ms


def test_negative_intercept_with_a_ceiling() -> None:
    # as above, at the 1e11 ceiling: overhead = mean t - mean w / r = 20 ms - 1.5e9 / 1e11 = 5 ms
    rate = fit_rate([1e9, 2e9], [0.01, 0.03], ceiling=1e11)
    assert rate.overhead_s == pytest.approx(0.005) and rate.per_s == pytest.approx(1e11)


def test_falling_time_goes_through_the_origin() -> None:
    # bigger passes faster (slope < 0, intercept 500 ms): no line to trust; 3 / 0.4 s
    rate = fit_rate([1.0, 2.0], [0.3, 0.1])
    assert rate.overhead_s == 0.0 and rate.per_s == pytest.approx(7.5)


def test_faster_than_the_ceiling_takes_the_measured_average() -> None:
    # 2e9 in 10 ms is 2e11/s, past the 1e11 "peak": the peak was underestimated, and there is no overhead left
    rate = fit_rate([2e9], [0.01], ceiling=1e11)
    assert rate.per_s == pytest.approx(2e11)
    assert rate.overhead_s == pytest.approx(0.0, abs=1e-15) and rate.overhead_s >= 0.0


def test_no_work_is_all_overhead() -> None:
    rate = fit_rate([0.0, 0.0], [0.1, 0.3])
    assert rate.overhead_s == pytest.approx(0.2) and math.isinf(rate.per_s)
    assert rate.time(0.0) == pytest.approx(0.2)


@pytest.mark.parametrize(("works", "seconds"), [([], []), ([1.0, 2.0], [0.1])])
def test_fit_needs_matching_passes_and_timings(works: list[float], seconds: list[float]) -> None:
    with pytest.raises(ValueError, match="fit_rate"):
        fit_rate(works, seconds)


# --- one slot ------------------------------------------------------------------------------------------------


def test_single_device_decode_is_overhead_plus_bytes() -> None:
    where = Placement(tp=1, pp=1)
    # 1 ms + 3504 B / 1 MB/s = 1 ms + 3.504 ms, no communication
    got = slot(TOY, GPU, where, "decode", batch=3, tokens=10)
    assert parts(got) == expect(overhead=1e-3, memory=3.504e-3)
    assert got.total_s == pytest.approx(4.504e-3)
    assert got.bottleneck == MEMORY


def test_single_device_prefill_is_overhead_plus_flops() -> None:
    # 2 ms + 28640 FLOPs / 10 MFLOP/s = 2 ms + 2.864 ms
    got = slot(TOY, GPU, Placement(tp=1, pp=1), "prefill", batch=2, tokens=5)
    assert parts(got) == expect(overhead=2e-3, compute=2.864e-3)


def test_tp2_on_gpus_halves_the_work_and_all_reduces_2L_times() -> None:
    where = Placement(tp=2, pp=1, ranks_per_host=2, tp_link=LINK)
    got = slot(TOY, GPU, where, "decode", batch=3, tokens=10)
    # work 3504 / 2 / 1e6 = 1.752 ms; overhead stays 1 ms (every rank runs every layer)
    # m = 3 sequences * 1 token * 8 * 2 B = 48 B; AR(48, 2) = 2 * 10 us + 48 / 1e8 = 20 us + 0.48 us; 2L = 4 of them
    assert parts(got) == expect(overhead=1e-3, memory=1.752e-3, latency=4 * 2e-5, bandwidth=4 * 4.8e-7)


def test_tp2_prefill_all_reduces_the_whole_prompt() -> None:
    where = Placement(tp=2, pp=1, tp_link=LINK)
    got = slot(TOY, GPU, where, "prefill", batch=2, tokens=5)
    # work 28640 / 2 / 1e7 = 1.432 ms; m = 2 * 5 * 8 * 2 = 160 B; 4 * AR(160, 2) = 4 * (20 us + 1.6 us)
    assert parts(got) == expect(overhead=2e-3, compute=1.432e-3, latency=8e-5, bandwidth=6.4e-6)


def test_tp_without_a_link_has_no_comm() -> None:
    got = slot(TOY, GPU, Placement(tp=2, pp=1), "decode", batch=3, tokens=10)
    assert got.comm_share == 0.0


def test_tp2_on_one_cpu_host_does_not_shrink_the_work() -> None:
    cpu = Hardware(decode=GPU.decode, prefill=GPU.prefill, cpu_cores=16)
    where = Placement(tp=2, pp=1, ranks_per_host=2, tp_link=LINK)
    got = slot(TOY, cpu, where, "decode", batch=3, tokens=10)
    # each rank reads half the bytes at half the host's rate: 3504 / 2 * 2 / 1e6 = 3.504 ms, as on one rank
    assert got.seconds[MEMORY] == pytest.approx(3.504e-3)
    assert got.seconds[OVERHEAD] == pytest.approx(1e-3)  # 2 busy ranks on 16 cores: no stretch
    assert got.seconds[LATENCY] == pytest.approx(8e-5)


def test_tp2_across_cpu_hosts_halves_the_work() -> None:
    cpu = Hardware(decode=GPU.decode, prefill=GPU.prefill, cpu_cores=16)
    got = slot(TOY, cpu, Placement(tp=2, pp=1, ranks_per_host=1, tp_link=LINK), "decode", batch=3, tokens=10)
    assert got.seconds[MEMORY] == pytest.approx(1.752e-3)  # each host to its one rank


def test_more_busy_ranks_than_cores_stretch_the_overhead() -> None:
    cpu = Hardware(decode=GPU.decode, prefill=GPU.prefill, cpu_cores=2)
    where = Placement(tp=4, pp=1, ranks_per_host=4, tp_link=LINK)
    got = slot(TOY, cpu, where, "decode", batch=3, tokens=10)
    # 4 busy ranks on 2 cores: overhead * 4/2 = 2 ms; work 3504 / 4 * 4 / 1e6
    assert got.seconds[OVERHEAD] == pytest.approx(2e-3)
    assert got.seconds[MEMORY] == pytest.approx(3.504e-3)


def test_pp2_halves_the_overhead_and_hands_on_once() -> None:
    where = Placement(tp=1, pp=2, pp_link=LINK)
    got = slot(TOY, GPU, where, "decode", batch=3, tokens=10)
    # half the layers: overhead 0.5 ms, work 3504 / 2 / 1e6 = 1.752 ms; P2P(48 B) = 10 us + 0.48 us
    assert parts(got) == expect(overhead=5e-4, memory=1.752e-3, latency=1e-5, bandwidth=4.8e-7)


def test_hybrid_all_reduces_per_stage_and_hands_on_once() -> None:
    intra = Link("in node", 1e-6, 1e9)
    where = Placement(tp=2, pp=2, micro_batches=2, ranks_per_host=2, tp_link=intra, pp_link=LINK)
    got = slot(TOY, GPU, where, "decode", batch=3, tokens=10)
    # work 3504 / 4 / 1e6 = 0.876 ms; overhead 1 ms / 2; 2L/pp = 2 all-reduces of 48 B in the node:
    # 2 * (2 us + 48 / 1e9) and one P2P across: 10 us + 48 / 1e8
    assert parts(got) == expect(overhead=5e-4, memory=0.876e-3, latency=2 * 2e-6 + 1e-5, bandwidth=2 * 4.8e-8 + 4.8e-7)


def test_a_cpu_ranks_dequantization_rate_follows_its_threads() -> None:
    """2 cores; the reference dequantized 1.2 G weights/s with both threads, 1.0 G with one."""
    cpu = Hardware(Rate(0, 1), Rate(0, 1), cpu_cores=2, dequant_per_s=1.2e9, dequant_one_cpu_per_s=1e9)
    assert dequant_rate(cpu, Placement(tp=1, pp=1)) == 1.2e9  # the reference: both threads
    assert dequant_rate(cpu, Placement(tp=2, pp=1, ranks_per_host=2)) == 1e9  # a thread, a core each
    assert dequant_rate(cpu, Placement(tp=2, pp=1, ranks_per_host=1)) == 1.2e9  # a host each
    assert dequant_rate(cpu, Placement(tp=2, pp=2, micro_batches=2, ranks_per_host=4)) == 0.5e9  # 4 on 2 cores
    guessed = Hardware(Rate(0, 1), Rate(0, 1), cpu_cores=2, dequant_per_s=1.2e9)  # no one-thread figure
    assert dequant_rate(guessed, Placement(tp=2, pp=1, ranks_per_host=2)) == 0.6e9  # as threads scaled
    assert dequant_rate(GPU, Placement(tp=2, pp=1)) is None
    int8 = ModelCost(TOY.shape, bytes_per_element=1.5, activation_bytes=4, dequantizes=True)
    got = slot(int8, cpu, Placement(tp=2, pp=1, ranks_per_host=2), "decode", batch=1, tokens=4)
    assert got.seconds[DEQUANT] == pytest.approx(1232 / 2 / 1e9)  # 2 x 576 in the layers, 80 in the head


def test_busy_per_host() -> None:
    assert busy_per_host(Placement(tp=2, pp=1, ranks_per_host=2)) == 2  # the whole TP group
    assert busy_per_host(Placement(tp=2, pp=1, ranks_per_host=1)) == 1  # TP across hosts: one rank each
    assert busy_per_host(Placement(tp=2, pp=2, ranks_per_host=2)) == 2  # hybrid, one stage per host, idle or not
    # four stages on one host, two micro-batches in flight: two stages work at once
    assert busy_per_host(Placement(tp=1, pp=4, micro_batches=2, ranks_per_host=4)) == 2
    assert busy_per_host(Placement(tp=1, pp=4, micro_batches=8, ranks_per_host=4)) == 4  # never more than all


def test_pipeline_on_one_cpu_host_shares_it_only_between_busy_stages() -> None:
    cpu = Hardware(decode=GPU.decode, prefill=GPU.prefill, cpu_cores=16)
    where = Placement(tp=1, pp=4, micro_batches=2, ranks_per_host=4, pp_link=LINK)
    got = slot(TOY, cpu, where, "decode", batch=3, tokens=10)
    # 2 of the 4 stages busy at once: each reads 3504 / 4 bytes at half the host's rate
    assert got.seconds[MEMORY] == pytest.approx(3504 / 4 * 2 / 1e6)
    assert got.seconds[OVERHEAD] == pytest.approx(1e-3 / 4)


def test_pp2_across_cpu_hosts_with_one_micro_batch_runs_at_the_host_rate() -> None:
    cpu = Hardware(decode=GPU.decode, prefill=GPU.prefill, cpu_cores=16)
    where = Placement(tp=1, pp=2, micro_batches=1, ranks_per_host=1, pp_link=LINK)
    got = slot(TOY, cpu, where, "decode", batch=3, tokens=10)
    # each host holds one stage, alone on its cores: half the bytes at the full host rate, 1.752 ms
    assert got.seconds[MEMORY] == pytest.approx(1.752e-3)


# --- one batch -----------------------------------------------------------------------------------------------


def test_batch_on_one_device_is_slot_times() -> None:
    where = Placement(tp=1, pp=1)
    got = batch_time(TOY, GPU, where, [[5, 3]], new_tokens=4)
    # prefill: one slot of 2 prompts padded to 5: 2 ms + 28640 / 1e7 = 2 ms + 2.864 ms
    assert parts(got.prefill) == expect(overhead=2e-3, compute=2.864e-3)
    # decode: 3 more tokens at mean context 5 + 4/2 = 7: (2544 + 32 * 2 * 7) / 1e6 = 2.992 ms + 1 ms, each
    assert parts(got.decode) == expect(overhead=3e-3, memory=3 * 2.992e-3)
    assert got.total.total_s == pytest.approx(4.864e-3 + 3 * 3.992e-3)
    assert parts(got.prefill) == pytest.approx(parts(slot(TOY, GPU, where, "prefill", 2, 5)))
    assert parts(got.decode) == pytest.approx(parts(slot(TOY, GPU, where, "decode", 2, 7) * 3))


def test_pipelined_batch_fills_then_rounds() -> None:
    where = Placement(tp=1, pp=2, micro_batches=2, pp_link=LINK)
    got = batch_time(TOY, GPU, where, [[5, 3], [4]], new_tokens=3)
    # prefill, pp + mb - 1 = 3 mean slots:
    #   [5, 3]: overhead 1 ms, 28640 / 2 / 1e7 = 1.432 ms, P2P(160 B) = 10 us + 1.6 us
    #   [4]:    overhead 1 ms, 11200 / 2 / 1e7 = 0.56 ms,  P2P(64 B)  = 10 us + 0.64 us
    #   mean: 1 ms, 0.996 ms, 10 us, 1.12 us
    assert parts(got.prefill) == expect(overhead=3e-3, compute=2.988e-3, latency=3e-5, bandwidth=3.36e-6)
    # decode, max(2, 2) slots per round * 2 steps = 4 mean slots, at mean contexts 5 + 1.5 and 4 + 1.5:
    #   [5, 3]: 0.5 ms, (2544 + 32 * 2 * 6.5) / 2 / 1e6 = 1.48 ms, P2P(32 B) = 10 us + 0.32 us
    #   [4]:    0.5 ms, (2544 + 32 * 5.5) / 2 / 1e6 = 1.36 ms,     P2P(16 B) = 10 us + 0.16 us
    #   mean: 0.5 ms, 1.42 ms, 10 us, 0.24 us
    assert parts(got.decode) == expect(overhead=2e-3, memory=5.68e-3, latency=4e-5, bandwidth=9.6e-7)


def test_fewer_micro_batches_than_stages_still_take_every_stage() -> None:
    where = Placement(tp=1, pp=4, micro_batches=1, pp_link=LINK)
    got = batch_time(TOY, GPU, where, [[5]], new_tokens=3)
    # prefill: 4 + 1 - 1 = 4 slots; decode: max(1, 4) = 4 slots a round, 2 rounds
    assert parts(got.prefill) == pytest.approx(parts(slot(TOY, GPU, where, "prefill", 1, 5) * 4))
    assert parts(got.decode) == pytest.approx(parts(slot(TOY, GPU, where, "decode", 1, 6.5) * 8))


def test_more_micro_batches_than_stages_take_one_slot_each() -> None:
    where = Placement(tp=1, pp=2, micro_batches=3, pp_link=LINK)
    got = batch_time(TOY, GPU, where, [[4], [4], [4]], new_tokens=2)
    # prefill: 2 + 3 - 1 = 4 slots; decode: max(3, 2) = 3 slots, one round
    assert parts(got.prefill) == pytest.approx(parts(slot(TOY, GPU, where, "prefill", 1, 4) * 4))
    assert parts(got.decode) == pytest.approx(parts(slot(TOY, GPU, where, "decode", 1, 5) * 3))


@pytest.mark.parametrize("new_tokens", [0, 1])
def test_no_decode_after_the_first_token(new_tokens: int) -> None:
    got = batch_time(TOY, GPU, Placement(tp=1, pp=1), [[5]], new_tokens=new_tokens)
    assert got.decode.total_s == 0.0
    assert got.total.total_s == pytest.approx(got.prefill.total_s)


# --- breakdowns ----------------------------------------------------------------------------------------------


def test_breakdown_totals_and_shares() -> None:
    b = Breakdown({OVERHEAD: 1.0, MEMORY: 3.0, LATENCY: 0.5, BANDWIDTH: 0.5})
    assert b.total_s == pytest.approx(5.0)
    assert b.share(MEMORY) == pytest.approx(0.6)
    assert b.share(COMPUTE) == 0.0  # not named: no time
    assert b.comm_share == pytest.approx(0.2)  # (0.5 + 0.5) / 5
    assert b.bottleneck == MEMORY


def test_empty_breakdown() -> None:
    b = Breakdown()
    assert b.total_s == 0.0 and b.share(MEMORY) == 0.0 and b.comm_share == 0.0


def test_breakdown_add_and_scale() -> None:
    a = Breakdown({OVERHEAD: 1.0, MEMORY: 2.0})
    b = Breakdown({MEMORY: 0.5, LATENCY: 0.25})
    assert parts(a + b) == expect(overhead=1.0, memory=2.5, latency=0.25)
    assert parts(a * 3) == expect(overhead=3.0, memory=6.0)
    assert (a + b).bottleneck == MEMORY
    assert Breakdown({LATENCY: 2.0, MEMORY: 1.0}).bottleneck == LATENCY


def test_batch_time_total_adds_both_phases() -> None:
    bt = BatchTime(Breakdown({COMPUTE: 1.0, OVERHEAD: 0.5}), Breakdown({MEMORY: 2.0, OVERHEAD: 0.25}))
    assert parts(bt.total) == expect(overhead=0.75, compute=1.0, memory=2.0)

"""The performance model's formulas against cases worked by hand (numbers in the comments)."""

from __future__ import annotations

import pytest

from cockpit.experiments.perf_model import (
    KNOWN_MEMORY_BANDWIDTH_BPS,
    NOMINAL_LINKS,
    Comm,
    Device,
    Link,
    ModelShape,
    Placement,
    decode_step,
    fit_efficiency,
    placement,
    prefill,
    tokens_per_s,
)
from cockpit.experiments.strategies import Shape

# Llama 3.1 8B-like: 32 layers, d=4096, 16 GB of bf16 weights, K+V = 2 * 32 layers * 8 heads * 128 * 2 bytes
LLAMA8B = ModelShape(layers=32, hidden_size=4096, weight_bytes=16e9, kv_bytes_per_token=131072)
A770 = Device("intel-arc-a770", KNOWN_MEMORY_BANDWIDTH_BPS["intel-arc-a770"])
GBE = NOMINAL_LINKS["1gbe"]  # alpha 50 us, beta 125 MB/s
INTRA = Link("in node", 5e-6, 10e9)


def test_all_reduce_and_p2p() -> None:
    link = Link("test", alpha_s=100e-6, beta_Bps=1e8)
    # AR(1 MB, 2) = 2*1*100 us + 2*1/2 * 1e6/1e8 = 200 us + 10 ms
    assert link.all_reduce(1e6, 2) == Comm(pytest.approx(200e-6), pytest.approx(0.01))
    # AR(1 MB, 4) = 6 alpha + 1.5 m/beta = 600 us + 15 ms
    assert link.all_reduce(1e6, 4).total_s == pytest.approx(0.0156)
    assert link.all_reduce(1e6, 1) == Comm(0.0, 0.0)
    assert link.p2p(1e6).total_s == pytest.approx(100e-6 + 0.01)


@pytest.mark.parametrize(
    ("shape", "gpus_per_node", "tp_link", "pp_link"),
    [
        (Shape(1, 1, 1), 1, None, None),
        (Shape(2, 1, 2), 1, GBE, None),  # TP across nodes
        (Shape(2, 1, 1), 2, INTRA, None),  # TP in one node
        (Shape(1, 2, 2), 1, None, GBE),  # PP across nodes
        (Shape(2, 2, 2), 2, INTRA, GBE),  # hybrid: TP in each node, stages across
    ],
)
def test_placement_picks_the_link_each_traffic_crosses(shape, gpus_per_node, tp_link, pp_link) -> None:
    assert placement(shape, gpus_per_node, INTRA, GBE) == Placement(shape, tp_link, pp_link)


def test_single_device_decode_is_the_memory_roofline() -> None:
    step = decode_step(LLAMA8B, placement(Shape(1, 1, 1), 1, INTRA, GBE), A770, batch=1, context=1000)
    # (16e9 + 131072 * 1000) / 560e9 = 28.8055 ms, nothing else
    assert step.work_s == pytest.approx(16.131072e9 / 560e9)
    assert step.comm == Comm(0.0, 0.0) and step.bottleneck == "memory bandwidth"


def test_tp2_across_nodes_over_1gbe() -> None:
    step = decode_step(LLAMA8B, placement(Shape(2, 1, 2), 1, INTRA, GBE), A770, batch=1, context=1000)
    assert step.work_s == pytest.approx(16.131072e9 / 2 / 560e9)  # 14.40 ms: half the bytes each
    # m = 4096 * 2 = 8192 B; AR = 2*50 us + 8192/125e6 = 165.536 us; 2L = 64 of them
    assert step.comm.latency_s == pytest.approx(64 * 100e-6)
    assert step.comm.transfer_s == pytest.approx(64 * 8192 / 125e6)
    assert step.total_s == pytest.approx(0.014402743 + 0.010594304)
    assert step.comm_share == pytest.approx(0.010594304 / 0.024997047, rel=1e-6)


def test_a_small_model_over_ethernet_is_link_latency_bound() -> None:
    small = ModelShape(layers=32, hidden_size=4096, weight_bytes=100e6, kv_bytes_per_token=0)
    step = decode_step(small, placement(Shape(2, 1, 2), 1, INTRA, GBE), A770, batch=1, context=0)
    # 50e6 / 560e9 = 89 us of reading against 6.4 ms of all-reduce latency
    assert step.bottleneck == "link latency"


def test_pp2_reads_everything_and_hands_on_once() -> None:
    step = decode_step(LLAMA8B, placement(Shape(1, 2, 2), 1, INTRA, GBE), A770, batch=1, context=1000)
    assert step.work_s == pytest.approx(16.131072e9 / 560e9)
    assert step.comm.total_s == pytest.approx(50e-6 + 8192 / 125e6)  # one P2P: 115.5 us


def test_hybrid_all_reduces_in_the_node_and_hands_on_across() -> None:
    step = decode_step(LLAMA8B, placement(Shape(2, 2, 2), 2, INTRA, GBE), A770, batch=4, context=1000)
    message = 4 * 4096 * 2
    in_node = 64 * (2 * 5e-6 + message / 10e9)
    across = 50e-6 + message / 125e6
    assert step.comm.total_s == pytest.approx(in_node + across)
    assert step.work_s == pytest.approx((16e9 + 131072 * 1000 * 4) / 2 / 560e9)


def test_prefill_is_compute_bound_on_a_long_prompt() -> None:
    device = Device("gpu", 560e9, flops=1e14)
    step = prefill(LLAMA8B, placement(Shape(2, 1, 2), 1, INTRA, GBE), device, batch=1, prompt=2000)
    # 2 * 8e9 params * 2000 tokens / 2 ranks / 1e14 = 160 ms against 14.3 ms of reading
    assert step.work_s == pytest.approx(0.16) and step.work_bound == "compute"
    message = 2000 * 4096 * 2
    assert step.comm.total_s == pytest.approx(64 * (2 * 50e-6 + message / 125e6))
    assert step.bottleneck == "link bandwidth"  # 8.4 s of moving 16 MB messages 64 times over 1 GbE


def test_efficiency_fitted_from_the_single_device_run() -> None:
    fitted = fit_efficiency(LLAMA8B, A770, seconds_per_token=2 * 16.131072e9 / 560e9, batch=1, context=1000)
    assert fitted.efficiency == pytest.approx(0.5)
    step = decode_step(LLAMA8B, placement(Shape(1, 1, 1), 1, INTRA, GBE), fitted, batch=1, context=1000)
    assert step.total_s == pytest.approx(2 * 16.131072e9 / 560e9)


def test_tokens_per_s_and_pipelined_micro_batches() -> None:
    step = decode_step(LLAMA8B, placement(Shape(1, 2, 2), 1, INTRA, GBE), A770, batch=4, context=0)
    assert tokens_per_s(step, batch=4) == pytest.approx(4 / step.total_s)
    assert tokens_per_s(step, batch=4, micro_batches_in_flight=2, stages=2) == pytest.approx(8 / step.total_s)
    assert tokens_per_s(step, batch=4, micro_batches_in_flight=8, stages=2) == pytest.approx(8 / step.total_s)

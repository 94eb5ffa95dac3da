"""The benchmarks' own correctness (their speed figures are for people, not for asserts)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from bench.decode import decode_rate
from bench.report import table
from runtime.microbench import alpha_beta, fit


def test_decode_benchmark_compares_equal_work() -> None:
    figures = decode_rate("tiny", 2, torch.device("cpu"), torch.float32, repeats=1)
    assert figures["tokens_equal"], "our loop and HF generate decoded different tokens"
    assert figures["ours_tokens_per_s"] > 0 and figures["hf_tokens_per_s"] > 0


def test_fit_recovers_a_line() -> None:
    sizes = [4 * 4**k for k in range(10)]
    a, b = fit(sizes, [20e-6 + m / 2e9 for m in sizes])
    assert a == pytest.approx(20e-6, rel=1e-6) and 1 / b == pytest.approx(2e9, rel=1e-6)


def test_alpha_beta_of_a_ring_all_reduce() -> None:
    # AR(m, N) = 2(N-1) alpha + 2(N-1)/N m / beta: with N=4, alpha=10 us, beta=1 GB/s the line is a=60 us, b=1.5 ns/B
    alpha, beta = alpha_beta("all_reduce", 4, 60e-6, 1.5e-9)
    assert alpha == pytest.approx(10e-6) and beta == pytest.approx(1e9)
    assert alpha_beta("send_recv", 2, 5e-6, 1e-9) == pytest.approx((5e-6, 1e9))


def test_table_aligns_columns() -> None:
    assert table(["a", "bb"], [["x", 1.5], ["yyy", 22]]).splitlines() == [
        "a     bb",
        "---  ---",
        "x    1.5",
        "yyy   22",
    ]


def test_unknown_benchmark_is_refused() -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "nosuch"], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "unknown benchmark nosuch" in done.stderr


def test_profiling_benchmark_compares_equal_work() -> None:
    from bench.profiling import case

    figures = case("tiny", 1, repeats=1)
    assert figures["tokens_equal"], "profiled, unprofiled and HF generate decoded different tokens"
    assert figures["recorded_tokens_per_s"] > 0 and 0 < figures["off_hooks_share_of_step"] < 1


def test_peers_without_the_bench_extra_says_how_to_install(monkeypatch, capsys) -> None:
    from bench.__main__ import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # main sets it for the run; the test's environment stays as it was
    for package in ("gguf", "llama_cpp"):  # as if the extra were not installed
        monkeypatch.setitem(sys.modules, package, None)
    assert main(["peers"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["peers: needs the bench extra (gguf is missing): pip install -e .[bench]"]

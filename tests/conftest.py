"""Session-wide test setup: real services started once, the built-in model built once, and CI's rules."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra.services import (
    SlurmCluster,
    TestHosts,
    start_slurm,
    start_test_hosts,
    stop_slurm,
    stop_test_hosts,
)

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Offline always; DeepSpeed's JIT-compiled ops cached with the clone so only the first run pays for them.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))

# torch._dynamo, when first imported, registers a stand-in for sys.intern and refuses one that is not a function;
# ansible-core, when it loads, replaces sys.intern with a callable object. The tests import both into one process
# (the cockpit never imports torch), so dynamo goes first: otherwise `pytest tests/unit` fails in torch's import.
with contextlib.suppress(ImportError):
    import torch._dynamo  # noqa: F401

# The cockpit imports pandas (so numpy.ma) in worker threads; numpy.ma's import parses builtin signatures with
# `ast`, which on CPython 3.11 is not thread-safe (gh-106905: "AST constructor recursion depth mismatch") and
# raced pytest rewriting a test module imported lazily in the main thread. Imported here, once, in one thread.
import numpy.ma  # noqa: E402, F401


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI an infrastructure test never skips: whatever made it skip becomes a failure with the reason."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and item.get_closest_marker("infra") is not None:
        report.outcome = "failed"
        report.longrepr = f"infrastructure test skipped in CI: {call.excinfo.value if call.excinfo else '?'}"


_OP_BUILD: list[subprocess.Popen[bytes]] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    """DeepSpeed JIT-compiles its CPU shared-memory all-reduce the first time a TP rank starts, and the runtime its
    CPU kernels (fp32 and int8/int4 matrix-vector, fused one-token ops) the first time a rank decodes (half a
    minute or more each on two cores). When the session will run the runtime, compile them now in the background,
    at low priority, while the tests before the first rank run: that rank then finds them built, or waits on
    torch's own build lock for the rest, instead of paying for all of it."""
    users = ("tests/integration/", "test_decoder", "test_decode_ops", "test_qgemv", "quantiz")
    if not any(part in item.nodeid for item in session.items for part in users):
        return
    from runtime.cpu_kernels import build_name

    extensions = Path(os.environ["TORCH_EXTENSIONS_DIR"])
    kernels = ("gemv", "qgemv", "decode_ops")
    names = ("deepspeed_shm_comm", *(build_name(kernel) for kernel in kernels))
    built = [extensions / name / f"{name}.so" for name in names]
    if all(path.is_file() for path in built):
        return
    extensions.mkdir(parents=True, exist_ok=True)
    build = (
        f"from runtime.cpu_kernels import compiled; {'; '.join(f'compiled({k!r})' for k in kernels)}; "
        "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder; ShareMemCommBuilder().load()"
    )
    with (extensions / "background-build.log").open("wb") as log:
        _OP_BUILD.append(subprocess.Popen(["nice", "-n", "10", sys.executable, "-c", build], stdout=log, stderr=log))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run in which no test passed is not a pass (all skipped, or everything deselected); the background op
    build is waited for (it finishes long before a session that uses it does)."""
    for build in _OP_BUILD:
        with contextlib.suppress(subprocess.TimeoutExpired):
            build.wait(timeout=300)
        if build.poll() is None:
            build.kill()  # ours, by its handle
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    passed = len(reporter.stats.get("passed", [])) if reporter else 0
    if exitstatus == 0 and passed == 0:
        print("\nno test passed: treating this run as a failure", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def test_hosts() -> Iterator[TestHosts]:
    """Two sshd hosts, node0 (10.77.0.10) and node1 (10.77.0.11), each in its own network namespace."""
    hosts, started = start_test_hosts()
    yield hosts
    if started:
        stop_test_hosts()


@pytest.fixture(scope="session")
def slurm_cluster(test_hosts: TestHosts) -> Iterator[SlurmCluster]:
    """A real Slurm whose two compute nodes are the sshd test hosts (stopped before them)."""
    cluster, started = start_slurm(test_hosts)
    yield cluster
    if started:
        stop_slurm()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in small model, built once per session by the real command."""
    out = tmp_path_factory.mktemp("models") / "tiny-llama"
    subprocess.run([sys.executable, str(REPO / "cluster.py"), "model", "build-tiny", str(out)], check=True)
    return out


@pytest.fixture(scope="session")
def compressed_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in model published pre-quantized: int4, asymmetric, groups of 16 (whole groups in every TP-2
    slice: 128 and 352 input columns), written by the real compressed-tensors library."""
    from tests.compressed_checkpoints import write_compressed_tensors

    out = tmp_path_factory.mktemp("models") / "tiny-llama-w4a16"
    return write_compressed_tensors(tiny_model_dir, out, bits=4, group_size=16, symmetric=False)


@pytest.fixture(scope="session")
def awq_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in model published as AutoAWQ GEMM: int4 with zero points, groups of 16, packed by AutoAWQ."""
    from tests.awq_checkpoints import write_awq

    return write_awq(tiny_model_dir, tmp_path_factory.mktemp("models") / "tiny-llama-awq", group_size=16)


@pytest.fixture(scope="session")
def gptq_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in model published as classic GPTQ (checkpoint_format gptq: zero points stored less one): int4,
    asymmetric, groups of 16, desc_act false."""
    from tests.gptq_checkpoints import write_gptq

    out = tmp_path_factory.mktemp("models") / "tiny-llama-gptq"
    return write_gptq(tiny_model_dir, out, bits=4, group_size=16, sym=False, v1=True)


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No cockpit.toml anywhere: a fresh HOME, XDG dirs and working directory (the embedded default)."""
    home = tmp_path / "home"
    home.mkdir()
    for var, sub in (("HOME", ""), ("XDG_CONFIG_HOME", ".config"), ("XDG_DATA_HOME", ".local/share")):
        monkeypatch.setenv(var, str(home / sub))
    for var in ("COCKPIT_CONFIG", "COCKPIT_BASELINE_URL", "COCKPIT_BASELINE_MODEL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(home)
    return home

"""The memory plan: each rank's estimate by hand for a small config, the verdicts and their sentences, and the
plan a real `plan()` writes into the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cockpit.config import (
    ClusterSection,
    CockpitFile,
    ModelSection,
    PathsSection,
    Settings,
    SweepSection,
    parse_config,
)
from cockpit.errors import BadInput
from cockpit.nodes.telemetry import GpuTelemetry, NodeTelemetry
from cockpit.sweep.memory import (
    GIB,
    RANK_OVERHEAD_BYTES,
    ModelShape,
    NodeMemory,
    Workload,
    estimate_strategy,
    longest_prompt_tokens,
    node_memory,
    plan_strategy,
    read_model_shape,
)
from cockpit.sweep.plan import plan
from runtime.schema import SchemaError

# small enough to count by hand: h 64, MLP 128, 2 layers, 4 heads of 16 (2 kv heads), 1000 tokens
SMALL = ModelShape(
    vocab_size=1000,
    hidden_size=64,
    intermediate_size=128,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    tied_embeddings=False,
)
WORK = Workload(batch_size=2, micro_batches=1, prompt_tokens=10, max_new_tokens=6)  # 16 positions a row
# per layer: q, o 64x64 each, k, v 64x32 each = 12,288; gate, up, down 3 x 64x128 = 24,576
LAYER_LINEARS = 12_288 + 24_576
EMBEDDING = 1000 * 64


def test_a_single_device_holds_everything() -> None:
    (rank,) = estimate_strategy(SMALL, 1, 1, WORK, "fp32", "cpu")
    norms = 2 * 2 * 64 + 64  # two per layer, and the final one
    assert rank.weights == 4 * (2 * LAYER_LINEARS + EMBEDDING + EMBEDDING + norms)  # embedding and LM head
    assert rank.kv_cache == 2 * 2 * 2 * 16 * 4 * 2 * 16  # layers x (k, v) x kv heads x head_dim x fp32 x rows x seq
    assert rank.activations == 2 * 16 * (4 * 64 + 3 * 128) * 4 + 2 * 1000 * 4  # prefill, then the logits
    assert rank.overhead == RANK_OVERHEAD_BYTES["single"] and rank.context == 0


def test_tensor_parallel_cuts_the_linears_and_the_head_but_keeps_the_embedding_whole() -> None:
    ranks = estimate_strategy(SMALL, 2, 1, WORK, "fp32", "cpu")
    norms = 2 * 2 * 64 + 64
    assert [r.weights for r in ranks] == [4 * (2 * LAYER_LINEARS // 2 + EMBEDDING + EMBEDDING // 2 + norms)] * 2
    assert [r.kv_cache for r in ranks] == [2 * 2 * 1 * 16 * 4 * 2 * 16] * 2  # one kv head each
    assert ranks[0].overhead == RANK_OVERHEAD_BYTES["tensor_parallel"]


def test_pipeline_stages_hold_their_layers_the_first_the_embedding_the_last_the_head() -> None:
    first, last = estimate_strategy(SMALL, 1, 2, Workload(2, 2, 10, 6), "bf16", "cuda")
    assert first.weights == 2 * (LAYER_LINEARS + EMBEDDING + 2 * 64)
    assert last.weights == 2 * (LAYER_LINEARS + 2 * 64 + 64 + EMBEDDING)
    assert first.kv_cache == last.kv_cache == 1 * 2 * 2 * 16 * 2 * 2 * 16  # the whole batch's, in bf16
    assert first.activations == 1 * 16 * (4 * 64 + 3 * 128) * 2  # one micro-batch of one row at a time, no logits
    assert first.context > 0 and first.comparable_to_peak == first.total - first.context


def test_int8_weights_with_their_scales_and_compute_in_float32_on_a_cpu() -> None:
    """Scales as the runtime keeps them: one per group of the size it picks (widths 64 and 128 at TP up to the
    2 kv heads: groups of 32), in the compute dtype (float32 here); `[sweep] quant_group_size` overrides."""
    (rank,) = estimate_strategy(SMALL, 1, 1, WORK, "int8", "cpu")
    head_and_layers = (2 * LAYER_LINEARS + EMBEDDING) * (1 + 4 / 32)
    assert rank.weights == round(head_and_layers + 4 * (EMBEDDING + 2 * 2 * 64 + 64))
    assert rank.kv_cache == estimate_strategy(SMALL, 1, 1, WORK, "fp32", "cpu")[0].kv_cache
    (grouped,) = estimate_strategy(SMALL, 1, 1, WORK, "int8", "cpu", group_size=16)
    assert grouped.weights == round((2 * LAYER_LINEARS + EMBEDDING) * (1 + 4 / 16) + 4 * (EMBEDDING + 2 * 2 * 64 + 64))
    (gpu,) = estimate_strategy(SMALL, 1, 1, WORK, "int8", "cuda")  # bf16 activations and scales
    assert gpu.weights == round((2 * LAYER_LINEARS + EMBEDDING) * (1 + 2 / 32) + 2 * (EMBEDDING + 2 * 2 * 64 + 64))


def test_a_tied_head_is_counted_once_on_a_single_device_only() -> None:
    tied = ModelShape(**{**SMALL.__dict__, "tied_embeddings": True})
    (alone,) = estimate_strategy(tied, 1, 1, WORK, "fp32", "cpu")
    assert alone.weights == estimate_strategy(SMALL, 1, 1, WORK, "fp32", "cpu")[0].weights - 4 * EMBEDDING
    assert [r.weights for r in estimate_strategy(tied, 2, 1, WORK, "fp32", "cpu")] == [
        r.weights for r in estimate_strategy(SMALL, 2, 1, WORK, "fp32", "cpu")
    ]


# Llama 3 8B's config: what the sentence is about
LLAMA_8B = ModelShape(128256, 4096, 14336, 32, 32, 8, 128, False)
A770 = NodeMemory(16 * GIB, "node0", "A770", per_host=False)


def test_an_8b_reference_in_bf16_is_skipped_on_an_a770_with_the_precision_that_would_fit() -> None:
    said = plan_strategy("single-device reference", LLAMA_8B, (1, 1), Workload(4, 1, 4096, 128), "bf16", "xpu", A770, 1)
    assert said.verdict == "skipped" and said.needed_bytes > 16 * GIB
    assert said.sentence == (
        f"single-device reference: needs {said.needed_bytes / GIB:.1f} GiB, node0's A770 has 16.0 GiB: skipped; "
        "use int8 or a smaller model"
    )
    fits = plan_strategy("single-device reference", LLAMA_8B, (1, 1), Workload(4, 1, 4096, 128), "int8", "xpu", A770, 1)
    assert fits.verdict == "fits" and fits.sentence == ""


def test_one_that_fits_only_with_a_smaller_batch_gets_the_largest_that_does() -> None:
    work = Workload(64, 1, 4000, 128)
    said = plan_strategy("TP-2 in one node", LLAMA_8B, (2, 1), work, "bf16", "xpu", A770, 2)
    assert said.verdict == "shrunk" and 1 <= said.batch_size < 64
    bigger = plan_strategy(
        "TP-2 in one node", LLAMA_8B, (2, 1), Workload(said.batch_size + 1, 1, 4000, 128), "bf16", "xpu", A770, 2
    )
    assert bigger.verdict == "shrunk"  # one more row does not fit
    assert said.sentence == (
        f"TP-2 in one node: needs {said.needed_bytes / GIB:.1f} GiB at batch 64, node0's A770 has 16.0 GiB: runs "
        f"with batch {said.batch_size} ({max(r.total for r in said.ranks or []) / GIB:.1f} GiB)"
    )


def test_ranks_on_one_cpu_host_share_its_memory() -> None:
    host = NodeMemory(int(1.5 * GIB), "this machine", "host memory", per_host=True)
    alone = plan_strategy("TP-2 in one node", SMALL, (2, 1), WORK, "fp32", "cpu", host, ranks_per_host=1)
    shared = plan_strategy("TP-2 in one node", SMALL, (2, 1), WORK, "fp32", "cpu", host, ranks_per_host=2)
    assert alone.verdict == "fits" and shared.verdict == "fits"
    assert shared.needed_bytes == 2 * alone.needed_bytes
    assert plan_strategy("x", SMALL, (2, 1), WORK, "fp32", "cpu", None, 2).verdict == "unchecked"


def test_longest_prompt_in_tokens_from_characters() -> None:
    assert longest_prompt_tokens(["a" * 41, "b" * 10]) == 11  # 41 / 4.1 = 10 tokens, and BOS


def test_a_config_without_a_size_is_named(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 10}))
    with pytest.raises(BadInput, match=r"config.json: no num_attention_heads \(the model's shape needs it\)"):
        read_model_shape(tmp_path)


def test_plan_records_each_strategys_verdict_in_the_manifest(tmp_path: Path) -> None:
    """A real plan() on a small config.json: a cluster figure below what one rank holds skips every strategy, the
    reference's sentence first; the per-rank estimate is kept for the report."""
    model = tmp_path / "model"
    model.mkdir()
    config = {
        "vocab_size": 1000,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    }
    (model / "config.json").write_text(json.dumps(config))
    settings = Settings(
        CockpitFile(
            cluster=ClusterSection(device_memory_gib=0.3),
            paths=PathsSection(data_dir=str(tmp_path / "data")),
            model=ModelSection(name="small", path=str(model)),
            sweep=SweepSection(nodes=2, gpus_per_node=1),
        ),
        tmp_path / "cockpit.toml",
    )
    sweep = plan(settings)
    entries = list(sweep.manifest.strategies.values())
    assert [e.kind for e in entries] == ["reference", "tp_nodes", "pp_nodes"]
    assert all(e.skipped for e in entries)
    assert entries[0].memory is not None and entries[0].memory.sentence.startswith(
        "single-device reference: needs 0.5 GiB, this machine's host memory has 0.3 GiB: skipped"
    )
    assert [len(e.memory.ranks or []) for e in entries if e.memory] == [1, 2, 2]


def test_a_memory_figure_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match=r"cockpit.toml: cluster.device_memory_gib: expected a positive number"):
        parse_config("[cluster]\ndevice_memory_gib = 0\n", tmp_path / "cockpit.toml")
    assert (
        parse_config("[cluster]\ndevice_memory_gib = 16\n", tmp_path / "cockpit.toml").cluster.device_memory_gib == 16
    )


def test_a_nodes_telemetry_comes_before_its_inventory_figure(tmp_path: Path) -> None:
    """Per node, its last good telemetry reading wins over the inventory's figure (a GPU's memory on a GPU, the
    host's on a CPU); the smallest node is held against, and where its figure comes from is kept to be said."""
    hosts = tmp_path / "hosts.ini"
    arc = "gpu_kind=intel-arc-a770"
    hosts.write_text(f"[compute]\nnode0 device_memory_gib=24 {arc}\nnode1 device_memory_gib=8 {arc}\n")
    cluster = ClusterSection(inventory=str(hosts), scheduler="slurm")
    settings = Settings(CockpitFile(cluster=cluster), tmp_path / "cockpit.toml")
    assert node_memory(settings, "xpu") == NodeMemory(8 * GIB, "node1", "A770", False, "inventory")
    card = GpuTelemetry(
        0, "intel", "Intel(R) Arc(TM) A770 Graphics", "xpu-smi", None, 0.0, 0.0, 16384.0, None, None, None
    )
    reading = NodeTelemetry("node1", None, None, None, 32768.0, None, (card,), ())
    said = NodeMemory(16 * GIB, "node1", "Intel Arc A770 Graphics", False, "telemetry")
    assert node_memory(settings, "xpu", {"node1": reading}) == said
    assert node_memory(settings, "cpu", {"node1": reading}) == NodeMemory(
        24 * GIB, "node0", "host memory", True, "inventory"
    )

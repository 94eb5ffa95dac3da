"""Helpers for tests that run the node runtime for real: run folders, launchers, and the HF reference."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.contract import QUANTIZED
from runtime.local_launch import local_command, local_env

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# Different lengths on purpose: left padding and its masks are part of what parity checks.
PROMPTS = [
    "The control node boots the others",
    "Tensor parallelism cuts every weight matrix into slices and adds the partial results with an all-reduce",
    "Hi",
    "rank 3 of 4: stage 1, slice 1; temperature 67 C and power 142 W measured at the wall socket",
]


def write_prompt_table(path: Path, prompts: list[str] = PROMPTS) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    variants = ["2k" if i % 2 == 0 else "4k" for i in range(len(prompts))]
    pq.write_table(pa.table({"prompt_id": list(range(len(prompts))), "variant": variants, "prompt": prompts}), path)
    return path


def write_config(
    run_dir: Path,
    model: Path,
    strategy_id: str,
    *,
    tp: int = 1,
    pp: int = 1,
    dp: int = 1,
    nodes: int = 1,
    **fields: object,
) -> Path:
    """exp_config.json for one strategy in `run_dir` (prompts.parquet must be there)."""
    world = tp * pp * dp
    config = {
        "strategy_id": strategy_id,
        "run_id": "test",
        "model_name": "tiny-llama",
        "model_path": str(model),
        "prompt_df_path": "../prompts.parquet",
        "output_root": ".",
        "num_nodes": nodes,
        "gpus_per_node": world // nodes,
        "tp_size": tp,
        "pp_size": pp,
        "dp_size": dp,
        "batch_size": 4,
        "max_new_tokens": 12,
        "precision": "fp32",
        "device": "cpu",
        **fields,
    }
    path = run_dir / strategy_id / "exp_config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))
    return path


def run(command: list[str], timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=local_env(**env), capture_output=True, text=True, timeout=timeout, check=False)


def single(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(local_command("single", 1, "runtime", "--config", str(config), *args))


def torchrun(config: Path, procs: int, *args: str) -> subprocess.CompletedProcess[str]:
    return run(local_command("torchrun", procs, "runtime", "--config", str(config), *args))


def deepspeed(config: Path, procs: int) -> subprocess.CompletedProcess[str]:
    """The deepspeed launcher, which also sets LOCAL_SIZE: the CPU shared-memory all-reduce path."""
    return run(local_command("deepspeed", procs, "runtime", "--config", str(config)))


def shard_tokens(config: Path) -> dict[int, list[int]]:
    """prompt_id -> generated token ids, from every shard the strategy wrote."""
    tokens: dict[int, list[int]] = {}
    for shard in sorted((config.parent / "outputs").glob("shard_*.jsonl")):
        for line in shard.read_text().splitlines():
            row = json.loads(line)
            assert row["prompt_id"] not in tokens, f"prompt {row['prompt_id']} written twice"
            tokens[row["prompt_id"]] = row["token_ids"]
    return tokens


def hf_reference(
    model: Path, prompts: list[str], max_new_tokens: int, batch_size: int, precision: str = "fp32"
) -> dict[int, list[int]]:
    """Single-process Hugging Face `generate`, greedy, same batches; rows cut after their EOS. At int8/int4 the
    model's linears are first quantized as the runtime quantizes them (the model's default group size)."""
    import torch
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    if precision in QUANTIZED:
        from runtime.quantize_stage import default_group_size, quantize_stage

        quantize_stage(lm, precision, default_group_size(lm.config), torch.float32, torch.device("cpu"))
    return greedy_tokens(lm, model, prompts, max_new_tokens, batch_size)


def greedy_tokens(
    lm: PreTrainedModel, tokenizer_dir: Path, prompts: list[str], max_new_tokens: int, batch_size: int
) -> dict[int, list[int]]:
    """What `lm.generate` decodes greedily from `prompts` in batches (tokenizer from `tokenizer_dir`), rows cut
    after their EOS."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    out: dict[int, list[int]] = {}
    for first in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[first : first + batch_size], return_tensors="pt", padding=True)
        generated = lm.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
        for i, row in enumerate(generated[:, batch["input_ids"].shape[1] :].tolist()):
            if tokenizer.eos_token_id in row:
                row = row[: row.index(tokenizer.eos_token_id) + 1]
            out[first + i] = row
    return out


def describe_failure(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-6000:]}"


def metrics(config: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((config.parent / "metrics").glob("metrics_rank_*.json"))]


def assert_holds_share(config: Path, model: Path, share: float, whole: int | None = None) -> None:
    """Each rank holds about its share of the whole model's weights (`whole` bytes: by default the fp32
    checkpoint's; for a quantized run, what its single-device reference held): TP really slices, PP really splits.
    AutoTP replicates the embedding (over a third of the built-in model's weights, kept fp32 at every precision
    here) and the norms, so a rank may hold a whole embedding besides its share of the rest, with some slack; a
    rank holding everything is far above."""
    whole = whole or (model / "model.safetensors").stat().st_size
    shape = json.loads((model / "config.json").read_text())
    embedding = shape["vocab_size"] * shape["hidden_size"] * 4 / whole
    most = 1.2 * (embedding + share * (1 - embedding))
    held = [m["weight_bytes"] / whole for m in metrics(config)]
    assert all(0.1 * share < h < most for h in held), f"ranks hold {held} of the weights, expected ~{share}"

"""Build the project's own small Llama-family checkpoint, offline and deterministically.

No weights can be downloaded here, so the embedded default and the tests run on a checkpoint this module
makes: a byte-level BPE tokenizer and a `LlamaForCausalLM` with seeded random weights, saved with `save_pretrained`
(safetensors) so the same loading code serves it and a real checkpoint.

The tokenizer learns 8,192 entries from an in-code corpus and the project's prompt files (data/), so it packs
about four characters into a token as a real model's does: a "2k" prompt is about 2k tokens, as its name says
(trained on the in-code corpus alone it gave 1.67 characters per token, and prefill dominated every run).

The initialiser range is wide on purpose: with the default 0.02 a random model's top logits sit so close
together that summation order (TP all-reduce vs one process) can flip a greedy pick; at 0.2 the gap between
the best and second-best token stays far above float32 noise, so exact-parity tests mean something.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)

CORPUS = """\
A small cluster is a control node and a few compute nodes joined by a switch. The control node boots the
others over the network, keeps their configuration in version control, and runs the scheduler. Each compute
node has one graphics card with sixteen gigabytes of memory, and the nodes also share a fast USB4 link.
Large language models do not fit on one card, so the work is split. Tensor parallelism cuts every weight
matrix into slices and adds the partial results with an all-reduce after each layer; it needs a fast link
because it talks twice per layer for every token. Pipeline parallelism gives each node a contiguous range of
layers and passes the hidden state from one stage to the next; it talks once per stage, but a single request
leaves the other stages idle unless several micro-batches are in flight at the same time.
The decoder reads every weight once per generated token, so at batch size one its speed is set by memory
bandwidth: tokens per second is roughly bandwidth divided by the bytes of the weights. Batching amortises
that read across many sequences until compute becomes the limit. The key and value cache grows with the
length of the prompt and must also be read at every step.
Greedy decoding picks the most likely token at each step. Two runs that compute the same numbers produce the
same text, which makes greedy output a strict test of a parallel implementation: one wrong slice, one
misplaced rank or one stale cache entry changes a token, and every later token follows from it.
def all_reduce(tensor, group):
    for peer in group.peers():
        tensor += peer.receive()
    return tensor
for rank in range(world_size):
    print(f"rank {rank} of {world_size}: stage {rank // tp_size}, slice {rank % tp_size}")
Temperature 67 C, power 142.5 W, utilisation 98 %, memory 14.2 / 16.0 GiB, energy 5120.75 J.
2026-11-23 12:00:01 node0 slurmd: launched job 4217 step 0 on node0 and node1 (2 tasks).
The quick brown fox jumps over the lazy dog; café, naïve, Zürich, 東京, Ελλάδα, ✓ done.
Questions worth asking of any result: was the reference computed the same way, did every rank finish, how
much of the wall time was spent waiting for the network, and would a faster link change the ranking?
"""
PROMPT_FILES = tuple(Path(__file__).resolve().parents[1] / "data" / f"prompts_{v}.txt" for v in ("2k", "4k"))


@dataclass(frozen=True)
class TinyShape:
    """The built-in model's size. Head counts divide by 1, 2 and 4 (TP up to 4); 4 layers split for PP up to 4."""

    hidden_size: int = 128
    intermediate_size: int = 352
    num_hidden_layers: int = 4
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    max_position_embeddings: int = 32768
    vocab_target: int = 8192
    initializer_range: float = 0.2


def build_tokenizer(vocab_target: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on CORPUS and PROMPT_FILES: any UTF-8 text round-trips exactly."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_target,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = CORPUS.splitlines() + [line for path in PROMPT_FILES for line in path.read_text("utf-8").splitlines()]
    core.train_from_iterator(lines, trainer=trainer)
    bos = core.token_to_id("<s>")
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(tokenizer: PreTrainedTokenizerFast, shape: TinyShape, seed: int) -> LlamaForCausalLM:
    """A LlamaForCausalLM with seeded random weights, sized by `shape`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        max_position_embeddings=shape.max_position_embeddings,
        initializer_range=shape.initializer_range,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.do_sample = False
    return model


def build_tiny_model(out_dir: str | Path, seed: int = 0, shape: TinyShape = TinyShape(), force: bool = False) -> Path:
    """Write the tokenizer and checkpoint into `out_dir` (built aside, then renamed into place)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise FileExistsError(f"{out_dir}: already exists (use --force to rebuild)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        tokenizer = build_tokenizer(shape.vocab_target)
        model = build_model(tokenizer, shape, seed)
        tokenizer.save_pretrained(staging)
        model.save_pretrained(staging, safe_serialization=True)
        (staging / "tiny_model.txt").write_text(
            f"built by runtime.tiny_model, seed {seed}\n{asdict(shape)}\n", encoding="utf-8"
        )
        # readable by every user: compute nodes read the model from shared storage as other users
        staging.chmod(0o755)
        for path in staging.iterdir():
            path.chmod(0o644)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.tiny_model", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder to create (config, safetensors, tokenizer)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="replace an existing folder")
    args = parser.parse_args(argv)
    try:
        path = build_tiny_model(args.out_dir, seed=args.seed, force=args.force)
    except ModuleNotFoundError as err:
        print(
            f"build-tiny: {err.name} is not installed; install the runtime extra: pip install -e '.[runtime]'",
            file=sys.stderr,
        )
        return 2
    except OSError as err:  # the folder exists already, or a prompt file (the tokenizer's corpus) is missing
        print(f"build-tiny: {err}", file=sys.stderr)
        return 2
    print(f"built {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

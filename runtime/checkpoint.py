"""Load one pipeline stage of a Hugging Face causal LM, reading only the bytes that stage needs.

The safetensors files are memory-mapped and each tensor becomes a zero-copy view onto the map, so nothing is
read from disk until it is touched. A stage's model is built on the meta device and only its own layers (plus
the embedding on the first stage, the norm and LM head on the last) are assigned from the map. Under tensor
parallelism DeepSpeed's AutoTP then copies out each rank's slice, which touches only that slice's pages: a rank
reads about its 1/(tp*pp) share of the checkpoint, never the whole model.
"""

from __future__ import annotations

import copy
import functools
import json
import mmap
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import PretrainedConfig

from runtime.schema import InputError

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


class _MappedFile:
    """One .safetensors file: its header, read at once, and tensors as views onto a copy-on-write memory map made
    at the first view (a file's header is cheap to check; mapping waits until the stage needs the file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with path.open("rb") as handle:
                (header_len,) = struct.unpack("<Q", handle.read(8))
                self.header = json.loads(handle.read(header_len))
        except (OSError, struct.error, ValueError) as err:
            raise InputError(f"{path}: not a readable safetensors file ({err})") from None
        self.header.pop("__metadata__", None)
        self.data_start = 8 + header_len

    @functools.cached_property
    def map(self) -> mmap.mmap:
        with self.path.open("rb") as handle:
            return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)  # writable for frombuffer

    def view(self, name: str) -> torch.Tensor:
        meta = self.header[name]
        dtype, (start, end) = _DTYPES[meta["dtype"]], meta["data_offsets"]
        if self.data_start + end > len(self.map):
            raise InputError(
                f"{self.path}: cut short: tensor {name} ends at byte {self.data_start + end}, "
                f"the file has {len(self.map)} (an interrupted copy?)"
            )
        if end == start:
            return torch.empty(meta["shape"], dtype=dtype)
        count = (end - start) // dtype.itemsize
        flat = torch.frombuffer(self.map, dtype=dtype, count=count, offset=self.data_start + start)
        return flat.view(meta["shape"])


class Checkpoint:
    """A checkpoint folder's tensors by name, across one file or a sharded set with an index.

    Every file the index lists is checked when the checkpoint is opened, before any tensor is read: it exists and
    its header holds the tensors the index says it does. A broken copy fails on every rank at once, naming the file
    and a tensor, instead of on the one stage whose layers live in the missing shard, after the others loaded.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        index = self.folder / "model.safetensors.index.json"
        single = self.folder / "model.safetensors"
        if index.is_file():
            self.file_of = {name: self.folder / file for name, file in _weight_map(index).items()}
            self._files = {path: _open_listed(path, index, self.file_of) for path in set(self.file_of.values())}
        elif single.is_file():
            self._files = {single: _MappedFile(single)}
            self.file_of = dict.fromkeys(self._files[single].header, single)
        else:
            raise InputError(f"{self.folder}: no model.safetensors or model.safetensors.index.json")
        self.read: list[str] = []  # names handed out, in order: what this rank actually loaded

    def __contains__(self, name: str) -> bool:
        return name in self.file_of

    def view(self, name: str) -> torch.Tensor:
        self.read.append(name)
        return self._files[self.file_of[name]].view(name)


def _weight_map(index: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"{index}: not a checkpoint index with a weight_map ({type(err).__name__}: {err})") from None
    if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
        raise InputError(f"{index}: weight_map must map tensor names to file names")
    return weight_map


def _open_listed(path: Path, index: Path, file_of: dict[str, Path]) -> _MappedFile:
    """A shard the index lists, checked against the tensors the index puts in it."""
    listed = [name for name, file in file_of.items() if file == path]
    if not path.is_file():
        raise InputError(
            f"{path}: missing, though {index.name} lists it for {len(listed)} tensor(s) ({listed[0]}, ...): "
            "copy the whole checkpoint folder again"
        )
    shard = _MappedFile(path)
    absent = [name for name in listed if name not in shard.header]
    if absent:
        raise InputError(
            f"{path}: holds no tensor {absent[0]} ({len(absent)} of the {len(listed)} {index.name} puts there "
            "are absent): the index and the shards come from different checkpoints"
        )
    return shard


def load_config(model_path: str | Path) -> PretrainedConfig:
    from transformers import AutoConfig

    path = Path(model_path)
    if not (path / "config.json").is_file():
        raise InputError(f"{path}: no config.json (model_path must be a Hugging Face checkpoint folder)")
    return AutoConfig.from_pretrained(path)


def check_divisible(config: PretrainedConfig, tp_size: int, pp_size: int) -> None:
    """The parallel sizes must fit the model: TP divides the heads, PP at most one stage per layer."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    if heads % tp_size or kv_heads % tp_size:
        raise InputError(
            f"tp_size {tp_size} does not divide the model's {heads} attention heads and {kv_heads} key/value heads"
        )
    if pp_size > config.num_hidden_layers:
        raise InputError(f"pp_size {pp_size} exceeds the model's {config.num_hidden_layers} layers")


@dataclass
class Stage:
    """One pipeline stage: its module (a trimmed causal LM), the layers it holds, and its role."""

    model: nn.Module
    config: PretrainedConfig  # the stage's own: num_hidden_layers = len(layers)
    layers: range
    first: bool
    last: bool


def stage_config(config: PretrainedConfig, layers: range) -> PretrainedConfig:
    cfg = copy.deepcopy(config)
    cfg.num_hidden_layers = len(layers)
    if getattr(config, "layer_types", None):
        cfg.layer_types = list(config.layer_types[layers.start : layers.stop])
    return cfg


def _trim(model: nn.Module, first: bool, last: bool) -> None:
    """Drop what this stage never runs: the embedding after the first stage, norm and head before the last."""
    if not first:
        model.model.embed_tokens = None
    if not last:
        model.model.norm = nn.Identity()
        model.lm_head = None


_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


def source_name(name: str, layers: range, config: PretrainedConfig) -> str:
    """The checkpoint name of a stage parameter: stage layer i is model layer layers.start + i."""
    name = _LAYER.sub(lambda m: f"model.layers.{layers.start + int(m[1])}.", name)
    if name == "lm_head.weight" and getattr(config, "tie_word_embeddings", False):
        return "model.embed_tokens.weight"
    return name


def stage_skeleton(config: PretrainedConfig, layers: range, first: bool, last: bool) -> nn.Module:
    """The stage's module on the meta device: the model's shape for `layers`, trimmed to the stage's role."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(stage_config(config, layers))
    _trim(model, first, last)
    return model


def assign_from_checkpoint(
    model: nn.Module, checkpoint: Checkpoint, config: PretrainedConfig, layers: range, first: bool, last: bool
) -> Stage:
    """Every tensor of `model` still on the meta device becomes a view of its checkpoint tensor (checked against
    the shape the config implies); the rotary frequencies are computed. The stage, ready in the stored dtype."""
    weights = {}
    for name, param in model.state_dict(keep_vars=True).items():
        if not param.is_meta:
            continue  # built already (a pre-quantized layer, a TP slice)
        source = source_name(name, layers, config)
        if source not in checkpoint:
            raise InputError(f"{checkpoint.folder}: tensor {source} is missing from the checkpoint")
        tensor = checkpoint.view(source)
        if tuple(tensor.shape) != tuple(param.shape):
            raise InputError(
                f"{checkpoint.folder}: tensor {source} has shape {tuple(tensor.shape)}, "
                f"the config implies {tuple(param.shape)}"
            )
        weights[name] = tensor
    model.load_state_dict(weights, strict=False, assign=True)
    cfg = stage_config(config, layers)
    # non-persistent buffers (rotary frequencies) are computed, not stored: build them for real
    with torch.device("cpu"):
        model.model.rotary_emb = type(model.model.rotary_emb)(config=cfg)
    _check_materialized(model)
    return Stage(model.eval().requires_grad_(False), cfg, layers, first, last)


def load_stage(
    model_path: str | Path, config: PretrainedConfig, layers: range, first: bool, last: bool
) -> tuple[Stage, Checkpoint]:
    """The stage's module with weights viewing the checkpoint (in its stored dtype, on the CPU)."""
    checkpoint = Checkpoint(model_path)
    model = stage_skeleton(config, layers, first, last)
    return assign_from_checkpoint(model, checkpoint, config, layers, first, last), checkpoint


def random_stage(
    config: PretrainedConfig, layers: range, first: bool, last: bool, dtype: torch.dtype, device: str, seed: int
) -> Stage:
    """A stage of the model's shape with random weights, made on `device`: for benchmarks without a checkpoint."""
    from transformers import AutoModelForCausalLM

    cfg = stage_config(config, layers)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    _trim(model, first, last)
    return Stage(model.eval().requires_grad_(False), cfg, layers, first, last)


def _check_materialized(model: nn.Module) -> None:
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise InputError(f"model has tensors the checkpoint did not provide: {', '.join(left[:5])}")

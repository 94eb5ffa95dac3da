"""Dense linear layers for decoding on a CPU: the project's own matrix-vector kernel for the one-token steps.

At batch 1 a decode step is one matrix-vector product per layer, bound by how fast the weights stream from
memory. PyTorch sends it through a general GEMM (MKL, which stays on one thread for one row) or oneDNN's inner
product: on the llama-100m shape's 57 layers in turn about 20 GB/s here on one or two threads. `runtime/kernels/
gemv.cpp` reads each weight row whole, then the next (W in memory order, which the hardware prefetcher follows),
with a software prefetch 8 KB ahead, from weights placed on transparent huge pages (runtime.huge_pages): about
39-41 GB/s on one thread here, where four rows interleaved on 4 KB pages, the first version, read 27-34. It is
built on first use for the machine it runs on (`-march=native`, like DeepSpeed's CPU ops, into
TORCH_EXTENSIONS_DIR, under a name that carries the CPU's instruction sets: nodes of different CPUs sharing one
folder each get a build they can run) and used for up to four rows of input (a decode step's batch); a prefill's
many rows still go through the GEMM. The weight stays as it is (row-major), and the sums are taken in a different
order than the GEMM's: greedy tokens are checked against the reference as for every strategy. A layer's q/k/v and
gate/up read the same input and run as one product (`FusedGemv`, for these layers and for int8/int4 codes):
33 calls and thread dispatches per llama-100m step instead of 57 (`python -m bench peers`).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from runtime import huge_pages
from runtime.cpu_kernels import compiled
from runtime.stage_linears import replace_linears


def kernel() -> ModuleType | None:
    """The fp32 kernel (gemv.cpp)."""
    return compiled("gemv")


def can_use(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether a stage on `device` in `dtype` decodes through the kernel (fp32 on a CPU, where it builds)."""
    return device.type == "cpu" and dtype == torch.float32 and kernel() is not None


def few_rows(
    x: torch.Tensor, max_batch: int, product: Callable[[torch.Tensor], torch.Tensor], bias: torch.Tensor | None
) -> torch.Tensor | None:
    """`product` (a kernel's, on x's rows as (rows, in)) plus `bias`, shaped as x with the product's width; None
    where x has more rows than the kernel takes (a prefill: the caller's GEMM path)."""
    flat = x.reshape(-1, x.shape[-1])
    if flat.shape[0] > max_batch:
        return None
    out = product(flat)
    if bias is not None:
        out = out + bias
    return out.view(*x.shape[:-1], out.shape[-1])


class GemvLinear(nn.Module):
    """y = x W^T + b: the kernel for up to its batch of rows, the GEMM for more."""

    KERNEL_TENSORS = ("weight",)  # what `decode_rows` reads, concatenated row-wise by `FusedGemv`

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, compiled: ModuleType) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.weight = nn.Parameter(huge_pages.place(weight), requires_grad=False)  # the read stream's pages
        self.bias = bias
        self.compiled = compiled

    @classmethod
    def of(cls, layer: nn.Module) -> GemvLinear:
        compiled = kernel()
        assert compiled is not None, "can_use() first"
        return cls(layer.weight.detach(), layer.bias.detach() if layer.bias is not None else None, compiled)

    def fusion_key(self) -> tuple:
        """Layers with equal keys can run as one product (`FusedGemv`)."""
        return (type(self), self.bias is None)

    def decode_rows(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | None:
        """x W^T + bias through the kernel, or None for more rows than it takes."""
        return few_rows(x, self.compiled.max_batch, lambda rows: self.compiled.linear(rows, weight), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.decode_rows(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias) if out is None else out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class FusedGemv(nn.Module):
    """Kernel layers that read the same input (a layer's q/k/v, its gate/up) as one product: their kernel tensors
    (a dense weight; int8/int4 codes, scales and zero points) concatenated row-wise (after TP slicing: a rank's own
    rows), each member's now a view of its rows (held once, the members still usable alone, as HF's forward uses
    them). Up to the kernel's batch it is one call and one thread dispatch for all of them, each member's output a
    slice of its result (the same bits: a row's sum does not depend on the rows around it); more rows (a prefill)
    go through the members, as they would unfused."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.sizes = [member.out_features for member in members]
        self.members = members  # a plain list: they stay their parent's modules
        self.bias = None if members[0].bias is None else torch.cat([member.bias for member in members])
        self.names = members[0].KERNEL_TENSORS
        for name in self.names:
            parts = [getattr(member, name) for member in members]
            if parts[0] is None:
                self.register_buffer(name, None, persistent=False)
                continue
            whole = huge_pages.empty((sum(self.sizes), *parts[0].shape[1:]), parts[0].dtype)
            self.register_buffer(name, torch.cat(parts, out=whole), persistent=False)
            for member, rows, held in zip(members, getattr(self, name).split(self.sizes), parts, strict=True):
                view = nn.Parameter(rows, requires_grad=False) if isinstance(held, nn.Parameter) else rows
                setattr(member, name, view)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.members[0].decode_rows(x, *(getattr(self, name) for name in self.names), self.bias)
        return tuple(member(x) for member in self.members) if out is None else out.split(self.sizes, dim=-1)

    def extra_repr(self) -> str:
        return f"{type(self.members[0]).__name__}, out_features={self.sizes}, bias={self.bias is not None}"


FUSED = (("fused_qkv", ("q_proj", "k_proj", "v_proj")), ("fused_gate_up", ("gate_proj", "up_proj")))


def fuse_projections(model: nn.Module) -> None:
    """Each attention's q/k/v and each MLP's gate/up made a `FusedGemv` (`fused_qkv`, `fused_gate_up`, which
    runtime.decoder calls when present) where all of them are kernel layers (GemvLinear, or
    runtime.quantize.WeightOnlyLinear decoding from its codes) with no hooks (under TP they are column-parallel:
    only their rows were cut, so their inputs are whole and their outputs need nothing) and equal fusion keys
    (the same kind, bias or none; for codes the same bits, group size and zero points or none)."""
    for block in list(model.modules()):
        for fused_name, names in FUSED:
            members = [getattr(block, name, None) for name in names]
            plain = all(hasattr(m, "decode_rows") and not (m._forward_hooks or m._forward_pre_hooks) for m in members)
            if plain and len({m.fusion_key() for m in members}) == 1:
                setattr(block, fused_name, FusedGemv(members))


def use_gemv(model: nn.Module, group: dist.ProcessGroup | None) -> nn.Module:
    """`model` with every dense linear of its decoder layers and its LM head decoding through the kernel, the
    projections that share an input fused. An LM head tied to the input embeddings stays tied: the head's weight,
    placed on huge pages (a copy), serves both, so the model still holds it once."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    head = getattr(model, "lm_head", None)
    tied = embeddings is not None and head is not None and head.weight.data_ptr() == embeddings.weight.data_ptr()
    model = replace_linears(model, group, GemvLinear.of)
    fuse_projections(model)
    if tied:
        embeddings.weight = model.lm_head.weight
    return model

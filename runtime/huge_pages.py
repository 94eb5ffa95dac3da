"""Weights placed on transparent huge pages (2 MB), where the OS has them, for the CPU kernels' read streams.

A decode step streams every weight once. On 4 KB pages the 504 MB of the llama-100m shape's weights are 123,000
pages, each a TLB miss and a page walk, and the hardware prefetcher stops at each page's end; on 2 MB pages they are
250 and the stream runs on. Linux gives a process huge pages for its anonymous memory when THP is `always`, or when
it is `madvise` (the default of many distributions, and this machine's) and the memory was marked with
MADV_HUGEPAGE, which PyTorch's allocator does not do. So a weight is copied into its own anonymous mapping, marked
before it is first touched (the copy's writes then fault in whole huge pages), starting on a 2 MB boundary (only
whole aligned 2 MB ranges can be huge pages). The tensor keeps the mapping alive (torch.frombuffer holds a reference
to the mmap object) and the mapping is unmapped with its last view. Only the tensor's own bytes are marked: the head
skipped to reach the boundary is never touched (address space, not memory), and a tail shorter than 2 MB stays on
small pages, so the memory held is the tensor's, as before. Elsewhere (not Linux, THP `never`, a tensor under 2 MB)
the tensor is returned as it is.
"""

from __future__ import annotations

import mmap
import re
from pathlib import Path

import torch

HUGE_PAGE = 2 << 20
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_mode() -> str | None:
    """The kernel's THP mode (`always`, `madvise`, `never`), None where there is no THP (not Linux)."""
    try:
        selected = re.search(r"\[(\w+)\]", THP_MODE.read_text())
    except OSError:
        return None
    return selected.group(1) if selected else None


def available() -> bool:
    """Whether this process can have huge pages for memory it marks (and mmap can mark it)."""
    return thp_mode() in ("always", "madvise") and hasattr(mmap, "MADV_HUGEPAGE")


def can_place(nbytes: int) -> bool:
    """Whether `nbytes` of memory can have huge pages here: they are available and it fills at least one."""
    return available() and nbytes >= HUGE_PAGE


def empty(shape: tuple[int, ...] | torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialized CPU tensor on huge pages (a plain `torch.empty` where they are not available or it is
    smaller than one): fill it before reading it; its first writes fault in its pages."""
    nbytes = torch.Size(shape).numel() * dtype.itemsize
    if not can_place(nbytes):
        return torch.empty(shape, dtype=dtype)
    # private: a shared anonymous mapping is shmem, under shmem_enabled's rule (`never` by default)
    mapping = mmap.mmap(-1, nbytes + HUGE_PAGE - mmap.PAGESIZE, flags=mmap.MAP_PRIVATE)
    address = torch.frombuffer(mapping, dtype=torch.uint8, count=1).data_ptr()
    skip = -address % HUGE_PAGE  # to the first 2 MB boundary, itself a multiple of the page size
    mapping.madvise(mmap.MADV_HUGEPAGE, skip, nbytes)
    return torch.frombuffer(mapping, dtype=dtype, count=torch.Size(shape).numel(), offset=skip).view(shape)


def place(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor`'s values, contiguous, on huge pages where they can be had: a copy (the source may be freed), or
    `tensor` itself (contiguous) where they cannot or it is not on the CPU."""
    if tensor.device.type != "cpu" or not can_place(tensor.numel() * tensor.element_size()):
        return tensor.contiguous()
    placed = empty(tensor.shape, tensor.dtype)
    placed.copy_(tensor)
    return placed


def huge_bytes(tensor: torch.Tensor) -> int:
    """How many of `tensor`'s bytes lie on huge pages (from /proc/self/smaps: the AnonHugePages of the mappings
    its storage overlaps, clipped to the storage); 0 where there is no smaps."""
    start = tensor.untyped_storage().data_ptr()
    end = start + tensor.untyped_storage().nbytes()
    try:
        smaps = Path("/proc/self/smaps").read_text()
    except OSError:
        return 0
    total = 0
    for block in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", smaps):
        low, high = (int(bound, 16) for bound in block.split(" ", 1)[0].split("-"))
        huge = re.search(r"^AnonHugePages:\s+(\d+) kB", block, re.MULTILINE)
        if huge and low < end and high > start:
            total += min(int(huge.group(1)) << 10, min(high, end) - max(low, start))
    return total

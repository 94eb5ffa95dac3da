"""Batched greedy generation with a KV cache, run by every rank on its own pipeline stage.

Every micro-batch is left-padded to its whole batch's width, so a pipeline computes exactly what one process
computes for the batch (the same padding, the same attention width): micro-batching changes when the work is done,
not how much there is, and strategies compare like with like.

One loop serves every strategy: with one stage it is a plain decoder; with several, each stage runs its layers
for one micro-batch at a time and passes the hidden state on, the last stage picks the token and sends it back
to the first, and while it does the first stage works on the next micro-batch, so with at least as many
micro-batches as stages no stage idles in steady state. A micro-batch that is finished (EOS on every row, or
`max_new_tokens`) is retired with a flag that travels down the pipeline, so every stage agrees on stopping
without a global barrier. TP ranks of a stage run the same schedule and talk to their counterparts.

Message on a hidden-state link: the hidden state flattened, plus one trailing element (1 = data, 0 = retire).
Message on the token link (last -> first stage): the batch's tokens, plus one trailing element (1 = done).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.profiler import record_function

from runtime import decoder
from runtime.checkpoint import Stage
from runtime.prompts import split_evenly
from runtime.topology import Topology

NOTHING = contextlib.nullcontext()


@dataclass
class Timers:
    """Where a rank's time goes. Measured only where operations are synchronous (CPU), else left unknown.
    When the run is profiled, the same places are also marked as named ranges for the profiler."""

    enabled: bool
    comm_s: float = 0.0  # all-reduces and sends
    idle_s: float = 0.0  # waiting for a neighbour stage: pipeline bubble plus transfer
    forward_s: list[float] = field(default_factory=list)  # each forward step of this rank's stage (a micro-batch's
    # prefill or one token), its all-reduces left out: compute alone
    marked: bool = False  # name ranges (runtime.contract.PROFILE_RANGES) for the profiler

    def span(self, name: str) -> AbstractContextManager[object]:
        """A named range in the profiler's trace; nothing at all when the run is not profiled."""
        return record_function(name) if self.marked else NOTHING


class Links:
    """Point-to-point messages between pipeline stages (staged through the CPU when the backend needs it)."""

    def __init__(self, topo: Topology, device: torch.device, backend: str, timers: Timers) -> None:
        self.topo, self.device, self.timers = topo, device, timers
        self.via_cpu = backend == "gloo" and device.type != "cpu"
        self.pending: list[tuple[dist.Work, torch.Tensor]] = []

    def send(self, tensor: torch.Tensor, dst: int) -> None:
        start = time.perf_counter()
        with self.timers.span("send_recv"):
            tensor = tensor.cpu() if self.via_cpu else tensor.contiguous()
            self.pending.append((dist.isend(tensor, dst), tensor))  # keep the tensor alive until sent
        self.timers.comm_s += time.perf_counter() - start

    def recv(self, numel: int, dtype: torch.dtype, src: int) -> torch.Tensor:
        start = time.perf_counter()
        with self.timers.span("send_recv"):
            buffer = torch.empty(numel, dtype=dtype, device="cpu" if self.via_cpu else self.device)
            dist.recv(buffer, src)
        self.timers.idle_s += time.perf_counter() - start
        return buffer.to(self.device)

    def drain(self) -> None:
        for work, _ in self.pending:
            work.wait()
        self.pending.clear()


@dataclass
class RowResult:
    """One prompt's outcome, as seen by the last stage."""

    tokens: list[int]
    finish_reason: str  # "eos" | "length"
    latency_s: float
    ttft_s: float


@dataclass
class MicroBatch:
    rows: list[list[int]]  # prompt token ids
    ids: torch.Tensor  # (B, T) left-padded prompt
    mask: torch.Tensor  # (B, T + generated) attention mask
    positions: torch.Tensor  # (B, T) then (B, 1): positions of the tokens being fed
    cache: object
    step: int = 0
    active: bool = True
    next_ids: torch.Tensor | None = None  # (B, 1): tokens to feed at the next step (first stage)
    finished: torch.Tensor | None = None  # (B,) bool (last stage)
    tokens: list[list[int]] = field(default_factory=list)
    results: list[RowResult | None] = field(default_factory=list)
    ttft_s: float = 0.0

    @property
    def size(self) -> int:
        return len(self.rows)


def left_pad(
    rows: list[list[int]], pad_id: int, device: torch.device, width: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows left-padded to `width` (at least the longest row's length)."""
    width = max(width, *(len(r) for r in rows))
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], dtype=torch.long, device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long, device=device)
    return ids, mask


def _new_micro_batch(stage: Stage, rows: list[list[int]], settings: DecodeSettings, width: int) -> MicroBatch:
    from transformers import DynamicCache

    ids, mask = left_pad(rows, settings.pad_id, settings.device, width)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    static = settings.static_cache and decoder.supports(stage)
    capacity, compiled = width + settings.max_new_tokens, settings.compile_backend is not None
    cache = decoder.StaticCache(capacity, static_addresses=compiled) if static else DynamicCache(config=stage.config)
    return MicroBatch(rows, ids, mask, positions, cache, tokens=[[] for _ in rows], results=[None] * len(rows))


@dataclass(frozen=True)
class DecodeSettings:
    """How a generator decodes: on which device, in what precision, which tokens end a row (and which pad
    one), how many tokens a row may get, and into how many micro-batches a batch is cut (pipeline stages)."""

    device: torch.device
    dtype: torch.dtype
    eos_ids: AbstractSet[int]
    pad_id: int
    max_new_tokens: int
    micro_batches: int = 1
    static_cache: bool = True  # the lean forward with in-place KV buffers (runtime.decoder), where the model allows
    compile_backend: str | Callable | None = None  # one-token steps through torch.compile with it; None: eager


class Generator:
    """Runs batches through this rank's stage. Only the last stage returns results."""

    def __init__(
        self,
        stage: Stage,
        topo: Topology,
        links: Links,
        settings: DecodeSettings,
        step_range: Callable[[bool], AbstractContextManager[object]] | None = None,
    ) -> None:
        self.stage, self.topo, self.links, self.settings = stage, topo, links, settings
        self.span = links.timers.span
        self.step_range = step_range or (lambda prefill: NOTHING)  # the profiler's window (runtime.profiling)
        self.device, self.dtype = settings.device, settings.dtype
        self.eos_tensor = torch.tensor(sorted(settings.eos_ids), dtype=torch.long, device=settings.device)
        self.hidden = stage.config.hidden_size
        backend = settings.compile_backend
        self.decode_step = decoder.compiled_step(self.device, backend) if backend else decoder.layers

    @classmethod
    def alone(cls, stage: Stage, settings: DecodeSettings) -> Generator:
        """A generator for a whole model in one process, with no peers (references, benchmarks, tests)."""
        topo = Topology(1, 1, 1, 0)
        links = Links(topo, settings.device, "none", Timers(enabled=settings.device.type == "cpu"))
        return cls(stage, topo, links, settings)

    @torch.inference_mode()
    def run(self, prompts: list[list[int]], *, profiled: bool = True) -> list[RowResult]:
        """Greedy-decode one batch; rows come back in prompt order (on the last stage; [] elsewhere). A warm-up
        batch passes `profiled=False`, so the profiler's window falls on measured steps."""
        parts = split_evenly(prompts, min(self.settings.micro_batches, len(prompts)))
        width = max(len(row) for row in prompts)  # every micro-batch as wide as the batch: the work one process does
        mbs = [_new_micro_batch(self.stage, rows, self.settings, width) for rows in parts]
        step_range = self.step_range if profiled else (lambda prefill: NOTHING)
        start = time.perf_counter()
        prefill = True
        while any(mb.active for mb in mbs):
            with step_range(prefill):
                for mb in mbs:
                    if mb.active:
                        self._step(mb, start)
            prefill = False
        self.links.drain()
        return [r for mb in mbs for r in mb.results] if self.stage.last else []

    def _retire(self, mb: MicroBatch) -> None:
        """Stop this micro-batch here and tell the next stage to do the same."""
        mb.active = False
        if not self.stage.last:
            # retiring happens only after the first step, so the next stage expects a one-token message
            self.links.send(
                torch.zeros(mb.size * self.hidden + 1, dtype=self.dtype, device=self.device), self.topo.next_stage_rank
            )

    def _step(self, mb: MicroBatch, start: float) -> None:
        stage, topo = self.stage, self.topo
        width = mb.ids.shape[1] if mb.step == 0 else 1
        hidden_in = None
        if stage.first:
            if mb.step > 0 and not stage.last:  # the token comes back from the last stage
                message = self.links.recv(mb.size + 1, torch.long, topo.last_stage_rank)
                mb.next_ids, done = message[:-1, None], bool(message[-1])
                if done:
                    return self._retire(mb)
        else:
            message = self.links.recv(mb.size * width * self.hidden + 1, self.dtype, topo.prev_stage_rank)
            if message[-1].item() == 0:
                return self._retire(mb)
            hidden_in = message[:-1].view(mb.size, width, self.hidden)
        if mb.step > 0:
            mb.mask = torch.cat([mb.mask, mb.mask.new_ones(mb.size, 1)], dim=1)
            mb.positions = mb.positions[:, -1:] + 1
        timers = self.links.timers
        forward_start, comm_before = time.perf_counter(), timers.comm_s
        with self.span("compute"):
            ids = (mb.ids if mb.step == 0 else mb.next_ids) if stage.first else None
            hidden = self._forward(mb, ids, hidden_in)
            if stage.last:
                logits = stage.model.lm_head(hidden[:, -1:, :])  # 3-D: AutoTP's LM head requires it
        timers.forward_s.append(time.perf_counter() - forward_start - (timers.comm_s - comm_before))
        if stage.last:
            with self.span("sampling"):
                self._pick(mb, logits, start)
        else:
            flag = hidden.new_ones(1)
            self.links.send(torch.cat([hidden.reshape(-1), flag]), topo.next_stage_rank)
        mb.step += 1

    def _forward(self, mb: MicroBatch, ids: torch.Tensor | None, hidden: torch.Tensor | None) -> torch.Tensor:
        """This stage's layers over the micro-batch's new positions: the static-cache path, or HF's forward."""
        if isinstance(mb.cache, decoder.StaticCache):
            return decoder.forward(
                self.stage, mb.cache, mb.mask, mb.positions, ids=ids, hidden=hidden, step=self.decode_step
            )
        out = self.stage.model.model(
            input_ids=ids,
            inputs_embeds=hidden,
            attention_mask=mb.mask,
            position_ids=mb.positions,
            past_key_values=mb.cache,
            use_cache=True,
        )
        return out.last_hidden_state

    def _pick(self, mb: MicroBatch, logits: torch.Tensor, start: float) -> None:
        """Last stage: greedy token per row, bookkeeping, and the token message back to the first stage."""
        token = logits[:, -1, :].argmax(dim=-1)
        if mb.finished is None:
            mb.finished = torch.zeros(mb.size, dtype=torch.bool, device=token.device)
        token = token.masked_fill(mb.finished, self.settings.pad_id)  # finished rows keep feeding padding, as HF does
        picked = token.tolist()  # also waits for the device, so the clock below is honest
        now = time.perf_counter() - start
        if mb.step == 0:
            mb.ttft_s = now
        generated = mb.step + 1
        for i, tok in enumerate(picked):
            if mb.results[i] is not None:
                continue
            mb.tokens[i].append(tok)
            if tok in self.settings.eos_ids:
                mb.results[i] = RowResult(mb.tokens[i], "eos", now, mb.ttft_s)
            elif generated == self.settings.max_new_tokens:
                mb.results[i] = RowResult(mb.tokens[i], "length", now, mb.ttft_s)
        mb.finished |= torch.isin(token, self.eos_tensor)
        done = all(r is not None for r in mb.results)
        if self.stage.first:  # one stage: feed ourselves, or stop here (no pass that only says so)
            mb.next_ids = token[:, None]
            mb.active = not done
        else:
            message = torch.cat([token, token.new_tensor([int(done)])])
            self.links.send(message, self.topo.first_stage_rank)

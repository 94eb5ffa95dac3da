"""torch.profiler over a bounded window of decode steps, when a run's config asks for it.

The first WARMUP_STEPS decode steps run unprofiled (allocations, lazy initialisation, DeepSpeed building its
ops); the next `profile_steps` are recorded with CPU and device activities, each inside a `decode_step` range,
with the runtime's named ranges (compute, all_reduce, send_recv, sampling) nested in them. The trace goes to
the rank's trace folder as a Chrome trace (Perfetto opens it), and its summary beside the rank's metrics.
Prefill steps of later batches may fall inside the recording; they are outside every `decode_step` range, so
the summary leaves them out.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from runtime.atomic import atomic_write_text
from runtime.contract import PROFILER_FILES, ExperimentConfig, ProfileSummary, dumps_line
from runtime.trace_summary import STEP_RANGE, summarize

log = logging.getLogger("runtime")
WARMUP_STEPS = 2
DEVICE_ACTIVITIES = {"cuda": ProfilerActivity.CUDA, "xpu": ProfilerActivity.XPU}


class StepProfiler:
    """Counts this rank's decode steps and records the window of them that the config asks for."""

    def __init__(
        self, cfg: ExperimentConfig, rank: int, hostname: str, device: torch.device, settle: Callable[[], None]
    ) -> None:
        """`settle` waits for this rank's sends in flight (generate.Links.drain)."""
        self.cfg, self.rank, self.hostname, self.device = cfg, rank, hostname, device
        self.settle = settle
        self.decode_steps = 0
        self.profiler: profile | None = None
        self.summary: ProfileSummary | None = None
        self.last = WARMUP_STEPS + cfg.profile_steps  # the window's last decode step

    @property
    def trace_file(self) -> Path:
        return self.cfg.trace_path(self.rank) / PROFILER_FILES["torch"]

    @contextlib.contextmanager
    def step(self, prefill: bool) -> Iterator[None]:
        """One pass of the generation loop (a prefill, or a decode step of every micro-batch)."""
        if prefill or self.decode_steps >= self.last:
            yield
            return
        self.decode_steps += 1
        if self.decode_steps <= WARMUP_STEPS:
            yield
            return
        if self.profiler is None:
            activities = [ProfilerActivity.CPU, *filter(None, [DEVICE_ACTIVITIES.get(self.device.type)])]
            self.profiler = profile(activities=activities)
            self.profiler.start()
        with record_function(STEP_RANGE):
            yield
        if self.decode_steps == self.last:
            self.finish()

    def finish(self) -> ProfileSummary | None:
        """Stop recording (the run may end inside the window), write the trace and its summary."""
        if self.profiler is None:
            if self.summary is None:
                log.warning(
                    "profiling: %d decode step(s), none after the %d warm-up steps: no trace",
                    self.decode_steps,
                    WARMUP_STEPS,
                )
            return self.summary
        profiler, self.profiler = self.profiler, None
        self.settle()  # a gloo send still in flight when the profiler stops corrupts the heap (torch 2.13)
        profiler.stop()
        self.decode_steps = self.last  # a run that ended inside the window records nothing more
        path = self.trace_file
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        profiler.export_chrome_trace(str(partial))
        partial.replace(path)
        self.summary = summarize(
            path,
            strategy_id=self.cfg.strategy_id,
            run_id=self.cfg.run_id,
            rank=self.rank,
            hostname=self.hostname,
            trace=str(path.relative_to(self.cfg.output_root)),
        )
        atomic_write_text(self.cfg.profile_summary_path(self.rank), dumps_line(self.summary))
        log.info(
            "profiling: %d decode steps in %s; comm %.0f%%, idle %.0f%%",
            self.summary.steps,
            path,
            self.summary.comm_share * 100,
            self.summary.idle_share * 100,
        )
        return self.summary

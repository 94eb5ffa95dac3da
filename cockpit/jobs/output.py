"""A job's output as `l` on the dashboard shows it, read like `tail -f`: where its logs are, the end of one without
reading the whole file, and what was added since.

Where: Slurm's `standard_output`/`standard_error` (from `squeue --json`: 22.05's scontrol has no `--json`), the
local scheduler's log (its job record), or a sweep strategy's latest attempt (the manifest); a sweep job's folder
also holds each rank's own log (`logs/rank_<N>.log`, written by the runtime). While a job of a staged run folder
runs, its logs are on its nodes (cockpit.sweep.staging.on_nodes says which); once it ends they are copied back
and read here.

How: `read_log` here, or `tail_command` run on the node over the ssh pool; both read at most `TAIL_BYTES` from
the end (a log opens at its end; a follow that falls further behind skips ahead, saying how much) and hand out
whole lines only, so that a follow read starts where the last one stopped.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cockpit.errors import BadInput
from cockpit.jobs.records import ACTIVE_STATES
from cockpit.jobs.slurm import squeue_record
from runtime.contract import EXP_CONFIG_NAME, ExperimentConfig
from runtime.schema import InputError

TAIL_BYTES = 256 * 1024  # what a log opens with (a few thousand lines), and the most one read takes
MISSING = b"-"  # what tail_command prints for a file that is not there


@dataclass(frozen=True)
class JobLog:
    """One log of a job: `label` says which ("output", "rank 1"); `node` is where to read it over ssh, None here."""

    label: str
    path: Path
    node: str | None = None
    rank: int | None = None  # a rank's own log: the rank


@dataclass(frozen=True)
class JobLogs:
    """What `l` opens: a title naming the job, its logs (output first, then each rank's), while the job is
    pending why nothing is written yet, and while it is active its nodes (`running_on`, Slurm's node list) and how
    many ranks each runs (for cockpit.sweep.staging.on_nodes, which reads a staged job's logs there)."""

    title: str
    logs: tuple[JobLog, ...]
    pending: str | None = None
    running_on: str | None = None
    ranks_per_node: int = 1

    def why_missing(self, log: JobLog) -> str:
        """Why `log` is not there (yet)."""
        if self.pending:
            return self.pending
        where = log.node or "this machine"
        return f"{where} has not written {log.path} yet (the job or the rank has not started writing)"


@dataclass(frozen=True)
class LogChunk:
    """Whole lines read from a log, `offset` where the next read starts; `skipped` bytes before them were not read
    (the log opened at its end, or grew faster than it was followed); `missing` when there is no such file."""

    text: str
    offset: int
    skipped: int = 0
    missing: bool = False


def _start(offset: int | None, size: int, max_bytes: int) -> tuple[int, int]:
    """Where the lines to read start, and where to read from: `offset`, unless there is none (open), the file
    shrank (rewritten) or more than `max_bytes` came since; then the last `max_bytes`, read from one byte before
    them to see whether they start a line. tail_command's shell says the same."""
    if offset is not None and offset <= size and size - offset <= max_bytes:
        return offset, offset
    start = max(0, size - max_bytes)
    return start, max(0, start - 1)


def _chunk(data: bytes, start: int, at: int, offset: int | None, max_bytes: int) -> LogChunk:
    """The whole lines of `data` (read from `at`, lines wanted from `start`): a line cut at the front by a jump is
    dropped; a line still being written at the end is left for the next read, unless one line fills a read."""
    begin = 0
    if at < start:  # `data` starts with the byte before `start`: a newline there, or the rest of a cut line
        cut = data.find(b"\n")
        begin = cut + 1 if cut >= 0 else len(data)
    end = data.rfind(b"\n") + 1
    if end <= begin:
        end = len(data) if len(data) - begin >= max_bytes else begin
    text = data[begin:end].decode("utf-8", errors="replace")
    return LogChunk(text, at + end, skipped=at + begin - (offset or 0))


def read_log(path: Path, offset: int | None = None, max_bytes: int = TAIL_BYTES) -> LogChunk:
    """Whole lines of the log at `path` from `offset` (None: its last `max_bytes`), read here."""
    try:
        with path.open("rb") as file:
            start, at = _start(offset, os.fstat(file.fileno()).st_size, max_bytes)
            data = os.pread(file.fileno(), max_bytes + start - at, at)
    except FileNotFoundError:
        return LogChunk("", offset or 0, missing=True)
    return _chunk(data, start, at, offset, max_bytes)


def tail_command(path: Path, offset: int | None = None, max_bytes: int = TAIL_BYTES) -> str:
    """A shell command doing `read_log` on a node: one line `SIZE START AT` (or `-` for no file), then the bytes."""
    given = -1 if offset is None else offset
    return (
        f'f={shlex.quote(str(path))}; s=$(stat -c %s -- "$f" 2>/dev/null) || {{ echo -; exit 0; }}; '
        f"o={given}; a=$o; "
        f'if [ "$o" -lt 0 ] || [ "$o" -gt "$s" ] || [ $((s - o)) -gt {max_bytes} ]; then '
        f"o=$((s > {max_bytes} ? s - {max_bytes} : 0)); a=$((o > 0 ? o - 1 : 0)); fi; "
        f'echo "$s $o $a"; tail -c +$((a + 1)) -- "$f" | head -c $(({max_bytes} + o - a))'
    )


def parse_tail(output: bytes, offset: int | None = None, max_bytes: int = TAIL_BYTES) -> LogChunk:
    """What `tail_command` printed, as `read_log` would have returned it; ValueError for anything else."""
    head, _, data = output.partition(b"\n")
    if head == MISSING:
        return LogChunk("", offset or 0, missing=True)
    fields = head.split()
    if len(fields) != 3 or not all(field.isdigit() for field in fields):
        raise ValueError(f"not the output of the log tail: {head[:80]!r}")
    return _chunk(data, int(fields[1]), int(fields[2]), offset, max_bytes)


def job_logs(
    job_id: str,
    name: str,
    state: str,
    outputs: Sequence[tuple[str, Path]],
    *,
    nodes: str | None = None,
    reason: str | None = None,
) -> JobLogs:
    """The logs of one job: its `outputs` (label, path), then, for a sweep's job (its output in the strategy's
    `logs/`, beside its exp_config.json), each rank's own."""
    logs = [JobLog(label, path) for label, path in outputs]
    per_node = 1
    config_path = outputs[0][1].parent.parent / EXP_CONFIG_NAME if outputs else None
    if config_path is not None and config_path.is_file():
        try:
            config = ExperimentConfig.load(config_path)
        except InputError:
            pass  # a job that only looks like a sweep's: its output alone
        else:
            per_node = config.gpus_per_node
            ranks = range(config.world_size or 1)
            logs += [JobLog(f"rank {rank}", config.rank_log_path(rank), rank=rank) for rank in ranks]
    pending = None
    if state == "PENDING":
        pending = f"job {job_id} is pending{f' ({reason})' if reason else ''}: its output starts when it runs"
    where = f" on {nodes}" if nodes else ""
    active = nodes if state in ACTIVE_STATES else None
    return JobLogs(f"job {job_id} {name} · {state}{where}", tuple(logs), pending, active, per_node)


def _filled(pattern: str, job: Mapping[str, Any]) -> Path:
    """A Slurm output pattern filled in as slurmstepd does for the batch step: squeue hands it back raw, and ""
    for Slurm's default, `slurm-%j.out` (`slurm-%A_%a.out` for an array's task) in the job's working directory."""
    array = job.get("array_task_id") is not None
    pattern = pattern or ("slurm-%A_%a.out" if array else "slurm-%j.out")
    values = {
        "j": str(job.get("job_id")),
        "A": str(job.get("array_job_id") if array else job.get("job_id")),
        "a": str(job.get("array_task_id")),
        "x": str(job.get("name", "")),
        "u": str(job.get("user_name", "")),
        "N": str(job.get("batch_host") or ""),
        "%": "%",
    }
    return Path(job.get("current_working_directory") or "/") / re.sub(
        r"%([jAaxuN%])", lambda match: values[match[1]], pattern
    )


def slurm_job_logs(data: Mapping[str, Any], job_id: str) -> JobLogs:
    """The logs of `job_id` from `squeue --json` output (its error file too when apart); BadInput when the job is
    not there."""
    job = next((job for job in data.get("jobs", []) if str(job.get("job_id")) == job_id), None)
    if job is None:
        raise BadInput(f"job {job_id}: squeue does not know it (ended longer ago than slurmctld keeps jobs?)")
    if not job.get("batch_flag", True):
        raise BadInput(f"job {job_id}: an interactive job (srun or salloc): its output goes to its terminal")
    stdout = _filled(job.get("standard_output") or "", job)
    outputs = [("output", stdout)]
    if job.get("standard_error") and (stderr := _filled(job["standard_error"], job)) != stdout:
        outputs.append(("errors", stderr))
    record = squeue_record(job)
    return job_logs(job_id, record.name, record.state, outputs, nodes=record.nodes, reason=record.reason)

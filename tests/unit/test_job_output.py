"""A job's output: read from its end and followed from an offset, here and by the shell command a node runs (the
same answers); where a job's logs are, from squeue's JSON, the local job record and a sweep's manifest."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cockpit.errors import BadInput
from cockpit.jobs.output import LogChunk, job_logs, parse_tail, read_log, slurm_job_logs, tail_command
from cockpit.sweep.staging import on_nodes
from runtime.contract import ExperimentConfig


def lines(first: int, last: int) -> str:
    return "".join(f"line {i}\n" for i in range(first, last))


def on_node(path: Path, offset: int | None, max_bytes: int) -> LogChunk:
    """What a node answers to the tail command (run here by bash, as ssh runs it there)."""
    done = subprocess.run(["bash", "-c", tail_command(path, offset, max_bytes)], capture_output=True, check=True)
    return parse_tail(done.stdout, offset, max_bytes)


@pytest.mark.parametrize("read", [read_log, on_node], ids=["here", "node"])
def test_opens_at_the_end_and_follows(tmp_path: Path, read) -> None:
    log = tmp_path / "slurm-7.out"
    log.write_text(lines(0, 100))  # 'line N\n': 7 or 8 bytes a line, 790 in all
    opened = read(log, None, 64)
    assert opened.text == lines(92, 100)  # the last 64 bytes, the line cut at their front dropped
    assert (opened.offset, opened.skipped) == (790, 790 - len(opened.text))
    with log.open("a") as out:
        out.write("line 100\nline 1")  # a line still being written stays for the next read
    grown = read(log, opened.offset, 64)
    assert (grown.text, grown.skipped) == ("line 100\n", 0)
    with log.open("a") as out:
        out.write("01\n")
    assert read(log, grown.offset, 64).text == "line 101\n"


@pytest.mark.parametrize("read", [read_log, on_node], ids=["here", "node"])
def test_jumps_ahead_restarts_and_says_missing(tmp_path: Path, read) -> None:
    log = tmp_path / "out"
    log.write_text(lines(0, 10))
    behind = read(log, 7, 32)  # more than 32 bytes came since offset 7: the last 32, saying how much was skipped
    assert behind.text == lines(6, 10) and behind.skipped == 70 - 7 - len(behind.text)
    log.write_text("new\n")  # rewritten shorter: read again from its start
    assert read(log, 70, 32) == LogChunk("new\n", 4, skipped=-70)
    log.write_text("x" * 40)  # a line as long as a read: handed out rather than waited on for ever
    assert read(log, 8, 32) == LogChunk("x" * 32, 40)
    assert read(tmp_path / "none", None, 32) == LogChunk("", 0, missing=True)


def test_tail_command_quotes_paths_and_refuses_other_output(tmp_path: Path) -> None:
    log = tmp_path / "it's a log; rm -rf"
    log.write_text("ok\n")
    assert on_node(log, None, 1024).text == "ok\n"
    with pytest.raises(ValueError, match="not the output of the log tail"):
        parse_tail(b"bash: stat: command not found\n")


def sweep_job(tmp_path: Path) -> Path:
    """A strategy folder as the factory renders it: exp_config.json beside logs/."""
    folder = tmp_path / "run_1" / "tiny_pp1_tp2_n2"
    (folder / "logs").mkdir(parents=True)
    config = ExperimentConfig("tiny_pp1_tp2_n2", "run_1", "tiny", "/m", "p.parquet", str(folder), 2, 1, 2, 1)
    config.write(folder / "exp_config.json")
    return folder


def test_a_sweep_job_has_each_rank_on_its_node_while_staged(tmp_path: Path) -> None:
    folder = sweep_job(tmp_path)
    output = folder / "logs" / "slurm-12.out"
    running = job_logs("12", "tiny_pp1_tp2_n2", "RUNNING", [("output", output)], nodes="node[0-1]")
    assert {log.node for log in running.logs} == {None}  # shared storage: all read here
    assert [(log.label, log.path.name, log.node) for log in on_nodes(running).logs] == [
        ("output", "slurm-12.out", "node0"),  # the batch host
        ("rank 0", "rank_0.log", "node0"),
        ("rank 1", "rank_1.log", "node1"),
    ]
    ended = job_logs("12", "x", "COMPLETED", [("output", output)], nodes="node[0-1]")
    assert on_nodes(ended) == ended  # copied back: read here
    pending = job_logs("13", "x", "PENDING", [("output", tmp_path / "o")], reason="Resources")
    assert pending.why_missing(pending.logs[0]) == "job 13 is pending (Resources): its output starts when it runs"
    assert "node1 has not written" in on_nodes(running).why_missing(on_nodes(running).logs[2])


SQUEUE = Path(__file__).parent / "fixtures" / "slurm" / "squeue-22.05.8.json"


def test_slurm_output_patterns_filled_defaults_placed_and_errors_kept_apart() -> None:
    """On `squeue --json` of the session's Slurm 22.05.8 (the test cluster: captured there, three of its jobs): 211
    ran with `--output=%x/slurm-%j.out --error=%u-%j.err` on two nodes, 212 with Slurm's default output, 213 with
    a relative `--output` (sbatch makes it absolute) pending behind them."""
    data = json.loads(SQUEUE.read_text())
    logs = slurm_job_logs(data, "211")
    assert [(log.label, str(log.path)) for log in logs.logs] == [
        ("output", "/tmp/logs2/cap/tiny_pp1_tp2_n2/slurm-211.out"),
        ("errors", "/tmp/logs2/cap/root-211.err"),
    ]
    assert logs.title == "job 211 tiny_pp1_tp2_n2 · RUNNING on node[0-1]" and logs.pending is None
    default = slurm_job_logs(data, "212")
    assert [(log.label, str(log.path)) for log in default.logs] == [("output", "/tmp/logs2/cap/slurm-212.out")]
    pending = slurm_job_logs(data, "213")
    assert [str(log.path) for log in pending.logs] == ["/tmp/logs2/cap/rel-213.out"]
    assert pending.pending == "job 213 is pending (Resources): its output starts when it runs"
    with pytest.raises(BadInput, match="job 214: squeue does not know it"):
        slurm_job_logs(data, "214")

"""Staged run folders: the node script's put/get/tail on real files, and the control side's checks. A node's
answers come from the real node script run here; only the ssh transport is a double (the real one is exercised
by the staged Slurm sweep in tests/integration/test_sweep_slurm.py)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from cockpit.jobs.factory import RuntimeEnvironment, SlurmJobFactory
from cockpit.jobs.records import JobRecord
from cockpit.nodes.inventory import Node
from cockpit.nodes.ssh import CONNECTION_LOST, CommandResult
from cockpit.sweep import staging
from cockpit.sweep.staging import StagedRunStorage, StagingFailed, node_script
from cockpit.sweep.strategies import ParallelismStrategy, SweepSettings, sweep_strategies

NODES = [Node("node0", "10.77.0.10"), Node("node1", "10.77.0.11")]


def on_node(root: Path, action: str, *relatives: str, stdin: bytes = b"") -> bytes:
    """The node script, run here as a node runs it."""
    command = [sys.executable, "-c", node_script(), action, str(root), *relatives]
    return subprocess.run(command, input=stdin, capture_output=True, check=True).stdout


def tar_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_put_writes_every_file_whole_and_refuses_a_name_outside_the_run_folder(tmp_path: Path) -> None:
    root = tmp_path / "run"
    report = json.loads(on_node(root, "put", stdin=tar_of({"s/exp_config.json": b"{}\n", "prompts.parquet": b"P"})))
    assert report == {"files": 2, "bytes": 4}
    assert (root / "s" / "exp_config.json").read_bytes() == b"{}\n" and (root / "prompts.parquet").read_bytes() == b"P"
    assert not [p for p in root.rglob("*") if ".stage-" in p.name]  # no temporary left
    report = json.loads(on_node(root, "put", stdin=tar_of({"../escape": b"x"})))
    assert "not a path inside" in report["error"] and not (tmp_path / "escape").exists()


def test_tail_gives_each_files_last_complete_line(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "rank_0.jsonl").write_text('{"n": 1}\n{"n": 2}\n{"n": 3')  # the last line is being written
    (tmp_path / "p" / "rank_1.jsonl").write_text("")
    lines = json.loads(on_node(tmp_path, "tail", "p/rank_0.jsonl", "p/rank_1.jsonl", "p/rank_2.jsonl"))
    assert lines == {"p/rank_0.jsonl": '{"n": 2}'}


def test_get_lists_what_it_sent_and_a_short_copy_is_refused(tmp_path: Path) -> None:
    node = tmp_path / "node"
    (node / "s" / "shards").mkdir(parents=True)
    (node / "s" / "shards" / "rank_0.jsonl").write_bytes(b"a\nb\n" * 500)
    (node / "s" / "log.out").write_text("done\n")
    data = on_node(node, "get", "s")
    files, size = staging._unpack(data, tmp_path / "scratch")
    assert sorted(map(str, files)) == ["s/log.out", "s/shards/rank_0.jsonl"] and size == 2005
    with pytest.raises(ValueError, match="the copy ended early"):
        staging._unpack(data[:1500], tmp_path / "short")
    listing = json.dumps({"s/log.out": [5, 2]}).encode()  # a listing that disagrees with the file sent
    with pytest.raises(ValueError, match=r"s/log.out: 5 bytes, 1 lines, the node listed 5 bytes, 2 lines"):
        staging._unpack(tar_of({"s/log.out": b"done\n", staging.LISTING: listing}), tmp_path / "bad")


def test_a_full_disk_is_named_with_the_free_space() -> None:
    report = {"error": "/runs/r/prompts.parquet: No space left on device", "free_bytes": 12_000}
    result = CommandResult("node1", "node1", "python3 -c", 0, json.dumps(report) + "\n", "", None, 0.1)
    assert staging._put_problem(result) == "/runs/r/prompts.parquet: No space left on device (12.0 kB free there)"


class NodeScriptPool:
    """Answers each node's command by running the node script on that node's folder (`nodes/<name>/...` here
    stands for the same path on each node), or with the error a node's entry in `failing` says."""

    def __init__(self, folders: dict[str, Path], run_dir: Path, failing: dict[str, str] | None = None) -> None:
        self.folders, self.run_dir, self.failing = folders, run_dir, failing or {}

    async def run(self, node: Node, command: str, *, input: bytes | None = None, **_: object) -> CommandResult:
        if node.name in self.failing:
            return CommandResult(node.name, node.name, command, None, "", "", self.failing[node.name], 0.1)
        head, _, tail = command.partition(f" {self.run_dir}")  # python3 -c SCRIPT ACTION RUN_DIR RELATIVE...
        action, args = head.rsplit(" ", 1)[1], tail.split()
        root = self.folders[node.name] / self.run_dir.relative_to("/")
        out = on_node(root, action, *args, stdin=input or b"")
        if action == "get":
            return CommandResult(node.name, node.name, command, 0, "", "", None, 0.1, out)
        return CommandResult(node.name, node.name, command, 0, out.decode(), "", None, 0.1)

    async def run_all(self, nodes: list[Node], command: str, **options: object) -> list[CommandResult]:
        return [await self.run(node, command, **options) for node in nodes]  # type: ignore[arg-type]

    async def close(self) -> None:
        return None


@pytest.fixture
def hybrid(tmp_path: Path) -> tuple[ParallelismStrategy, Path]:
    run_dir = tmp_path / "control" / "runs" / "run_1"
    settings = SweepSettings(
        model_name="tiny", model_path="/models/tiny", model_tag="tiny", run_id="run_1", run_dir=run_dir,
        prompt_df_path=run_dir / "prompts.parquet", nodes=2, gpus_per_node=2,
    )  # fmt: skip
    run_dir.mkdir(parents=True)
    settings.prompt_df_path.write_bytes(b"PAR1")
    return next(s for s in sweep_strategies(settings) if s.kind == "hybrid"), run_dir


def storage(tmp_path: Path, run_dir: Path, **failing: str) -> tuple[StagedRunStorage, Callable[[str], Path]]:
    folders = {node.name: tmp_path / node.name for node in NODES}
    pool = NodeScriptPool(folders, run_dir, failing)
    return StagedRunStorage(run_dir, NODES, pool), lambda name: folders[name] / run_dir.relative_to("/")  # type: ignore[arg-type]


def test_a_job_round_trip_through_two_nodes(tmp_path: Path, hybrid: tuple[ParallelismStrategy, Path]) -> None:
    strategy, run_dir = hybrid
    stage, on = storage(tmp_path, run_dir)
    files = SlurmJobFactory(RuntimeEnvironment()).render(strategy.job_spec())
    assert "3 files" in (stage.send(strategy, files) or "") and "to node[0-1]" in (stage.send(strategy, files) or "")
    folder = Path(strategy.config().output_root).relative_to(run_dir)
    for name in ("node0", "node1"):
        assert (on(name) / folder / "exp_config.json").read_bytes() == files.config.read_bytes()
        assert (on(name) / "prompts.parquet").read_bytes() == b"PAR1" and (on(name) / folder / "logs").is_dir()
    config = strategy.config()
    for rank, name in enumerate(["node0", "node0", "node1", "node1"]):  # what each node's ranks write
        progress = on(name) / config.progress_path(rank).relative_to(run_dir)
        progress.parent.mkdir(parents=True, exist_ok=True)
        progress.write_text(f'{{"rank": {rank}, "beat": 1}}\n{{"rank": {rank}, "beat": 2}}\n')
    stage.mirror(strategy, JobRecord("7", "RUNNING", nodes="node[0-1]"))  # returns at once: the tail runs beside
    stage._mirror_done()
    assert all(config.progress_path(r).read_text() == f'{{"rank": {r}, "beat": 2}}\n' for r in range(4))

    (on("node0") / folder / "logs" / "slurm-7.out").write_text("ok\n")
    fetched = stage.fetch(strategy, JobRecord("7", "COMPLETED", nodes="node[0-1]"))
    assert fetched is not None and not fetched.problems
    assert (run_dir / folder / "logs" / "slurm-7.out").read_text() == "ok\n"
    assert config.progress_path(3).read_text().count("\n") == 2  # the whole file now, not the mirrored line
    assert not (run_dir / staging.SCRATCH).exists() or not any((run_dir / staging.SCRATCH).iterdir())
    stage.close()


def test_a_node_lost_during_the_copy_back_is_named_and_none_of_its_files_arrive(
    tmp_path: Path, hybrid: tuple[ParallelismStrategy, Path]
) -> None:
    strategy, run_dir = hybrid
    stage, on = storage(tmp_path, run_dir, node1=CONNECTION_LOST)
    folder = Path(strategy.config().output_root).relative_to(run_dir)
    for name in ("node0", "node1"):
        (on(name) / folder / "shards").mkdir(parents=True)
        (on(name) / folder / "shards" / f"{name}.jsonl").write_text("row\n")
    fetched = stage.fetch(strategy, JobRecord("8", "COMPLETED", nodes="node[0-1]"))
    assert fetched is not None and fetched.problems == (f"node1: {CONNECTION_LOST}",)
    assert (run_dir / folder / "shards" / "node0.jsonl").exists()
    assert not (run_dir / folder / "shards" / "node1.jsonl").exists()
    stage.close()


def test_ctrl_c_while_checking_a_copy_leaves_nothing_half_copied(
    tmp_path: Path, hybrid: tuple[ParallelismStrategy, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    strategy, run_dir = hybrid
    stage, on = storage(tmp_path, run_dir)
    folder = Path(strategy.config().output_root).relative_to(run_dir)
    for name in ("node0", "node1"):
        (on(name) / folder).mkdir(parents=True)
        (on(name) / folder / f"{name}.jsonl").write_text("row\n")
    unpack, calls = staging._unpack, []

    def interrupted_on_the_second_node(data: bytes, scratch: Path) -> tuple[list[Path], int]:
        calls.append(scratch)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return unpack(data, scratch)

    monkeypatch.setattr(staging, "_unpack", interrupted_on_the_second_node)
    with pytest.raises(KeyboardInterrupt):
        stage.fetch(strategy, JobRecord("9", "COMPLETED", nodes="node[0-1]"))
    assert not (run_dir / folder).exists()  # node0's checked copy was not moved in either
    assert not any((run_dir / staging.SCRATCH).iterdir())
    stage.close()


def test_a_node_that_cannot_take_the_files_stops_the_submission(
    tmp_path: Path, hybrid: tuple[ParallelismStrategy, Path]
) -> None:
    strategy, run_dir = hybrid
    stage, _ = storage(tmp_path, run_dir, node1="connection refused on port 22 (is sshd running?)")
    files = SlurmJobFactory(RuntimeEnvironment()).render(strategy.job_spec())
    with pytest.raises(StagingFailed, match=r"node1: connection refused on port 22 .*\nno job was submitted"):
        stage.send(strategy, files)
    stage.close()

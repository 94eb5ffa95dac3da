"""The model on every node, without the nodes: the stat listing and the folder report the nodes send, the push
record (reused, rehashed, kept per node), each verdict, the copy here changed since the push, when a sweep checks
at all, the nodes table's marks, and the CLI's argument errors. Node checks run through the real ssh pool on nodes
that are this machine (`local`), so the node side is the real script on stdin; the sshd hosts are in
tests/integration/test_model_push.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from cockpit.config import ClusterSection, CockpitFile, ModelSection, PathsSection, RunStorageKind, Settings
from cockpit.delivery import model
from cockpit.delivery.tree_digest import digest_of, folder_report, listing, stat_listing
from cockpit.delivery.verify import digest_source
from cockpit.errors import BAD_INPUT, BadInput
from cockpit.nodes.inventory import Node
from cockpit.nodes.ssh import CommandResult, SshPool
from cockpit.tui.node_board import NodeBoard

REPO = Path(__file__).resolve().parents[2]
NODES = [Node("node0", "127.0.0.1", local=True), Node("node1", "127.0.0.1", local=True)]


def make_model(folder: Path) -> Path:
    (folder / ".cache" / "huggingface").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "download.lock").write_text("")  # derived: left out
    (folder / "config.json").write_text('{"hidden_size": 64}\n')
    (folder / "model.safetensors").write_bytes(os.urandom(4096))
    return folder


def settings_for(
    tmp_path: Path, scheduler: str = "slurm", run_storage: RunStorageKind = "shared", folder: Path | None = None
) -> Settings:
    file = CockpitFile(
        cluster=ClusterSection(scheduler=scheduler),  # type: ignore[arg-type]
        paths=PathsSection(data_dir=str(tmp_path / "data"), run_storage=run_storage),
        model=ModelSection(name="tiny", path=str(folder or tmp_path / "models" / "tiny")),
    )
    return Settings(file, tmp_path / "cockpit.toml")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    make_model(tmp_path / "models" / "tiny")
    return settings_for(tmp_path)


def rewrite_keeping_size_and_mtime(path: Path) -> None:
    info = path.stat()
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


def test_stat_listing_has_sizes_and_mtimes_where_the_listing_has_hashes(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "m")
    lines, total = stat_listing(folder)
    info = (folder / "model.safetensors").stat()
    assert lines == [
        f"config.json\tfile\t20\t{(folder / 'config.json').stat().st_mtime_ns}",
        f"model.safetensors\tfile\t4096\t{info.st_mtime_ns}",
    ]
    assert total == 4096 + 20 == listing(folder)[1]


def test_the_folder_report_runs_alone_on_stdin(tmp_path: Path) -> None:
    """As on a node: `python3 - --folder PATH [--full]` with tree_digest.py on stdin, nothing else importable."""
    folder = make_model(tmp_path / "m")

    def report(*args: str) -> dict:
        done = subprocess.run(
            [sys.executable, "-I", "-", "--folder", *args], input=digest_source(), capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    cheap = report(str(folder))
    assert cheap == {"present": True, "stats": stat_listing(folder)[0], "bytes": 4116, "listing": None, "digest": None}
    full = report(str(folder), "--full")
    assert full["listing"] == listing(folder)[0] and full["digest"] == digest_of(listing(folder)[0])
    assert report(str(tmp_path / "none"))["present"] is False
    assert folder_report(folder, full=True) == full


def test_a_snapshot_of_links_lists_as_the_files_it_points_to(tmp_path: Path) -> None:
    """A Hugging Face snapshot is links into the cache's blobs; the node's copy (rsync --copy-links) is the files."""
    copy = make_model(tmp_path / "copy")
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshot"
    blobs.mkdir()
    snapshot.mkdir()
    for name in ("config.json", "model.safetensors"):
        blob = blobs / f"blob-{name}"
        shutil.copy2(copy / name, blob)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    assert listing(snapshot, follow_links=True) == listing(copy, follow_links=True)
    assert stat_listing(snapshot, follow_links=True) == stat_listing(copy, follow_links=True)
    assert listing(snapshot)[0] != listing(copy)[0]  # a runtime build's links stay links
    (blobs / "blob-config.json").unlink()
    with pytest.raises(ValueError, match=r"snapshot/config.json: a link to \.\./blobs/blob-config.json, which is not"):
        listing(snapshot, follow_links=True)


def test_a_model_folder_with_a_dangling_link_is_refused_by_name(settings: Settings) -> None:
    (settings.model_path / "tokenizer.json").symlink_to("../gone/tokenizer.json")
    with pytest.raises(BadInput, match=r"model folder .*tiny/tokenizer.json: a link to \.\./gone/tokenizer.json"):
        model.hash_here(settings)


def test_the_push_record_is_hashed_once_and_reused_while_nothing_changes(settings: Settings) -> None:
    said: list[str] = []
    first = model.hash_here(settings, progress=said.append)
    assert said == [f"hashing {settings.model_path} (2 files, 4.1 kB)"]
    assert first.digest == digest_of(listing(settings.model_path)[0]) and first.bytes == 4116
    assert model.read_record(settings) is None  # hashing writes nothing: the push does
    model.write_record(settings, replace(first, nodes={"node0": model.NodeEntry("ok", "", "t", "t", first.stats)}))
    assert model.record_path(settings) == settings.data_dir / "models" / "tiny.push.json"
    assert model.hash_here(settings, progress=said.append) == model.read_record(settings) and len(said) == 1
    assert model.hash_here(settings, full=True).nodes.keys() == {"node0"}  # hashed again, the same digest
    (settings.model_path / "config.json").write_text('{"hidden_size": 32}\n')  # the same size, new content
    changed = model.hash_here(settings)
    assert changed.digest != first.digest and changed.nodes == {}  # no node has this one yet


def test_a_bad_record_is_named_and_another_folders_is_none(settings: Settings, tmp_path: Path) -> None:
    path = model.record_path(settings)
    path.parent.mkdir(parents=True)
    path.write_text("{torn")
    with pytest.raises(BadInput, match=f"{path}: not valid JSON"):
        model.read_record(settings)
    path.write_text('{"path": 3}')
    with pytest.raises(BAD_INPUT, match=f"{path}: path: expected string"):
        model.read_record(settings)
    record = model.hash_here(settings)  # a push replaces a corrupt record
    model.write_record(settings, replace(record, path="/elsewhere/tiny"))
    assert model.read_record(settings) is None


@pytest.mark.parametrize(
    ("scheduler", "run_storage", "pushed", "needed"),
    [
        ("local", "shared", True, False),  # every rank runs here, on this very folder
        ("slurm", "shared", False, False),  # the model on the storage the nodes share, as before any push
        ("slurm", "shared", True, True),
        ("slurm", "staged", False, True),  # nothing says the nodes see this machine's files
    ],
)
def test_when_a_sweep_checks_the_model(
    tmp_path: Path, scheduler: str, run_storage: RunStorageKind, pushed: bool, needed: bool
) -> None:
    settings = settings_for(tmp_path, scheduler, run_storage, make_model(tmp_path / "models" / "tiny"))
    if pushed:
        model.write_record(settings, model.hash_here(settings))
    assert model.model_check_needed(settings, scheduler, run_storage) is needed


def result(stdout: str = "", error: str | None = None, status: int | None = 0, node: str = "node1") -> CommandResult:
    return CommandResult(node, node, "python3 - --folder /m", status, stdout, "", error, 0.1)


def test_verdicts_name_the_node_and_what_is_wrong(settings: Settings) -> None:
    record = model.hash_here(settings)
    report = folder_report(settings.model_path, full=True)
    touched = [line.replace("\tfile\t20\t", "\tfile\t21\t") for line in report["stats"]]  # type: ignore[union-attr]

    def judge(mode: model.Mode, **changes: object) -> model.NodeModel:
        return model.judge(result(json.dumps({**report, **changes})), record, mode)[0]

    assert judge("cheap").state == "not pushed"  # nothing vouched for node1's copy yet
    pushed = replace(record, nodes={"node1": model.NodeEntry("ok", "", "t", "t", record.stats)})
    assert model.judge(result(json.dumps(report)), pushed, "cheap") == (
        model.NodeModel("node1", "ok", "2 files, 4.1 kB, sizes and mtimes unchanged"),
        record.stats,
    )
    differs = model.judge(result(json.dumps({**report, "stats": touched})), pushed, "cheap")[0]
    assert (differs.state, differs.detail) == ("differs", f"{settings.model_path}: changed: config.json")
    later = [line.rsplit("\t", 1)[0] + "\t1" for line in report["stats"]]  # type: ignore[union-attr]
    assert judge("copied", stats=later).ok  # a fresh copy: the sizes must match; mtimes are the node's own
    assert judge("copied", stats=touched).state == "differs"
    assert judge("full").detail == "2 files, 4.1 kB hashed"
    other = [*report["listing"][:1], "model.safetensors\tfile\t" + "0" * 64]  # type: ignore[index]
    found = judge("full", listing=other, digest=digest_of(other))
    assert (found.state, found.detail) == ("differs", f"{settings.model_path}: changed: model.safetensors")
    assert judge("cheap", present=False).detail == f"{settings.model_path} is not there"
    assert model.judge(result(error="connection refused on port 22"), record, "cheap")[0].state == "unreachable"
    assert model.judge(result("Traceback ...", status=1), record, "full")[0].state == "error"


def test_summary_is_a_table_with_the_fixing_commands(settings: Settings) -> None:
    record = model.hash_here(settings)
    checks = (
        model.NodeModel("node0", "ok", "2 files, 4.1 kB, sizes and mtimes unchanged"),
        model.NodeModel("node1", "differs", "/m: changed: config.json"),
        model.NodeModel("node2", "unreachable", "no answer within 5 s (connect timeout)"),
    )
    text = model.ModelCheck(str(settings.model_path), record, False, checks).summary(" --config c.toml")
    assert text.startswith(f"model {settings.model_path} ({record.short}, hashed {record.hashed_at}): ")
    assert "node[1-2] lack(s) it\nnode   state        detail\nnode0  ok           2 files" in text
    assert text.endswith(
        "fix:\n  cluster --config c.toml compute up node2\n  cluster --config c.toml model push node[1-2]"
    )
    full = model.ModelCheck(str(settings.model_path), record, True, checks[1:2]).fixes()
    assert full == ["cluster model push --full node1"]  # rsync must compare contents to repair what it found
    never = model.ModelCheck("/m", None, False, (model.NodeModel("node0", "not pushed", "x"),)).summary()
    assert never.startswith("model /m: never pushed to the nodes\n") and never.endswith("cluster model push node0")


async def test_a_push_then_cheap_checks_then_full_ones(settings: Settings, tmp_path: Path) -> None:
    """The nodes are this machine, so their copy is the copy here: what a node reports is real, what it is
    compared with is set up through the record."""
    async with SshPool(tmp_path / "known_hosts") as pool:
        record = model.hash_here(settings)
        pushed = await model.check_pushed(pool, NODES, settings, record)
        assert pushed.ok and [c.detail for c in pushed.checks] == ["2 files, 4.1 kB copied"] * 2
        kept = model.read_record(settings)
        assert kept is not None and kept.nodes["node0"].pushed_at is not None
        assert kept.nodes["node0"].stats == record.stats
        assert (await model.check(pool, NODES, settings)).ok
        stale = ("config.json\tfile\t20\t1", *record.stats[1:])  # node1 matched when config.json had another mtime
        model.write_record(
            settings, replace(kept, nodes={**kept.nodes, "node1": replace(kept.nodes["node1"], stats=stale)})
        )
        verdict = await model.check(pool, NODES, settings)
        assert [c.state for c in verdict.checks] == ["ok", "differs"] and "changed: config.json" in verdict.checks[
            1
        ].detail
        kept = model.read_record(settings)
        assert kept is not None and kept.nodes["node1"].state == "differs" and kept.nodes["node1"].stats == stale
        assert model.gaps(settings, ["node0", "node1", "node2"]) == {
            "node1": "model differs",
            "node2": "model not pushed",
        }
        full = await model.check(pool, NODES, settings, full=True)  # hashed: node1's copy is the pushed one after all
        assert full.ok and [c.detail for c in full.checks] == ["2 files, 4.1 kB hashed"] * 2
        assert model.gaps(settings, ["node0", "node1"]) == {}


async def test_a_copy_here_changed_since_the_push_needs_every_node_pushed_again(
    settings: Settings, tmp_path: Path
) -> None:
    async with SshPool(tmp_path / "known_hosts") as pool:
        await model.check_pushed(pool, NODES, settings, model.hash_here(settings))
        config = settings.model_path / "config.json"
        os.utime(config, ns=(0, config.stat().st_mtime_ns + 1))
        verdict = await model.check(pool, NODES, settings)
        assert verdict.changed_here == ("changed: config.json",)
        assert [(c.state, c.detail) for c in verdict.checks] == [
            ("outdated", "pushed before the copy here changed")
        ] * 2
        assert "the copy here changed since the push (changed: config.json), every node needs it" in verdict.summary()
        assert model.gaps(settings, ["node0"]) == {"node0": "model outdated"}
        with pytest.raises(BadInput, match=r"(?s)model push node\[0-1\]\nno job was submitted$"):
            await model.require_model(pool, NODES, settings)
        os.utime(config, ns=(0, config.stat().st_mtime_ns - 1))
        rewrite_keeping_size_and_mtime(settings.model_path / "model.safetensors")
        assert (await model.require_model(pool, NODES, settings)).digest == model.read_record(settings).digest  # type: ignore[union-attr]
        full = await model.check(pool, NODES, settings, full=True)  # a change only hashing sees
        assert full.changed_here == ("changed: model.safetensors",) and not full.ok
        assert full.fixes() == ["cluster model push --full node[0-1]"]


async def test_a_model_never_pushed_stops_a_sweep_with_the_push_to_run(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, run_storage="staged", folder=make_model(tmp_path / "m"))
    assert model.gaps(settings, ["node0"]) == {"node0": "model not pushed"}
    async with SshPool(tmp_path / "known_hosts") as pool:
        with pytest.raises(BadInput) as caught:
            await model.require_model(pool, NODES, settings)
    assert str(caught.value) == (
        f"model {tmp_path / 'm'}: never pushed to the nodes\n"
        "node   state       detail\n"
        f"node0  not pushed  cluster model push has not copied {tmp_path / 'm'} to it\n"
        f"node1  not pushed  cluster model push has not copied {tmp_path / 'm'} to it\n"
        "fix:\n"
        f"  cluster --config {tmp_path / 'cockpit.toml'} model push node[0-1]\n"
        "no job was submitted"
    )
    assert model.gaps(settings_for(tmp_path, scheduler="local", folder=tmp_path / "m"), ["node0"]) == {}


def test_the_nodes_table_marks_a_node_that_lacks_the_model() -> None:
    board = NodeBoard(["node0", "node1"])
    board.set_model_gaps({"node1": "model differs"})
    cells = dict(board.rows())
    assert str(cells["node0/-"][1]) == "unknown" and str(cells["node1/-"][1]) == "unknown · model differs"
    assert board.problems() == [("node1", "model differs")]


def cluster(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(REPO / "cluster.py"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("model", "push", "--fast"), "unrecognized arguments: --fast"),
        (("model", "verify", "nosuch"), "embedded default: 'nosuch' match(es) no node (known: localhost)"),
        (("model", "push"), "no model folder here ([model] path)"),
        (("model", "verify"), "model push localhost"),
    ],
    ids=["unknown-flag", "no-such-node", "no-model-folder", "never-pushed"],
)
def test_model_commands_refuse_bad_input_with_exit_2(isolated_home: Path, args: tuple[str, ...], message: str) -> None:
    done = cluster(*args, cwd=isolated_home)
    assert done.returncode == 2 and message in done.stderr, done.stderr

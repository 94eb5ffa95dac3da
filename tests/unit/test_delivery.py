"""Runtime delivery's pure parts: the tree digest, the build manifest, the verdicts on nodes' reports, the
configuration, and the Apptainer definition file and build command (the image build itself runs only where
apptainer is installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from cockpit.config import Settings, parse_config
from cockpit.delivery.build import (
    APPTAINER_BASE_IMAGES,
    IMAGE_PYTHON,
    IMAGE_SOURCE,
    build_image,
    definition_file,
    image_build_command,
    runtime_requirements,
    stage_sources,
)
from cockpit.delivery.tree_digest import LISTING_NAME, differences, digest_of, file_sha256, installed, listing
from cockpit.delivery.verify import Target, Verification, digest_source, judge
from cockpit.errors import BadInput, OperationFailed
from cockpit.nodes.ssh import CommandResult
from runtime.contract import BuildManifest, loads
from runtime.schema import InputError, to_plain

REPO = Path(__file__).resolve().parents[2]

DIGEST = "sha256:" + "ab" * 32
BUILD = BuildManifest(
    build_id="0.1.0-abababababab",
    runtime_version="0.1.0",
    git_commit="f00d",
    python="3.11.7",
    torch="2.13.0+cpu",
    deepspeed="0.19.8",
    transformers="5.23.0",
    device="cpu",
    delivery="venv",
    digest=DIGEST,
    built_at="2026-11-24T01:00:00+00:00",
)
TARGET = Target("venv", "/opt/cockpit/runtime", BUILD.build_id)


def make_tree(root: Path) -> Path:
    (root / "venv" / "bin").mkdir(parents=True)
    (root / "venv" / "bin" / "tool").write_text("#!/bin/sh\n")
    (root / "venv" / "bin" / "tool").chmod(0o755)
    (root / "venv" / "bin" / "python").symlink_to("/usr/bin/python3")
    (root / "src" / "runtime" / "__pycache__").mkdir(parents=True)
    (root / "src" / "runtime" / "main.py").write_text("print('hi')\n")
    (root / "src" / "runtime" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    return root


def test_listing_names_files_links_and_exec_bits_and_leaves_derived_files_out(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "build")
    for derived in ("build_manifest.json", LISTING_NAME):
        (root / derived).write_text("{}")
    (root / ".cache").mkdir()
    (root / ".cache" / "op.so").write_bytes(b"compiled")
    lines, total = listing(root)
    assert [line.split("\t")[:2] for line in lines] == [
        ["src/runtime/main.py", "file"],
        ["venv/bin/python", "link"],
        ["venv/bin/tool", "exec"],
    ]
    assert lines[1].endswith("\t/usr/bin/python3") and total == len("print('hi')\n") + len("#!/bin/sh\n")


def test_digest_follows_content_mode_and_links_not_derived_files(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "build")
    before = digest_of(listing(root)[0])
    (root / "src" / "runtime" / "__pycache__" / "other.pyc").write_bytes(b"1")  # running it writes these
    (root / "build_manifest.json").write_text("{}")
    assert digest_of(listing(root)[0]) == before
    (root / "venv" / "bin" / "tool").chmod(0o644)
    assert digest_of(listing(root)[0]) != before
    (root / "venv" / "bin" / "tool").chmod(0o755)
    (root / "src" / "runtime" / "main.py").write_text("print('ho')\n")
    assert digest_of(listing(root)[0]) != before


def test_differences_are_named_then_counted() -> None:
    want = [f"f{i}\tfile\tx" for i in range(12)]
    have = [*want[1:11], "f11\tfile\ty", "new\tfile\tz"]
    found = differences(want, have)
    assert found[:3] == ["changed: f11", "missing: f0", "extra: new"]
    found = differences(want, [])
    assert len(found) == 11 and found[-1] == "... and 2 more"


def test_installed_reports_a_folder_and_what_current_points_at(tmp_path: Path) -> None:
    folder = make_tree(tmp_path / "root" / BUILD.build_id)
    lines, _ = listing(folder)
    (folder / LISTING_NAME).write_text("\n".join(lines) + "\n")
    (folder / "build_manifest.json").write_text('{"build_id": "x"}')
    (tmp_path / "root" / "current").symlink_to(BUILD.build_id)
    report = installed(tmp_path / "root", BUILD.build_id)
    assert report["present"] and report["digest"] == digest_of(lines) and report["differences"] == []
    assert report["current"] == BUILD.build_id and report["current_manifest"] == '{"build_id": "x"}'
    assert installed(tmp_path / "root", "0.1.0-000000000000")["present"] is False


def test_the_digest_script_runs_alone_on_stdin(tmp_path: Path) -> None:
    """As on a node: `python3 - ROOT NAME` with the file on stdin, nothing of the cockpit importable."""
    folder = make_tree(tmp_path / "root" / "image-less")
    done = subprocess.run(
        [sys.executable, "-I", "-", str(tmp_path / "root"), "image-less"],
        input=digest_source(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout)["digest"] == digest_of(listing(folder)[0])


def result(stdout: str = "", error: str | None = None, status: int | None = 0) -> CommandResult:
    return CommandResult("node1", "node1 (10.77.0.11)", "python3 -", status, stdout, "", error, 0.1)


def report(**changes: object) -> str:
    base = {
        "present": True,
        "current": BUILD.build_id,
        "current_manifest": None,
        "manifest": json.dumps(to_plain(BUILD)),
        "digest": DIGEST,
        "files": 3,
        "bytes": 10,
        "differences": [],
    }
    return json.dumps({**base, **changes})


def test_verdicts_name_the_node_and_what_is_wrong() -> None:
    assert judge(result(report()), BUILD, TARGET).ok
    assert judge(result(error="connection refused on port 22"), BUILD, TARGET).state == "unreachable"
    missing = judge(result(report(present=False, current="0.0.9-000000000000")), BUILD, TARGET)
    assert (missing.state, missing.current) == ("missing", "0.0.9-000000000000")
    differs = judge(result(report(digest="sha256:" + "00" * 32, differences=["changed: src/x.py"])), BUILD, TARGET)
    assert differs.state == "differs" and differs.detail.endswith(": changed: src/x.py")
    corrupt = judge(result(report(manifest="{")), BUILD, TARGET)
    assert corrupt.state == "corrupt" and corrupt.detail.startswith(f"node1:{TARGET.manifest_path}: not valid JSON")
    wrong = judge(result(report(manifest=json.dumps({**to_plain(BUILD), "device": "xpu"}))), BUILD, TARGET)
    assert wrong.state == "wrong device" and "built for xpu, not cpu" in wrong.detail
    assert judge(result("Traceback ...", status=1), BUILD, TARGET).state == "error"


def test_summary_is_a_table_with_the_fixing_commands() -> None:
    checks = (
        judge(replace(result(report()), node="node0"), BUILD, TARGET),
        judge(result(error="no answer within 5 s (connect timeout)"), BUILD, TARGET),
    )
    text = Verification(BUILD, TARGET, checks).summary(" --config c.toml")
    assert f"runtime {BUILD.build_id} (venv, cpu) at /opt/cockpit/runtime/{BUILD.build_id}: node1 differ(s)" in text
    assert "node0  ok           0.1.0-abababababab  3 files" in text
    assert "node1  unreachable  -                   no answer within 5 s" in text
    assert text.endswith(
        "fix:\n  cluster --config c.toml compute up node1\n  cluster --config c.toml runtime deploy node1"
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"build_id": "0.1.0-ffffffffffff"}, "m.json: build_id: expected '0.1.0-abababababab'"),
        ({"digest": "md5:00"}, "m.json: digest: expected 'sha256:' and 64 hex digits"),
        ({"device": "auto"}, "m.json: device"),
    ],
)
def test_manifest_checks_its_fields(changes: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        loads(BuildManifest, json.dumps({**to_plain(BUILD), **changes}), "m.json")


def test_runtime_section_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    settings = parse_config('[paths]\ndata_dir = "d"\n[runtime]\ndelivery = "venv"\n', path)
    assert settings.runtime.delivery == "venv" and settings.runtime_build_dir == tmp_path / "d" / "runtime"
    assert settings.runtime_device() == "cpu" and settings.runtime_device("xpu") == "xpu"
    with pytest.raises(BadInput, match=r"a build is for one device kind .*, not 'auto'"):
        settings.runtime_device("auto")
    for line, message in [
        ('install_root = "opt/x"', "runtime.install_root: expected an absolute path"),
        ('extra_index_urls = { rocm = "u" }', r"runtime.extra_index_urls: keys are device kinds"),
        ('delivery = "docker"', "runtime.delivery"),
        ("keep_builds = 0", "runtime.keep_builds: expected at least 1"),
    ]:
        with pytest.raises(InputError, match=message):
            parse_config(f"[runtime]\n{line}\n", path)


def test_requirements_are_the_projects_runtime_extra() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert runtime_requirements("cpu") == runtime_requirements("xpu") == extras["runtime"]  # not the retired xpu one
    assert runtime_requirements("cuda") == extras["runtime"] + extras["cuda"]  # with NVML's bindings
    assert any(spec.startswith("nvidia-ml-py") for spec in extras["cuda"])


def test_a_build_stages_the_requirements_and_this_trees_runtime(tmp_path: Path) -> None:
    requirements = stage_sources(tmp_path / "context", "cpu")
    assert (tmp_path / "context" / "requirements.txt").read_text().splitlines() == requirements
    staged = sorted(p.relative_to(tmp_path / "context" / "src") for p in (tmp_path / "context" / "src").rglob("*.py"))
    assert staged == sorted(
        p.relative_to(REPO) for p in (REPO / "runtime").rglob("*.py") if "__pycache__" not in p.parts
    )


def declared_arguments(text: str) -> set[str]:
    block = text.split("%arguments", 1)[1].split("\n%", 1)[0]
    return {line.split("=")[0].strip() for line in block.strip().splitlines()}


def test_definition_file_installs_the_runtime_extra_and_this_trees_runtime() -> None:
    text = definition_file()
    assert "Bootstrap: docker\nFrom: {{ BASE_IMAGE }}\n" in text
    assert re.findall(r"^%(\w+)", text, re.MULTILINE) == [
        "arguments", "files", "post", "environment", "runscript", "labels",
    ]  # fmt: skip
    assert "requirements.txt /opt/cockpit/requirements.txt" in text
    assert f"src/runtime {IMAGE_SOURCE}/runtime" in text and f"export PYTHONPATH={IMAGE_SOURCE}" in text
    assert f"python3 -m venv {Path(IMAGE_PYTHON).parents[1]}" in text
    assert f"{Path(IMAGE_PYTHON).parent}/pip install --no-cache-dir --no-input $EXTRA -r" in text
    assert set(re.findall(r"\{\{ (\w+) \}\}", text)) == declared_arguments(text)


@pytest.mark.parametrize("device", ["cpu", "cuda", "xpu"])
def test_image_build_command_gives_the_device_kinds_base_and_index(tmp_path: Path, device: str) -> None:
    url = "https://download.pytorch.org/whl/xpu"
    settings = parse_config(f'[runtime]\nextra_index_urls = {{ xpu = "{url}" }}\n', tmp_path / "c.toml")
    command = image_build_command(tmp_path / "r.sif", tmp_path / "runtime.def", settings, device)  # type: ignore[arg-type]
    assert command[:3] == ["apptainer", "build", "--force"]
    assert command[-2:] == [str(tmp_path / "r.sif"), str(tmp_path / "runtime.def")]
    args = dict(command[i + 1].split("=", 1) for i, word in enumerate(command) if word == "--build-arg")
    assert set(args) == declared_arguments(definition_file())
    assert (args["BASE_IMAGE"], args["DEVICE"]) == (APPTAINER_BASE_IMAGES[device], device)
    assert args["EXTRA_INDEX_URL"] == (url if device == "xpu" else "")


def image_settings(tmp_path: Path) -> Settings:
    return parse_config(f'[paths]\ndata_dir = "{tmp_path}"\n[runtime]\ndelivery = "apptainer"\n', tmp_path / "c.toml")


def test_image_build_without_apptainer_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(OperationFailed, match="apptainer not found on this machine"):
        build_image(image_settings(tmp_path), "cpu", print)


@pytest.mark.skipif(shutil.which("apptainer") is None, reason="apptainer is not installed on this machine")
def test_image_build_where_apptainer_exists(tmp_path: Path) -> None:
    manifest = build_image(image_settings(tmp_path), "cpu", print)
    image = tmp_path / "runtime" / "apptainer-cpu" / "runtime.sif"
    assert manifest.digest == f"sha256:{file_sha256(image)}" and manifest.torch.startswith("2.13.0")
    assert (manifest.delivery, manifest.device, manifest.files) == ("apptainer", "cpu", 1)

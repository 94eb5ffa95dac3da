"""remote.py against a real sshd test host acting as Host `control`: rsync, quoting, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra.services import TestHosts

pytestmark = pytest.mark.infra
REMOTE_PY = Path(__file__).resolve().parents[2] / "remote.py"


@pytest.fixture
def control(test_hosts: TestHosts, tmp_path: Path) -> Path:
    """An ssh config in which Host `control` is node0 (10.77.0.10)."""
    node0 = test_hosts.hosts[0]
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host control\n  HostName {node0.address}\n  User root\n  IdentityFile {test_hosts.key}\n"
        f"  IdentitiesOnly yes\n  UserKnownHostsFile {test_hosts.known_hosts}\n  StrictHostKeyChecking yes\n"
        "  BatchMode yes\n  ConnectTimeout 3\n"
        f"Host unreachable\n  HostName 10.77.0.99\n  User root\n  IdentityFile {test_hosts.key}\n"
        "  BatchMode yes\n  ConnectTimeout 2\n"
    )
    return config


@pytest.fixture
def project(tmp_path: Path) -> Path:
    tree = tmp_path / "proj"
    (tree / "sub").mkdir(parents=True)
    (tree / ".git").mkdir()
    (tree / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (tree / ".gitignore").write_text("*.log\nbuild/\n")
    (tree / "with space.txt").write_text("hello\n")
    (tree / "sub" / "code.py").write_text("print('hi')\n")
    (tree / "debug.log").write_text("ignored\n")
    (tree / "build").mkdir()
    (tree / "build" / "out.bin").write_text("ignored\n")
    return tree


def remote(project: Path, control: Path, dest: Path, *command: str, host: str = "control"):
    return subprocess.run(
        [sys.executable, str(REMOTE_PY), "--host", host, "--ssh-config", str(control), "--dest", str(dest), *command],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_syncs_the_tree_and_runs_there(project: Path, control: Path, tmp_path: Path) -> None:
    dest = tmp_path / "on-control" / "proj"
    done = remote(project, control, dest, "hostname; pwd; ls -A | sort")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["node0", str(dest), ".gitignore", "sub", "with space.txt"]
    assert (dest / "sub" / "code.py").read_text() == "print('hi')\n"


def test_mirrors_deletions_but_keeps_ignored_remote_files(project: Path, control: Path, tmp_path: Path) -> None:
    dest = tmp_path / "mirror"
    assert remote(project, control, dest, "true").returncode == 0
    (dest / "cache.log").write_text("made on control\n")
    (project / "with space.txt").unlink()
    assert remote(project, control, dest, "true").returncode == 0
    assert not (dest / "with space.txt").exists()
    assert (dest / "cache.log").exists()  # ignored files on the remote side are not deleted


def test_arguments_are_quoted_and_exit_code_returned(project: Path, control: Path, tmp_path: Path) -> None:
    dest = tmp_path / "q"
    done = remote(project, control, dest, "--", "printf", "%s|", "a b", "it's", "$HOME", "x;y")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "a b|it's|$HOME|x;y|"
    failing = remote(project, control, dest, "echo partial; exit 7")
    assert failing.returncode == 7 and failing.stdout == "partial\n"


def test_unreachable_host_says_so(project: Path, control: Path, tmp_path: Path) -> None:
    done = remote(project, control, tmp_path / "x", "true", host="unreachable")
    assert done.returncode != 0
    assert "remote.py: rsync of" in done.stderr and "to unreachable:" in done.stderr

"""The node_disk role applied for real to loop devices on this machine, in one run on five "nodes" (this
machine each time, through a local connection): an empty disk is partitioned, formatted, labelled and mounted;
a disk laid out as the role lays it out is left alone (a file on it kept) and mounted; one with a partition table
and another filesystem is refused and left as it was; a path that is no disk is named; a node without
node_disk_device is not touched. Each node's label is the test's own (not `models`), and the mount points and
fstabs are in the test's folder."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cockpit.provision.events import HostResult, ProvisionEvent, Recap
from cockpit.provision.runner import PlaybookRun
from tests.infra.services import infra_unavailable, require_root

pytestmark = pytest.mark.infra

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "ansible" / "playbooks" / "node_disk.yml"
KEPT = "kept"  # a file on the disk made before the run
TOOLS = ("losetup", "parted", "wipefs", "blkid", "mkfs.ext4", "lsblk", "findmnt")
MOUNT_TASK = "Mount it, and at boot"


def sh(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}: {done.stderr}"
    return done.stdout


def probe(device: str) -> str:
    """What blkid finds on a device, without its cache (empty: nothing)."""
    return subprocess.run(["blkid", "-p", device], capture_output=True, text=True, check=False).stdout


@dataclass(frozen=True)
class Disks:
    folder: Path
    empty: str
    made: str
    taken: str

    def mount_dir(self, host: str) -> Path:
        return self.folder / f"mnt-{host}"


def label(host: str) -> str:
    return f"cktest-{host}"


def partition(disk: str, name: str, fstype: str = "ext4") -> str:
    """A GPT with one partition `name` on `disk`, its filesystem labelled `name`, as the role makes it."""
    sh("parted", "-s", disk, "mklabel", "gpt", "mkpart", name, fstype, "1MiB", "100%")
    if not Path(f"{disk}p1").exists():
        infra_unavailable(f"no partition device {disk}p1 after partitioning a loop device (no udev?)")
    sh(f"mkfs.{fstype}", "-q", "-L", name, f"{disk}p1")
    return f"{disk}p1"


@pytest.fixture(scope="module")
def disks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Disks]:
    require_root()
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        infra_unavailable(f"missing {', '.join(missing)}: run scripts/setup test")
    folder = tmp_path_factory.mktemp("node-disk")
    devices = []
    try:
        for name in ("empty", "made", "taken"):
            backing = folder / f"{name}.img"
            with backing.open("wb") as file:
                file.truncate(64 << 20)
            devices.append(sh("losetup", "--find", "--show", "--partscan", str(backing)).strip())
        disks = Disks(folder, *devices)
        made = partition(disks.made, label("made"))
        mount = disks.mount_dir("made")
        mount.mkdir()
        sh("mount", made, str(mount))
        (mount / KEPT).write_text("on the disk\n")
        sh("umount", str(mount))
        partition(disks.taken, "data")
        yield disks
    finally:
        for host in ("empty", "made", "taken"):
            subprocess.run(["umount", str(folder / f"mnt-{host}")], capture_output=True, check=False)
        for device in devices:
            subprocess.run(["losetup", "--detach", device], check=False)


def play(disks: Disks, hosts: dict[str, str | None]) -> tuple[PlaybookRun, list[ProvisionEvent]]:
    """The role's playbook on `hosts` (all this machine): each with its node_disk_device, or none."""
    lines = ["[compute]"]
    for host, device in hosts.items():
        settings = {
            "ansible_connection": "local",
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_become": "false",  # the test runs as root, where sudo may not exist
            "node_disk_label": label(host),
            "node_disk_mount_dir": str(disks.mount_dir(host)),
            "node_disk_fstab": str(disks.folder / f"fstab-{host}"),
        } | ({"node_disk_device": device} if device else {})
        lines.append(" ".join([host, *(f"{key}={value}" for key, value in settings.items())]))
    inventory = disks.folder / "hosts.ini"
    inventory.write_text("\n".join(lines) + "\n")
    run = PlaybookRun(
        PLAYBOOK,
        inventory,
        artifacts_root=disks.folder / "runs",
        envvars={"ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg")},  # as compute.yml runs it: roles found
    )
    return run, list(run.start().events())


def results(events: list[ProvisionEvent], host: str) -> list[HostResult]:
    return [e for e in events if isinstance(e, HostResult) and e.host == host]


@dataclass(frozen=True)
class Applied:
    events: list[ProvisionEvent]
    taken_before: str


@pytest.fixture(scope="module")
def applied(disks: Disks) -> Applied:
    """The role's one run on the five nodes; what blkid found on the disk it must refuse, before the run."""
    taken_before = probe(disks.taken) + probe(f"{disks.taken}p1")
    hosts = {
        "empty": disks.empty,
        "made": disks.made,
        "taken": disks.taken,
        "nodisk": "/dev/cktest-none",
        "unset": None,
    }
    run, events = play(disks, hosts)
    assert events and isinstance(events[-1], Recap), run.output_tail(40)
    return Applied(events, taken_before)


def test_an_empty_disk_is_partitioned_labelled_and_mounted(applied: Applied, disks: Disks) -> None:
    assert not [r for r in results(applied.events, "empty") if r.status == "failed"]
    assert 'PTTYPE="gpt"' in probe(disks.empty)
    made = probe(f"{disks.empty}p1")
    assert 'LABEL="cktest-empty"' in made and 'TYPE="ext4"' in made and 'PART_ENTRY_NAME="cktest-empty"' in made
    mount = str(disks.mount_dir("empty"))
    fstab = (disks.folder / "fstab-empty").read_text().split()
    assert fstab[:4] == ["LABEL=cktest-empty", mount, "ext4", "defaults,nofail,x-systemd.device-timeout=10s"]
    assert sh("findmnt", "-no", "SOURCE", mount).strip() == f"{disks.empty}p1"


def test_a_disk_already_made_is_left_alone_and_mounted(applied: Applied, disks: Disks) -> None:
    changed = {r.task for r in results(applied.events, "made") if r.status == "changed"}
    assert changed == {MOUNT_TASK}
    mount = disks.mount_dir("made")
    assert sh("findmnt", "-no", "SOURCE", str(mount)).strip() == f"{disks.made}p1"
    assert (mount / KEPT).read_text() == "on the disk\n"  # not formatted again


def test_a_disk_with_a_partition_table_is_refused_named_and_left_as_it_was(applied: Applied, disks: Disks) -> None:
    failed = [r for r in results(applied.events, "taken") if r.status == "failed"]
    assert len(failed) == 1
    message = " ".join(failed[0].message.split())
    assert f"node_disk_device {disks.taken} on taken is not empty, and node_disk formats only an empty disk" in message
    assert f"it has {disks.taken}: PTTYPE=gpt;" in message
    assert f"{disks.taken}p1: LABEL=data TYPE=ext4 PART_ENTRY_NAME=data;" in message
    assert f"lsblk: {disks.taken} loop, {disks.taken}p1 part" in message
    assert f"wipefs --no-act: {Path(disks.taken).name} 0x200 gpt" in message and "Nothing was written." in message
    assert probe(disks.taken) + probe(f"{disks.taken}p1") == applied.taken_before
    assert not disks.mount_dir("taken").exists()


def test_a_path_that_is_no_disk_is_named(applied: Applied) -> None:
    failed = [r for r in results(applied.events, "nodisk") if r.status == "failed"]
    assert len(failed) == 1
    assert "node_disk_device /dev/cktest-none on nodisk is not a whole disk" in " ".join(failed[0].message.split())


def test_a_node_without_node_disk_device_is_not_touched(applied: Applied, disks: Disks) -> None:
    assert {r.status for r in results(applied.events, "unset")} == {"skipped"}
    assert not (disks.folder / "fstab-unset").exists()

"""The golden image built for real by ansible/golden_image.yml, through cockpit's ansible-runner bridge.

A Debian bookworm root (minbase plus a kernel: small, and from the Debian mirror this machine's apt already uses)
is debootstrapped into a tmp dir on this machine, the control node; the compute roles run inside it through the
chroot connection; its kernel and initrd go to a tmp TFTP dir and its NFS export line to a tmp exports file. The
export itself is not served here: this container has no systemd and no nfsd. debootstrap's downloads are cached
in the clone's .cache/debootstrap, so a second session downloads nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from cockpit.provision.events import HostResult, ProvisionEvent, Recap, TaskStarted
from cockpit.provision.runner import PlaybookRun
from tests.infra.services import infra_unavailable, require_root

pytestmark = [pytest.mark.infra, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "ansible" / "golden_image.yml"
ROLES = REPO / "ansible" / "roles"
MIRROR, SUITE = "http://deb.debian.org/debian", "bookworm"
# What the role's tasks and node_base need in the image (python3-apt: the apt module; iproute2: network facts),
# and a kernel with an initramfs that can mount an NFS root. Debian has no overlayroot.
PACKAGES = [
    "linux-image-amd64", "initramfs-tools", "nfs-common", "openssh-server", "python3", "python3-apt", "systemd-sysv",
    "sudo", "iproute2",
]  # fmt: skip
CONTROL, IMAGE = "golden-control", "golden-image"
TOOLS = ("debootstrap", "unshare", "chroot", "ssh-keygen")
NODE_BASE_TASKS = ["Wait for the node to answer over SSH", "Gather facts", "Find the NIC the node is reached on",
                   "Create the node state directory", "Write node.json"]  # fmt: skip


def check_machine() -> None:
    require_root()
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        infra_unavailable(f"missing {', '.join(missing)}: run scripts/setup test")
    try:
        request = urllib.request.Request(f"{MIRROR}/dists/{SUITE}/InRelease", method="HEAD")
        urllib.request.urlopen(request, timeout=15).close()
    except (urllib.error.URLError, OSError) as error:
        infra_unavailable(f"the Debian mirror {MIRROR} does not answer: {error}")


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` in this machine's mount namespace."""
    targets = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [t for t in targets if t == str(path) or t.startswith(f"{path}/")]


def remove_root(root: Path) -> None:
    """Remove a test image, never across a mount (a bind-mounted /dev would go with it)."""
    for path in (root, root.with_name(root.name + ".partial"), root.with_name(root.name + ".old")):
        assert mounts_under(path) == [], f"left mounted: {mounts_under(path)}"
        shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class Work:
    folder: Path
    key: str

    def variables(self, name: str, **changes: object) -> dict[str, object]:
        """The role's settings for one image `name` under the work folder, with `changes` on top."""
        return {
            "golden_image_root": str(self.folder / "srv" / name),
            "golden_image_suite": SUITE,
            "golden_image_mirror": MIRROR,
            "golden_image_variant": "minbase",
            "golden_image_components": ["main"],
            "golden_image_apt_suites": [SUITE],
            "golden_image_packages": PACKAGES,
            "golden_image_debootstrap_cache_dir": str(REPO / ".cache" / "debootstrap"),
            "golden_image_control_apt_cache_valid_s": 10 * 365 * 86400,  # no apt update of this machine's lists
            "compute_admin_ssh_key_dir": str(self.folder / "keys"),
            "golden_image_tftp_dir": str(self.folder / "tftp" / name),
            "golden_image_exports_file": str(self.folder / "exports.d" / f"{name}.exports"),
            "golden_image_chroot_exe": str(self.folder / "chroot"),
            **changes,
        }


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Work]:
    check_machine()
    folder = tmp_path_factory.mktemp("golden")
    (folder / "keys").mkdir()
    key = folder / "keys" / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cockpit-golden-test", "-f", str(key)],
                   check=True, timeout=30)  # fmt: skip
    (folder / "hosts.ini").write_text(
        "[control]\n"
        f"{CONTROL} ansible_connection=local ansible_python_interpreter=/usr/bin/python3"
        " ansible_become=false"  # the test runs as root, where sudo may not exist
        " slurm_control_address=192.168.1.1\n"  # where the image's slurmd will fetch slurm.conf
        "\n[all:vars]\ncompute_network=192.168.1.0/24\n"
        "\n[compute:vars]\nansible_user=admin\n"  # as in the clusters' group_vars: the image is in compute too
    )
    try:
        yield Work(folder, Path(f"{key}.pub").read_text().strip())
    finally:
        for root in (folder / "srv").glob("*"):
            remove_root(root)


def role_of(task_path: str) -> str | None:
    """The role a task belongs to, from its file ("…/roles/<role>/tasks/x.yml:12")."""
    path = Path(task_path)
    return path.parts[len(ROLES.parts)] if path.is_relative_to(ROLES) and path != ROLES else None


@dataclass(frozen=True)
class Played:
    run: PlaybookRun
    events: list[ProvisionEvent]
    seconds: float

    def results(self, host: str | None = None, role: str | None = None) -> list[HostResult]:
        """Host results, of one host and of the tasks of one role (by the task's file) if asked."""
        found, path = [], ""
        for event in self.events:
            if isinstance(event, TaskStarted):
                path = event.path or ""
            elif isinstance(event, HostResult) and host in (None, event.host) and role in (None, role_of(path)):
                found.append(event)
        return found

    def failures(self) -> list[HostResult]:
        return [r for r in self.results() if r.status == "failed" and not r.ignored]

    @property
    def recap(self) -> Recap:
        assert isinstance(self.events[-1], Recap), self.run.output_tail(40)
        return self.events[-1]


def play(work: Work, variables: dict[str, object], limit: str | None = None) -> Played:
    run = PlaybookRun(PLAYBOOK, work.folder / "hosts.ini", artifacts_root=work.folder / "runs", limit=limit,
                      extravars=variables)  # fmt: skip
    started = time.monotonic()
    events = list(run.start().events())
    return Played(run, events, time.monotonic() - started)


@dataclass(frozen=True)
class Built:
    root: Path
    variables: dict[str, object]
    first: Played
    second: Played


@pytest.fixture(scope="module")
def built(work: Work) -> Built:
    """The image built and configured, then the playbook again as `cluster control golden-image` must run it:
    limited to the control node and the image's group."""
    variables = work.variables("bookworm")
    first = play(work, variables)
    assert first.run.rc == 0 and not first.failures(), first.run.output_tail(40)
    second = play(work, variables, limit=f"{CONTROL},golden_image")
    print(f"\ngolden image: first run {first.seconds:.0f} s, second run {second.seconds:.0f} s")
    return Built(Path(str(variables["golden_image_root"])), variables, first, second)


def test_first_run_builds_configures_and_exports(built: Built) -> None:
    stats = built.first.recap.hosts
    assert set(stats) == {CONTROL, IMAGE}
    assert all(s.failed == s.unreachable == 0 and s.changed > 0 for s in stats.values())
    [debootstrap] = [r for r in built.first.results(CONTROL) if r.task.startswith("Run debootstrap")]
    assert debootstrap.status == "changed" and f"--include={','.join(PACKAGES)}" in (debootstrap.command or "")


def test_the_root_is_bookworm_and_marked_complete(built: Built) -> None:
    os_release = (built.root / "usr/lib/os-release").read_text()
    assert f"VERSION_CODENAME={SUITE}" in os_release.splitlines()
    marker = yaml.safe_load((built.root / "etc/cockpit-golden-image").read_text())
    assert marker["suite"] == SUITE and marker["variant"] == "minbase" and marker["packages"] == PACKAGES
    assert not built.root.with_name("bookworm.partial").exists() and not built.root.with_name("bookworm.old").exists()


def test_node_base_ran_inside_the_image_through_chroot(built: Built) -> None:
    results = built.first.results(IMAGE, role="node_base")
    # then wol's use of node_base's interface task, which counts as node_base's too
    assert [r.task for r in results] == [*NODE_BASE_TASKS, "Find the NIC the node is reached on"]
    assert all(r.status in ("ok", "changed") for r in results)
    node = json.loads((built.root / "var/lib/cockpit/node.json").read_text())
    assert node["cpu_count"] >= 1 and node["memory_mb"] > 0  # facts from the image's /proc, mounted by the chroot


def test_the_compute_roles_ran_inside_the_image(built: Built) -> None:
    wol = built.first.results(IMAGE, role="wol")
    assert wol and all(r.status != "failed" for r in wol)
    # no gpu_kind in the test inventory: intel_gpu's gate skips it
    assert {r.status for r in built.first.results(IMAGE, role="intel_gpu")} == {"skipped"}


def test_the_image_is_set_up_for_a_diskless_node(built: Built, work: Work) -> None:
    root = built.root
    fstab = [line.split() for line in (root / "etc/fstab").read_text().splitlines() if not line.startswith("#")]
    assert ["/dev/nfs", "/", "nfs", "ro,nolock", "0", "0"] in fstab
    assert ["LABEL=models", "/models", "ext4", "defaults,nofail,x-systemd.device-timeout=10s", "0", "2"] in fstab
    assert (root / "models").is_dir()
    unit = Path("/etc/systemd/system/cockpit-node-local.service")  # the node-local state's, enabled
    assert (root / "etc/systemd/system/multi-user.target.wants" / unit.name).readlink() == unit
    assert (root / "usr/local/sbin/cockpit-node-local").stat().st_mode & 0o111
    assert (root / "etc/hostname").read_text() == ""  # the name comes from DHCP
    assert (root / "etc/machine-id").read_text() == ""  # each node makes its own at boot
    assert (root / "etc/ssh/ssh_host_ed25519_key.pub").is_file()  # one for every node: the cockpit pins it
    netplan = yaml.safe_load((root / "etc/netplan/01-cockpit-wired.yaml").read_text())["network"]["ethernets"]
    assert netplan["wired"] == {"match": {"name": "en*"}, "dhcp4": True, "dhcp-identifier": "mac", "critical": True}
    passwd = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    assert passwd["admin"][6] == "/bin/bash"
    assert (root / "home/admin/.ssh/authorized_keys").read_text().split("\n")[0] == work.key
    assert (root / "etc/sudoers.d/admin").read_text().endswith("admin ALL=(ALL) NOPASSWD:ALL\n")
    assert f"deb {MIRROR} {SUITE} main" in (root / "etc/apt/sources.list").read_text()


def test_the_image_joins_slurm_at_boot(built: Built) -> None:
    """munged with the cluster's key and a configless slurmd pointed at the control node, enabled, not started."""
    root = built.root
    key = root / "etc/munge/munge.key"
    assert key.read_bytes() == Path("/etc/munge/munge.key").read_bytes()  # the control node's (this machine's)
    assert oct(key.stat().st_mode & 0o777) == "0o400"
    assert (root / "etc/default/slurmd").read_text().endswith('SLURMD_OPTIONS="--conf-server 192.168.1.1:6817"\n')
    wants = root / "etc/systemd/system/multi-user.target.wants"
    for unit in ("munge", "slurmd"):
        assert (wants / f"{unit}.service").readlink() == Path(f"/lib/systemd/system/{unit}.service")
        assert (root / f"lib/systemd/system/{unit}.service").is_file()  # the package's unit, in the image
    assert not [r for r in built.first.results(IMAGE, role="slurm") if r.task.startswith("Wait for the node")
                and r.status != "skipped"]  # fmt: skip


def chroot(built: Built, command: str) -> str:
    """`command` inside the image, through the chroot wrapper the role installed (the connection's own)."""
    done = subprocess.run([str(built.variables["golden_image_chroot_exe"]), str(built.root), "/bin/sh", "-c", command],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_initrd_can_mount_an_nfs_root(built: Built) -> None:
    conf = (built.root / "etc/initramfs-tools/conf.d/cockpit-nfs-root").read_text().splitlines()
    assert "BOOT=nfs" in conf and "MODULES=netboot" in conf
    [initrd] = (built.root / "boot").glob("initrd.img-*")
    files = chroot(built, f"lsinitramfs /boot/{initrd.name}").splitlines()
    for needed in ("scripts/nfs", "usr/bin/nfsmount", "usr/bin/ipconfig", "conf/conf.d/cockpit-nfs-root"):
        assert needed in files
    assert any(f.endswith("/kernel/fs/nfs/nfs.ko") for f in files)


def test_the_kernel_and_initrd_are_in_the_tftp_dir(built: Built) -> None:
    [kernel] = (built.root / "boot").glob("vmlinuz-*")
    version = kernel.name.removeprefix("vmlinuz-")
    tftp = Path(str(built.variables["golden_image_tftp_dir"]))
    assert (tftp / "vmlinuz").read_bytes() == kernel.read_bytes()
    assert (tftp / "initrd.img").read_bytes() == (built.root / f"boot/initrd.img-{version}").read_bytes()
    assert {oct((tftp / name).stat().st_mode & 0o777) for name in ("vmlinuz", "initrd.img")} == {"0o644"}


def test_the_exports_line_is_written_but_the_export_not_served_here(built: Built) -> None:
    """No systemd and no nfsd in this container: the role writes the line and skips the NFS server and exportfs."""
    exports = Path(str(built.variables["golden_image_exports_file"])).read_text().splitlines()
    assert f"{built.root} 192.168.1.0/24(ro,no_root_squash,no_subtree_check)" in exports
    by_task = {r.task: r for r in built.first.results(CONTROL)}
    assert by_task["Start the NFS server, and start it at boot"].status == "skipped"
    assert by_task["Reload the NFS exports"].status == "skipped"
    assert "Not serving the image over NFS here" in by_task["Report that the export is not served here"].message


def test_a_second_run_changes_nothing(built: Built) -> None:
    assert built.second.run.rc == 0, built.second.run.output_tail(40)
    stats = built.second.recap.hosts
    assert set(stats) == {CONTROL, IMAGE}
    assert all(s.changed == 0 and s.failed == 0 for s in stats.values()), [
        (r.host, r.task) for r in built.second.results() if r.status == "changed"
    ]


def test_nothing_is_left_mounted_in_the_image(built: Built) -> None:
    assert mounts_under(built.root) == []


def test_a_limit_that_leaves_out_the_image_stops_before_exporting(built: Built, work: Work) -> None:
    played = play(work, built.variables, limit=CONTROL)
    [failed] = played.failures()
    assert failed.task == "Check that the image was configured"
    message = " ".join(failed.message.split())
    assert f"--limit {CONTROL} leaves out the golden_image group: run with --limit {CONTROL},golden_image" in message


def fails_with(work: Work, variables: dict[str, object], message: str) -> Played:
    played = play(work, variables)
    failed = played.failures()
    assert played.run.rc != 0 and len(failed) == 1, played.run.output_tail(30)
    assert message in " ".join(failed[0].message.split()), failed[0].message
    return played


def test_no_ssh_public_key(work: Work) -> None:
    empty = work.folder / "no-keys"
    empty.mkdir()
    variables = work.variables("nokey", compute_admin_ssh_key_dir=str(empty))
    fails_with(work, variables, f"There is no ssh public key in {empty} (no *.pub file): create one with `ssh-keygen")
    assert not (work.folder / "srv" / "nokey").exists()


def test_an_unsafe_root_is_refused(work: Work) -> None:
    fails_with(work, work.variables("x", golden_image_root="/srv"), "golden_image_root '/srv' is not a safe place")


def test_a_partial_root_is_rebuilt_and_a_missing_kernel_is_named(work: Work) -> None:
    """A root without the build marker is built again, not used; built without a kernel (a smaller package list,
    so the test stays quick), the image has nothing to PXE boot, and the run says which package to add."""
    # no kernel; udev: the wol role writes a udev rule
    small = ["python3", "python3-apt", "sudo", "iproute2", "udev"]
    variables = work.variables("partial", golden_image_packages=small)
    root = Path(str(variables["golden_image_root"]))
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text(f"ID=debian\nVERSION_CODENAME={SUITE}\n")
    (root / "left-by-a-torn-build").write_text("")
    root.with_name("partial.partial").mkdir()
    (root.with_name("partial.partial") / "junk").write_text("")
    played = fails_with(work, variables, "has no kernel (no boot/vmlinuz-*), so there is nothing for PXE to boot: "
                        "add a kernel package to golden_image_packages")  # fmt: skip
    [debootstrap] = [r for r in played.results(CONTROL) if r.task.startswith("Run debootstrap")]
    assert debootstrap.status == "changed"
    assert not (root / "left-by-a-torn-build").exists() and (root / "etc/cockpit-golden-image").is_file()
    assert not root.with_name("partial.partial").exists() and not root.with_name("partial.old").exists()
    assert mounts_under(root) == []
    assert not Path(str(variables["golden_image_tftp_dir"])).exists()


def test_the_node_local_state_is_bound_from_a_fake_disk(tmp_path: Path) -> None:
    """The image's fstab, unit and script as the role renders them (no image built); the script then runs twice in
    a mount namespace of its own, a tmpfs standing in for the node's disk: each folder is bound from the disk once,
    and what is written there lands on the disk."""
    require_root()
    disk, state = tmp_path / "models", tmp_path / "opt"
    playbook = tmp_path / "render.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Render the golden image's node-local files",
        "hosts": "localhost",
        "gather_facts": False,
        "vars_files": [str(ROLES / "golden_image/defaults/main.yml")],
        "tasks": [
            {"name": "As the image has them", "loop": ["fstab", "node-local.sh", "node-local.service"],
             "ansible.builtin.template": {"src": f"{ROLES}/golden_image/templates/{{{{ item }}}}.j2",
                                          "dest": f"{tmp_path}/{{{{ item }}}}", "mode": "0644"}},
            {"name": "With the test's folders", "vars": {"golden_image_models_dir": str(disk),
             "golden_image_node_local_dirs": {"runtime": f"{state}/cockpit/runtime", "vllm": f"{state}/vllm"}},
             "ansible.builtin.template": {"src": f"{ROLES}/golden_image/templates/node-local.sh.j2",
                                          "dest": f"{tmp_path}/bind", "mode": "0755"}},
        ],
    }]))  # fmt: skip
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook)],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "ANSIBLE_PYTHON_INTERPRETER": sys.executable},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    fstab = [line.split() for line in (tmp_path / "fstab").read_text().splitlines() if not line.startswith("#")]
    assert ["LABEL=models", "/models", "ext4", "defaults,nofail,x-systemd.device-timeout=10s", "0", "2"] in fstab
    unit = (tmp_path / "node-local.service").read_text().splitlines()
    assert {"After=models.mount", "ConditionPathIsMountPoint=/models", "Before=slurmd.service"} <= set(unit)
    script = (tmp_path / "node-local.sh").read_text()
    assert "bind /models/node-local/runtime /opt/cockpit/runtime\nbind /models/node-local/vllm /opt/vllm\n" in script
    boot = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-euc",
         'mkdir "$1"; mount -t tmpfs fake-disk "$1"; "$3"; "$3"; echo kept > "$2/vllm/kept";'
         ' cat "$1/node-local/vllm/kept"; findmnt -rno TARGET', "-", str(disk), str(state), str(tmp_path / "bind")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert boot.returncode == 0, boot.stderr
    kept, *targets = boot.stdout.splitlines()
    assert kept == "kept"
    assert [t for t in targets if t.startswith(str(tmp_path))] == [
        str(disk),
        f"{state}/cockpit/runtime",
        f"{state}/vllm",
    ]

"""The pxe_server role applied for real on this machine, through cockpit's ansible-runner bridge.

Three network namespaces stand in for the compute network and the home network:
- ckpxe-ctl, "the control node": the veth ckpxe0 (compute_interface, 192.168.1.1/24) and the uplink ckup0
  (203.0.113.1/24, documentation addresses). The play's modules run in it through a python3 wrapper that enters
  the namespace, so the dnsmasq and nginx it starts live there, and the gateway's forwarding and nftables table.
- ckpxe-cli, "a compute node": the veth's peer on a bridge, where dhclient, curl's TFTP and HTTP clients and
  QEMU's network card (a tap on the same bridge) ask the server; its default route is the control node. It also
  holds node0's pinned address, where node0's live sshd runs with the host key its own seed gives it.
- ckpxe-up, "the home network": the uplink's peer (203.0.113.2), where the gateway's traffic comes out.
The inventory's compute nodes have MACs, so the role issues them host keys and seeds of their own: node0's MAC is
no machine's (its seed is fetched with curl), node1's is QEMU's (the firmware boots its own menu).
The roles also write dnsmasq's, nginx's and the gateway's configuration in /etc, as on a control node (and enable
nftables.service): the test removes those files, puts nftables.conf and the service back and stops both daemons
(by pidfile) at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest
import yaml

from cockpit.nodes.inventory import Inventory, Node
from cockpit.nodes.ssh import KnownHosts
from cockpit.provision.events import HostResult, ProvisionEvent, Recap
from cockpit.provision.runner import PlaybookRun
from tests.infra.services import infra_unavailable, pid_alive, require_root
from tests.integration.sweeps import wait_for

pytestmark = [pytest.mark.infra, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK, GATEWAY = REPO / "ansible" / "control.yml", REPO / "ansible" / "playbooks" / "gateway.yml"
CTL, CLI, BAD, UP = "ckpxe-ctl", "ckpxe-cli", "ckpxe-bad", "ckpxe-up"
INTERFACE, SERVER, CLIENT = "ckpxe0", "192.168.1.1", "192.168.1.50"
UPLINK, UPLINK_ADDRESS, FAR = "ckup0", "203.0.113.1", "203.0.113.2"
# dnsmasq and nginx serve these files as their own users: pytest's tmp dirs (0700) would hide them
WORK = Path("/tmp/cockpit-pxe-test")
PIDFILES = (Path("/run/dnsmasq/dnsmasq.pid"), Path("/run/nginx.pid"))
SYSTEM_FILES = (
    Path("/etc/dnsmasq.d/cockpit-pxe.conf"),
    Path("/etc/nginx/sites-enabled/cockpit-pxe.conf"),
    Path("/etc/nginx/sites-available/cockpit-pxe.conf"),
)
# node0: fetched with curl from its own address; node1: QEMU's network card
NODES = {"node0": ("192.168.1.10", "02:00:00:00:00:10"), "node1": ("192.168.1.11", "52:54:00:7c:00:01")}
NODE0, (NODE0_ADDRESS, NODE0_MAC) = "node0", NODES["node0"]
NODE0_SEED = "live/" + NODE0_MAC.replace(":", "-")
GATEWAY_FILES = (Path("/etc/nftables.d/cockpit-gateway.nft"), Path("/etc/sysctl.d/90-cockpit-gateway.conf"))
NFTABLES_CONF = Path("/etc/nftables.conf")
KERNEL, INITRD = b"test kernel from the test ISO\n", b"test initrd from the test ISO\n"
TOOLS = ("dnsmasq", "nginx", "xorriso", "dhclient", "curl", "qemu-system-x86_64", "ssh-keygen", "nft", "systemctl")


def sh(*command: str, timeout: float = 30) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}: {done.stderr}"
    return done.stdout


def in_ns(namespace: str, *command: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ip", "netns", "exec", namespace, *command], capture_output=True, timeout=timeout)


def make_iso(folder: Path) -> tuple[Path, str]:
    """A small ISO 9660 image laid out like Ubuntu's (casper/vmlinuz, casper/initrd), and its sha256."""
    tree = folder / "iso-tree" / "casper"
    tree.mkdir(parents=True)
    (tree / "vmlinuz").write_bytes(KERNEL)
    (tree / "initrd").write_bytes(INITRD)
    iso = folder / "test.iso"
    sh("xorriso", "-as", "mkisofs", "-quiet", "-V", "COCKPIT_TEST", "-o", str(iso), str(tree.parent))
    return iso, hashlib.sha256(iso.read_bytes()).hexdigest()


def python_in(namespace: str, folder: Path) -> Path:
    """An interpreter for Ansible's modules that runs this machine's python3 inside `namespace`."""
    wrapper = folder / f"python3-{namespace}"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {namespace} /usr/bin/python3 "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def write_inventory(folder: Path, namespace: str, variables: dict[str, str | None]) -> Path:
    """The control host (this machine, inside `namespace`) with the role's variables (None leaves one out), and
    the compute nodes, reached as root with the test's key."""
    lines = [
        "[control]",
        f"pxe-control ansible_connection=local ansible_python_interpreter={python_in(namespace, folder)}"
        " ansible_become=false",  # the test runs as root, where sudo may not exist
        "",
        "[compute]",
        *(
            f"{name} ansible_host={address} mac_address={mac} ansible_user=root"
            f" ansible_ssh_private_key_file={WORK / 'keys' / 'id_ed25519'}"
            for name, (address, mac) in NODES.items()
        ),
        "",
        "[all:vars]",
    ]
    lines += [f"{name}={value}" for name, value in variables.items() if value is not None]
    inventory = folder / "hosts.ini"
    inventory.write_text("\n".join(lines) + "\n")
    return inventory


def play(inventory: Path, playbook: Path = PLAYBOOK) -> tuple[PlaybookRun, list[ProvisionEvent]]:
    """The playbook with what `cluster control configure` would pass of a data folder beside the inventory."""
    extravars = {"cockpit_scheduler": "local", "cockpit_host_key_dir": str(inventory.parent / "data" / "host_keys")}
    config = {"ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg")}  # control.yml's, beside it: the roles' path
    run = PlaybookRun(
        playbook, inventory, artifacts_root=inventory.parent / "runs", envvars=config, extravars=extravars
    )
    return run, list(run.start().events())


def recap(events: list[ProvisionEvent]) -> Recap:
    assert isinstance(events[-1], Recap), events[-1]
    return events[-1]


def failures(events: list[ProvisionEvent]) -> list[HostResult]:
    return [e for e in events if isinstance(e, HostResult) and e.status == "failed" and not e.ignored]


def make_namespace(name: str) -> None:
    if name in sh("ip", "netns", "list").split():
        sh("ip", "netns", "del", name)
    sh("ip", "netns", "add", name)
    sh("ip", "-n", name, "link", "set", "lo", "up")


@dataclass(frozen=True)
class Lan:
    folder: Path
    iso: Path
    checksum: str
    key_dir: Path
    # this machine's own: they stay as they were (forwarding) or are put back at the end
    forwarding: str
    nftables_conf: bytes
    nftables_enabled: bool

    def variables(self, **changes: str | None) -> dict[str, str | None]:
        return {
            "compute_interface": INTERFACE,
            "compute_network": "192.168.1.0/24",
            "pxe_server_iso_local_path": str(self.iso),
            "pxe_server_iso_checksum": f"sha256:{self.checksum}",
            "compute_admin_ssh_key_dir": str(self.key_dir),
            "pxe_server_tftp_root": str(self.folder / "tftp"),
            "pxe_server_http_root": str(self.folder / "http"),
            "pxe_server_dhcp_lease_file": str(self.folder / "dnsmasq.leases"),  # not this machine's
            "uplink_interface": UPLINK,
            "pxe_server_default_boot_file": str(self.folder / "default-boot"),
            **changes,
        }


def check_machine() -> None:
    require_root()
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        infra_unavailable(f"missing {', '.join(missing)}: run scripts/setup test")
    running = [str(path) for path in PIDFILES if pid_alive(path)]
    if running or any(path.exists() for path in SYSTEM_FILES + GATEWAY_FILES):
        infra_unavailable(f"this machine already runs dnsmasq/nginx or has a cockpit config ({running})")


def forwarding(namespace: str | None = None) -> str:
    """net.ipv4.ip_forward in `namespace`, or in this machine's own."""
    command = ("sysctl", "-n", "net.ipv4.ip_forward")
    return sh(*(("ip", "netns", "exec", namespace) if namespace else ()), *command).strip()


def tables(namespace: str | None = None) -> list[str]:
    """The nftables tables in `namespace`, or in this machine's own."""
    return sh(*(("ip", "netns", "exec", namespace) if namespace else ()), "nft", "list", "tables").splitlines()


def nftables_enabled() -> bool:
    return subprocess.run(["systemctl", "is-enabled", "-q", "nftables"], check=False).returncode == 0


@pytest.fixture(scope="module")
def lan() -> Iterator[Lan]:
    check_machine()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(mode=0o755)
    iso, checksum = make_iso(WORK)
    key_dir = WORK / "keys"
    key_dir.mkdir()
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cockpit-pxe-test", "-f", str(key_dir / "id_ed25519"))
    for name in (CTL, CLI, UP):
        make_namespace(name)
    sh("ip", "link", "add", INTERFACE, "netns", CTL, "type", "veth", "peer", "name", "eth0", "netns", CLI)
    sh("ip", "link", "add", UPLINK, "netns", CTL, "type", "veth", "peer", "name", "eth0", "netns", UP)
    for namespace, link, address in ((CTL, UPLINK, UPLINK_ADDRESS), (UP, "eth0", FAR)):
        sh("ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", link)
        sh("ip", "-n", namespace, "link", "set", link, "up")
    sh("ip", "-n", CTL, "addr", "add", f"{SERVER}/24", "dev", INTERFACE)
    sh("ip", "-n", CTL, "link", "set", INTERFACE, "up")
    # the client side is a bridge, so QEMU's tap can join the same segment
    sh("ip", "-n", CLI, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", CLI, "link", "set", "eth0", "master", "br0", "up")
    sh("ip", "-n", CLI, "addr", "add", f"{CLIENT}/24", "dev", "br0")
    sh("ip", "-n", CLI, "addr", "add", f"{NODE0_ADDRESS}/24", "dev", "br0")
    sh("ip", "-n", CLI, "link", "set", "br0", "up")
    sh("ip", "-n", CLI, "route", "add", "default", "via", SERVER)
    had_nftables_d = GATEWAY_FILES[0].parent.exists()
    lan = Lan(WORK, iso, checksum, key_dir, forwarding(), NFTABLES_CONF.read_bytes(), nftables_enabled())
    try:
        yield lan
    finally:
        for pidfile in PIDFILES:  # the daemons the role started (the fixture refused to run beside others)
            if pid_alive(pidfile):
                os.kill(int(pidfile.read_text().split()[0]), 15)
        for path in SYSTEM_FILES + GATEWAY_FILES:
            path.unlink(missing_ok=True)
        NFTABLES_CONF.write_bytes(lan.nftables_conf)
        if not lan.nftables_enabled:
            subprocess.run(["systemctl", "disable", "-q", "nftables"], check=False)
        if not had_nftables_d:
            shutil.rmtree(GATEWAY_FILES[0].parent, ignore_errors=True)
        for name in (CTL, CLI, UP):
            subprocess.run(["ip", "netns", "del", name], check=False)
        shutil.rmtree(WORK, ignore_errors=True)


@dataclass(frozen=True)
class Applied:
    first: list[ProvisionEvent]
    second: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def applied(lan: Lan) -> Applied:
    """The role applied twice: the first run configures everything; the second, as `cluster control configure`
    runs it, must change nothing."""
    inventory = write_inventory(lan.folder, CTL, lan.variables())
    first_run, first = play(inventory)
    assert first_run.rc == 0 and not failures(first), first_run.output_tail(40)
    config = lan.folder / "cockpit.toml"
    config.write_text(f'[cluster]\ninventory = "{inventory}"\n[paths]\ndata_dir = "{lan.folder / "data"}"\n')
    return Applied(first, configure(lan))


def configure(lan: Lan, *flags: str) -> subprocess.CompletedProcess[str]:
    """`cluster control configure` with `flags`, on the inventory and cockpit.toml `applied` wrote."""
    return subprocess.run(
        [sys.executable, str(REPO / "cluster.py"), "--config", str(lan.folder / "cockpit.toml"), "control",
         "configure", "--json", *flags],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_first_run_configures_and_a_second_changes_nothing(applied: Applied) -> None:
    assert recap(applied.first).hosts["pxe-control"].changed > 0
    assert applied.second.returncode == 0, applied.second.stdout + applied.second.stderr
    report = json.loads(applied.second.stdout)
    assert report["ok"] and report["failures"] == []
    assert report["recap"]["pxe-control"]["changed"] == 0, report


def test_dnsmasq_and_nginx_run_inside_the_control_namespace(applied: Applied) -> None:
    for pidfile in PIDFILES:
        assert pid_alive(pidfile), pidfile
        assert sh("ip", "netns", "identify", pidfile.read_text().split()[0]).strip() == CTL


def dhcp_lease(lan: Lan, name: str, extra: str) -> str:
    """One DHCP exchange from the client namespace (dhclient configures nothing: -sf /bin/true)."""
    config, lease, pidfile = (lan.folder / f"dhclient-{name}.{ext}" for ext in ("conf", "lease", "pid"))
    config.write_text("timeout 20;\noption client-arch code 93 = unsigned integer 16;\n" + extra)
    done = in_ns(CLI, "dhclient", "-1", "-cf", str(config), "-lf", str(lease), "-pf", str(pidfile),
                 "-sf", "/bin/true", "br0", timeout=40)  # fmt: skip
    if pidfile.exists():  # dhclient stays behind to renew the lease; it is ours to stop
        os.kill(int(pidfile.read_text()), 15)
    assert done.returncode == 0, done.stderr.decode()
    return lease.read_text()


@pytest.mark.parametrize(
    ("client", "extra", "boot_file"),
    [
        ("bios", "", "pxelinux.0"),
        ("uefi", "send client-arch 7;\n", "ipxe.efi"),
        ("uefi-ipxe", 'send client-arch 7;\nsend user-class "iPXE";\n', f"http://{SERVER}/boot.ipxe"),
    ],
)
def test_dhcp_gives_a_lease_and_the_boot_file(applied: Applied, lan: Lan, client: str, extra: str, boot_file: str):
    lease = dhcp_lease(lan, client, extra)
    address = re.search(r"fixed-address 192\.168\.1\.(\d+);", lease)
    assert address and 100 <= int(address.group(1)) <= 200, lease
    assert f'filename "{boot_file}";' in lease
    assert f"option routers {SERVER};" in lease


def test_discover_lists_a_dhcp_client_as_unknown_and_records_its_mac(applied: Applied, lan: Lan) -> None:
    """`cluster compute discover` reads the leases of the dnsmasq the role configured: the client namespace shows
    as an unknown host with its DHCP name; --write records its MAC for node0 where the inventory reads it."""
    lease = dhcp_lease(lan, "discover", 'send host-name "ckpxe-client";\n')
    address = re.search(r"fixed-address (\S+);", lease)
    mac = json.loads(sh("ip", "-n", CLI, "-j", "link", "show", "br0"))[0]["address"]
    folder = lan.folder / "discover"
    folder.mkdir()
    inventory = write_inventory(folder, CTL, lan.variables())
    with inventory.open("a") as hosts:
        hosts.write("[compute]\nnode0 ansible_host=192.168.1.10\n")
    config = folder / "cockpit.toml"
    config.write_text(f'[cluster]\ninventory = "{inventory}"\n')

    def discover(*words: str) -> dict:
        command = [sys.executable, str(REPO / "cluster.py"), "--config", str(config), "compute", "discover", "--json"]
        done = subprocess.run([*command, *words], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    found = discover()
    assert found["lease_file"] == str(lan.folder / "dnsmasq.leases")
    ours = [x for x in found["leases"] if x["mac"] == mac]
    assert address and len(ours) == 1, found
    assert (ours[0]["address"], ours[0]["hostname"], ours[0]["node"]) == (address.group(1), "ckpxe-client", None)
    written = discover("--write", f"node0={mac}")
    record = folder / "host_vars" / "node0" / "wol.yml"
    assert written["written"] == [{"node": "node0", "mac": mac, "file": str(record)}] and written["warnings"] == []
    assert yaml.safe_load(record.read_text()) == {"mac_address": mac}
    assert Inventory.load(inventory)["node0"].mac == mac


def tftp(path: str) -> bytes:
    done = in_ns(CLI, "curl", "-sS", "--fail", f"tftp://{SERVER}/{path}")
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def http(path: str, source: str = CLIENT) -> bytes:
    """A GET from the client namespace, from `source`, one of its addresses."""
    done = in_ns(CLI, "curl", "-sS", "--fail", "--interface", source, f"http://{SERVER}/{path}")
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def http_status(path: str, source: str) -> int:
    done = in_ns(CLI, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--interface", source,
                 f"http://{SERVER}/{path}")  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    return int(done.stdout)


def menu_entries(menu: str) -> dict[str, dict[str, str]]:
    """pxelinux's LABEL blocks: label -> {KERNEL, INITRD, APPEND, MENU LABEL}."""
    entries: dict[str, dict[str, str]] = {}
    for block in re.split(r"\n(?=LABEL )", menu)[1:]:
        name, *lines = block.strip().splitlines()
        entries[name.split()[1]] = dict(re.match(r"\s*(MENU LABEL|\w+) (.*)", line).groups() for line in lines)
    return entries


def test_tftp_serves_the_bootloader_and_a_menu_whose_default_is_the_live_boot(applied: Applied) -> None:
    assert tftp("pxelinux.0") == Path("/usr/lib/PXELINUX/pxelinux.0").read_bytes()
    assert tftp("ldlinux.c32") == Path("/usr/lib/syslinux/modules/bios/ldlinux.c32").read_bytes()
    menu = tftp("pxelinux.cfg/default").decode()
    entries = menu_entries(menu)
    assert list(entries) == ["live", "install"]
    assert re.search(r"^DEFAULT live$", menu, re.MULTILINE)
    live, install = entries["live"], entries["install"]
    assert "RAM" in live["MENU LABEL"] and "erases the disk" in install["MENU LABEL"]
    for entry in (live, install):
        assert tftp(entry["KERNEL"]) == KERNEL and tftp(entry["INITRD"]) == INITRD
        assert f"url=http://{SERVER}/ubuntu.iso" in entry["APPEND"].split()
    assert f"ds=nocloud-net;s=http://{SERVER}/live/" in live["APPEND"].split()
    assert "autoinstall" not in live["APPEND"]
    assert f"ds=nocloud-net;s=http://{SERVER}/autoinstall/" in install["APPEND"].split()
    assert "autoinstall" in install["APPEND"].split()


def test_http_serves_the_iso_the_seeds_and_the_uefi_menu(applied: Applied, lan: Lan) -> None:
    assert http("ubuntu.iso") == lan.iso.read_bytes()
    key = (lan.key_dir / "id_ed25519.pub").read_text().strip()
    install = yaml.safe_load(http("autoinstall/user-data"))["autoinstall"]
    assert install["identity"]["username"] == "admin"
    assert install["identity"]["password"].startswith("$6$")  # a hash, never the password
    assert install["ssh"] == {"install-server": True, "allow-pw": False, "authorized-keys": [key]}
    live = yaml.safe_load(http("live/user-data"))
    assert "autoinstall" not in live
    assert live["users"][0]["name"] == "admin" and live["users"][0]["ssh_authorized_keys"] == [key]
    ipxe = http("boot.ipxe").decode()
    assert ipxe.startswith("#!ipxe") and "choose --default live " in ipxe
    assert http("boot/ubuntu/vmlinuz") == KERNEL


def test_a_known_node_gets_its_own_seed_with_the_host_key_known_hosts_pins(applied: Applied, lan: Lan) -> None:
    """node0's seed, fetched from node0's address: the generic live seed plus the host key issued to node0 (kept
    0600 in the cockpit's data folder), which is the key `control configure` wrote in the cockpit's known_hosts,
    and its name. From another address the seed is refused."""
    keys = lan.folder / "data" / "host_keys" / NODE0
    assert [(keys / name).stat().st_mode & 0o777 for name in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub")] \
        == [0o600, 0o644]  # fmt: skip
    seed = yaml.safe_load(http(f"{NODE0_SEED}/user-data", source=NODE0_ADDRESS))
    generic = yaml.safe_load(http("live/user-data"))
    assert seed.pop("ssh_deletekeys") is True  # the image's keys go first: the node offers the issued one only
    host_keys = seed.pop("ssh_keys")
    assert seed == generic
    issued = asyncssh.import_public_key(host_keys["ed25519_public"])
    assert asyncssh.import_private_key(host_keys["ed25519_private"]).convert_to_public() == issued
    assert issued == asyncssh.read_public_key(keys / "ssh_host_ed25519_key.pub")
    assert KnownHosts(lan.folder / "data" / "known_hosts").trusted(Node(NODE0, NODE0_ADDRESS)) == [issued]
    meta = yaml.safe_load(http(f"{NODE0_SEED}/meta-data", source=NODE0_ADDRESS))
    assert meta == {"instance-id": f"cockpit-live-{NODE0}", "local-hostname": NODE0}
    assert http_status(f"{NODE0_SEED}/user-data", source=CLIENT) == 403


def test_each_known_machine_boots_a_menu_pointing_at_its_own_seed(applied: Applied) -> None:
    """pxelinux reads pxelinux.cfg/01-<mac> before the default; iPXE sets the seed from its own MAC. A machine
    the inventory does not know keeps the generic seed (the QEMU tests boot node1's MAC through both)."""
    mac = NODE0_MAC.replace(":", "-")
    menu = tftp(f"pxelinux.cfg/01-{mac}").decode()
    assert re.search(rf"^MENU TITLE cockpit PXE boot: 192\.168\.1\.0/24 {NODE0}$", menu, re.MULTILINE)
    entries, default = menu_entries(menu), menu_entries(tftp("pxelinux.cfg/default").decode())
    assert f"ds=nocloud-net;s=http://{SERVER}/{NODE0_SEED}/" in entries["live"]["APPEND"].split()
    assert entries["install"] == default["install"]
    ipxe = http("boot.ipxe").decode().splitlines()
    assert f"set seed http://{SERVER}/live/" in ipxe
    assert f"iseq ${{netX/mac:hexhyp}} {mac} && set seed http://{SERVER}/{NODE0_SEED}/ && set node {NODE0} ||" in ipxe
    assert any(line.startswith("kernel ") and " ds=nocloud-net;s=${seed} " in line for line in ipxe)


@contextlib.contextmanager
def live_sshd(folder: Path, host_key: Path, authorized_keys: Path) -> Iterator[None]:
    """node0's sshd as its live system runs it, on node0's address: in debug mode (-d) it serves one connection
    and says on stderr when it listens."""
    config = folder / "sshd_config"
    config.write_text(
        f"ListenAddress {NODE0_ADDRESS}\nHostKey {host_key}\nAuthorizedKeysFile {authorized_keys}\nPidFile none\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nStrictModes no\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege separation folder
    sshd = subprocess.Popen(
        ["ip", "netns", "exec", CLI, "/usr/sbin/sshd", "-d", "-f", str(config)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        said = []
        for line in sshd.stderr:  # until it listens, or exits saying why
            said.append(line)
            if "Server listening on" in line:
                break
        else:
            pytest.fail(f"sshd did not start: {''.join(said[-10:])}")
        yield
    finally:
        sshd.kill()
        sshd.wait()


def run_on_node0(lan: Lan) -> dict:
    """`cluster nodes run` from the control node's namespace, checking host keys strictly (no --accept-new)
    against the known_hosts `control configure` wrote."""
    done = subprocess.run(
        ["ip", "netns", "exec", CTL, sys.executable, str(REPO / "cluster.py"),
         "--config", str(lan.folder / "cockpit.toml"), "nodes", "run", "-w", NODE0, "--json", "--", "true"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return json.loads(done.stdout)["nodes"][0]


def test_a_live_node_with_its_issued_key_is_accepted_and_one_with_a_new_key_refused(applied: Applied, lan: Lan):
    """node0 as its own seed makes it (the host key and the admin's authorized keys, written as cloud-init
    writes them) is accepted with strict checking; node0 with a fresh random key, as the generic seed would make,
    is refused."""
    seed = yaml.safe_load(http(f"{NODE0_SEED}/user-data", source=NODE0_ADDRESS))
    folder = lan.folder / "node0-live"
    folder.mkdir()
    authorized_keys = folder / "authorized_keys"
    authorized_keys.write_text("\n".join(seed["users"][0]["ssh_authorized_keys"]) + "\n")
    issued = folder / "ssh_host_ed25519_key"
    issued.write_text(seed["ssh_keys"]["ed25519_private"])
    issued.chmod(0o600)
    with live_sshd(folder, issued, authorized_keys):
        accepted = run_on_node0(lan)
    assert accepted["ok"], accepted
    fresh = folder / "fresh_key"
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(fresh))
    with live_sshd(folder, fresh, authorized_keys):
        refused = run_on_node0(lan)
    assert not refused["ok"] and "host key CHANGED" in refused["error"], refused


def qemu_boot(firmware: list[str], until: bytes, timeout_s: float = 240) -> str:
    """Boot a QEMU machine (software emulation, e1000 with QEMU's iPXE ROM) on the client bridge; its serial
    console, ANSI codes removed, up to `until` or the timeout."""
    sh("ip", "-n", CLI, "tuntap", "add", "tap0", "mode", "tap")
    sh("ip", "-n", CLI, "link", "set", "tap0", "master", "br0", "up")
    qemu = subprocess.Popen(
        ["ip", "netns", "exec", CLI, "qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-nographic",
         "-no-reboot", *firmware, "-netdev", "tap,id=net0,ifname=tap0,script=no,downscript=no",
         "-device", "e1000,netdev=net0,mac=52:54:00:7c:00:01"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    output, deadline = b"", time.monotonic() + timeout_s
    try:
        os.set_blocking(qemu.stdout.fileno(), False)
        while until not in output and time.monotonic() < deadline and qemu.poll() is None:
            output += qemu.stdout.read() or b""
            time.sleep(0.2)
    finally:
        qemu.kill()
        qemu.wait()
        subprocess.run(["ip", "-n", CLI, "link", "del", "tap0"], check=False)
    return re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", output).decode(errors="replace")


def shows(text: str, label: str) -> bool:
    """The menu is drawn on the serial line and echoed through the firmware's console: letters may come twice."""
    return label in text or "".join(c * 2 for c in label) in text


def test_qemu_bios_pxe_boots_through_dnsmasq_to_the_menu(applied: Applied) -> None:
    """A BIOS machine: DHCP, TFTP, pxelinux, the menu on its serial console, and at the timeout the default
    entry's kernel (the test ISO's, which cannot boot)."""
    text = qemu_boot(["-boot", "n"], until=b"Loading ubuntu/initrd")
    assert "Filename: pxelinux.0" in text and f"Next server: {SERVER}" in text, text[-3000:]
    assert shows(text, "cockpit PXE boot: 192.168.1.0/24 node1"), text[-3000:]  # its own menu: its MAC is node1's
    assert shows(text, "Ubuntu 22.04 live in RAM") and shows(text, "Install Ubuntu 22.04"), text[-3000:]
    assert "Loading ubuntu/vmlinuz" in text, text[-3000:]


def test_qemu_uefi_pxe_boots_through_ipxe_to_the_menu(applied: Applied) -> None:
    """A UEFI machine (OVMF): DHCP gives it ipxe.efi over TFTP; iPXE asks again, gets boot.ipxe over HTTP, shows
    the menu and at the timeout fetches the live entry's kernel over HTTP."""
    firmware = Path("/usr/share/ovmf/OVMF.fd")
    if not firmware.exists():
        infra_unavailable("no UEFI firmware for QEMU (/usr/share/ovmf/OVMF.fd): run scripts/setup test")
    text = qemu_boot(["-bios", str(firmware), "-boot", "n"], until=f"http://{SERVER}/boot/ubuntu/vmlinuz".encode())
    assert f"http://{SERVER}/boot.ipxe" in text, text[-3000:]
    assert shows(text, "cockpit PXE boot: 192.168.1.0/24 node1"), text[-3000:]  # iPXE matched its MAC
    assert shows(text, "Ubuntu 22.04 live in RAM") and shows(text, "Install Ubuntu 22.04"), text[-3000:]
    assert f"http://{SERVER}/boot/ubuntu/vmlinuz" in text, text[-3000:]


@pytest.fixture
def bare(lan: Lan) -> Iterator[Path]:
    """A second 'control node' namespace, its compute_interface a veth with nothing behind it and nothing
    running: bad input there."""
    folder = lan.folder / "bad"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    make_namespace(BAD)
    for link in (INTERFACE, "noaddr0"):
        sh("ip", "-n", BAD, "link", "add", link, "type", "veth", "peer", "name", f"{link}-peer")
    sh("ip", "-n", BAD, "addr", "add", f"{SERVER}/24", "dev", INTERFACE)
    for link in (INTERFACE, "noaddr0"):
        sh("ip", "-n", BAD, "link", "set", link, "up")
    try:
        yield folder
    finally:
        subprocess.run(["ip", "netns", "del", BAD], check=False)


def fails_with(lan: Lan, folder: Path, message: str, playbook: Path = PLAYBOOK, **changes: str | None) -> str:
    """Run the role with bad input: it stops with one message containing `message`, having written nothing."""
    variables = lan.variables(**changes) | {
        "pxe_server_tftp_root": str(folder / "tftp"),
        "pxe_server_http_root": str(folder / "http"),
    }
    run, events = play(write_inventory(folder, BAD, variables), playbook)
    failed = failures(events)
    assert run.rc != 0 and len(failed) == 1, run.output_tail(30)
    assert message in " ".join(failed[0].message.split()), failed[0].message
    assert not (folder / "tftp").exists() and not (folder / "http").exists()
    return failed[0].message


def test_missing_compute_interface(lan: Lan, bare: Path) -> None:
    fails_with(lan, bare, "compute_interface is not set: set it in the inventory's group_vars/all.yml",
               compute_interface=None)  # fmt: skip


def test_an_interface_that_does_not_exist(lan: Lan, bare: Path) -> None:
    message = fails_with(lan, bare, "compute_interface nosuch0 does not exist", compute_interface="nosuch0")
    assert INTERFACE in message  # it lists the interfaces there are


def test_an_interface_without_an_address_in_the_compute_network(lan: Lan, bare: Path) -> None:
    fails_with(lan, bare, "noaddr0 has no IPv4 address, not one in compute_network 192.168.1.0/24",
               compute_interface="noaddr0")  # fmt: skip


def test_no_ssh_public_key(lan: Lan, bare: Path) -> None:
    empty = bare / "no-keys"
    empty.mkdir()
    fails_with(lan, bare, f"There is no ssh public key in {empty} (no *.pub file): create one with `ssh-keygen",
               compute_admin_ssh_key_dir=str(empty))  # fmt: skip


def test_an_iso_whose_checksum_does_not_match(lan: Lan, bare: Path) -> None:
    wrong = "0" * 64
    fails_with(lan, bare, f"has sha256 {lan.checksum}, not the {wrong} of pxe_server_iso_checksum: download it again",
               pxe_server_iso_checksum=f"sha256:{wrong}")  # fmt: skip


def test_a_port_held_by_another_service(lan: Lan, bare: Path) -> None:
    squatter = subprocess.Popen(
        ["ip", "netns", "exec", BAD, "python3", "-m", "http.server", "80", "--bind", "0.0.0.0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while b":80 " not in in_ns(BAD, "ss", "-ltn").stdout and time.monotonic() < deadline:
            time.sleep(0.1)
        fails_with(lan, bare, f"Port 80/tcp on {INTERFACE} (0.0.0.0) is held by python3 (pid {squatter.pid}).")
    finally:
        squatter.kill()
        squatter.wait()


def test_the_golden_image_entry_appears_once_its_kernel_is_in_place_and_is_the_default_when_asked(
    applied: Applied, lan: Lan
) -> None:
    """The golden_image role leaves the image's kernel and initrd in <tftp>/golden: the next run of the role adds
    the NFS-root entry, and `cluster control configure --boot golden` makes it the default of both menus (the live
    boot stays one) and records the choice, which later runs keep."""
    golden = lan.folder / "tftp" / "golden"
    golden.mkdir()
    (golden / "vmlinuz").write_bytes(KERNEL)
    (golden / "initrd.img").write_bytes(INITRD)
    done = configure(lan, "--boot", "golden")
    assert done.returncode == 0, done.stdout + done.stderr
    menu = tftp("pxelinux.cfg/default").decode()
    entries = menu_entries(menu)
    assert list(entries) == ["golden", "live", "install"]
    assert re.search(r"^DEFAULT golden$", menu, re.MULTILINE)
    nfs_root = {"root=/dev/nfs", f"nfsroot={SERVER}:/srv/golden/ubuntu-22.04,ro", "ip=dhcp", "overlayroot=tmpfs"}
    assert nfs_root <= set(entries["golden"]["APPEND"].split())
    assert tftp(entries["golden"]["KERNEL"]) == KERNEL
    ipxe = http("boot.ipxe").decode()
    assert "item golden " in ipxe and "choose --default golden " in ipxe and "|| goto golden\n" in ipxe
    assert (lan.folder / "default-boot").read_text() == "golden\n"


@pytest.mark.parametrize("asked", ["--boot golden", "recorded"])
def test_golden_as_the_default_before_the_image_is_built(lan: Lan, bare: Path, asked: str) -> None:
    """Asked for now, or recorded by an earlier run (which a plain run keeps): no image, so it stops, naming where
    the choice came from and what to do."""
    record = bare / "default-boot"
    if asked == "recorded":
        record.write_text("golden\n")
    source = record if asked == "recorded" else "pxe_server_default_boot"
    fails_with(lan, bare, f"The default boot is golden (from {source}), but the golden image is not built: "
               f"{bare}/tftp/golden/vmlinuz and {bare}/tftp/golden/initrd.img missing. Build it with `cluster "
               "control golden-image` first", pxe_server_default_boot_file=str(record),
               pxe_server_default_boot="golden" if asked != "recorded" else None)  # fmt: skip


def gateway_fails_with(lan: Lan, folder: Path, message: str, **changes: str | None) -> str:
    """The gateway's playbook alone with bad input: one message, and neither forwarding nor rules in the namespace."""
    text = fails_with(lan, folder, message, GATEWAY, **changes)
    assert forwarding(BAD) == "0" and tables(BAD) == []
    return text


def test_an_uplink_that_does_not_exist(lan: Lan, bare: Path) -> None:
    message = gateway_fails_with(lan, bare, "uplink_interface nosuch1 does not exist", uplink_interface="nosuch1")
    assert INTERFACE in message  # it lists the interfaces there are


def test_an_uplink_that_is_the_compute_interface(lan: Lan, bare: Path) -> None:
    sh("ip", "-n", BAD, "route", "add", "default", "via", "192.168.1.2", "dev", INTERFACE)
    gateway_fails_with(lan, bare, f"The uplink {INTERFACE} (the default route's interface: uplink_interface is not set)"
                       " is compute_interface too: the gateway would route the compute network onto itself",
                       uplink_interface=None)  # fmt: skip


def test_no_uplink_and_no_default_route(lan: Lan, bare: Path) -> None:
    gateway_fails_with(lan, bare, "has no default route and uplink_interface is not set", uplink_interface=None)


LISTEN = "import socket, sys; s = socket.create_server((sys.argv[1], 0)); print(s.getsockname()[1], flush=True); " \
         "print(s.accept()[1][0], flush=True)"  # fmt: skip
CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)"


def source_seen_beyond_the_uplink() -> str | None:
    """Connect from the compute node to a listener on the uplink's far side: the source address the listener saw,
    or None when the connection failed."""
    listener = subprocess.Popen(["ip", "netns", "exec", UP, "python3", "-c", LISTEN, FAR],
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        port = listener.stdout.readline().strip()
        if in_ns(CLI, "python3", "-c", CONNECT, FAR, port).returncode != 0:
            return None
        return listener.stdout.readline().strip()
    finally:
        listener.kill()
        listener.wait()


def datagram(namespace: str, address: str) -> None:
    """One UDP datagram from `namespace` to `address` (the discard port)."""
    send = f"import socket; socket.socket(type=socket.SOCK_DGRAM).sendto(b'x', ('{address}', 9))"
    assert in_ns(namespace, "python3", "-c", send).returncode == 0


def dropped_from_the_uplink() -> int:
    """Packets the gateway dropped coming in from the uplink's side toward the compute network."""
    chain = sh("ip", "netns", "exec", CTL, "nft", "list", "chain", "inet", "cockpit_gateway", "forward")
    return int(re.search(r"counter packets (\d+) ", chain).group(1))


def not_forwarded() -> int:
    """IP InAddrErrors of the control node: what it received for another address and, not routing, dropped."""
    snmp = sh("ip", "netns", "exec", CTL, "cat", "/proc/net/snmp").splitlines()
    names, values = (line.split() for line in snmp if line.startswith("Ip:"))
    return int(values[names.index("InAddrErrors")])


def test_the_gateway_forwards_the_compute_network_masqueraded(applied: Applied, lan: Lan) -> None:
    assert source_seen_beyond_the_uplink() == UPLINK_ADDRESS
    assert "Before the gateway: net.ipv4.ip_forward = 0" in GATEWAY_FILES[0].read_text()
    assert f'include "{GATEWAY_FILES[0]}"' in NFTABLES_CONF.read_text() and nftables_enabled()
    # a new connection from the uplink's side is dropped: only replies come back in
    sh("ip", "-n", UP, "route", "add", "192.168.1.0/24", "via", UPLINK_ADDRESS)
    datagram(UP, CLIENT)
    wait_for(lambda: dropped_from_the_uplink() == 1, 10, "the gateway dropping a datagram from the uplink's side")
    # the namespace routes, this machine does not
    assert forwarding(CTL) == "1" and forwarding() == lan.forwarding
    assert "table inet cockpit_gateway" in tables(CTL) and "table inet cockpit_gateway" not in tables()


def test_the_reverted_gateway_forwards_nothing_and_leaves_nothing(applied: Applied, lan: Lan) -> None:
    """Last in the module: the tests before it see the gateway."""
    folder = lan.folder / "revert"
    folder.mkdir()
    run, events = play(write_inventory(folder, CTL, lan.variables(gateway_state="absent")), GATEWAY)
    assert run.rc == 0 and not failures(events), run.output_tail(30)
    dropped = not_forwarded()
    datagram(CLI, FAR)
    wait_for(lambda: not_forwarded() > dropped, 10, "the control node dropping a datagram for the uplink's side")
    assert forwarding(CTL) == "0" and tables(CTL) == []
    assert not any(path.exists() for path in GATEWAY_FILES)
    assert NFTABLES_CONF.read_bytes() == lan.nftables_conf and nftables_enabled() == lan.nftables_enabled

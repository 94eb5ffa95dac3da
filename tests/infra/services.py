"""The real services the integration tests use: sshd hosts in network namespaces and a Slurm cluster.

Each is started by the shell scripts beside this file (usable by hand too, see README.md), once per test
session, and stopped at the end only if this session started it. Stopping is by pidfile, never by name.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

INFRA_DIR = Path(__file__).resolve().parent
REPO = INFRA_DIR.parents[1]
TEST_HOSTS_DIR = Path(os.environ.get("TEST_HOSTS_DIR", "/tmp/cockpit-testhosts"))
TEST_HOSTS = 2
TEST_NET = "10.77.0"


def infra_unavailable(reason: str) -> None:
    """This machine cannot run an infrastructure test: skip it, except in CI, where it fails with the reason."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"infrastructure unavailable in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def require_root() -> None:
    if os.geteuid() != 0:
        infra_unavailable("needs root: network namespaces and Slurm daemons")


def run_script(name: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run one of the infra scripts; a failure fails the test with the script's output."""
    done = subprocess.run(
        ["bash", str(INFRA_DIR / name)],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"{name} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}", pytrace=False)
    return done.stdout + done.stderr


def pid_alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return False
    return True


@dataclass(frozen=True)
class TestHost:
    """One fake compute node: a network namespace with its own address, MAC, hostname and sshd."""

    __test__ = False  # not a pytest test class

    name: str
    address: str
    mac: str
    user: str = "root"


@dataclass(frozen=True)
class TestHosts:
    """The sshd test hosts and the client-side files to reach them."""

    __test__ = False

    hosts: tuple[TestHost, ...]
    state_dir: Path
    broadcast: str = f"{TEST_NET}.255"

    @property
    def key(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.state_dir / "ssh_config"

    @property
    def inventory(self) -> Path:
        return self.state_dir / "inventory.ini"

    @property
    def node_local(self) -> Path:
        """A path that is each host's own folder on that host (and an empty one here): see start-test-hosts.sh."""
        return self.state_dir / "node-local"

    def local_folder(self, host: str) -> Path:
        """What `node_local` is on `host`, as this machine sees it."""
        return self.state_dir / host / "local"

    def ssh(self, host: str, command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run `command` on `host` with the system ssh client and the hosts' strict known_hosts."""
        return subprocess.run(
            ["ssh", "-F", str(self.ssh_config), host, command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def in_namespace(self, host: str, *command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command inside `host`'s network namespace, as the machine's root (for link cuts, listeners)."""
        return subprocess.run(
            ["ip", "netns", "exec", host, *command], capture_output=True, text=True, timeout=timeout, check=False
        )


def _test_hosts() -> TestHosts:
    hosts = tuple(
        TestHost(f"node{i}", f"{TEST_NET}.{10 + i}", f"02:77:00:00:00:{10 + i:02x}") for i in range(TEST_HOSTS)
    )
    return TestHosts(hosts, TEST_HOSTS_DIR)


def running_test_hosts() -> TestHosts | None:
    """The sshd test hosts when they are running, else None (nothing is started)."""
    running = all(pid_alive(TEST_HOSTS_DIR / f"node{i}" / "sshd.pid") for i in range(TEST_HOSTS))
    return _test_hosts() if running else None


def start_test_hosts() -> tuple[TestHosts, bool]:
    """Start (or find running) the sshd test hosts; also whether this call started them."""
    require_root()
    already = running_test_hosts() is not None
    run_script("start-test-hosts.sh", {"TEST_HOSTS": str(TEST_HOSTS), "TEST_HOSTS_DIR": str(TEST_HOSTS_DIR)})
    return _test_hosts(), not already


def stop_test_hosts() -> None:
    run_script("stop-test-hosts.sh", {"TEST_HOSTS": str(TEST_HOSTS), "TEST_HOSTS_DIR": str(TEST_HOSTS_DIR)})


@dataclass(frozen=True)
class SlurmCluster:
    """A real Slurm 22.05: slurmctld, slurmdbd with MariaDB, and one slurmd per test host (in its namespace)."""

    nodes: tuple[str, ...]
    partition: str = "debug"
    cluster_name: str = "cockpit"

    def run(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command (sbatch, squeue, sacct, scancel, ...) on the control host."""
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            pytest.fail(f"{shlex.join(command)} exited {done.returncode}: {done.stderr.strip()}", pytrace=False)
        return done

    def submit(self, script: Path, env: dict[str, str] | None = None) -> str:
        """sbatch a script; its job id. `env` is the environment the job (and its srun steps) inherit."""
        done = subprocess.run(
            ["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=30, env=env, check=False
        )
        if done.returncode != 0:
            pytest.fail(f"sbatch {script} exited {done.returncode}: {done.stderr.strip()}", pytrace=False)
        return done.stdout.strip().split(";")[0]

    def wait_settled(self, job_id: str, timeout: float = 60) -> dict:
        """The job's settled record in slurmdbd.

        slurmdbd can get a short job's end before its start: for a second or two the record is a placeholder
        named "allocation" with no working directory and a partial node list. Settled = final state + start.
        """
        deadline = time.monotonic() + timeout
        while True:
            jobs = json.loads(self.run("sacct", "--json", "-j", job_id).stdout)["jobs"]
            if jobs and jobs[0]["state"]["current"] not in ("PENDING", "RUNNING") and jobs[0]["working_directory"]:
                return jobs[0]
            if time.monotonic() > deadline:
                pytest.fail(f"job {job_id}: no final state in sacct after {timeout} s: {jobs}", pytrace=False)
            time.sleep(0.5)


FAKE_GPUS_PER_NODE = 2  # gres/gpu files Slurm hands out; no GPU runs here (see fake_gpu_files)


def fake_gpu_files(index: int) -> list[str]:
    """Stand-ins for a test host's GPU device files: gres/gpu drops file-less GPUs, so each is a character device
    (the numbers of /dev/null) outside /dev, and Slurm sets CUDA_VISIBLE_DEVICES from them as for real ones."""
    folder = Path("/var/lib/slurm/fakegpu")
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / f"nvidia{index * FAKE_GPUS_PER_NODE + n}" for n in range(FAKE_GPUS_PER_NODE)]
    for file in files:
        if not file.exists():
            os.mknod(file, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    return [str(file) for file in files]


def slurm_inventory(hosts: TestHosts) -> Path:
    """The test hosts' inventory with this machine as the control node, and what sets the test cluster apart
    from a real one: its partition, fake GPUs, and daemons started directly (no systemd, no cgroups here)."""
    gpus = {host.name: fake_gpu_files(i) for i, host in enumerate(hosts.hosts)}
    lines = []
    for line in hosts.inventory.read_text().splitlines():
        name = line.split(" ", 1)[0]
        lines.append(f"{line} slurm_gpu_files='{json.dumps(gpus[name])}'" if name in gpus else line)
    lines += [
        "[control]",
        "control-node ansible_connection=local ansible_python_interpreter=/usr/bin/python3",
        f"[control:vars]\nslurm_control_address={TEST_NET}.1",
        "[all:vars]",
        "slurm_partition=debug",
        "slurm_accounting=slurmdbd",
        "slurm_service_manager=direct",
        "slurm_proctrack_type=proctrack/linuxproc",
        "slurm_task_plugin=task/none",
    ]
    path = hosts.state_dir / "slurm-inventory.ini"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_slurm(hosts: TestHosts) -> tuple[SlurmCluster, bool]:
    """Start (or find running) Slurm on the test hosts through the project's own slurm role (ansible/slurm.yml,
    run by its playbook runner): slurmctld, slurmdbd and MariaDB here, munged and slurmd in each host's namespace.
    Also whether this call started slurmctld."""
    from cockpit.provision.runner import PlaybookRun

    require_root()
    already = pid_alive(Path("/run/slurmctld.pid"))
    known_hosts = f"-o UserKnownHostsFile={hosts.known_hosts} -o StrictHostKeyChecking=yes"
    run = PlaybookRun(
        REPO / "ansible" / "slurm.yml",
        slurm_inventory(hosts),
        artifacts_root=hosts.state_dir / "provision",
        envvars={"ANSIBLE_SSH_ARGS": known_hosts},
        timeout_s=600,
    ).start()
    for _event in run.events():
        pass
    if run.rc != 0:
        pytest.fail(f"the slurm playbook ended {run.status} (rc {run.rc}):\n{run.output_tail(60)}", pytrace=False)
    return SlurmCluster(tuple(host.name for host in hosts.hosts)), not already


def stop_slurm() -> None:
    run_script("stop-slurm.sh", {"TEST_HOSTS_DIR": str(TEST_HOSTS_DIR)})


def main(argv: list[str]) -> int:
    """`python -m tests.infra.services start|stop`: the test hosts and their Slurm by hand (as root)."""
    if argv[1:] == ["start"]:
        hosts, _ = start_test_hosts()
        cluster, _ = start_slurm(hosts)
        print(f"test hosts and Slurm up: {', '.join(cluster.nodes)} in partition {cluster.partition}")
        return 0
    if argv[1:] == ["stop"]:
        stop_slurm()
        stop_test_hosts()
        return 0
    print("usage: python -m tests.infra.services start|stop", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""`PlaybookRun`: one ansible-playbook run through ansible-runner, in a thread of its own, its progress as events.

Each run gets a private data dir `<artifacts_root>/<UTC stamp>-<playbook stem>/` (mode 0700) holding what
ansible-runner writes: `env/` (the run's envvars and extravars) and `artifacts/` (`stdout`, `job_events/`,
`command`, `rc`, `status`). ansible-playbook runs from the playbook's folder, so an `ansible.cfg` there applies, as
when you run it by hand; the settings that keep runs private and strict (ssh control path, host key checking, no
colour) come as environment variables on top. ansible-runner itself turns retry files off. The ssh connection
masters live in a short-named folder of their own in /tmp, closed and removed when the run ends.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import subprocess
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import ansible_runner

from cockpit.errors import BadInput
from cockpit.provision.events import ProvisionEvent, event_from_runner

RunStatus = Literal["pending", "running", "successful", "failed", "canceled", "timeout"]

# ansible-runner asks whether to cancel once per pexpect timeout: the latency of a cancel and of the time limit.
POLL_SETTINGS = {"pexpect_timeout": 1}
MASTER_EXIT_TIMEOUT_S = 5.0


def compute_playbook(project_root: Path) -> Path:
    """The one playbook that configures compute nodes: it imports all the others, in order."""
    return project_root / "ansible" / "compute.yml"


def _private_dir(root: Path, stem: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    name = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{stem}"
    path, n = root / name, 1
    while True:
        try:
            path.mkdir(mode=0o700)
            return path
        except FileExistsError:  # another run of the same playbook started within the same second
            n += 1
            path = root / f"{name}-{n}"


def _children(task_dir: Path) -> list[int]:
    try:
        return [int(pid) for pid in (task_dir / "children").read_text().split()]
    except OSError:  # gone already, or a kernel without /proc/.../children
        return []


def _kill_ansible_workers() -> None:
    """SIGKILL the workers of the ansible-playbook this thread started, with their ssh clients. Ansible puts each
    worker in a session of its own, so ansible-runner's kill of ansible-playbook's process group misses them and
    they would carry on with their task on the nodes (and open new connections to clean up after it)."""
    for playbook_pid in _children(Path("/proc/thread-self")):
        for task_dir in Path(f"/proc/{playbook_pid}/task").glob("*"):
            for worker in _children(task_dir):
                for kill in (os.killpg, os.kill):  # its group once it has detached, itself if not yet
                    with contextlib.suppress(OSError):
                        kill(worker, signal.SIGKILL)


def _close_ssh_masters(control_dir: Path) -> None:
    """Stop the run's ssh connection masters now rather than after ControlPersist, then remove their folder."""
    for socket in control_dir.iterdir():
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(
                ["ssh", "-F", "/dev/null", "-o", f"ControlPath={socket}", "-O", "exit", "cockpit-run"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=MASTER_EXIT_TIMEOUT_S,
                check=False,
            )
    shutil.rmtree(control_dir, ignore_errors=True)


class PlaybookRun:
    """One run of `playbook` against `inventory`; `start()` it, then follow `events()` to its end."""

    def __init__(
        self,
        playbook: Path,
        inventory: Path,
        *,
        artifacts_root: Path,
        limit: str | None = None,
        extravars: dict[str, object] | None = None,
        envvars: dict[str, str] | None = None,
        timeout_s: float | None = None,
        check: bool = False,
        diff: bool = False,
    ) -> None:
        if not playbook.is_file():
            raise BadInput(f"{playbook}: playbook not found")
        if not inventory.exists():
            raise BadInput(f"{inventory}: inventory not found")
        self.playbook = playbook.resolve()
        self.inventory = inventory.resolve()
        self.artifacts_root = artifacts_root
        self.limit = limit
        self.extravars = dict(extravars or {})
        self.envvars = dict(envvars or {})
        self.timeout_s = timeout_s
        self.check = check  # ansible-playbook --check: report what would change, change nothing
        self.diff = diff  # --diff: each changed file's before and after in its result's `diff`
        self._queue: queue.Queue[ProvisionEvent] = queue.Queue()
        self._cancel = threading.Event()
        self._timed_out = False
        self._deadline: float | None = None
        self._thread: threading.Thread | None = None
        self._runner: Any = None
        self._private_dir: Path | None = None

    def start(self) -> PlaybookRun:
        """Start ansible-playbook in the background; returns at once."""
        if self._thread is not None:
            raise RuntimeError(f"{self.playbook}: this run has already started")
        self._private_dir = _private_dir(self.artifacts_root, self.playbook.stem)
        # Unix socket paths are limited to ~108 bytes: a short folder in /tmp, not one under artifacts_root.
        control_dir = Path(tempfile.mkdtemp(prefix="ckcp-", dir="/tmp"))
        self._deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        try:
            self._thread, self._runner = ansible_runner.run_async(
                private_data_dir=str(self._private_dir),
                artifact_dir=str(self._private_dir),
                ident="artifacts",
                project_dir=str(self.playbook.parent),  # ansible-playbook's working directory
                playbook=str(self.playbook),
                inventory=str(self.inventory),
                limit=self.limit,
                cmdline=" ".join(flag for flag, on in (("--check", self.check), ("--diff", self.diff)) if on) or None,
                extravars=dict(self.extravars),
                envvars=self._envvars(control_dir),
                settings=dict(POLL_SETTINGS),
                quiet=True,
                event_handler=self._on_event,
                finished_callback=lambda _runner: _close_ssh_masters(control_dir),
                # the time limit too, so that it kills the workers as well; and with a callback of our own,
                # ansible-runner does not take over SIGINT and SIGTERM, as it does when started in the main thread
                cancel_callback=self._should_stop,
            )
        except BaseException:
            shutil.rmtree(control_dir, ignore_errors=True)
            raise
        return self

    def _envvars(self, control_dir: Path) -> dict[str, str]:
        """ansible-playbook's environment: host keys checked, no colour, ssh masters in `control_dir`."""
        return {
            # the ansible-playbook installed beside this Python first, whether or not its venv is activated
            "PATH": os.pathsep.join(filter(None, (sysconfig.get_path("scripts"), os.environ.get("PATH")))),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir),
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_NOCOLOR": "1",
            **self.envvars,
        }

    def _on_event(self, raw: dict[str, Any]) -> bool:
        event = event_from_runner(raw)
        if event is not None:
            self._queue.put(event)
        return True  # keep writing the event to artifacts/job_events

    def _should_stop(self) -> bool:
        """Asked from ansible-runner's thread, the one that started ansible-playbook: cancelled or out of time."""
        if self._deadline is not None and time.monotonic() > self._deadline:
            self._timed_out = True
        if not (self._cancel.is_set() or self._timed_out):
            return False
        _kill_ansible_workers()
        return True

    def _started(self) -> tuple[threading.Thread, Any, Path]:
        if self._thread is None or self._private_dir is None:
            raise RuntimeError(f"{self.playbook}: this run has not started")
        return self._thread, self._runner, self._private_dir

    def events(self, poll_s: float = 0.1) -> Iterator[ProvisionEvent]:
        """The run's events in order, blocking, until it has ended and all are out. Leaving early (Ctrl-C, an
        exception, closing the iterator) cancels the run: ansible-playbook has its own session, so no Ctrl-C at
        the terminal reaches it."""
        thread = self._started()[0]
        try:
            while True:
                try:
                    yield self._queue.get(timeout=poll_s)
                except queue.Empty:
                    if not thread.is_alive():
                        break
            while not self._queue.empty():  # what came in between the last wait and the thread's end
                yield self._queue.get_nowait()
        finally:
            if thread.is_alive():
                self.cancel()

    def cancel(self) -> None:
        """Stop the run: within about a second ansible-playbook and its workers are killed and the ssh connections
        closed (which hangs up on the tasks running on the nodes); the status becomes "canceled"."""
        self._cancel.set()

    @property
    def status(self) -> RunStatus:
        if self._thread is None:
            return "pending"
        state = self._runner.status
        if state == "canceled" and self._timed_out:
            return "timeout"
        if state in ("successful", "failed", "canceled", "timeout"):
            return state
        # ansible-runner's thread can only end without a final status by raising: count that as a failure
        return "running" if self._thread.is_alive() else "failed"

    @property
    def rc(self) -> int | None:
        """ansible-playbook's exit status once it has ended (254 when canceled or timed out)."""
        return None if self._runner is None else self._runner.rc

    @property
    def artifact_dir(self) -> Path:
        return self._started()[2] / "artifacts"

    @property
    def stdout_path(self) -> Path:
        """Ansible's own console output for the run, as `ansible-playbook` would have printed it."""
        return self.artifact_dir / "stdout"

    def output_tail(self, lines: int = 20) -> str:
        """The last lines of Ansible's output: what explains a failure no host result covers (a playbook that
        does not parse, a role not found)."""
        try:
            text = self.stdout_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.replace("\r\n", "\n").strip("\n").splitlines()[-lines:])

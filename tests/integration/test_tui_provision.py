"""The provisioning screen on a real ansible-runner run: a playbook with an ok, a changed and a failing task on this
machine (a local connection, no ssh), followed under a Pilot to its end."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

from textual.widgets import DataTable, Static

from cockpit.provision.runner import PlaybookRun
from cockpit.tui.screens.provision import FailureScreen, ProvisionScreen
from tests.snapshot.test_app_shell import SIZE, fake_app, settle

PLAYBOOK = """\
- name: Local play
  hosts: all
  gather_facts: false
  tasks:
    - name: Look around
      ansible.builtin.command: "true"
      changed_when: false
    - name: Change something
      ansible.builtin.command: "true"
    - name: Fail loudly
      ansible.builtin.command: sh -c 'echo boom >&2; exit 3'
"""


async def test_a_real_run_shows_its_failure(tmp_path: Path) -> None:
    playbook = tmp_path / "local.yml"
    playbook.write_text(textwrap.dedent(PLAYBOOK))
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    run = PlaybookRun(playbook, inventory, artifacts_root=tmp_path / "runs").start()
    app = fake_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = ProvisionScreen(run, ["localhost"])
        await app.push_screen(screen)
        deadline = time.monotonic() + 120
        while screen.board.running:
            assert time.monotonic() < deadline, f"the run did not end: {run.output_tail()}"
            await pilot.pause(0.1)
        await pilot.pause()
        assert (run.status, run.rc) == ("failed", 2), run.output_tail()
        hosts = screen.query_one("#hosts", DataTable)
        cells = {column: str(hosts.get_cell("localhost", column)) for column in ("ok", "changed", "failed", "state")}
        assert cells == {"ok": "2", "changed": "1", "failed": "1", "state": "failed"}
        tasks = screen.query_one("#tasks", DataTable)
        assert [str(tasks.get_row_at(i)[3]) for i in range(tasks.row_count)] == ["ok", "changed", "failed"]
        status = str(screen.query_one("#provision-status", Static).render())
        assert status.endswith("failed (rc 2) · failed on localhost: enter or o on a red row shows why")
        await pilot.press("o")  # the hosts table has the focus, its cursor on localhost
        assert isinstance(app.screen, FailureScreen)
        text = str(app.screen.query_one("#failure-text", Static).render())
        assert "boom" in text and "rc: 3" in text and "Fail loudly" in text

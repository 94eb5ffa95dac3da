"""The shared squeue watch: its back-off, what counts as a change, and its reset. How many squeue calls its readers
make together is counted on the real test cluster (tests/integration/test_slurm_without_inventory.py)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from cockpit.jobs import watch as watch_module
from cockpit.jobs.watch import SqueueWatch, fingerprint, next_interval

# `squeue --json` as the test cluster's Slurm 22.05.8 printed it, two jobs of the TUI tests within MinJobAge
SQUEUE_22_05 = Path(__file__).parent / "fixtures" / "slurm" / "squeue-22.05.json"


def test_the_interval_doubles_while_nothing_changes_up_to_its_cap_and_resets_on_a_change() -> None:
    intervals, interval = [], 0.5
    for changed in (False, False, False, False, False, True, False):
        interval = next_interval(interval, changed, base_s=0.5, cap_s=8.0)
        intervals.append(interval)
    assert intervals == [1.0, 2.0, 4.0, 8.0, 8.0, 0.5, 1.0]


def test_a_change_is_a_job_coming_going_or_changing_state_not_the_metadata() -> None:
    data = json.loads(SQUEUE_22_05.read_text())
    same = copy.deepcopy(data)
    same["meta"]["Slurm"]["release"] = "other"
    same["jobs"][0]["accrue_time"] += 1
    assert fingerprint(same) == fingerprint(data)
    moved = copy.deepcopy(data)
    moved["jobs"][1]["job_state"] = "RUNNING"
    fewer = {**data, "jobs": data["jobs"][:1]}
    assert len({fingerprint(data), fingerprint(moved), fingerprint(fewer), fingerprint({"jobs": []})}) == 4


def test_reset_brings_back_the_base_interval_and_asks_again(tmp_path: Path) -> None:
    watch = SqueueWatch(tmp_path, base_s=0.25, clock=lambda: 100.0)
    assert watch.interval() == 0.25  # nothing stored yet
    (tmp_path / ".squeue.json").write_text(json.dumps({"at": 95.0, "interval": 8.0, "digest": "x", "data": {}}))
    assert watch.interval() == 8.0 and watch.snapshot() == {}  # 5 s old: no squeue call
    watch.reset()
    assert watch.interval() == 0.25 and json.loads((tmp_path / ".squeue.json").read_text())["data"] is None


def test_a_runs_folder_that_cannot_be_written_asks_squeue_each_time_fake_squeue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No shared snapshot where the runs folder cannot be made (here: under a file): the queue still reads, each
    read its own squeue call (a stand-in returning the captured output counts them)."""
    calls: list[list[str]] = []

    def squeue(argv: list[str], what: str, timeout_s: float) -> dict:
        calls.append(argv)
        return json.loads(SQUEUE_22_05.read_text())

    monkeypatch.setattr(watch_module, "run_slurm_json", squeue)
    (tmp_path / "file").write_text("")
    watch = SqueueWatch(tmp_path / "file" / "runs")
    assert watch.snapshot()["jobs"] and watch.snapshot()["jobs"] and len(calls) == 2

"""Reading Slurm's `--json` output into job records: 22.05's shapes (what the test cluster runs) and 23.02+'s."""

from __future__ import annotations

from cockpit.jobs.slurm import record_from_sacct, record_from_squeue


def sacct_job(job_id: int, state: object, workdir: str = "/runs/x", mem: int | None = 63819776) -> dict:
    """The parts of a real 22.05 `sacct --json` job record the manager reads (captured from the test cluster)."""
    steps = [
        {"step": {"name": "batch"}, "tres": {"requested": {"max": [{"type": "mem", "count": 12144640}]}}},
        {"step": {"name": "python3"}, "tres": {"requested": {"max": [{"type": "cpu", "count": 60}]}}},
    ]
    if mem is not None:
        steps[1]["tres"]["requested"]["max"].append({"type": "mem", "count": mem})
    return {
        "job_id": job_id,
        "name": "tiny_pp2_tp1_n2",
        "state": {"current": state, "reason": "None"},
        "exit_code": {"status": "SUCCESS", "return_code": 0},
        "time": {"elapsed": 7},
        "nodes": "node[0-1]",
        "working_directory": workdir,
        "steps": steps,
    }


def test_sacct_settled_record() -> None:
    record = record_from_sacct({"jobs": [sacct_job(61, "RUNNING"), sacct_job(62, "COMPLETED")]}, "62")
    assert record is not None and record.final
    assert (record.state, record.exit_code, record.elapsed_s) == ("COMPLETED", 0, 7.0)
    assert record.max_rss_bytes == 63819776  # the largest task of any step
    assert (record.name, record.nodes, record.reason) == ("tiny_pp2_tp1_n2", "node[0-1]", None)


def test_sacct_placeholder_and_missing_job_are_not_settled() -> None:
    assert record_from_sacct({"jobs": [sacct_job(5, "COMPLETED", workdir="")]}, "5") is None  # slurmdbd mid-write
    assert record_from_sacct({"jobs": [sacct_job(5, "RUNNING")]}, "5") is None
    assert record_from_sacct({"jobs": []}, "5") is None


def test_short_job_has_no_max_rss() -> None:
    job = sacct_job(9, "FAILED", mem=None)
    job["steps"][0]["tres"]["requested"]["max"] = []
    assert record_from_sacct({"jobs": [job]}, "9").max_rss_bytes is None


def test_newer_slurm_shapes() -> None:
    """23.02+ writes states as flag lists and numbers as {set, number}."""
    job = sacct_job(7, ["OUT_OF_MEMORY"])
    job["exit_code"] = {"status": ["FAILED"], "return_code": {"set": True, "number": 137}}
    job["time"]["elapsed"] = {"set": True, "number": 12}
    record = record_from_sacct({"jobs": [job]}, "7")
    assert (record.state, record.exit_code, record.elapsed_s) == ("OUT_OF_MEMORY", 137, 12.0)
    queued = record_from_squeue({"jobs": [{"job_id": 7, "job_state": ["PENDING"], "state_reason": "Resources"}]}, "7")
    assert (queued.state, queued.reason, queued.final) == ("PENDING", "Resources", False)


def test_squeue_filters_client_side() -> None:
    """22.05 ignores -j with --json: every job comes back, ours is picked out."""
    data = {
        "jobs": [
            {"job_id": 1, "job_state": "COMPLETED", "name": "a", "nodes": "node0", "state_reason": "None"},
            {"job_id": 2, "job_state": "RUNNING", "name": "b", "nodes": "node[0-1]", "state_reason": "None"},
        ]
    }
    record = record_from_squeue(data, "2")
    assert (record.state, record.name, record.nodes, record.reason, record.final) == (
        "RUNNING",
        "b",
        "node[0-1]",
        None,
        False,
    )
    assert record_from_squeue(data, "3") is None

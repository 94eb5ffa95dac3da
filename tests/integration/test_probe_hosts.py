"""The telemetry probe on the sshd test hosts: one ssh round trip each, the script on stdin, a report back."""

from __future__ import annotations

import json
import subprocess

import pytest

from cockpit.nodes.telemetry import PROBE_COMMAND, parse_probe, probe_source
from tests.infra.services import TestHosts

pytestmark = pytest.mark.infra


@pytest.mark.parametrize("host", ["node0", "node1"])
def test_probe_over_ssh_reports_the_node_and_invents_no_gpu(test_hosts: TestHosts, host: str) -> None:
    done = subprocess.run(
        ["ssh", "-F", str(test_hosts.ssh_config), host, PROBE_COMMAND],
        input=probe_source(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = parse_probe(done.stdout, host)
    assert report.hostname == host  # each sshd runs in its own UTS namespace
    assert report.errors == ()
    assert report.uptime_s is not None and report.uptime_s > 0
    assert report.load is not None and all(0 <= x < 1000 for x in report.load)
    assert report.cpu_count is not None and report.cpu_count >= 1
    assert report.memory_total_mib is not None and report.memory_available_mib is not None
    assert 0 < report.memory_available_mib <= report.memory_total_mib
    # No GPU on this machine: no GPU entries at all, and no GPU reading anywhere else in the report.
    raw = json.loads(done.stdout)
    assert raw["gpus"] == [] and report.gpus == ()
    assert raw["runtime"] is None and report.runtime is None  # not asked: no runtime delivery here
    assert set(raw) == {
        "probe",
        "hostname",
        "uptime_s",
        "load",
        "cpu_count",
        "memory_total_mib",
        "memory_available_mib",
        "gpus",
        "runtime",
        "errors",
    }

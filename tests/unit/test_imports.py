"""Import hygiene: the headless side never loads textual, and the cockpit never loads torch."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import cockpit

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("textual", "torch", "deepspeed", "transformers")


def loaded_after(code: str) -> dict[str, bool]:
    """Which heavy packages are in sys.modules after running `code` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def all_modules(package: str, skip: str | None = None) -> list[str]:
    names = [package]
    for info in pkgutil.walk_packages(cockpit.__path__, prefix="cockpit."):
        if skip is None or not info.name.startswith(skip):
            names.append(info.name)
    return names


def test_cluster_help_loads_no_textual() -> None:
    code = (
        "import runpy, sys\nsys.argv = ['cluster.py', '--help']\n"
        "try:\n    runpy.run_path('cluster.py', run_name='__main__')\nexcept SystemExit:\n    pass"
    )
    loaded = loaded_after(code)
    assert not loaded["textual"] and not loaded["torch"]


def test_headless_modules_load_no_textual_or_torch() -> None:
    modules = all_modules("cockpit", skip="cockpit.tui")
    assert "cockpit.cli" in modules and "cockpit.config" in modules
    loaded = loaded_after("\n".join(f"import {m}" for m in [*modules, "runtime.contract"]))
    assert loaded == dict.fromkeys(HEAVY, False)


def test_cockpit_including_the_app_loads_no_torch() -> None:
    modules = all_modules("cockpit")
    assert "cockpit.tui.app" in modules
    loaded = loaded_after("\n".join(f"import {m}" for m in modules))
    assert loaded["textual"]  # the probe would notice the app's imports
    assert not loaded["torch"] and not loaded["deepspeed"] and not loaded["transformers"]

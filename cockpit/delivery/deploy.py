"""`cluster runtime deploy`: the built runtime onto the nodes, then verified there.

venv: the `runtime` Ansible role (ansible/runtime.yml) copies the build to `<install_root>/<build_id>/` on each
node with rsync, checks the copy's digest on the node, points `current` at it and prunes old builds. apptainer:
the image is copied with rsync to `image_dir`, the storage every node mounts, with its manifest beside it and
copied to `current.json` (what the cockpit's node probe reads, as it reads `current/` of a venv install).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from cockpit.config import Settings
from cockpit.delivery.build import IMAGE_NAME, build_folder
from cockpit.delivery.verify import target
from cockpit.errors import BadInput, OperationFailed
from cockpit.nodes.inventory import Node
from cockpit.provision.compute import PROJECT_ROOT, compute_run
from cockpit.provision.runner import PlaybookRun
from runtime.atomic import atomic_write_text
from runtime.contract import BUILD_MANIFEST_NAME, CURRENT_IMAGE_MANIFEST, BuildManifest

RUNTIME_PLAYBOOK = PROJECT_ROOT / "ansible" / "runtime.yml"
DIGEST_SCRIPT = Path(__file__).with_name("tree_digest.py")


def venv_run(settings: Settings, nodes: Sequence[Node], build: BuildManifest) -> PlaybookRun:
    """The `runtime` role's run (not yet started) that installs `build` on `nodes`."""
    extravars = {
        "runtime_build_dir": str(build_folder(settings, "venv", build.device)),
        "runtime_install_root": settings.runtime.install_root,
        "runtime_keep_builds": settings.runtime.keep_builds,
        "runtime_digest_script": str(DIGEST_SCRIPT),
    }
    return compute_run(settings, nodes, RUNTIME_PLAYBOOK, extravars=extravars)


def copy_image(settings: Settings, build: BuildManifest) -> Path:
    """rsync the image to shared storage as `cockpit-runtime-<build id>.sif`, its manifest beside it; the path."""
    where = target(settings, build)
    image_dir = Path(where.root)
    if not image_dir.is_dir():
        raise BadInput(f"{image_dir}: [runtime] image_dir does not exist here (is the shared storage mounted?)")
    if shutil.which("rsync") is None:
        raise OperationFailed("runtime deploy: rsync not found on this machine")
    source = build_folder(settings, "apptainer", build.device)
    destination = Path(where.path)
    done = subprocess.run(
        ["rsync", "--archive", "--partial", str(source / IMAGE_NAME), str(destination)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise OperationFailed(f"runtime deploy: rsync to {destination} exited {done.returncode}: {done.stderr.strip()}")
    manifest = (source / BUILD_MANIFEST_NAME).read_text()
    atomic_write_text(Path(where.manifest_path), manifest)
    atomic_write_text(image_dir / CURRENT_IMAGE_MANIFEST, manifest)
    return destination

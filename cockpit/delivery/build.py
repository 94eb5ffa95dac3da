"""`cluster runtime build`: the node runtime for one device kind, built once here, with its manifest.

venv: `<build_dir>/venv-<device>/` holds `venv/` (made from `[runtime] python`, the runtime's pinned packages
installed by pip), `src/runtime/` (this tree's node runtime), `requirements.txt`, `CONTENTS` (the digest's
listing) and `build_manifest.json`. apptainer: `<build_dir>/apptainer-<device>/` holds `runtime.sif`, built from
the project's definition file (cockpit/delivery/runtime.def), and its manifest. A rebuild of unchanged inputs
gives the same digest, so nodes that have it need nothing new.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from importlib import metadata, resources
from pathlib import Path

from cockpit.config import Settings
from cockpit.delivery.tree_digest import LISTING_NAME, digest_of, file_sha256, listing
from cockpit.errors import BadInput, OperationFailed
from runtime.atomic import atomic_write_text
from runtime.contract import BUILD_MANIFEST_NAME, BuildManifest, Delivery, DeviceKind

PROJECT = Path(__file__).resolve().parents[2]
DISTRIBUTION = "gpu-cockpit"
IMAGE_NAME = "runtime.sif"
IMAGE_PYTHON = "/opt/cockpit/venv/bin/python"  # where runtime.def puts the runtime's interpreter
IMAGE_SOURCE = "/opt/cockpit/src"
# what each device kind's image starts from: torch's wheels bring their own CUDA libraries; Intel's GPUs need the
# Level Zero and OpenCL user-space drivers in the image, which runtime.def installs for xpu
APPTAINER_BASE_IMAGES: dict[str, str] = {
    "cpu": "python:3.11-slim-bookworm",
    "cuda": "python:3.11-slim-bookworm",
    "xpu": "ubuntu:24.04",
}
DEVICE_EXTRAS: dict[str, tuple[str, ...]] = {"cuda": ("cuda",)}  # pyproject.toml's extras a kind's runtime adds
# run by the built environment's own Python: it must import, and report what it has
INSPECT = """
import json, platform
from importlib import metadata
import torch, deepspeed, transformers
print(json.dumps({"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                  "xpu": getattr(torch.version, "xpu", None),
                  "deepspeed": metadata.version("deepspeed"), "transformers": metadata.version("transformers")}))
"""

Progress = Callable[[str], None]


def build_folder(settings: Settings, delivery: Delivery, device: DeviceKind) -> Path:
    """Where the build of one delivery and device kind lives here."""
    return settings.runtime_build_dir / f"{delivery}-{device}"


def runtime_requirements(device: DeviceKind) -> list[str]:
    """The runtime's pinned packages for a device kind: the project's `runtime` extra, then the kind's own extra
    where it has one (`cuda`: the NVML bindings), the one list (pyproject.toml)."""
    extras = ("runtime", *DEVICE_EXTRAS.get(device, ()))
    lines: dict[str, list[str]] = {extra: [] for extra in extras}
    for requirement in metadata.requires(DISTRIBUTION) or []:
        spec, _, marker = requirement.partition(";")
        extra = marker.replace(" ", "").replace("'", '"').removeprefix('extra=="').removesuffix('"')
        if extra in lines:
            lines[extra].append(spec.strip())
    for extra, specs in lines.items():
        if not specs:
            raise BadInput(f"{DISTRIBUTION}: no `{extra}` extra in its metadata (is the project installed?)")
    return [spec for specs in lines.values() for spec in specs]


def stage_sources(folder: Path, device: DeviceKind) -> list[str]:
    """What every build takes from this tree into `folder`: requirements.txt (the runtime extra and the device
    kind's) and src/runtime; the requirements."""
    requirements = runtime_requirements(device)
    atomic_write_text(folder / "requirements.txt", "\n".join(requirements) + "\n")
    shutil.copytree(PROJECT / "runtime", folder / "src" / "runtime", ignore=shutil.ignore_patterns("__pycache__"))
    return requirements


def git_commit(project: Path = PROJECT) -> str | None:
    """This tree's commit, with "+dirty" when what a build takes (runtime/, pyproject.toml) has changes."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(project), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    dirty = git("status", "--porcelain", "--", "runtime", "pyproject.toml")
    return f"{commit}+dirty" if dirty else commit


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One build at a time per folder (two would write the same files)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with (folder.parent / f".{folder.name}.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OperationFailed(f"{folder}: another build of it is running") from None
        yield


def _run(command: Sequence[str], log: Path, what: str, cwd: Path | None = None) -> str:
    """Run a build step, its output appended to `log`; its stdout, or an OperationFailed with the log's tail."""
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        done = subprocess.run(list(command), cwd=cwd, stdout=subprocess.PIPE, stderr=out, text=True, check=False)
        out.write(done.stdout)
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise OperationFailed(f"runtime build: {what} failed (exit {done.returncode}); the whole log: {log}\n{tail}")
    return done.stdout


def inspect_environment(python: Sequence[str], device: DeviceKind, log: Path) -> dict[str, str]:
    """Import the built environment's packages with its own Python; their versions, checked against the device."""
    out = _run([*python, "-c", INSPECT], log, "importing torch, deepspeed and transformers")
    found = json.loads(out.splitlines()[-1])
    if device == "cuda" and not found["cuda"]:
        raise BadInput(
            f"runtime build: torch {found['torch']} has no CUDA support (pip took a CPU build); "
            "set [runtime] extra_index_urls.cuda to a CUDA index, or leave pip at PyPI's default"
        )
    if device == "xpu" and not found["xpu"]:
        raise BadInput(
            f"runtime build: torch {found['torch']} has no XPU support; set [runtime] extra_index_urls.xpu = "
            '"https://download.pytorch.org/whl/xpu"'
        )
    return found


def _manifest(
    found: dict[str, str], device: DeviceKind, delivery: Delivery, digest: str, **extra: object
) -> BuildManifest:
    version = metadata.version(DISTRIBUTION)
    return BuildManifest(
        build_id=BuildManifest.make_id(version, digest),
        runtime_version=version,
        git_commit=git_commit(),
        python=found["python"],
        torch=found["torch"],
        deepspeed=found["deepspeed"],
        transformers=found["transformers"],
        device=device,
        delivery=delivery,
        digest=digest,
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
        **extra,  # type: ignore[arg-type]
    )


def _pip_index(settings: Settings, device: DeviceKind) -> list[str]:
    url = settings.runtime.extra_index_urls.get(device)
    return ["--extra-index-url", url] if url else []


def base_python(settings: Settings) -> str:
    """The interpreter venv builds start from: configured, else the one under the cockpit's own environment."""
    chosen = settings.runtime.python or getattr(sys, "_base_executable", sys.executable)
    found = shutil.which(chosen)
    if found is None:
        raise BadInput(f"runtime build: Python {chosen!r} not found ([runtime] python)")
    return str(Path(found).resolve())


def build_venv(settings: Settings, device: DeviceKind, progress: Progress) -> BuildManifest:
    """Build the runtime as a virtual environment; replaces the previous build only once this one is whole."""
    folder = build_folder(settings, "venv", device)
    with _locked(folder):
        previous = folder.with_name(f".{folder.name}.previous")
        shutil.rmtree(previous, ignore_errors=True)
        if folder.exists():
            folder.rename(previous)
        try:
            manifest = _build_venv_in(folder, settings, device, progress)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            if previous.exists():
                previous.rename(folder)
            raise
        shutil.rmtree(previous, ignore_errors=True)
        return manifest


def _build_venv_in(folder: Path, settings: Settings, device: DeviceKind, progress: Progress) -> BuildManifest:
    folder.mkdir(parents=True)
    log = folder.parent / f"{folder.name}.log"
    log.write_text("")
    python = base_python(settings)
    requirements = stage_sources(folder, device)
    progress(f"creating {folder / 'venv'} from {python}")
    _run([python, "-m", "venv", "--without-pip", str(folder / "venv")], log, "creating the virtual environment")
    progress(f"installing {' '.join(requirements)} (pip's log: {log})")
    pip = [sys.executable, "-m", "pip", "--python", str(folder / "venv" / "bin" / "python"), "install"]
    pip += ["--no-input", "--disable-pip-version-check", *_pip_index(settings, device)]
    _run([*pip, "-r", str(folder / "requirements.txt")], log, "pip install")
    progress("importing torch, deepspeed and transformers in the new environment")
    found = inspect_environment([str(folder / "venv" / "bin" / "python")], device, log)
    lines, total = listing(folder)
    progress(f"hashing: {len(lines):,} files, {total / 1e9:.2f} GB")
    atomic_write_text(folder / LISTING_NAME, "\n".join(lines) + "\n")
    manifest = _manifest(found, device, "venv", digest_of(lines), files=len(lines), bytes=total, base_python=python)
    manifest.write(folder / BUILD_MANIFEST_NAME)
    return manifest


def definition_file() -> str:
    """The project's Apptainer definition file for the runtime (its build arguments filled in by apptainer)."""
    return resources.files("cockpit.delivery").joinpath("runtime.def").read_text(encoding="utf-8")


def image_build_command(image: Path, definition: Path, settings: Settings, device: DeviceKind) -> list[str]:
    """`apptainer build` of the runtime image for a device kind, run in the build's context folder."""
    args = {
        "BASE_IMAGE": APPTAINER_BASE_IMAGES[device],
        "DEVICE": device,
        "EXTRA_INDEX_URL": settings.runtime.extra_index_urls.get(device, ""),
        "RUNTIME_VERSION": metadata.version(DISTRIBUTION),
        "GIT_COMMIT": git_commit() or "unknown",
    }
    flags = [item for name, value in args.items() for item in ("--build-arg", f"{name}={value}")]
    return ["apptainer", "build", "--force", *flags, str(image), str(definition)]


def build_image(settings: Settings, device: DeviceKind, progress: Progress) -> BuildManifest:
    """Build the runtime as an Apptainer image (needs `apptainer` here); its digest is the image file's sha256."""
    if shutil.which("apptainer") is None:
        raise OperationFailed('runtime build: apptainer not found on this machine (or use [runtime] delivery = "venv")')
    folder = build_folder(settings, "apptainer", device)
    with _locked(folder):
        context = folder / "context"
        shutil.rmtree(context, ignore_errors=True)
        stage_sources(context, device)
        atomic_write_text(context / "runtime.def", definition_file())
        log = folder / "build.log"
        log.write_text("")
        building = folder / f".{IMAGE_NAME}.building"
        progress(f"apptainer build of the {device} image (log: {log})")
        _run(image_build_command(building, context / "runtime.def", settings, device), log, "apptainer build", context)
        found = inspect_environment(["apptainer", "exec", str(building), IMAGE_PYTHON], device, log)
        size = building.stat().st_size
        progress(f"hashing {size / 1e9:.2f} GB")
        digest = f"sha256:{file_sha256(building)}"
        building.replace(folder / IMAGE_NAME)
        manifest = _manifest(found, device, "apptainer", digest, files=1, bytes=size)
        manifest.write(folder / BUILD_MANIFEST_NAME)
        return manifest


def built(settings: Settings, delivery: Delivery, device: DeviceKind) -> BuildManifest:
    """The current build's manifest, checked: it exists, parses, and is for this delivery and device kind."""
    path = build_folder(settings, delivery, device) / BUILD_MANIFEST_NAME
    if not path.exists():
        raise BadInput(f"{path}: no {delivery} runtime built for {device} (build it: cluster runtime build)")
    manifest = BuildManifest.load(path)
    if manifest.device != device or manifest.delivery != delivery:
        raise BadInput(
            f"{path}: a {manifest.delivery} build for {manifest.device}, not {delivery} for {device}; "
            f"rebuild it: cluster runtime build --device {device}"
        )
    return manifest

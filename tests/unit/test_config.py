"""cockpit.toml: the embedded default, the search order, path resolution, secrets, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from cockpit.config import CONFIG_NAME, find_config, load_settings
from cockpit.errors import BadInput
from runtime.schema import SchemaError


def test_embedded_default_without_any_file(isolated_home: Path) -> None:
    settings = load_settings()
    assert settings.embedded and settings.source is None
    assert settings.cluster.scheduler == "local"
    assert settings.inventory is None  # this machine only
    assert settings.model_path == isolated_home / ".local/share/cockpit/models/tiny-llama"
    assert settings.runs_dir == isolated_home / ".local/share/cockpit/runs"
    assert settings.wake_on_lan.broadcast is None  # no magic packet goes anywhere until configured
    assert settings.baseline_url is None
    assert settings.refresh.nodes_s == 2.0 and settings.refresh.squeue_s == 3.0 and settings.refresh.shards_s == 2.0


def test_search_order(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = isolated_home / ".config/cockpit" / CONFIG_NAME
    user.parent.mkdir(parents=True)
    user.write_text('[cluster]\nname = "user"\n')
    assert load_settings().cluster.name == "user"
    (isolated_home / CONFIG_NAME).write_text('[cluster]\nname = "cwd"\n')
    assert load_settings().cluster.name == "cwd"
    other = isolated_home / "other.toml"
    other.write_text('[cluster]\nname = "env"\n')
    monkeypatch.setenv("COCKPIT_CONFIG", str(other))
    assert load_settings().cluster.name == "env"
    explicit = isolated_home / "explicit.toml"
    explicit.write_text('[cluster]\nname = "explicit"\n')
    assert load_settings(explicit).cluster.name == "explicit"
    with pytest.raises(BadInput, match=r"nope\.toml: configuration file not found"):
        find_config(isolated_home / "nope.toml")


def test_relative_paths_are_relative_to_the_file(isolated_home: Path) -> None:
    cfg = isolated_home / "site" / CONFIG_NAME
    cfg.parent.mkdir()
    cfg.write_text(
        '[cluster]\ninventory = "ansible/inventories/home.yml"\nscheduler = "slurm"\n'
        '[paths]\ndata_dir = "state"\n[model]\nname = "llama-3.1-8b"\npath = "/models/llama8b"\n'
    )
    settings = load_settings(cfg)
    assert settings.inventory == cfg.parent / "ansible/inventories/home.yml"
    assert settings.runs_dir == cfg.parent / "state/runs"
    assert settings.model_path == Path("/models/llama8b")
    assert settings.cluster.scheduler == "slurm"


def test_profiling_from_the_sweep_section(isolated_home: Path) -> None:
    cfg = isolated_home / CONFIG_NAME
    cfg.write_text('[sweep]\nprofile = true\nprofilers = ["perf", "torch"]\nprofile_steps = 4\n')
    sweep = load_settings(cfg).sweep
    assert (sweep.profile, sweep.profilers, sweep.profile_steps) == (True, ("perf", "torch"), 4)


def test_repeats_default_to_three_on_a_gpu_and_one_on_a_cpu(isolated_home: Path) -> None:
    cfg = isolated_home / CONFIG_NAME
    cfg.write_text('[sweep]\ndevice = "cuda"\n')
    assert (load_settings(cfg).sweep.timed_repeats, load_settings(cfg).sweep.warmup_batches) == (3, 1)
    cfg.write_text("[sweep]\nrepeats = 5\nwarmup_batches = 0\n")  # device cpu, the default
    assert (load_settings(cfg).sweep.timed_repeats, load_settings(cfg).sweep.warmup_batches) == (5, 0)
    cfg.write_text("")
    assert load_settings(cfg).sweep.timed_repeats == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[cluster]\nschedular = "slurm"\n', "cluster.schedular: unknown key (did you mean 'scheduler'?)"),
        ('[cluster]\nscheduler = "pbs"\n', "cluster.scheduler: expected one of 'local', 'slurm', got 'pbs'"),
        ('[refresh]\nnodes_s = "fast"\n', "refresh.nodes_s: expected number, got 'fast'"),
        ("[refresh]\nsqueue_s = 0\n", "refresh.squeue_s: expected at least 0.1 seconds, got 0.0"),
        ('[wake_on_lan]\nbroadcast = "10.77.0"\n', "wake_on_lan.broadcast: expected an IPv4 address"),
        ("[wake_on_lan]\nport = 70000\n", "wake_on_lan.port: expected a port 1-65535, got 70000"),
        ('[baseline]\napi_key = "sk-123"\n', "baseline.api_key: secrets never go in cockpit.toml"),
        ("cluster = 3\n", "cluster: expected table, got 3"),
        ('[sweep]\nprofilers = ["torch", "vtune"]\n', "sweep.profilers[1]: expected one of 'torch', 'nsys', 'perf'"),
        ("[sweep]\nprofile_steps = 0\n", "sweep.profile_steps: expected at least 1, got 0"),
        ("[sweep]\nrepeats = 0\n", "sweep.repeats: expected at least 1, got 0"),
        ("[sweep]\nwarmup_batches = -1\n", "sweep.warmup_batches: expected 0 (none) or more, got -1"),
        ('[sweep]\ntoken_budgets = { "8k" = 8192 }\n', "sweep.token_budgets.8k: not a variant of prompt_files"),
        ('[sweep]\ntoken_budgets = { "2k" = 0 }\n', "sweep.token_budgets.2k: expected a number of tokens, at least 1"),
        ("[cluster\n", "not valid TOML: Expected ']' at the end of a table declaration (at line 1, column 9)"),
    ],
)
def test_errors_name_file_and_key(isolated_home: Path, text: str, expected: str) -> None:
    path = isolated_home / CONFIG_NAME
    path.write_text(text)
    with pytest.raises(SchemaError) as err:
        load_settings()
    assert str(err.value).startswith(f"{path}: {expected}")
    assert "sk-123" not in str(err.value)


def test_baseline_endpoint_from_env_and_key_from_env(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (isolated_home / CONFIG_NAME).write_text(
        '[baseline]\nbase_url = "http://file:8000/v1"\nmodel = "m"\napi_key_env = "MY_KEY"\n'
    )
    monkeypatch.setenv("COCKPIT_BASELINE_URL", "http://127.0.0.1:8011/v1")
    monkeypatch.setenv("MY_KEY", "sk-secret")
    settings = load_settings()
    assert settings.baseline_url == "http://127.0.0.1:8011/v1"
    assert settings.baseline_model == "m"
    assert settings.baseline_api_key() == "sk-secret"
    assert settings.describe()["baseline_key"] == "set"
    assert "sk-secret" not in repr(settings.describe())


def test_baseline_key_file_must_be_private(isolated_home: Path) -> None:
    key = isolated_home / "key"
    key.write_text("sk-from-file\n")
    (isolated_home / CONFIG_NAME).write_text('[baseline]\napi_key_file = "key"\n')
    key.chmod(0o644)
    with pytest.raises(BadInput, match=r"key: api_key_file must be readable by its owner only \(chmod 600"):
        load_settings().baseline_api_key()
    key.chmod(0o600)
    assert load_settings().baseline_api_key() == "sk-from-file"

"""The cluster overview: the effective configuration and the model's state."""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from cockpit.config import Settings


def model_status(path: Path) -> str:
    """Whether the configured model is on disk, and its size; run off the event loop (it touches the disk)."""
    if not (path / "config.json").is_file():
        return "not built: run `cluster model build-tiny`"
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return f"ready, {size / 2**20:.1f} MiB"


def overview_rows(settings: Settings, read_only: bool) -> list[tuple[str, str]]:
    """The cluster overview as (item, value) rows; row keys are the items."""
    info = settings.describe()
    refresh = settings.refresh
    wol = settings.wake_on_lan
    return [
        ("configuration", str(info["source"])),
        ("cluster", settings.cluster.name),
        ("nodes", str(info["inventory"])),
        ("scheduler", settings.cluster.scheduler),
        ("model", f"{info['model']}: checking..."),
        ("model path", str(settings.model_path)),
        ("runs", str(settings.runs_dir)),
        ("baseline", str(info["baseline_url"])),
        ("refresh", f"nodes {refresh.nodes_s:g} s, queue {refresh.squeue_s:g} s, shards {refresh.shards_s:g} s"),
        ("wake-on-lan", f"{wol.broadcast}:{wol.port}" if wol.broadcast else "off (no broadcast address set)"),
        ("mode", "read-only: actions disabled" if read_only else "actions enabled"),
    ]


class InfoScreen(Screen[None]):
    """Where the configuration came from and what it says; escape goes back."""

    BINDINGS = [Binding("escape,i", "app.pop_screen", "Back")]

    def __init__(self, settings: Settings, read_only: bool) -> None:
        super().__init__()
        self.settings = settings
        self.read_only = read_only

    def compose(self) -> ComposeResult:
        yield Header(icon="◆")
        yield Static("Cluster", classes="panel-title")
        table: DataTable[str] = DataTable(id="overview", show_cursor=False, zebra_stripes=True)
        table.add_column("item", key="item", width=14)
        table.add_column("value", key="value")
        for item, value in overview_rows(self.settings, self.read_only):
            table.add_row(item, value, key=item)
        yield table
        yield Footer()

    def on_mount(self) -> None:
        self.check_model()

    @work(thread=True, exclusive=True, group="model")
    def check_model(self) -> None:
        status = f"{self.settings.file.model.name}: {model_status(self.settings.model_path)}"
        table = self.query_one("#overview", DataTable)
        self.app.call_from_thread(table.update_cell, "model", "value", status, update_width=True)

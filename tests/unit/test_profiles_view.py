"""The profiles tab's rows and a rank's profile, on the demo run's traces: a torch trace with its summary, a perf
file (no summary), a torch trace too torn to summarize; and the copy key of the profile screen under a Pilot."""

from __future__ import annotations

from dataclasses import replace

from textual.app import App

from cockpit.analysis.summary import NAN
from cockpit.tui.demo import RUNS_DIR, demo_traces
from cockpit.tui.results_cells import (
    WARNING,
    no_summary_line,
    ops_table,
    profile_title,
    ranges_table,
    shares_lines,
    trace_cells,
    trace_key,
    viewers_lines,
)
from cockpit.tui.screens.results import ProfileScreen

RUN = RUNS_DIR / "run_20261124-093000"
TORCH, PERF, _, TORN = demo_traces(RUN)
NUMBERS = slice(4, 10)  # steps .. device busy %: right-aligned


def plain(cells: tuple) -> list[str]:
    return [cell.plain for cell in cells]


def test_a_torch_row_shows_its_summary() -> None:
    cells = trace_cells(TORCH, RUN)
    assert plain(cells) == [
        "tiny_pp1_tp2_n2",
        "0",
        "node0",
        "torch",
        "8",
        "412.6",
        "31",
        "5",
        "24 · 1.84 ms",
        NAN,  # the CPU: no device kernels
        "deepspeed::inference_all_reduce_ 29%",
        "17.9 MiB",
        "tiny_pp1_tp2_n2/profiling/rank_0/torch.trace.json",
    ]
    assert all(cell.justify == "right" for cell in cells[NUMBERS])
    assert trace_key(TORCH) == "tiny_pp1_tp2_n2/0/torch"


def test_a_device_share_and_no_gaps() -> None:
    assert TORCH.summary is not None
    summary = replace(TORCH.summary, device_busy_share=0.724, gaps=0, top_ops=())
    cells = trace_cells(replace(TORCH, summary=summary), RUN)
    assert plain(cells)[8:11] == ["0", "72", NAN]
    assert shares_lines(summary).endswith("device busy: 72%")


def test_a_perf_row_has_no_summary() -> None:
    cells = trace_cells(PERF, RUN)
    assert plain(cells) == [
        "tiny_pp1_tp2_n2",
        "0",
        NAN,
        "perf",
        *[NAN] * 7,
        "39.3 MiB",
        "tiny_pp1_tp2_n2/profiling/rank_0/perf.data",
    ]
    assert str(cells[10].style) == ""
    assert no_summary_line(PERF).plain.endswith("open this one with perf report -i, or ui.perfetto.dev")


def test_a_torn_trace_says_why_in_warning_style() -> None:
    cells = trace_cells(TORN, RUN)
    assert plain(cells)[2:10] == [NAN, "torch", *[NAN] * 6]
    why = cells[10]
    assert why.plain == "not a Chrome trace (not JSON: Untermina…"  # TOP_OP_WIDTH; the path is the last column
    assert str(why.style) == WARNING
    assert no_summary_line(TORN).plain == TORN.problem  # whole on the profile screen
    assert profile_title(TORN) == f"tiny_pp2_tp1_n2 · rank 1 · {NAN} · torch"


def test_viewers_only_for_the_tools_present() -> None:
    lines = viewers_lines([TORCH, PERF]).splitlines()
    assert lines == [
        "torch.trace.json: open with ui.perfetto.dev (Open trace file)",
        "perf.data: open with perf report -i, or ui.perfetto.dev",
        "enter: the rank's profile · c: copy its path",
    ]
    assert len(viewers_lines([TORN]).splitlines()) == 2


def test_the_profile_tables() -> None:
    assert TORCH.summary is not None
    ranges, ops = ranges_table(TORCH.summary), ops_table(TORCH.summary)
    assert [c.header for c in ranges.columns] == ["range", "ms", "% of window"]
    assert list(ranges.columns[0].cells) == ["compute", "all_reduce", "send_recv", "sampling"]
    assert [c.plain for c in ranges.columns[2].cells] == ["90", "31", "0", "5"]
    assert ops.row_count == 5
    assert [c.plain for c in ops.columns[1].cells][:2] == ["72", "296"]
    assert "24 gaps of 0.05 ms or more, the longest 1.84 ms" in shares_lines(TORCH.summary)


class ProfileApp(App[None]):
    """The profile screen alone, its clipboard and its notes lists."""

    def __init__(self) -> None:
        super().__init__()
        self.copied: list[str] = []
        self.notes: list[str] = []

    def on_mount(self) -> None:
        self.push_screen(ProfileScreen(TORCH))

    def copy_to_clipboard(self, text: str) -> None:
        self.copied.append(text)

    def notify(self, message: str, **_: object) -> None:  # type: ignore[override]
        self.notes.append(message)


async def test_c_copies_the_trace_path() -> None:
    app = ProfileApp()
    async with app.run_test() as pilot:
        await pilot.press("c")
        assert app.copied == [str(TORCH.path)]
        assert app.notes == [f"copied: {TORCH.path}"]
        await pilot.press("escape")
        assert not isinstance(app.screen, ProfileScreen)

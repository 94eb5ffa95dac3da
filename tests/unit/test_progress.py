"""ProgressTracker on a real run folder: manifest, exp_config.json files and progress lines as the runtime writes
them, driven by a fake clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from cockpit.sweep import progress
from cockpit.sweep.manifest import MANIFEST_NAME, Manifest, StrategyEntry
from cockpit.sweep.progress import ProgressTracker, SweepProgress, find_active_run
from runtime.contract import EXP_CONFIG_NAME, ExperimentConfig, Phase, ProgressLine, dumps_line

RUN_ID = "run_20260101-120000"


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def config(run_dir: Path, strategy_id: str, *, tp: int = 1, dp: int = 1) -> ExperimentConfig:
    folder = run_dir / strategy_id
    cfg = ExperimentConfig(
        strategy_id=strategy_id,
        run_id=run_dir.name,
        model_name="tiny-llama",
        model_path="/models/tiny",
        prompt_df_path=str(run_dir / "prompts.parquet"),
        output_root=str(folder),
        num_nodes=tp * dp,
        gpus_per_node=1,
        tp_size=tp,
        pp_size=1,
        dp_size=dp,
    )
    cfg.write(folder / EXP_CONFIG_NAME)
    return cfg


def manifest(run_dir: Path, configs: list[ExperimentConfig], status: str = "RUNNING", state: str = "running") -> None:
    Manifest(
        run_id=run_dir.name,
        run_dir=str(run_dir),
        backend="local",
        created_at="2026-01-01T12:00:00+00:00",
        state=state,
        strategies={
            c.strategy_id: StrategyEntry(
                strategy_id=c.strategy_id,
                kind="tp" if c.tp_size > 1 else "dp",
                description="test",
                exp_config_path=str(Path(c.output_root) / EXP_CONFIG_NAME),
                script_path=str(Path(c.output_root) / "job.slurm"),
                output_root=c.output_root,
                status=status,
                job_id=None if status == "NOT_STARTED" else "41",
            )
            for c in configs
        },
    ).save()


def beat(
    cfg: ExperimentConfig,
    rank: int,
    ts: float,
    rows: int = 0,
    expected: int = 0,
    tokens: int = 0,
    phase: Phase = "running",
    compute_ms_per_step: float | None = None,
) -> None:
    path = cfg.progress_path(rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = ProgressLine(rank, ts, phase, rows, expected, tokens, tokens / 100, None, compute_ms_per_step)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(dumps_line(line))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "runs" / RUN_ID
    path.mkdir(parents=True)
    return path


def only(snapshot: SweepProgress) -> progress.StrategyProgress:
    (strategy,) = snapshot.strategies
    return strategy


def test_rows_fraction_eta_and_live_rate_of_a_writing_rank(run_dir: Path) -> None:
    cfg = config(run_dir, "tp2", tp=2)
    manifest(run_dir, [cfg])
    clock = Clock(100.0)
    tracker = ProgressTracker(run_dir, clock=clock)
    for ts, rows, tokens in [(100.0, 0, 0), (110.0, 8, 256), (120.0, 16, 512)]:
        beat(cfg, 0, ts, rows, 40, tokens)
        beat(cfg, 1, ts)  # TP rank 1 decodes too but owns no rows
        clock.now = ts
        snapshot = tracker.poll()
    assert snapshot.run_id == RUN_ID and snapshot.state == "running" and snapshot.taken_at == 120.0
    strategy = only(snapshot)
    writer, helper = strategy.ranks
    assert (writer.phase, writer.rows_written, writer.rows_expected, writer.updated_at) == ("running", 16, 40, 120.0)
    assert writer.fraction == pytest.approx(0.4)
    assert writer.tokens_per_s == pytest.approx(25.6)  # between the last two heartbeats
    assert writer.eta_s == pytest.approx(30.0)  # 24 rows left at 0.8 rows/s
    assert not writer.stalled and writer.stall_reason is None
    assert (helper.rows_expected, helper.fraction, helper.eta_s) == (0, 0.0, None)
    assert (strategy.rows_written, strategy.rows_expected, strategy.eta_s) == (16, 40, pytest.approx(30.0))
    assert strategy.fraction == pytest.approx(0.4) and strategy.tokens_per_s == pytest.approx(25.6)
    assert (strategy.strategy_id, strategy.kind, strategy.status, strategy.job_id) == ("tp2", "tp", "RUNNING", "41")


def test_eta_is_unknown_until_rows_move_and_zero_when_done(run_dir: Path) -> None:
    cfg = config(run_dir, "single")
    manifest(run_dir, [cfg])
    clock = Clock(100.0)
    tracker = ProgressTracker(run_dir, clock=clock)
    beat(cfg, 0, 40.0, 0, 10, 0, phase="loading")  # loading time is no decoding time
    tracker.poll()
    beat(cfg, 0, 100.0, 0, 10, 0)
    assert tracker.poll().strategies[0].eta_s is None  # one heartbeat: no rate yet
    clock.now = 110.0
    beat(cfg, 0, 110.0, 0, 10, 0)
    assert tracker.poll().strategies[0].eta_s is None  # no row written yet: no rate either
    clock.now = 120.0
    beat(cfg, 0, 120.0, 5, 10, 160)
    assert tracker.poll().strategies[0].eta_s == pytest.approx(20.0)  # 5 rows in the 20 s since decoding began
    clock.now = 130.0
    beat(cfg, 0, 130.0, 10, 10, 320)
    beat(cfg, 0, 131.0, 10, 10, 320, phase="done")
    rank = only(tracker.poll()).ranks[0]
    assert (rank.phase, rank.fraction, rank.eta_s) == ("done", 1.0, 0.0)
    assert rank.tokens_per_s == pytest.approx(3.2)  # finished: the run's own average from the line


def test_a_strategy_adds_up_its_writing_ranks_and_waits_for_the_slowest(run_dir: Path) -> None:
    cfg = config(run_dir, "dp2", dp=2)
    manifest(run_dir, [cfg])
    clock = Clock(100.0)
    tracker = ProgressTracker(run_dir, clock=clock)
    for ts in (100.0, 110.0):
        step = int(ts - 100) // 10
        beat(cfg, 0, ts, 10 * step, 30, 100 * step)  # 1 row/s: 20 left, 20 s
        beat(cfg, 1, ts, 5 * step, 30, 50 * step)  # 0.5 row/s: 25 left, 50 s
        clock.now = ts
        strategy = only(tracker.poll())
    assert [r.eta_s for r in strategy.ranks] == [pytest.approx(20.0), pytest.approx(50.0)]
    assert (strategy.rows_written, strategy.rows_expected) == (15, 60)
    assert strategy.tokens_per_s == pytest.approx(15.0)
    assert strategy.eta_s == pytest.approx(50.0)


def test_a_rank_whose_file_stops_growing_is_stalled_only_after_stall_after_s(run_dir: Path) -> None:
    cfg = config(run_dir, "dp2", dp=2)
    manifest(run_dir, [cfg])
    clock = Clock(100.0)
    tracker = ProgressTracker(run_dir, clock=clock, stall_after_s=30.0)
    beat(cfg, 0, 100.0, 0, 8)
    beat(cfg, 1, 100.0, 0, 8)
    tracker.poll()
    clock.now = 129.0
    beat(cfg, 1, 129.0, 4, 8, 64)
    ranks = only(tracker.poll()).ranks
    assert not ranks[0].stalled and not ranks[1].stalled
    clock.now = 142.0
    beat(cfg, 1, 142.0, 8, 8, 128, phase="done")
    strategy = only(tracker.poll())
    quiet, finished = strategy.ranks
    assert quiet.stalled and quiet.stall_reason == "no heartbeat for 42 s"
    assert strategy.stalled
    clock.now = 180.0
    quiet, finished = only(tracker.poll()).ranks
    assert quiet.stall_reason == "no heartbeat for 80 s"
    assert finished.phase == "done" and not finished.stalled  # a rank that is done has nothing left to write

    manifest(run_dir, [cfg], status="CANCELLED", state="cancelled")
    clock.now = 500.0
    assert not only(tracker.poll()).stalled  # only a RUNNING job can stall


def test_pending_time_is_no_stall_and_a_missing_file_counts_from_running(run_dir: Path) -> None:
    cfg = config(run_dir, "single")
    manifest(run_dir, [cfg], status="PENDING")
    clock = Clock(100.0)
    tracker = ProgressTracker(run_dir, clock=clock, stall_after_s=30.0)
    pending = only(tracker.poll())
    assert pending.ranks[0].phase is None and not pending.stalled
    clock.now = 400.0
    manifest(run_dir, [cfg])
    assert not only(tracker.poll()).stalled
    clock.now = 431.0
    rank = only(tracker.poll()).ranks[0]
    assert rank.stalled and rank.stall_reason == "no heartbeat for 31 s"
    assert (rank.phase, rank.rows_written, rank.eta_s, rank.updated_at) == (None, 0, None, None)


@pytest.mark.parametrize(
    ("rates", "reason"),
    [
        ([80, 80, 80, 80, 80, 12], "12 tok/s, under a quarter of its median 80 tok/s"),
        ([80, 60, 100, 70, 90, 30], None),  # a wobble: 30 is over a quarter of the median 75
        ([80, 80, 80, 5], None),  # too few samples to call it
    ],
)
def test_a_rate_under_a_quarter_of_the_running_median_is_marked(
    run_dir: Path, rates: list[int], reason: str | None
) -> None:
    cfg = config(run_dir, "single")
    manifest(run_dir, [cfg])
    clock = Clock(0.0)
    tracker = ProgressTracker(run_dir, clock=clock)
    tokens = 0
    beat(cfg, 0, 0.0, 0, 100, 0)
    tracker.poll()
    for step, rate in enumerate(rates, start=1):
        tokens += rate * 10
        clock.now = 10.0 * step
        beat(cfg, 0, clock.now, step, 100, tokens)
        rank = only(tracker.poll()).ranks[0]
    assert rank.tokens_per_s == pytest.approx(rates[-1])
    assert rank.stall_reason == reason and rank.stalled == (reason is not None)


def test_unchanged_files_are_not_read_again(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[Path] = []
    real = progress.last_progress

    def counting(path: Path) -> ProgressLine | None:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(progress, "last_progress", counting)
    loads: list[Path] = []
    real_load = Manifest.load

    def counting_load(cls: type[Manifest], path: Path) -> Manifest:
        loads.append(path)
        return real_load(path)

    monkeypatch.setattr(Manifest, "load", classmethod(counting_load))

    cfg = config(run_dir, "tp2", tp=2)
    manifest(run_dir, [cfg])
    clock = Clock(100.0)
    tracker = ProgressTracker(run_dir, clock=clock)
    beat(cfg, 0, 100.0, 0, 8)
    beat(cfg, 1, 100.0)
    first = tracker.poll()
    assert len(reads) == 2 and len(loads) == 1
    assert tracker.poll().strategies == first.strategies
    assert len(reads) == 2 and len(loads) == 1
    beat(cfg, 1, 101.0)
    tracker.poll()
    assert reads[2:] == [cfg.progress_path(1)] and len(loads) == 1
    manifest(run_dir, [cfg], status="COMPLETED", state="completed")
    assert tracker.poll().state == "completed" and len(loads) == 2


def test_torn_and_bad_last_lines_keep_the_last_good_heartbeat(run_dir: Path) -> None:
    cfg = config(run_dir, "single")
    manifest(run_dir, [cfg])
    clock = Clock(100.0)
    tracker = ProgressTracker(run_dir, clock=clock)
    beat(cfg, 0, 100.0, 4, 8, 64)
    path = cfg.progress_path(0)
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"rank": 0, "ts": 10')  # being written
    rank = only(tracker.poll()).ranks[0]
    assert (rank.rows_written, rank.updated_at) == (4, 100.0)
    with path.open("a", encoding="utf-8") as handle:
        handle.write("0}\nnot json\n")  # the torn line finished as garbage, then a line that is not JSON
    clock.now = 101.0
    rank = only(tracker.poll()).ranks[0]
    assert (rank.rows_written, rank.updated_at) == (4, 100.0)


def test_a_missing_or_half_written_manifest_keeps_the_last_good_one(run_dir: Path, tmp_path: Path) -> None:
    nowhere = tmp_path / "runs" / "run_none"
    assert ProgressTracker(nowhere, clock=Clock(5.0)).poll() == SweepProgress("run_none", nowhere, "unknown", (), 5.0)
    cfg = config(run_dir, "single")
    manifest(run_dir, [cfg])
    tracker = ProgressTracker(run_dir, clock=Clock())
    good = tracker.poll()
    (run_dir / MANIFEST_NAME).unlink()
    assert tracker.poll().strategies == good.strategies
    (run_dir / MANIFEST_NAME).write_text('{"run_id": ')
    assert tracker.poll() == good


def test_a_strategy_whose_config_is_not_there_yet_has_no_ranks(run_dir: Path) -> None:
    cfg = config(run_dir, "single")
    manifest(run_dir, [cfg], status="NOT_STARTED")
    (Path(cfg.output_root) / EXP_CONFIG_NAME).unlink()
    tracker = ProgressTracker(run_dir, clock=Clock())
    strategy = only(tracker.poll())
    assert strategy.ranks == () and strategy.eta_s is None and strategy.fraction == 0.0
    cfg.write(Path(cfg.output_root) / EXP_CONFIG_NAME)
    assert len(only(tracker.poll()).ranks) == 1


def test_a_retry_starts_the_ranks_afresh(run_dir: Path) -> None:
    cfg = config(run_dir, "single")
    manifest(run_dir, [cfg])
    clock = Clock(0.0)
    tracker = ProgressTracker(run_dir, clock=clock)
    tokens = 0
    for step in range(7):
        clock.now = 10.0 * step
        beat(cfg, 0, clock.now, step, 20, tokens)
        tokens += 800
        tracker.poll()
    # the new attempt truncates the file and starts slower (half the batch): no stale median to compare with
    cfg.progress_path(0).write_text("")
    for step in range(3):
        clock.now = 100.0 + 10 * step
        beat(cfg, 0, clock.now, step, 20, 100 * step)
        rank = only(tracker.poll()).ranks[0]
    assert (rank.rows_written, rank.tokens_per_s, rank.stalled) == (2, pytest.approx(10.0), False)
    assert rank.eta_s == pytest.approx(180.0)


def test_find_active_run_picks_the_newest_planned_or_running(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    assert find_active_run(runs) is None
    folders = {}
    for stamp, state in [("20260101-1000", "running"), ("20260102-1000", "running"), ("20260103-1000", "completed")]:
        folder = folders[stamp] = runs / f"run_{stamp}"
        folder.mkdir(parents=True)
        manifest(folder, [config(folder, "single")], state=state)
    (runs / "run_20260104-100000").mkdir()  # planned this instant: no manifest yet
    assert find_active_run(runs) == folders["20260102-1000"]
    manifest(folders["20260102-1000"], [], state="failed")
    manifest(folders["20260101-1000"], [], state="planned")
    assert find_active_run(runs) == folders["20260101-1000"]
    manifest(folders["20260101-1000"], [], state="cancelled")
    assert find_active_run(runs) is None


def test_a_progress_file_replaced_or_removed_between_polls(run_dir: Path, tmp_path: Path) -> None:
    cfg = config(run_dir, "single")
    manifest(run_dir, [cfg])
    clock = Clock(100.0)
    tracker = ProgressTracker(run_dir, clock=clock)
    beat(cfg, 0, 100.0, 4, 8, 64)
    assert only(tracker.poll()).ranks[0].rows_written == 4
    path = cfg.progress_path(0)
    other = ExperimentConfig(**{**vars(cfg), "output_root": str(tmp_path / "elsewhere")})
    beat(other, 0, 101.0, 5, 8, 80)
    beat(other, 0, 102.0, 6, 8, 96)
    other.progress_path(0).replace(path)  # swapped whole under the reader, as an atomic rewrite does
    clock.now = 102.0
    rank = only(tracker.poll()).ranks[0]
    assert (rank.rows_written, rank.updated_at) == (6, 102.0)
    path.unlink()  # gone: the last good reading stays
    clock.now = 103.0
    rank = only(tracker.poll()).ranks[0]
    assert (rank.rows_written, rank.updated_at) == (6, 102.0)


def test_a_rank_whose_compute_per_step_lags_its_peers_is_marked_straggling(run_dir: Path) -> None:
    """TP 2: rank 1 computes 1.6x as long per step as rank 0; within 15% it is not marked."""
    cfg = config(run_dir, "tp2", tp=2)
    manifest(run_dir, [cfg])
    tracker = ProgressTracker(run_dir, clock=Clock(100.0))
    beat(cfg, 0, 100.0, 4, 40, 128, compute_ms_per_step=10.0)
    beat(cfg, 1, 100.0, compute_ms_per_step=16.0)
    fast, slow = only(tracker.poll()).ranks
    assert (fast.straggling, slow.straggling) == (None, "straggling: 1.6x its peers' compute per step")
    beat(cfg, 1, 101.0, compute_ms_per_step=11.0)
    assert [r.straggling for r in only(tracker.poll()).ranks] == [None, None]

"""The progress display: agent steps against the budget, rate, ETA, latest return."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import TINY, run_ife, tracking_args
from mlflow import MlflowClient

from ife_platform.progress import GameProgress, Progress, duration


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_duration() -> None:
    assert duration(0) == "0:00"
    assert duration(85.4) == "1:25"
    assert duration(2.5 * 3600) == "2:30:00"


def test_plain_lines_off_a_terminal_carry_total_percent_rate_eta_and_return() -> None:
    out, clock = io.StringIO(), Clock()
    p = Progress(100_000, "train pong", stream=out, every_s=30.0, clock=clock)
    clock.t += 10
    p.update(5_000)  # before every_s: no line yet
    assert out.getvalue() == ""
    clock.t += 30  # 40 s for 20,000 steps: 500 steps/s, 80,000 left: 160 s
    p.update(20_000, **{"return": 12.0})
    line = out.getvalue().strip()
    assert line == (
        "train pong: 20,000/100,000 agent steps (20%), 500.0 steps/s, ETA 2:40, "
        "elapsed 0:40, return 12.0"
    )
    clock.t += 1
    p.update(21_000)  # within every_s of the last line
    assert out.getvalue().count("\n") == 1
    p.close()  # the final state, always
    assert out.getvalue().splitlines()[-1].startswith("train pong: 21,000/100,000")
    p.close()
    assert out.getvalue().count("\n") == 2


def test_resumed_position_counts_in_percent_not_in_rate() -> None:
    out, clock = io.StringIO(), Clock()
    p = Progress(1000, "train pong", initial=600, stream=out, every_s=0.0, clock=clock)
    assert p.rate() is None and p.eta() is None
    clock.t += 10
    p.update(700)  # 100 steps in 10 s since this process started: 300 left, 30 s
    assert p.rate() == pytest.approx(10.0) and p.eta() == pytest.approx(30.0)
    assert "(70%)" in out.getvalue() and "ETA 0:30" in out.getvalue()


def test_terminal_bar_shows_percent_rate_and_eta() -> None:
    out = io.StringIO()
    p = Progress(1000, "train pong", stream=out, interactive=True)
    p.update(250, **{"return": 3.0})
    p.close()
    text = out.getvalue()
    assert "train pong:  25%|" in text and "250/1.00k" in text
    assert "steps/s" in text and "<" in text and "return 3.0" in text


def test_game_progress_counts_steps_up_to_each_games_cap() -> None:
    out = io.StringIO()
    games = GameProgress("evaluate pong", 3, 100, stream=out, every_s=0.0)
    for t in range(40):  # game 1 ends after 40 steps: game 2 starts at step 100
        games(SimpleNamespace(episode=0, t=t))
    games(SimpleNamespace(episode=1, t=0))
    assert games.progress.done == 101 and games.progress.total == 300
    assert out.getvalue().splitlines()[-1].startswith("evaluate pong: 101/300 agent steps (34%)")
    assert "game 2/3" in out.getvalue().splitlines()[-1]
    games.close()
    assert out.getvalue().splitlines()[-1].startswith("evaluate pong: 300/300 agent steps (100%)")


@pytest.mark.slow
def test_training_prints_agent_steps_not_lightning_batches(workdir: Path) -> None:
    """A real run with its progress display on, its stderr a pipe: plain lines in agent steps."""
    args = ["train", "demo", *TINY, "trainer.progress_bar=true", *tracking_args(workdir)]
    proc = run_ife(workdir, args)
    start = "train breakout (ife-der-demo): "  # the game and the run name
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(start)]
    assert lines, proc.stderr[-3000:]
    assert lines[-1].startswith(f"{start}240/240 agent steps (100%)")
    assert "steps/s" in lines[-1] and "ETA 0:00" in lines[-1]
    assert "v_num" not in proc.stderr and "Epoch " not in proc.stderr
    # the end-of-training evaluation shows its games too, ending at its total
    final = [ln for ln in proc.stderr.splitlines() if ln.startswith("evaluate breakout at step")]
    assert final and final[-1].startswith("evaluate breakout at step 240: "), proc.stderr[-2000:]
    assert "(100%)" in final[-1]
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("ife").experiment_id])
    run_id = run.info.run_id
    proc = run_ife(
        workdir,
        ["evaluate", run_id, "tracking.video=false", *tracking_args(workdir)],
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("evaluate breakout: ")]
    assert lines and lines[-1].startswith("evaluate breakout: 120/120 agent steps (100%)")

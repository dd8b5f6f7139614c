"""Evaluation during training (tracking.eval_every): eval/* curves and mask videos per point."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY, tracking_args
from ife_platform.callbacks.evaluation import evaluation_points, video_points
from mlflow.tracking import MlflowClient

from ife_platform.config import compose
from ife_platform.experiment import train
from ife_platform.video import read_mp4


def test_evaluation_points_hand_worked() -> None:
    assert evaluation_points(25_000, 100_000, 10) == [25_000, 50_000, 75_000]
    # a 10M-step run: the spacing widens to 10M / 10 = 1M (9 points + the final evaluation)
    assert evaluation_points(25_000, 10_000_000, 10) == [k * 1_000_000 for k in range(1, 10)]
    assert evaluation_points(25_000, 2_000, 10) == []  # the demo: only the final evaluation
    assert evaluation_points(0, 100_000, 10) == []  # off
    assert evaluation_points(100, 350, 10) == [100, 200, 300]


def test_video_points_evenly_spread_last_included() -> None:
    points = [k * 1_000_000 for k in range(1, 10)]
    assert video_points(points, 3) == {1_000_000, 5_000_000, 9_000_000}
    assert video_points(points, 1) == {9_000_000}
    assert video_points(points[:2], 4) == set(points[:2])
    assert video_points(points, 0) == set() and video_points([], 4) == set()


@pytest.mark.slow
def test_train_evaluates_periodically_with_curves_and_videos(workdir: Path) -> None:
    cfg = compose(
        [
            "demo",
            *TINY,
            "model.extractor=ife",
            "model.width=1",
            *tracking_args(workdir),
            "train.total_steps=480",
            "tracking.eval_every=120",  # points 120, 240, 360; the final one at 480
            "tracking.eval_every_episodes=1",
            "tracking.eval_videos=2",
            "tracking.eval_max_steps=30",
            "tracking.video_max_steps=6",
            "tracking.video_upscale=2",
        ]
    )
    result = train(cfg)
    client = MlflowClient(cfg.tracking.uri)
    history = client.get_metric_history(result.run_id, "eval/return_mean")
    steps = sorted(m.step for m in history)
    # three points during training (logged at the agent step reached) and the final one
    assert steps == [120, 240, 360, 480], steps
    assert len(client.get_metric_history(result.run_id, "eval/mask_entropy")) == 4
    videos = sorted(a.path for a in client.list_artifacts(result.run_id, "videos") if not a.is_dir)
    assert videos == [
        "videos/eval_mask.mp4",
        "videos/eval_mask_step000000120.mp4",  # evenly spread: the first and the last
        "videos/eval_mask_step000000360.mp4",
    ]
    local = Path(client.download_artifacts(result.run_id, videos[1], str(workdir)))
    frames = read_mp4(local)
    # 6 steps of raw | overlay upscaled 2x (420 x 640), a legend strip below
    assert frames.shape[0] == 6 and frames.shape[2] == 640 and frames.shape[1] > 420

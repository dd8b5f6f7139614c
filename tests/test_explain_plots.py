"""ife explain's plots: titled with game and run, fixed ranges, no noise magnified."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ife_platform.interpret.explain import (
    Explanation,
    _curve_limits,
    is_count,
    metric_values,
    write_plots,
)
from ife_platform.video import grid_cell_rects


def test_curve_limits_hand_worked() -> None:
    # the demo's deletion curve: 0.2740-0.2753; the span is at least a quarter of 0.2753
    lo, hi = _curve_limits(np.array([0.2740, 0.2753]))
    # span = max(0.0013, 0.25 * 0.2753 = 0.068825, 1e-3) * 1.1 = 0.0757075 around 0.27465
    assert (lo, hi) == pytest.approx((0.2367963, 0.3125038), abs=1e-6)
    # a curve that really moves keeps its own range (+10 %)
    assert _curve_limits(np.array([0.0, 2.0])) == pytest.approx((-0.1, 2.1))
    assert _curve_limits(np.array([np.nan])) == (0.0, 1.0)


def test_counts_stay_out_of_the_metrics() -> None:
    summary = {
        "game": "pong",
        "frames": 60,
        "episodes": 1,
        "pointing_frames": 40.0,
        "saliency/pointing_frames": 40.0,
        "head0/n_boxes": 2.5,
        "leakage_seconds": 1.5,
        "saliency_frames_per_s": 30.0,
        "leakage_outside_receptive": 0.0,
        "leakage": 0.0,
        "lift": 1.4,
        "saliency/auroc": 0.7,
        "attention": True,
        "deletion_gain": float("nan"),
    }
    assert metric_values(summary) == {"leakage": 0.0, "lift": 1.4, "saliency/auroc": 0.7}
    assert is_count("head1/pointing_frames") and not is_count("mass_in_box")


def test_plots_are_written_with_titles_from_the_summary(tmp_path: Path) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    rows = [
        {
            "mass_in_box": rng.uniform(0, 0.3),
            "lift": rng.uniform(0.5, 2),
            "auroc": rng.uniform(0.3, 0.8),
            "mask_entropy": 5.278 + rng.normal(0, 1e-5),  # would get an offset tick label
        }
        for _ in range(20)
    ]
    curve = 0.2745 + rng.normal(0, 3e-4, 8)
    exp = Explanation(
        rows=rows,
        summary={"game": "pong", "extractor": "IFEExtractor", "faithfulness_score": "q"},
        curves={
            "deletion": curve,
            "insertion": curve,
            "random_deletion": curve,
            "random_insertion": curve,
        },
        leakage_map=np.zeros((14, 14)),
        cell_rects=grid_cell_rects(14, 14),
    )
    figures: list = []
    original = plt.Figure.savefig

    def keep(fig, *args, **kwargs):  # look at each figure as it is saved
        figures.append(fig)
        return original(fig, *args, **kwargs)

    plt.Figure.savefig = keep
    try:
        paths = write_plots(exp, rows, tmp_path, run="abc123")
    finally:
        plt.Figure.savefig = original
    assert [p.name for p in paths] == [
        "metric_distributions.png",
        "deletion_insertion.png",
        "leakage.png",
    ]
    assert all(p.stat().st_size > 0 for p in paths)
    dist, curves, leak = figures
    assert dist._suptitle.get_text() == "Per-frame metrics: pong, IFEExtractor, run abc123"
    for ax in dist.axes:
        assert ax.get_xlabel() and ax.get_ylabel() == "frames"
        dist.canvas.draw()
        assert ax.xaxis.get_major_formatter().get_offset() == ""  # no "1e-5+5.278"
    entropy_ax = dist.axes[3]
    assert entropy_ax.get_xlim() == pytest.approx((0.0, np.log(196) * 1.02))
    assert "run abc123" in curves._suptitle.get_text()
    assert curves.axes[0].get_ylim() == pytest.approx(_curve_limits(np.concatenate([curve] * 4)))
    image_ax = leak.axes[0]
    assert image_ax.images[0].get_clim() == (0.0, 1.0)  # not 1e-9 on an all-zero map
    assert image_ax.get_xlabel() == "mask cell column" and "pong" in image_ax.get_title()

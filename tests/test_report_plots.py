"""``ife_platform.report_plots``: each figure writes a PNG that decodes; bad input is refused."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import image as mpimg

from ife_platform import report_plots as rp
from ife_platform import scores


@pytest.fixture(scope="module")
def by_method():
    rng = np.random.default_rng(0)
    return {
        "ife": np.round(rng.gamma(2.0, 0.5, size=(3, 5)), 2),
        "der_cnn": np.round(rng.gamma(2.0, 0.45, size=(4, 5)), 2),
        "cnn_attention": np.round(rng.gamma(2.0, 0.4, size=(2, 5)), 2),
    }


def _decodes(path, min_width=200, min_height=150):
    assert path.is_file() and path.stat().st_size > 0
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] >= min_height and img.shape[1] >= min_width
    assert img.std() > 0  # not a blank canvas
    return img


def _texts(fig):
    """Titles, axis labels and legend entries of a figure."""
    out = {fig._suptitle.get_text()} if fig._suptitle is not None else set()
    for ax in fig.axes:
        out |= {ax.get_title(), ax.get_xlabel(), ax.get_ylabel()}
    for legend in [ax.get_legend() for ax in fig.axes] + list(fig.legends):
        if legend is not None:
            out |= {t.get_text() for t in legend.get_texts()} | {legend.get_title().get_text()}
    return out - {""}


def test_plot_aggregates_writes_png(tmp_path, by_method):
    table = scores.aggregate_table(by_method, reps=200)
    path = rp.plot_aggregates(table, tmp_path / "sub" / "agg.png", "Atari-100k, 5 games")
    assert path == tmp_path / "sub" / "agg.png"
    _decodes(path, min_width=600)
    texts = _texts(rp._aggregates_figure(table, "T", "human-normalised score"))
    assert {"T", "IQM", "Median", "Mean", "human-normalised score", "method"} <= texts
    assert set(by_method) <= texts  # legend


def test_plot_aggregates_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="at least one method"):
        rp.plot_aggregates({}, tmp_path / "a.png", "t")
    ci = scores.BootstrapCI(1.0, 0.5, 1.5)
    with pytest.raises(ValueError, match="same aggregates"):
        rp.plot_aggregates({"a": {"iqm": ci}, "b": {"mean": ci}}, tmp_path / "a.png", "t")
    with pytest.raises(ValueError, match="not finite"):
        rp.plot_aggregates({"a": {"iqm": (1.0, np.nan, 2.0)}}, tmp_path / "a.png", "t")
    with pytest.raises(ValueError, match="low > high"):
        rp.plot_aggregates({"a": {"iqm": (1.0, 2.0, 0.5)}}, tmp_path / "a.png", "t")
    with pytest.raises(ValueError, match="triple"):
        rp.plot_aggregates({"a": {"iqm": (1.0, 2.0)}}, tmp_path / "a.png", "t")
    assert not (tmp_path / "a.png").exists()


def test_plot_performance_profiles_writes_png(tmp_path, by_method):
    taus = np.linspace(0.0, 3.0, 31)
    profiles = {m: scores.performance_profile_ci(s, taus, reps=200) for m, s in by_method.items()}
    profiles["plain tuple"] = (
        taus,
        profiles["ife"].point,
        profiles["ife"].low,
        profiles["ife"].high,
    )
    _decodes(rp.plot_performance_profiles(profiles, tmp_path / "prof.png", "Score distributions"))
    texts = _texts(rp._profiles_figure(profiles, "T", "HNS (\u03c4)"))
    assert {"T", "HNS (\u03c4)", "fraction of runs with score > \u03c4", "method"} <= texts
    assert set(profiles) <= texts


def test_plot_performance_profiles_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="at least one method"):
        rp.plot_performance_profiles({}, tmp_path / "p.png", "t")
    with pytest.raises(ValueError, match=r"mismatched lengths .*'point': 2"):
        rp.plot_performance_profiles(
            {"a": ([0, 1, 2], [1, 0.5], [1, 0.4, 0], [1, 0.6, 0])}, tmp_path / "p.png", "t"
        )
    with pytest.raises(ValueError, match=r"\(taus, point, low, high\)"):
        rp.plot_performance_profiles({"a": ([0, 1], [1, 0])}, tmp_path / "p.png", "t")
    with pytest.raises(ValueError, match="non-empty 1-D"):
        rp.plot_performance_profiles({"a": ([], [], [], [])}, tmp_path / "p.png", "t")


def test_plot_probability_of_improvement_writes_png(tmp_path, by_method):
    pairs = scores.probability_of_improvement_table(by_method, reps=200)
    _decodes(rp.plot_probability_of_improvement(pairs, tmp_path / "poi.png", "P(X > Y)"))
    texts = _texts(rp._poi_figure(pairs, "T"))
    assert {"T", "X vs Y", "method X", "ife", "der_cnn"} <= texts


def test_plot_probability_of_improvement_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        rp.plot_probability_of_improvement({}, tmp_path / "p.png", "t")
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        rp.plot_probability_of_improvement({("a", "b"): (0.5, 0.2, 1.2)}, tmp_path / "p.png", "t")
    with pytest.raises(ValueError, match="tuples"):
        rp.plot_probability_of_improvement({"a": (0.5, 0.2, 0.7)}, tmp_path / "p.png", "t")


def test_plot_game_scores_writes_png(tmp_path):
    rows = [
        rp.GameScoreRow("pong", "ife", [-20.0, -19.0], scores.der_100k_score("pong")),
        rp.GameScoreRow("pong", "der_cnn", [-18.0, -21.0, -20.0], scores.der_100k_score("pong")),
        rp.GameScoreRow("ms_pacman", "ife", [900.0, 1300.0], scores.der_100k_score("ms_pacman")),
        ("ms_pacman", "der_cnn", [1100.0]),  # a plain tuple, no reference: the game keeps its own
        {"game": "boxing", "method": "der_cnn", "scores": [0.5, 2.0]},
        ("alien", "ife", [700.0, 650.0], None),
        ("breakout", "ife", [5.0], None),
    ]
    _decodes(rp.plot_game_scores(rows, tmp_path / "games.png", "Raw scores at 100k steps"))
    fig = rp._game_scores_figure(rows, "T", "raw score", "DER (published, 100k steps)")
    texts = _texts(fig)
    assert {"T", "pong", "ms_pacman", "raw score", "method", "ife", "der_cnn"} <= texts
    assert "DER (published, 100k steps)" in texts
    assert sum(ax.get_visible() for ax in fig.axes) == 5  # 5 games on a 4 x 2 grid
    one = rp.plot_game_scores([("pong", "ife", [1.0])], tmp_path / "one.png", "one", ylabel="HNS")
    _decodes(one, min_width=100, min_height=100)


def test_plot_game_scores_rejects_bad_input(tmp_path):
    out = tmp_path / "g.png"
    with pytest.raises(ValueError, match="at least one row"):
        rp.plot_game_scores([], out, "t")
    with pytest.raises(ValueError, match="has no scores"):
        rp.plot_game_scores([("pong", "ife", [])], out, "t")
    with pytest.raises(ValueError, match="two rows for 'ife' on 'pong'"):
        rp.plot_game_scores([("pong", "ife", [1.0]), ("pong", "ife", [2.0])], out, "t")
    with pytest.raises(ValueError, match="two reference scores"):
        rp.plot_game_scores([("pong", "a", [1.0], 3.0), ("pong", "b", [1.0], 4.0)], out, "t")
    with pytest.raises(ValueError, match="keys game, method, scores"):
        rp.plot_game_scores([{"game": "pong", "scores": [1.0]}], out, "t")
    with pytest.raises(ValueError, match=r"\(game, method, scores"):
        rp.plot_game_scores([("pong",)], out, "t")
    with pytest.raises(ValueError, match="nan or inf"):
        rp.plot_game_scores([("pong", "ife", [np.nan])], out, "t")

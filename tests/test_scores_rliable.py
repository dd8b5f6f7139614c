"""The report's statistics (``ife_platform.scores``) against rliable 1.2.0 and worked by hand.

Deterministic statistics (IQM, median, mean, optimality gap, probability of improvement,
performance profile) must equal rliable's ``metrics`` number for number: exactly, except IQM,
which agrees to 1e-12 relative (rliable's ``scipy.stats.trim_mean`` partitions instead of
sorting, so the kept values are summed in another order).

Bootstrap intervals cannot match rliable bit for bit: rliable draws with numpy's global
``np.random.choice`` inside arch's bootstrap, we draw from ``np.random.default_rng(seed)``.
They are compared on the same data with enough replicates that Monte Carlo error is small next
to the tolerance stated at each test, and the intervals' properties are tested directly.

rliable is optional (``pytest.importorskip``). On this stack ``rliable.library`` does not import
as installed: it imports ``arch.bootstrap``, and ``arch/__init__`` (arch 7.2.0) fails under
pandas 3 (``pandas.util._decorators.deprecate_kwarg`` changed its signature). The bootstrap
itself does not need that code, so :func:`_rliable_library` falls back to loading
``arch.bootstrap`` without running ``arch/__init__``; it does so only when ``import arch``
is broken anyway.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import numpy as np
import pytest

from ife_platform import scores

# --------------------------------------------------------------------------------------------
# rliable, guarded
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rl_metrics():
    pytest.importorskip("rliable")
    return importlib.import_module("rliable.metrics")


def _rliable_library():
    """``rliable.library``, loading ``arch.bootstrap`` without ``arch/__init__`` if needed."""
    try:
        return importlib.import_module("rliable.library")
    except Exception as err:  # arch 7.2 under pandas 3: TypeError from arch/__init__
        first_error = err
    spec = importlib.util.find_spec("arch")
    if spec is None or spec.submodule_search_locations is None:
        pytest.skip(f"rliable.library does not import: {first_error!r}")
    for name in [m for m in sys.modules if m == "arch" or m.startswith("arch.")]:
        del sys.modules[name]  # the half-imported package
    stub = types.ModuleType("arch")
    stub.__path__ = list(spec.submodule_search_locations)
    stub.__spec__ = spec
    sys.modules["arch"] = stub
    sys.modules.pop("rliable.library", None)
    try:
        return importlib.import_module("rliable.library")
    except Exception as err:
        pytest.skip(f"rliable.library does not import ({first_error!r}, then {err!r})")


@pytest.fixture(scope="module")
def rly():
    pytest.importorskip("rliable")
    return _rliable_library()


@pytest.fixture
def global_np_seed():
    """rliable resamples with ``np.random.choice``: seed the global RNG, restore it after."""
    state = np.random.get_state()
    np.random.seed(0)
    yield
    np.random.set_state(state)


def _random_scores(rng: np.random.Generator, runs: int, games: int) -> np.ndarray:
    """HNS-like scores rounded to 0.1, so that ties within and across methods are common."""
    return np.round(rng.gamma(2.0, 0.5, size=(runs, games)), 1)


# --------------------------------------------------------------------------------------------
# Worked by hand (no rliable needed)
# --------------------------------------------------------------------------------------------


def test_probability_of_improvement_hand_checked():
    # One game; pairs (x, y): (1, 2) -> 0, (1, 2) -> 0, (3, 2) -> 1, (3, 2) -> 1: 2 / 4 = 0.5.
    assert scores.probability_of_improvement([[1.0], [3.0]], [[2.0], [2.0]]) == 0.5
    # Two games, runs_x = 1, runs_y = 2, with a tie:
    # game 0: x = 1 against y = 1 (tie, 1/2) and 2 (0): 0.5 / 2 = 0.25
    # game 1: x = 5 against y = 4 (1) and 6 (0): 1 / 2 = 0.5;  mean (0.25 + 0.5) / 2 = 0.375.
    assert scores.probability_of_improvement([[1.0, 5.0]], [[1.0, 4.0], [2.0, 6.0]]) == 0.375
    # Identical methods are indistinguishable: every pair is a tie or mirrored -> 0.5.
    s = np.array([[1.0, 2.0], [1.0, 3.0], [4.0, 3.0]])
    assert scores.probability_of_improvement(s, s) == 0.5
    assert scores.probability_of_improvement([[10.0]], [[0.0]]) == 1.0


def test_probability_of_improvement_is_mann_whitney_u_over_nm():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(7)
    for _ in range(20):
        x = rng.integers(0, 6, size=(int(rng.integers(1, 7)), 4)).astype(float)
        y = rng.integers(0, 6, size=(int(rng.integers(1, 7)), 4)).astype(float)
        per_game = [
            stats.mannwhitneyu(x[:, g], y[:, g], alternative="greater").statistic
            / (len(x) * len(y))
            for g in range(4)
        ]
        assert scores.probability_of_improvement(x, y) == pytest.approx(np.mean(per_game))


def test_probability_of_improvement_rejects_bad_input():
    with pytest.raises(ValueError, match="same games"):
        scores.probability_of_improvement(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="runs, games"):
        scores.probability_of_improvement(np.zeros(3), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="nan"):
        scores.probability_of_improvement([[np.nan]], [[1.0]])


def test_performance_profile_hand_checked():
    s = np.array([[0.0, 0.5], [1.0, 2.0]])  # 4 run-game scores
    taus = [-1.0, 0.0, 0.5, 1.0, 1.5, 3.0]
    # strictly above: -1 -> 4/4, 0 -> 3/4 (0 is not > 0), 0.5 -> 2/4, 1 -> 1/4, 1.5 -> 1/4, 3 -> 0
    np.testing.assert_array_equal(
        scores.performance_profile(s, taus), [1.0, 0.75, 0.5, 0.25, 0.25, 0.0]
    )
    with pytest.raises(ValueError, match="taus"):
        scores.performance_profile(s, [])


def test_two_sample_bootstrap_hand_checked():
    # x has runs 0 and 1 in one game, y the single run 0.5: P(X > Y) = fraction of x above 0.5.
    # A resample of x holds 0, 1 or 2 ones with probabilities 1/4, 1/2, 1/4, so the replicates
    # are 0, 0.5, 1 and their 2.5 % and 97.5 % percentiles (2000 replicates) are 0 and 1.
    ci = scores.probability_of_improvement_ci([[0.0], [1.0]], [[0.5]], reps=2000)
    assert ci == (0.5, 0.0, 1.0)
    # y constant and x constant: every replicate equals the point.
    assert scores.probability_of_improvement_ci([[1.0], [1.0]], [[0.0]] * 3, reps=100) == (
        1.0,
        1.0,
        1.0,
    )


def test_two_sample_bootstrap_resamples_x_and_y_within_each_game():
    # Column 0 < 3 and column 1 >= 100 in both; a stratified resample never mixes columns,
    # and x keeps its 3 runs while y keeps its 2.
    x = np.array([[0.0, 100.0], [1.0, 101.0], [2.0, 102.0]])
    y = np.array([[0.5, 100.5], [1.5, 101.5]])

    def check(bx, by):
        ok = bx.shape == (3, 2) and by.shape == (2, 2)
        ok = ok and np.all(bx[:, 0] < 3) and np.all(bx[:, 1] >= 100)
        return float(ok and np.all(by[:, 0] < 3) and np.all(by[:, 1] >= 100))

    assert scores.stratified_bootstrap_ci_two_sample(x, y, check, reps=300) == (1.0, 1.0, 1.0)


def test_score_matrix_truncates_uneven_runs_and_says_so():
    built = scores.score_matrix({"pong": [1.0, 2.0, 3.0], "boxing": [4.0, 5.0], "alien": [6, 7]})
    np.testing.assert_array_equal(built.scores, [[1.0, 4.0, 6.0], [2.0, 5.0, 7.0]])
    assert built.games == ("pong", "boxing", "alien")
    assert built.dropped == {"pong": 1}
    assert built.note == (
        "uneven run counts: kept the first 2 run(s) of each of the 3 games; "
        "left out 1 of pong (3 runs)"
    )
    even = scores.score_matrix({"pong": [1.0, 2.0], "boxing": [3.0, 4.0]}, games=["boxing"])
    assert even.scores.shape == (2, 1) and even.games == ("boxing",)
    assert even.dropped == {} and even.note == ""


def test_score_matrix_rejects_empty_and_missing_games():
    with pytest.raises(ValueError, match="pong have no finished run"):
        scores.score_matrix({"pong": [], "boxing": [1.0]})
    with pytest.raises(ValueError, match="no scores for game"):
        scores.score_matrix({"pong": [1.0]}, games=["pong", "alien"])
    with pytest.raises(ValueError, match="at least one game"):
        scores.score_matrix({})
    with pytest.raises(ValueError, match="nan"):
        scores.score_matrix({"pong": [1.0, float("nan")]})


def test_aggregate_table_shape_and_errors():
    rng = np.random.default_rng(0)
    table = scores.aggregate_table(
        {"a": _random_scores(rng, 3, 5), "b": _random_scores(rng, 4, 5)}, reps=200
    )
    assert list(table) == ["a", "b"]
    assert all(tuple(row) == scores.AGGREGATES for row in table.values())
    with pytest.raises(ValueError, match="at least one method"):
        scores.aggregate_table({})
    with pytest.raises(ValueError, match="same games"):
        scores.aggregate_table({"a": np.zeros((2, 3)), "b": np.zeros((2, 4))})


def test_probability_of_improvement_table_pairs():
    rng = np.random.default_rng(0)
    by_method = {m: _random_scores(rng, 3, 4) for m in ("ife", "der_cnn", "cnn_attention")}
    table = scores.probability_of_improvement_table(by_method, reps=100)
    assert list(table) == [
        ("ife", "der_cnn"),
        ("ife", "cnn_attention"),
        ("der_cnn", "cnn_attention"),
    ]
    one = scores.probability_of_improvement_table(by_method, pairs=[("der_cnn", "ife")], reps=100)
    assert one[("der_cnn", "ife")].point == pytest.approx(1 - table[("ife", "der_cnn")].point)
    with pytest.raises(ValueError, match="unknown method"):
        scores.probability_of_improvement_table(by_method, pairs=[("ife", "dqn")])
    with pytest.raises(ValueError, match="at least two methods"):
        scores.probability_of_improvement_table({"ife": by_method["ife"]})


# --------------------------------------------------------------------------------------------
# Bootstrap properties
# --------------------------------------------------------------------------------------------


def test_intervals_bracket_the_point_and_are_deterministic_given_seed():
    rng = np.random.default_rng(1)
    x, y = _random_scores(rng, 5, 10), _random_scores(rng, 4, 10)
    a = scores.aggregate_table({"x": x}, reps=500, seed=3)
    assert a == scores.aggregate_table({"x": x}, reps=500, seed=3)
    assert a != scores.aggregate_table({"x": x}, reps=500, seed=4)
    for ci in a["x"].values():
        assert ci.low <= ci.point <= ci.high and ci.low < ci.high
    poi = scores.probability_of_improvement_ci(x, y, reps=500, seed=3)
    assert poi == scores.probability_of_improvement_ci(x, y, reps=500, seed=3)
    assert poi.low <= poi.point <= poi.high and poi.low < poi.high
    taus = np.linspace(0.0, 3.0, 13)
    band = scores.performance_profile_ci(x, taus, reps=500, seed=3)
    again = scores.performance_profile_ci(x, taus, reps=500, seed=3)
    for got, want in zip(band, again, strict=True):
        np.testing.assert_array_equal(got, want)
    assert np.all(band.low <= band.point) and np.all(band.point <= band.high)
    # a method's row does not depend on the other methods in the table
    assert scores.aggregate_table({"y": y, "x": x}, reps=500, seed=3)["x"] == a["x"]


def test_intervals_narrow_with_more_runs():
    rng = np.random.default_rng(2)
    few, many = rng.normal(1.0, 0.5, size=(3, 10)), rng.normal(1.0, 0.5, size=(30, 10))
    other_few, other_many = rng.normal(0.9, 0.5, size=(3, 10)), rng.normal(0.9, 0.5, size=(30, 10))

    def width(ci):
        return ci.high - ci.low

    t_few = scores.aggregate_table({"m": few}, reps=1000)["m"]
    t_many = scores.aggregate_table({"m": many}, reps=1000)["m"]
    for name in scores.AGGREGATES:
        assert width(t_many[name]) < 0.6 * width(t_few[name]), name
    p_few = scores.probability_of_improvement_ci(few, other_few, reps=1000)
    p_many = scores.probability_of_improvement_ci(many, other_many, reps=1000)
    assert width(p_many) < 0.6 * width(p_few)
    taus = np.linspace(0.0, 2.0, 9)
    b_few = scores.performance_profile_ci(few, taus, reps=1000)
    b_many = scores.performance_profile_ci(many, taus, reps=1000)
    assert np.sum(b_many.high - b_many.low) < 0.6 * np.sum(b_few.high - b_few.low)


# --------------------------------------------------------------------------------------------
# Number for number against rliable's metrics
# --------------------------------------------------------------------------------------------


def test_aggregates_equal_rliable(rl_metrics):
    rng = np.random.default_rng(11)
    for _ in range(50):
        s = _random_scores(rng, int(rng.integers(1, 8)), int(rng.integers(1, 30)))
        s += rng.normal()  # negative scores too
        assert scores.iqm(s) == pytest.approx(rl_metrics.aggregate_iqm(s), rel=1e-12, abs=1e-15)
        assert scores.aggregate_median(s) == rl_metrics.aggregate_median(s)
        assert scores.aggregate_mean(s) == rl_metrics.aggregate_mean(s)
        assert scores.optimality_gap(s) == rl_metrics.aggregate_optimality_gap(s)
        assert scores.optimality_gap(s, 0.5) == rl_metrics.aggregate_optimality_gap(s, 0.5)
        points = {k: ci.point for k, ci in scores.aggregate_table({"m": s}, reps=1)["m"].items()}
        assert points["iqm"] == scores.iqm(s) and points["median"] == scores.aggregate_median(s)
        assert points["mean"] == scores.aggregate_mean(s)
        assert points["optimality_gap"] == scores.optimality_gap(s)


def test_probability_of_improvement_equals_rliable(rl_metrics):
    rng = np.random.default_rng(12)
    for _ in range(50):
        games = int(rng.integers(1, 12))
        x = _random_scores(rng, int(rng.integers(1, 8)), games)  # uneven run counts
        y = _random_scores(rng, int(rng.integers(1, 8)), games)
        assert scores.probability_of_improvement(x, y) == rl_metrics.probability_of_improvement(
            x, y
        )
    same = _random_scores(rng, 4, 6)
    assert scores.probability_of_improvement(same, same) == 0.5
    assert rl_metrics.probability_of_improvement(same, same) == 0.5


def test_performance_profile_equals_rliable(rly):
    rng = np.random.default_rng(13)
    for _ in range(20):
        s = _random_scores(rng, int(rng.integers(1, 8)), int(rng.integers(1, 30)))
        taus = np.concatenate([np.linspace(-0.5, 4.0, 19), np.unique(s)[:5]])  # ties at tau
        np.testing.assert_array_equal(
            scores.performance_profile(s, taus), rly.score_distributions(s, taus)
        )


# --------------------------------------------------------------------------------------------
# Bootstrap intervals against rliable's (different RNG: compared within a tolerance)
# --------------------------------------------------------------------------------------------


def test_aggregate_intervals_match_rliable(rly, rl_metrics, global_np_seed):
    # 5 runs x 12 games, 10,000 replicates on both sides. Over 10 of our seeds the endpoints
    # vary with a standard deviation of 0.5 % - 1.3 % of the interval width (median the most:
    # it moves between discrete per-game means); the tolerance is 5 % of rliable's width.
    # Measured (numpy 2.4, scipy 1.17): within 2.7 % of the width (median's lower end).
    x = _random_scores(np.random.default_rng(5), 5, 12)

    def four(s):
        return np.array(
            [
                rl_metrics.aggregate_iqm(s),
                rl_metrics.aggregate_median(s),
                rl_metrics.aggregate_mean(s),
                rl_metrics.aggregate_optimality_gap(s),
            ]
        )

    points, intervals = rly.get_interval_estimates({"x": x}, four, reps=10_000)
    ours = scores.aggregate_table({"x": x}, reps=10_000, seed=0)["x"]
    for k, name in enumerate(scores.AGGREGATES):
        low, high = intervals["x"][0][k], intervals["x"][1][k]
        tol = 0.05 * (high - low)
        assert ours[name].point == pytest.approx(points["x"][k], rel=1e-12), name
        assert ours[name].low == pytest.approx(low, abs=tol), name
        assert ours[name].high == pytest.approx(high, abs=tol), name


def test_probability_of_improvement_interval_matches_rliable(rly, rl_metrics, global_np_seed):
    # rliable runs scipy's Mann-Whitney per game and replicate (about 2 ms each), so fewer
    # replicates: 2,000 on 6 games with 5 and 3 runs. Our endpoints' standard deviation over
    # seeds is at most 0.005 there; the tolerance is 0.03 (about 4 standard deviations of the
    # difference of two independent estimates; 10 % of the interval's width, 0.30).
    rng = np.random.default_rng(6)
    x, y = _random_scores(rng, 5, 6), np.round(rng.gamma(2.0, 0.45, size=(3, 6)), 1)

    def poi(a, b):
        return np.array([rl_metrics.probability_of_improvement(a, b)])

    points, intervals = rly.get_interval_estimates({"x,y": [x, y]}, poi, reps=2000)
    ours = scores.probability_of_improvement_ci(x, y, reps=2000, seed=0)
    assert ours.point == points["x,y"][0]
    assert ours.low == pytest.approx(intervals["x,y"][0][0], abs=0.03)
    assert ours.high == pytest.approx(intervals["x,y"][1][0], abs=0.03)
    assert ours.high - ours.low > 0.25


def test_performance_profile_band_matches_rliable(rly, global_np_seed):
    # 2,000 replicates (rliable's default for profiles) on 5 runs x 12 games: profile values
    # are multiples of 1/60; the tolerance is 3/60 = 0.05 at every tau.
    x = _random_scores(np.random.default_rng(5), 5, 12)
    taus = np.linspace(0.0, 3.0, 31)
    points, intervals = rly.create_performance_profile({"x": x}, taus, reps=2000)
    band = scores.performance_profile_ci(x, taus, reps=2000, seed=0)
    np.testing.assert_array_equal(band.taus, taus)
    np.testing.assert_array_equal(band.point, points["x"])
    np.testing.assert_allclose(band.low, intervals["x"][0], rtol=0, atol=0.05)
    np.testing.assert_allclose(band.high, intervals["x"][1], rtol=0, atol=0.05)

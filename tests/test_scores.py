import math

import numpy as np
import pytest

from ife_platform import scores


def test_table_has_57_games_and_26_atari100k():
    assert len(scores.known_games()) == 57
    a100k = scores.atari100k_games()
    assert len(a100k) == 26
    assert "ms_pacman" in a100k and "pong" in a100k
    assert "video_pinball" not in a100k


def test_reference_scores_hand_checked():
    assert scores.reference_scores("pong") == (-20.7, 14.6)
    assert scores.reference_scores("ms_pacman") == (307.3, 6951.6)
    # This table uses 0.0 as Video Pinball's random score (not 16256.9).
    assert scores.reference_scores("video_pinball") == (0.0, 17667.9)
    assert scores.reference_scores("tetris") is None
    assert scores.has_reference("pong")
    assert not scores.has_reference("tetris")


@pytest.mark.parametrize(
    ("game", "score", "expected"),
    [
        ("pong", -20.7, 0.0),
        ("pong", 14.6, 1.0),
        ("pong", 21.0, 41.7 / 35.3),  # (21 + 20.7) / (14.6 + 20.7) = 1.18130...
        ("ms_pacman", 3629.45, 0.5),  # midpoint of 307.3 and 6951.6
        ("video_pinball", 17667.9, 1.0),
        ("video_pinball", 0.0, 0.0),
        ("boxing", 0.1 - 12.0, -1.0),  # (-11.9 - 0.1) / (12.1 - 0.1)
        ("double_dunk", -17.5, 0.5),  # negative scores: (-17.5 + 18.6) / (-16.4 + 18.6)
    ],
)
def test_human_normalized_score_hand_checked(game, score, expected):
    assert scores.human_normalized_score(game, score) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("ms_pacman", "ms_pacman"),
        ("ALE/MsPacman-v5", "ms_pacman"),
        ("MsPacmanNoFrameskip-v4", "ms_pacman"),
        ("MontezumaRevenge", "montezuma_revenge"),
        ("UpNDown", "up_n_down"),
        ("Pong", "pong"),
        ("KungFuMaster", "kung_fu_master"),
        ("BreakoutDeterministic-v4", "breakout"),
    ],
)
def test_canonical_game_name(name, canonical):
    assert scores.canonical_game_name(name) == canonical
    assert scores.has_reference(name)


def test_unknown_game_raises_with_valid_names():
    with pytest.raises(KeyError, match="known games: alien"):
        scores.human_normalized_score("tetris", 1.0)


def test_iqm_hand_checked():
    assert scores.iqm([1, 2, 3, 4, 5, 6, 7, 8]) == 4.5  # k = 2: mean(3, 4, 5, 6)
    assert scores.iqm([8, 1, 7, 2, 100, 3, 6, 5]) == 5.25  # sorted 1,2,3,5,6,7,8,100: (3+5+6+7)/4
    assert scores.iqm([0, 0, 0, 0, 100]) == 0.0  # k = 1: mean(0, 0, 0)
    assert scores.iqm([[1, 2], [3, 4]]) == 2.5  # flattened, k = 1: mean(2, 3)
    assert scores.iqm([7.0]) == 7.0  # k = 0
    assert scores.iqm([1, 2, 3]) == 2.0  # k = 0: plain mean


def test_iqm_matches_scipy_trim_mean():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    for n in range(1, 30):
        x = rng.normal(size=n) * 10
        assert scores.iqm(x) == pytest.approx(stats.trim_mean(x, 0.25), rel=1e-12)


def test_mean_median_optimality_gap_hand_checked():
    s = np.array([[0.0, 1.0, 4.0], [2.0, 3.0, 0.0]])  # per-game means: 1, 2, 2
    assert scores.aggregate_mean(s) == pytest.approx(5 / 3)
    assert scores.aggregate_median(s) == 2.0
    # min(s, 1) = [[0,1,1],[1,1,0]] -> mean 4/6; gap = 1 - 4/6
    assert scores.optimality_gap(s) == pytest.approx(1 / 3)


def test_bootstrap_constant_columns_collapse_to_point():
    s = np.array([[1.0, 5.0], [1.0, 5.0], [1.0, 5.0]])
    ci = scores.stratified_bootstrap_ci(s, scores.iqm, reps=200)
    assert ci == (3.0, 3.0, 3.0)


def test_bootstrap_resamples_within_each_game():
    # Column 0 holds values < 3, column 1 values >= 100: a stratified resample never mixes them.
    s = np.array([[0.0, 100.0], [1.0, 101.0], [2.0, 102.0]])

    def only_own_column(m):
        return float(np.all(m[:, 0] < 3) and np.all(m[:, 1] >= 100))

    assert scores.stratified_bootstrap_ci(s, only_own_column, reps=300) == (1.0, 1.0, 1.0)


def test_bootstrap_two_runs_one_game_hand_checked():
    # Resampled means of [0, 1] are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4:
    # the 2.5 % and 97.5 % percentiles of 2000 replicates are 0 and 1.
    s = np.array([[0.0], [1.0]])
    ci = scores.stratified_bootstrap_ci(s, scores.aggregate_mean, reps=2000, alpha=0.05)
    assert ci.point == 0.5
    assert ci.low == 0.0 and ci.high == 1.0


def test_bootstrap_deterministic_and_brackets_point():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(5, 26))
    a = scores.stratified_bootstrap_ci(s, scores.iqm, reps=500, seed=3)
    b = scores.stratified_bootstrap_ci(s, scores.iqm, reps=500, seed=3)
    assert a == b
    assert a.low < a.point < a.high
    assert math.isfinite(a.low) and math.isfinite(a.high)


def test_bootstrap_rejects_bad_shapes():
    with pytest.raises(ValueError, match="runs, games"):
        scores.stratified_bootstrap_ci(np.zeros(5))


def test_der_100k_scores_from_the_table():
    # van Hasselt et al. 2019, Table 6, as copied into the package's CSV.
    assert scores.der_100k_score("ms_pacman") == 1204.1
    assert scores.der_100k_score("MsPacmanNoFrameskip-v4") == 1204.1
    assert scores.der_100k_score("pong") == -19.3
    assert scores.der_100k_score("asteroids") is None  # not an Atari-100k game
    assert scores.der_100k_score("no_such_game") is None
    assert all(scores.der_100k_score(g) is not None for g in scores.atari100k_games())

"""Continual-learning metrics checked against numbers worked out by hand (metrics.md).

Convention: R has shape (K + 1, K); R[i, j - 1] = score on task j after training on task i,
row 0 = before any training.
"""

import math
import warnings

import matplotlib.image
import numpy as np
import pytest

from ife_platform.continual import metrics as cl

NAN = float("nan")

# 3 tasks. Rows: before, after T1, after T2, after T3. Columns: T1, T2, T3.
R3 = np.array(
    [
        [0.0, 0.1, 0.2],  # before any training
        [0.8, 0.3, 0.2],  # after T1
        [0.5, 0.9, 0.4],  # after T2
        [0.4, 0.6, 1.0],  # after T3
    ]
)


def test_shape_is_validated():
    with pytest.raises(ValueError, match=r"\(K \+ 1, K\)"):
        cl.average_performance(np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"\(K \+ 1, K\)"):
        cl.forgetting_cw(np.zeros(4))
    with pytest.raises(ValueError, match=r"\(K \+ 1, K\)"):
        cl.zero_shot_transfer_cora(np.zeros((1, 0)))


def test_average_performance_hand_checked():
    # mean of the last row: (0.4 + 0.6 + 1.0) / 3 = 2/3
    assert cl.average_performance(R3) == pytest.approx(2.0 / 3.0)


def test_forgetting_cw_hand_checked():
    # F_1 = R[1][1] - R[3][1] = 0.8 - 0.4 = 0.4
    # F_2 = R[2][2] - R[3][2] = 0.9 - 0.6 = 0.3
    # F_3 = R[3][3] - R[3][3] = 0 (last task, by definition)
    np.testing.assert_allclose(cl.forgetting_cw(R3), [0.4, 0.3, 0.0])
    # mean over j < K: (0.4 + 0.3) / 2 = 0.35
    assert cl.forgetting_cw_mean(R3) == pytest.approx(0.35)


def test_forgetting_cora_hand_checked():
    out = cl.forgetting_cora(R3)
    # (task j, impactor i): R[i-1][j] - R[i][j]
    # (1, 2): R[1][1] - R[2][1] = 0.8 - 0.5 = 0.3
    # (1, 3): R[2][1] - R[3][1] = 0.5 - 0.4 = 0.1
    # (2, 3): R[2][2] - R[3][2] = 0.9 - 0.6 = 0.3
    expected = np.array(
        [
            [NAN, 0.3, 0.1],
            [NAN, NAN, 0.3],
            [NAN, NAN, NAN],
        ]
    )
    np.testing.assert_allclose(out["matrix"], expected, equal_nan=True)
    np.testing.assert_array_equal(out["defined"], ~np.isnan(expected))
    # per task: T1 (0.3 + 0.1) / 2 = 0.2, T2 0.3, T3 no later task -> nan
    np.testing.assert_allclose(out["per_task"], [0.2, 0.3, NAN], equal_nan=True)
    # over the 3 pairs: (0.3 + 0.1 + 0.3) / 3 = 0.2333... (mean of per_task would be 0.25)
    assert out["mean"] == pytest.approx(0.7 / 3.0)


def test_zero_shot_transfer_cora_hand_checked():
    # Z_1 = R[0][1] - R[0][1] = 0 (nothing precedes T1)
    # Z_2 = R[1][2] - R[0][2] = 0.3 - 0.1 = 0.2
    # Z_3 = R[2][3] - R[0][3] = 0.4 - 0.2 = 0.2
    np.testing.assert_allclose(cl.zero_shot_transfer_cora(R3), [0.0, 0.2, 0.2])
    # mean over j >= 2: (0.2 + 0.2) / 2
    assert cl.zero_shot_transfer_cora_mean(R3) == pytest.approx(0.2)


def test_negative_forgetting_when_a_task_improves_later():
    R = np.array(
        [
            [0.0, 0.0],
            [0.5, 0.2],  # after T1
            [0.7, 0.9],  # after T2: T1 went UP from 0.5 to 0.7
        ]
    )
    # F_1 = 0.5 - 0.7 = -0.2 (negative = backward transfer), F_2 = 0
    np.testing.assert_allclose(cl.forgetting_cw(R), [-0.2, 0.0])
    assert cl.forgetting_cw_mean(R) == pytest.approx(-0.2)
    # CORA (1, 2): R[1][1] - R[2][1] = 0.5 - 0.7 = -0.2, the only pair
    assert cl.forgetting_cora(R)["mean"] == pytest.approx(-0.2)
    # Z_2 = R[1][2] - R[0][2] = 0.2 - 0.0
    np.testing.assert_allclose(cl.zero_shot_transfer_cora(R), [0.0, 0.2])


def test_single_task_means_are_nan():
    R = np.array([[0.1], [0.7]])
    assert cl.average_performance(R) == pytest.approx(0.7)
    np.testing.assert_allclose(cl.forgetting_cw(R), [0.0])
    assert math.isnan(cl.forgetting_cw_mean(R))
    assert math.isnan(cl.forgetting_cora(R)["mean"])
    assert math.isnan(cl.zero_shot_transfer_cora_mean(R))


def test_tasks_never_trained_give_nan_not_crashes():
    # The sequence was stopped after T1: rows "after T2" and "after T3" were never evaluated.
    R = R3.copy()
    R[2:] = NAN
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from empty / all-nan means either
        assert math.isnan(cl.average_performance(R))
        assert np.isnan(cl.forgetting_cw(R)).all()  # R[3][j] is nan for every j
        assert math.isnan(cl.forgetting_cw_mean(R))
        cora = cl.forgetting_cora(R)
        assert np.isnan(cora["matrix"]).all()  # every pair reads row 2 or 3
        assert np.isnan(cora["per_task"]).all()
        assert math.isnan(cora["mean"])
        # Z_1 = 0, Z_2 = R[1][2] - R[0][2] = 0.3 - 0.1 = 0.2 (T1 was trained), Z_3 reads row 2
        np.testing.assert_allclose(cl.zero_shot_transfer_cora(R), [0.0, 0.2, NAN], equal_nan=True)
        assert math.isnan(cl.zero_shot_transfer_cora_mean(R))

        # Stopped after T2: only the pair (1, 2) = 0.8 - 0.5 = 0.3 is known.
        R2 = R3.copy()
        R2[3] = NAN
        cora = cl.forgetting_cora(R2)
        assert cora["matrix"][0, 1] == pytest.approx(0.3)
        assert np.isnan(cora["matrix"][0, 2]) and np.isnan(cora["matrix"][1, 2])
        assert math.isnan(cora["mean"])  # no silent averaging over the finished part
        # Z_2 = 0.2, Z_3 = R[2][3] - R[0][3] = 0.4 - 0.2 = 0.2: both known
        assert cl.zero_shot_transfer_cora_mean(R2) == pytest.approx(0.2)


def test_forward_transfer_cw_hand_checked():
    auc = [0.5, 0.6, 0.9, NAN, 0.1, 0.9]
    ref = [0.25, 0.6, 1.0, 0.5, 0.5, 1.2]
    # T1: (0.5 - 0.25) / (1 - 0.25) = 0.25 / 0.75 = 1/3
    # T2: (0.6 - 0.6) / 0.4 = 0
    # T3: AUC_ref == 1 -> no headroom -> nan (guard)
    # T4: nan AUC -> nan
    # T5: (0.1 - 0.5) / 0.5 = -0.8 (negative transfer)
    # T6: AUC_ref = 1.2 > 1 (possible with HNS): denominator < 0 -> nan (guard)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ft = cl.forward_transfer_cw(auc, ref)
    np.testing.assert_allclose(ft, [1 / 3, 0.0, NAN, NAN, -0.8, NAN], equal_nan=True)
    # a scalar reference broadcasts: (0.5 - 0.5) / 0.5 = 0, (1.0 - 0.5) / 0.5 = 1
    np.testing.assert_allclose(cl.forward_transfer_cw([0.5, 1.0], 0.5), [0.0, 1.0])
    with pytest.raises(ValueError, match="auc_ref"):
        cl.forward_transfer_cw([0.5, 1.0], [0.1, 0.2, 0.3])


def test_training_auc_window():
    steps = [0, 100, 200, 300, 400]
    scores = [0.0, 0.2, 0.4, 0.6, 0.8]
    # window (100, 300]: points at 200 and 300 -> (0.4 + 0.6) / 2 = 0.5
    assert cl.training_auc(steps, scores, start=100, end=300) == pytest.approx(0.5)
    # from scratch with start=0: step 0 excluded -> (0.2 + 0.4 + 0.6 + 0.8) / 4 = 0.5
    assert cl.training_auc(steps, scores, start=0) == pytest.approx(0.5)
    # no window: all points -> 2.0 / 5 = 0.4
    assert cl.training_auc(steps, scores) == pytest.approx(0.4)
    assert math.isnan(cl.training_auc(steps, scores, start=400))  # empty window
    assert math.isnan(cl.training_auc(steps, [0.0, NAN, 0.4, 0.6, 0.8], end=200))
    with pytest.raises(ValueError, match="equal length"):
        cl.training_auc([0, 1], [0.0])


def test_normalise_hns_with_real_table_rows():
    # atari_human_random.csv: pong random -20.7, human 14.6; breakout random 1.7, human 30.5
    raw = np.array(
        [
            [-20.7, 1.7],  # random -> 0
            [14.6, 30.5],  # human -> 1
            [-3.05, 16.1],  # (-3.05 + 20.7) / 35.3 = 17.65 / 35.3 = 0.5; 14.4 / 28.8 = 0.5
            [NAN, 59.3],  # nan stays nan; (59.3 - 1.7) / 28.8 = 57.6 / 28.8 = 2.0
        ]
    )
    expected = [[0.0, 0.0], [1.0, 1.0], [0.5, 0.5], [NAN, 2.0]]
    for method in ("hns", "auto"):
        out = cl.normalise_scores(raw, ["pong", "breakout"], method=method)
        np.testing.assert_allclose(out, expected, equal_nan=True, atol=1e-12)
    # gymnasium ids are accepted too; a 1-D input is one row
    np.testing.assert_allclose(cl.normalise_scores([14.6], ["ALE/Pong-v5"], method="hns"), [1.0])
    with pytest.raises(ValueError, match="tetris"):
        cl.normalise_scores(raw, ["pong", "tetris"], method="hns")
    with pytest.raises(ValueError, match="3 games for 2 score columns"):
        cl.normalise_scores(raw, ["pong", "breakout", "alien"])


def test_normalise_best_abs():
    raw = np.array(
        [
            [-10.0, 0.0],
            [5.0, 0.0],
            [NAN, 0.0],
        ]
    )
    # column 0: best |return| = 10 -> [-1, 0.5, nan]; column 1: best 0 -> nan (guard)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = cl.normalise_scores(raw, ["a", "b"], method="best_abs")
    np.testing.assert_allclose(out, [[-1.0, NAN], [0.5, NAN], [NAN, NAN]], equal_nan=True)
    # extra values (e.g. scratch runs) join the maximum: column 0 -> 20, column 1 -> 4
    out = cl.normalise_scores(
        raw, ["a", "b"], method="best_abs", best_abs=[[-20.0, 1.0], [3.0, 4.0]]
    )
    np.testing.assert_allclose(out, [[-0.5, 0.0], [0.25, 0.0], [NAN, 0.0]], equal_nan=True)
    # extra values below the matrix's own best do not change it: column 0 stays 10
    out = cl.normalise_scores(raw, ["a", "b"], method="best_abs", best_abs=[2.0, 2.0])
    np.testing.assert_allclose(out[:, 0], [-1.0, 0.5, NAN], equal_nan=True)
    # auto falls back to best_abs when a game has no human/random reference
    auto = cl.normalise_scores(raw, ["pong", "tetris"], method="auto", best_abs=[1.0, 4.0])
    np.testing.assert_allclose(auto, [[-1.0, 0.0], [0.5, 0.0], [NAN, 0.0]], equal_nan=True)
    with pytest.raises(ValueError, match="best_abs must have shape"):
        cl.normalise_scores(raw, ["a", "b"], method="best_abs", best_abs=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="unknown method"):
        cl.normalise_scores(raw, ["a", "b"], method="zscore")  # type: ignore[arg-type]


def test_bootstrap_interval():
    values = [1.0, 2.0, 3.0, 4.0]
    lo, hi = cl.bootstrap_interval(values, seed=3)
    assert (lo, hi) == cl.bootstrap_interval(values, seed=3)  # deterministic given the seed
    assert 1.0 <= lo < 2.5 < hi <= 4.0
    # two seeds [0, 1]: resample means are 0 (p 1/4), 0.5 (p 1/2), 1 (p 1/4);
    # the 2.5 / 97.5 percentiles fall in the end masses -> (0, 1);
    # the 30 / 70 percentiles (level 0.4) fall in the middle mass -> (0.5, 0.5)
    assert cl.bootstrap_interval([0.0, 1.0]) == (0.0, 1.0)
    assert cl.bootstrap_interval([0.0, 1.0], level=0.4) == (0.5, 0.5)
    # identical values: exactly (c, c), even for a c with no exact binary mean
    assert cl.bootstrap_interval([0.1] * 3) == (0.1, 0.1)
    # fewer than 2 (finite) seeds -> nan
    assert all(math.isnan(x) for x in cl.bootstrap_interval([0.7]))
    assert all(math.isnan(x) for x in cl.bootstrap_interval([0.7, NAN]))
    # [S, ...]: one interval per trailing element
    lo2, hi2 = cl.bootstrap_interval(np.array([[0.0, 0.1], [1.0, 0.1]]))
    np.testing.assert_allclose(lo2, [0.0, 0.1])
    np.testing.assert_allclose(hi2, [1.0, 0.1])
    with pytest.raises(ValueError, match="level"):
        cl.bootstrap_interval(values, level=1.0)


def test_summarise_over_seeds():
    # seed 2 = R3 with every score + 0.1: differences unchanged, AP = 2/3 + 0.1
    # seed 3 stopped after T1 -> every headline metric nan for it, left out (n = 2)
    stopped = R3.copy()
    stopped[2:] = NAN
    mats = [R3, R3 + 0.1, stopped]
    aucs = [[0.5, 0.6, 0.7], [0.5, 0.6, 0.7], [0.5, NAN, NAN]]
    ref = [0.25, 0.6, 0.7]
    # FT per seed: (1/3 + 0 + 0) / 3 = 1/9 for seeds 1 and 2; nan for seed 3
    out = cl.summarise_over_seeds(mats, aucs, ref, resamples=2000)
    assert set(out) == set(cl.HEADLINE_METRICS)
    for name in cl.HEADLINE_METRICS:
        assert out[name]["n"] == 2
        assert math.isnan(out[name]["per_seed"][2])
    ap = out["average_performance"]
    assert ap["mean"] == pytest.approx(2 / 3 + 0.05)
    assert ap["lo"] == pytest.approx(2 / 3) and ap["hi"] == pytest.approx(2 / 3 + 0.1)
    assert out["forgetting_cw_mean"]["mean"] == pytest.approx(0.35)
    assert out["forgetting_cw_mean"]["lo"] == pytest.approx(0.35)  # both seeds equal
    assert out["forgetting_cora_mean"]["mean"] == pytest.approx(0.7 / 3)
    assert out["zero_shot_mean"]["mean"] == pytest.approx(0.2)
    assert out["forward_transfer_mean"]["mean"] == pytest.approx(1 / 9)
    # without AUCs forward transfer is nan with n = 0
    out = cl.summarise_over_seeds([R3], resamples=100)
    assert out["forward_transfer_mean"]["n"] == 0
    assert math.isnan(out["forward_transfer_mean"]["mean"])
    assert out["average_performance"]["n"] == 1 and math.isnan(out["average_performance"]["lo"])
    with pytest.raises(ValueError, match="share K"):
        cl.summarise_over_seeds([R3, np.zeros((3, 2))])
    with pytest.raises(ValueError, match="aucs_ref"):
        cl.summarise_over_seeds([R3], aucs=[[0.1, 0.2, 0.3]])


def test_plot_matrix_writes_readable_png(tmp_path):
    R = R3.copy()
    R[3] = NAN  # an unevaluated row is drawn as n/a, not a crash
    path = cl.plot_matrix(R, ["pong", "breakout", "alien"], tmp_path / "sub" / "R.png", "test")
    assert path.exists()
    image = matplotlib.image.imread(path)
    # figsize (1.1 * 3 + 2.5, 0.5 * 4 + 1.5) inches at 100 dpi, RGBA
    assert image.shape == (350, 580, 4)
    with pytest.raises(ValueError, match="2 games"):
        cl.plot_matrix(R3, ["pong", "breakout"], tmp_path / "x.png")
    # a labelled colour bar on a fixed range (the alignment lift: 0 to twice chance)
    lifted = cl.plot_matrix(
        np.ones((4, 3)), list("abc"), tmp_path / "lift.png", "lift", "lift (1 = chance)", (0, 2)
    )
    assert matplotlib.image.imread(lifted).shape == (350, 580, 4)

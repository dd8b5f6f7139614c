"""Pure parts of ``ife compare``: bootstrap intervals, method grouping, the text table."""

from __future__ import annotations

import math

import numpy as np

from ife_platform.interpret.compare import (
    COMPARE_METRICS,
    MethodResult,
    bootstrap_ci,
    format_table,
    group_methods,
)


def test_bootstrap_interval_by_hand() -> None:
    # Identical values: every resample mean is 2.0, so the interval is (2, 2).
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    # Two values {0, 1}: a resample mean is 0, 0.5 or 1 with probability 1/4, 1/2, 1/4, so the
    # 2.5 % and 97.5 % percentiles are 0 and 1.
    assert bootstrap_ci([0.0, 1.0], resamples=4000) == (0.0, 1.0)
    # One finite value (NaNs dropped): no interval.
    lo, hi = bootstrap_ci([1.0, float("nan")])
    assert math.isnan(lo) and math.isnan(hi)
    # Reproducible with a seed, inside [min, max], and around the mean.
    vals = [0.1, 0.4, 0.35, 0.8, 0.2]
    a, b = bootstrap_ci(vals, seed=3), bootstrap_ci(vals, seed=3)
    assert a == b and 0.1 <= a[0] < np.mean(vals) < a[1] <= 0.8


def test_group_methods_merges_seeds_and_keeps_methods_apart() -> None:
    per_agent = [
        ("ife/seed0", {"ife (mask)": {"lift": 2.0, "leakage": 0.0}}),
        ("ife/seed1", {"ife (mask)": {"lift": 4.0, "leakage": 0.0}}),
        ("cnn/seed0", {"nature_cnn (saliency)": {"lift": 1.5, "leakage": float("nan")}}),
    ]
    groups = {g.method: g for g in group_methods(per_agent)}
    assert groups["ife (mask)"].agents == ["ife/seed0", "ife/seed1"]
    row = groups["ife (mask)"].row()
    assert row["seeds"] == 2 and row["lift"] == 3.0 and row["leakage"] == 0.0
    assert row["lift_lo"] == 2.0 and row["lift_hi"] == 4.0  # {2, 4}: resample means 2, 3, 4
    cnn = groups["nature_cnn (saliency)"].row()
    assert cnn["lift"] == 1.5 and math.isnan(cnn["lift_lo"]) and math.isnan(cnn["leakage"])


def test_table_shows_intervals_and_na() -> None:
    rows = [
        MethodResult("ife (mask)", ["a", "b"], {"lift": [2.0, 4.0], "leakage": [0.0, 0.0]}).row(),
        MethodResult("cnn (saliency)", ["c"], {"lift": [1.5], "leakage": [float("nan")]}).row(),
    ]
    text = format_table(rows)
    lines = text.splitlines()
    assert "lift" in lines[0] and "leakage" in lines[0] and "pointing" not in lines[0]
    assert "[2, 4]" in lines[1] and "n/a" in lines[2]
    assert set(COMPARE_METRICS) >= {"lift", "leakage", "mass_in_box", "auroc"}


def test_per_frame_table_round_trips_as_csv_and_parquet(tmp_path) -> None:
    import csv

    import pandas as pd

    from ife_platform.interpret.explain import write_table

    rows = [{"t": 0.0, "lift": 2.5, "recall/ball": float("nan")}, {"t": 1.0, "lift": 0.5}]
    rows[1]["recall/ball"] = 1.0
    path = write_table(rows, tmp_path / "frames", "csv")
    with path.open() as fh:
        back = list(csv.DictReader(fh))
    assert path.name == "frames.csv" and [float(r["lift"]) for r in back] == [2.5, 0.5]
    pq = write_table(rows, tmp_path / "frames", "parquet")
    df = pd.read_parquet(pq)
    assert pq.name == "frames.parquet" and list(df.columns) == ["t", "lift", "recall/ball"]
    assert math.isnan(df["recall/ball"][0]) and df["recall/ball"][1] == 1.0

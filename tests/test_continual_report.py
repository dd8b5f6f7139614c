"""The continual report from logged progress: numbers worked out by hand, intervals over seeds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import tracking_args

from ife_platform.cli import main
from ife_platform.sequences import build_report


def _progress(pong_after_boxing: float) -> dict:
    # HNS: pong (s + 20.7) / 35.3, boxing (s - 0.1) / 12.0 (ife_platform/data/...csv)
    return {
        "games": ["pong", "boxing"],
        "mode": "freeze_hue",
        "head": "shared",
        "steps_per_task": 100,
        "normalise": "hns",
        # R: before [0, 0]; after pong [1, 0]; after boxing [x, 1]
        "raw_R": [[-20.7, 0.1], [14.6, 0.1], [pong_after_boxing, 12.1]],
        "alignment": [[None, None]] * 3,
        "completed": [{"task": 0}, {"task": 1}],
        "curves": {
            "steps": [0, 50, 100, 150, 200],
            # pong HNS 0, .5, 1 ...; boxing HNS 0, 0, 0, .5, 1
            "returns": {
                "pong": [-20.7, -3.05, 14.6, 14.6, pong_after_boxing],
                "boxing": [0.1, 0.1, 0.1, 6.1, 12.1],
            },
        },
        "reference": {
            "pong": {"steps": [0, 50, 100], "returns": [-20.7, -20.7, -3.05]},  # HNS 0, 0, .5
            "boxing": {"steps": [0, 50, 100], "returns": [0.1, 6.1, 6.1]},  # HNS 0, .5, .5
        },
        "eval_seconds": 30.0,
        "wall_seconds": 120.0,
    }


def test_report_by_hand() -> None:
    r = build_report(_progress(-3.05))  # pong after boxing: HNS 17.65 / 35.3 = 0.5
    assert r["R"][2] == pytest.approx([0.5, 1.0])
    assert r["average_performance"] == pytest.approx(0.75)  # (0.5 + 1) / 2
    assert r["forgetting_cw_mean"] == pytest.approx(0.5)  # R[1][pong] - R[2][pong] = 1 - .5
    assert r["zero_shot_transfer_mean"] == pytest.approx(0.0)  # R[1][boxing] - R[0][boxing]
    # AUC = mean HNS at the evaluation points of the task's window (start < step <= end):
    # pong (0, 100]: (.5 + 1) / 2 = .75, ref (0 + .5) / 2 = .25 -> (.75 - .25) / .75 = 2/3
    # boxing (100, 200]: (.5 + 1) / 2 = .75, ref (.5 + .5) / 2 = .5 -> (.75 - .5) / .5 = .5
    assert r["auc"] == pytest.approx([0.75, 0.75])
    assert r["auc_reference"] == pytest.approx([0.25, 0.5])
    assert r["forward_transfer"] == pytest.approx([2 / 3, 0.5])
    assert r["eval_share"] == pytest.approx(0.25)


def test_report_over_two_seeds(workdir: Path, capsys) -> None:
    out = workdir / "out"
    # seed B forgets more: pong after boxing HNS 0.3 -> raw 0.3 * 35.3 - 20.7 = -10.11
    for run, x in (("seedA", -3.05), ("seedB", -10.11)):
        (out / run).mkdir(parents=True)
        (out / run / "progress.json").write_text(json.dumps(_progress(x)))
    assert main(["continual-report", "seedA", "seedB", *tracking_args(workdir)]) == 0
    printed = capsys.readouterr().out
    assert "over 2 runs" in printed
    (folder,) = out.glob("continual-report-*")
    summary = json.loads((folder / "summary.json").read_text())
    ap = summary["average_performance"]
    # AP per seed .75 and .65: mean .7; bootstrap means of 2 seeds are .65, .7, .75 with
    # probabilities 1/4, 1/2, 1/4, so the 95 % interval is [.65, .75]
    assert ap["mean"] == pytest.approx(0.7) and ap["n"] == 2
    assert (ap["lo"], ap["hi"]) == pytest.approx((0.65, 0.75))
    ft = summary["forward_transfer_mean"]  # the same curves in both seeds: no spread
    assert ft["mean"] == pytest.approx((2 / 3 + 0.5) / 2) and ft["lo"] == pytest.approx(ft["hi"])
    assert math.isclose(summary["forgetting_cw_mean"]["mean"], (0.5 + 0.7) / 2)

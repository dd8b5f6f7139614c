"""``ife explain`` end to end: real checkpoints of real games, real MLflow store, real mp4s."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, tracking_args
from ife_platform.tasks.rainbow import build_network
from mlflow.tracking import MlflowClient

from ife_platform.cli import main
from ife_platform.config import compose
from ife_platform.envs import AtariEvalEnv
from ife_platform.interpret import explain as E
from ife_platform.interpret.explain import is_count
from ife_platform.interpret.objects import ocatari_available
from ife_platform.video import mask_intensity, read_mp4

pytestmark = pytest.mark.slow

FAST_EXPLAIN = [
    "explain.max_steps=60",
    "explain.video_max_steps=24",
    "explain.analysis_frames=6",
    "explain.leakage_frames=2",
    "explain.deletion_steps=4",
    "explain.random_orders=1",
]


def _train(root: Path, extractor: list[str]) -> tuple[Path, str, list[str]]:
    root.mkdir(parents=True, exist_ok=True)
    args = [*TINY, *tracking_args(root), "env.game=pong", *extractor]
    assert main(["train", *args, "tracking.video=false"]) == 0
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("ife").experiment_id])
    ckpt = root / "out" / run.info.run_id / "checkpoints" / "last.ckpt"
    return ckpt, run.info.run_id, tracking_args(root)


@pytest.fixture(scope="module")
def ife_pong(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, list[str]]:
    """A short-trained IFE (width 1) checkpoint on Pong and its run."""
    return _train(tmp_path_factory.mktemp("ife"), ["model.extractor=ife", "model.width=1"])


def _artifacts(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    out: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return out


def _explain_dir(client: MlflowClient, run_id: str, dst: Path) -> Path:
    (stamp,) = {p.split("/")[1] for p in _artifacts(client, run_id, "explain")}
    return Path(client.download_artifacts(run_id, f"explain/{stamp}", str(dst)))


def test_explain_ife_logs_everything_and_video_shows_the_measured_mask(
    ife_pong, tmp_path: Path, capsys
) -> None:
    ckpt, run_id, track = ife_pong
    rc = main(["explain", str(ckpt), *track, *FAST_EXPLAIN, "explain.saliency=true"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "leakage" in printed and "pointing" in printed

    client = MlflowClient(track[0].split("=", 1)[1])
    folder = _explain_dir(client, run_id, tmp_path)
    names = {p.name for p in folder.iterdir()}
    assert {
        "frames.csv",
        "summary.json",
        "curves.json",
        "metric_distributions.png",
        "deletion_insertion.png",
        "leakage.png",
        "explain.mp4",
    } <= names, names
    summary = json.loads((folder / "summary.json").read_text())
    # HUE: perturbing a window changes only its own cell's logit (metrics.md, exact 0).
    assert summary["leakage"] == 0.0 and summary["leakage_max"] == 0.0
    assert summary["sanity_differs"] is True  # re-initialised masks differ from trained ones
    assert summary["frames"] == 60 and summary["pointing_frames"] > 0
    assert 0.0 <= summary["mass_in_box"] <= 1.0 and 0.0 <= summary["auroc"] <= 1.0
    assert summary["saliency_frames_per_s"] > 0
    metrics = client.get_run(run_id).data.metrics
    assert metrics["explain/leakage"] == 0.0 and "explain/lift" in metrics
    # counts and timings stay in summary.json: no one-point charts of bookkeeping
    for count in ("frames", "episodes", "pointing_frames", "leakage_frames", "play_seconds"):
        assert count in summary and f"explain/{count}" not in metrics, count
    explain = [k.removeprefix("explain/") for k in metrics if k.startswith("explain/")]
    assert "lift" in explain and not any(is_count(k) for k in explain)

    with (folder / "frames.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 60 and {"pointing", "mass_in_box", "saliency/auroc"} <= set(rows[0])

    # raw | mask overlay | saliency, one video frame per recorded step, upscaled 3x with a
    # legend strip below (explain.video_upscale)
    full = read_mp4(folder / "explain.mp4").astype(np.float32)
    assert full.shape[0] == 24 and full.shape[2:] == (3 * 3 * 160, 3) and full.shape[1] > 630
    video = full[:, : 3 * 210 : 3, ::3]  # back to screen pixels (nearest upscaling)
    # The overlay adds 255 * m to the red channel of 0.6 x frame, m = the recorded mask on the
    # scale relative to uniform: per cell, the decoded overlay's red excess follows m.
    maps = np.load(folder / "maps.npz")
    masks, rects = maps["masks"], maps["cell_screen_rects"]
    assert masks.shape == (60, 14, 14) and np.allclose(masks.sum((1, 2)), 1.0, atol=1e-5)
    corr = []
    for k in range(video.shape[0]):
        excess = video[k, :, 160:320, 0] - 0.6 * video[k, :, :160, 0]
        cell = np.zeros(rects.shape[:2])
        for r in range(rects.shape[0]):
            for c in range(rects.shape[1]):
                y0, y1, x0, x1 = np.round(rects[r, c]).astype(int)
                cell[r, c] = excess[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1].mean()
        expected = 255 * mask_intensity(masks[k])
        if expected.std() > 1:  # a near-uniform mask draws (almost) nothing to correlate
            corr.append(np.corrcoef(cell.ravel(), expected.ravel())[0, 1])
        else:
            assert np.abs(cell - expected).max() < 12  # flat: what it draws is what m says
        argmax = np.unravel_index(masks[k].argmax(), masks[k].shape)
        assert argmax == (int(float(rows[k]["argmax_row"])), int(float(rows[k]["argmax_col"])))
    assert not corr or np.median(corr) > 0.9, corr  # (every frame checked one way)


def test_agent_without_attention_gets_saliency_only_with_a_note(tmp_path: Path, capsys) -> None:
    ckpt, run_id, track = _train(tmp_path / "cnn", ["model.extractor=nature_cnn"])
    assert main(["explain", str(ckpt), *track, *FAST_EXPLAIN]) == 0
    out = capsys.readouterr().out
    assert "no attention mask" in out and "saliency" in out
    client = MlflowClient(track[0].split("=", 1)[1])
    folder = _explain_dir(client, run_id, tmp_path)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["attention"] is False and "leakage" not in summary
    assert "pointing" not in summary and summary["saliency/pointing_frames"] > 0
    assert any("no attention mask" in n for n in summary["notes"])
    video = read_mp4(folder / "explain.mp4")  # raw | saliency, 3x, legend below
    assert video.shape[2:] == (3 * 2 * 160, 3) and video.shape[1] > 630


def test_unsupported_game_keeps_box_free_metrics_and_says_why() -> None:
    cfg = compose(["env.game=ms_pacman", "model.extractor=cnn_attention", *FAST_EXPLAIN])
    objects, note = E.resolve_objects("ms_pacman", "builtin")
    assert objects is None and "ms_pacman" in note and "pong" in note
    torch.manual_seed(0)
    env = AtariEvalEnv("ms_pacman", seed=1)
    network = build_network(cfg, env.num_actions)
    rec = E.record(network, env, episodes=1, max_steps=40, epsilon=0.0, seed=1)
    exp = E.analyse(network, rec, cfg.explain, objects_note=note)
    assert rec.boxes is None and "pointing" not in exp.summary
    assert any("ms_pacman" in n for n in exp.notes)
    assert any("alignment metrics" in n for n in exp.notes)
    # box-free metrics are all there; overlapping-conv attention leaks (metrics.md)
    assert exp.summary["leakage"] > 0.0
    assert np.isfinite(exp.summary["deletion_auc"]) and "sanity_spearman" in exp.summary


@pytest.mark.skipif(ocatari_available(), reason="OCAtari is installed here")
def test_explicit_ocatari_without_the_package_fails_before_work(ife_pong, capsys) -> None:
    ckpt, _, track = ife_pong
    assert main(["explain", str(ckpt), *track, "explain.objects=ocatari"]) == 2
    assert "ocatari" in capsys.readouterr().err.lower()


def test_explain_bad_input_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["explain", str(tmp_path / "missing.ckpt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["explain"]) == 2
    assert main(["explain", str(tmp_path / "x.ckpt"), "explain.objects=ocatary"]) == 2
    assert "ocatari" in capsys.readouterr().err


def test_compare_puts_agents_on_the_same_frames_with_seed_intervals(
    ife_pong, tmp_path: Path, capsys
) -> None:
    ckpt, _, track = ife_pong
    root = Path(track[1].split("=", 1)[1]).parent  # the fixture's store: one store, all runs
    other = root / "seed1"
    seed1, _, _ = _train(other, ["model.extractor=ife", "model.width=1", "seed=1"])
    cnn, _, _ = _train(root / "cnn", ["model.extractor=nature_cnn"])
    rc = main(["compare", str(ckpt), str(seed1), str(cnn), *track, *FAST_EXPLAIN])
    assert rc == 0
    out = capsys.readouterr().out
    assert "ife (mask)" in out and "nature_cnn (saliency)" in out and "60 shared frames" in out

    client = MlflowClient(track[0].split("=", 1)[1])
    exp_id = client.get_experiment_by_name("ife").experiment_id
    (run,) = client.search_runs([exp_id], "tags.mlflow.runName = 'compare-pong'")
    assert {"compare/compare.csv", "compare/compare.json", "compare/compare.png"} <= _artifacts(
        client, run.info.run_id
    )
    folder = Path(client.download_artifacts(run.info.run_id, "compare", str(tmp_path)))
    report = json.loads((folder / "compare.json").read_text())
    methods = {m["method"]: m for m in report["methods"]}
    ife, cnn_row = methods["ife (mask)"], methods["nature_cnn (saliency)"]
    assert ife["seeds"] == 2 and cnn_row["seeds"] == 1
    assert ife["leakage"] == 0.0 and ife["leakage_lo"] == 0.0 and ife["leakage_hi"] == 0.0
    assert ife["mass_in_box_lo"] <= ife["mass_in_box"] <= ife["mass_in_box_hi"]
    assert cnn_row["mass_in_box_lo"] is None  # one seed: no interval (NaN -> null in JSON)
    assert report["frames"] == 60
    metrics = client.get_run(run.info.run_id).data.metrics
    assert metrics["compare/ife_mask/leakage"] == 0.0


def test_compare_rejects_agents_of_different_games(ife_pong, tmp_path: Path, capsys) -> None:
    ckpt, _, track = ife_pong
    boxing, _, _ = _train(tmp_path / "boxing", ["env.game=boxing", "model.extractor=nature_cnn"])
    assert main(["compare", str(ckpt), str(boxing), *track]) == 2
    assert "one game" in capsys.readouterr().err
    assert main(["compare", str(ckpt)]) == 2

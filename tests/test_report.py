"""``ife report``: a real MLflow store holding a sweep's runs (created directly, with known final
scores), read back into per-game tables and aggregates checked against numbers worked out by
hand and against the statistics of ``ife_platform.scores`` (themselves tested against rliable)."""

from __future__ import annotations

import csv
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import run_ife

from ife_platform import scores as S
from ife_platform.config import ConfigError
from ife_platform.report import label_methods, report
from ife_platform.sweep import SWEEP_TAG, TRIAL_TAG

# (game, extractor, seed) -> final raw score. der_cnn lacks seed 2 on alien (uneven runs).
SCORES = {
    ("alien", "ife", 0): 700.0,
    ("alien", "ife", 1): 900.0,
    ("alien", "ife", 2): 800.0,
    ("ms_pacman", "ife", 0): 1500.0,
    ("ms_pacman", "ife", 1): 1200.0,
    ("ms_pacman", "ife", 2): 1800.0,
    ("alien", "der_cnn", 0): 600.0,
    ("alien", "der_cnn", 1): 1000.0,
    ("ms_pacman", "der_cnn", 0): 1300.0,
    ("ms_pacman", "der_cnn", 1): 1100.0,
    ("ms_pacman", "der_cnn", 2): 2000.0,
}
RANDOM_HUMAN = {"alien": (227.8, 7127.7), "ms_pacman": (307.3, 6951.6)}  # the shipped table


def hns(game: str, score: float) -> float:
    random, human = RANDOM_HUMAN[game]
    return (score - random) / (human - random)


def _store(tmp: Path, total_steps: int = 100_000) -> tuple[str, str]:
    """A sweep parent and one child run per score (plus a failed trial), as ife sweep leaves."""
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("ife")
    parent = client.create_run(exp, run_name="grid", tags={"ife.kind": "sweep"}).info.run_id
    for i, ((game, extractor, seed), score) in enumerate(SCORES.items()):
        tags = {SWEEP_TAG: parent, TRIAL_TAG: str(i), "mlflow.parentRunId": parent}
        run = client.create_run(exp, tags=tags).info.run_id
        params = {
            "env.game": game,
            "seed": seed,
            "model.extractor": extractor,
            "agent.name": "rainbow_der",
            "env.protocol": "atari100k",
            "train.total_steps": total_steps,
        }
        for k, v in params.items():
            client.log_param(run, k, v)
        client.log_metric(run, "eval/return_mean", score)
        client.log_metric(run, "eval/episodes", 30)
        client.log_metric(run, "eval/cap_frames", 108_000)
        client.log_metric(run, "eval/truncated", 2 if (game, seed) == ("alien", 1) else 0)
        client.log_metric(run, "explain/lift", 1.0 + seed + (extractor == "ife"))
        client.set_terminated(run)
    failed = client.create_run(exp, tags={SWEEP_TAG: parent, TRIAL_TAG: "99"}).info.run_id
    client.set_terminated(failed, status="FAILED")
    client.set_terminated(parent)
    return uri, parent


def test_report_of_a_sweep_against_hand_worked_numbers(tmp_path: Path) -> None:
    uri, parent = _store(tmp_path)
    result = report([parent], tracking_uri=uri, output_dir=str(tmp_path / "out"), reps=300)
    assert len(result.rows) == len(SCORES)  # the failed trial is left out, with a note
    assert any("trial 99 has no finished run" in n for n in result.notes)
    # alien seed 1 of both methods: 2 games each ended by the cap
    assert "4 evaluation games in 2 runs were ended by the cap" in result.markdown
    assert not any("different caps" in n or "re-evaluate" in n for n in result.notes)
    # method = extractor only: agent.name is the same for every run
    assert {r.method for r in result.rows} == {"ife", "der_cnn"}
    games = {(g["game"], g["method"]): g for g in result.games}
    g = games[("alien", "ife")]
    assert g["score_mean"] == pytest.approx(800.0)  # (700 + 900 + 800) / 3
    assert g["seeds"] == "0,1,2" and g["runs"] == 3
    assert g["hns_mean"] == pytest.approx((800.0 - 227.8) / (7127.7 - 227.8))
    assert g["der_100k"] == pytest.approx(739.9)  # Atari-100k protocol at 100k steps
    assert g["score_over_der"] == pytest.approx(800.0 / 739.9)
    assert games[("alien", "der_cnn")]["runs"] == 2

    # aggregates: der_cnn has 2 runs on alien, so every game keeps its first 2 runs
    ife = np.array(
        [[hns(g, SCORES[(g, "ife", s)]) for g in ("alien", "ms_pacman")] for s in (0, 1, 2)]
    )
    der = np.array(
        [
            [hns("alien", 600.0), hns("ms_pacman", 1300.0)],
            [hns("alien", 1000.0), hns("ms_pacman", 1100.0)],
        ]
    )
    assert any("der_cnn" in n and "ms_pacman" in n for n in result.notes)  # what was dropped
    want = S.aggregate_table({"der_cnn": der, "ife": ife}, reps=300, seed=0)
    for method in ("ife", "der_cnn"):
        for metric in ("iqm", "median", "mean", "optimality_gap"):
            assert result.aggregates[method][metric] == pytest.approx(want[method][metric])
    # mean of ife's HNS over 3 seeds x 2 games, by hand
    assert result.aggregates["ife"]["mean"].point == pytest.approx(ife.mean())
    assert set(result.improvement) == {("der_cnn", "ife")}
    assert result.improvement[("der_cnn", "ife")].point == pytest.approx(
        S.probability_of_improvement(der, ife)
    )
    # explain metrics: ife lift 1 + seed + 1 -> mean over seeds 0..2 and games = 3.0
    assert result.explain["ife"]["explain/lift"].point == pytest.approx(3.0)

    # the files, and the same files as artifacts of the sweep's parent run
    names = {p.name for p in result.files}
    assert {"runs.csv", "games.csv", "aggregates.csv", "report.md", "aggregates.png"} <= names
    assert {
        "performance_profiles.png",
        "probability_of_improvement.png",
        "game_scores.png",
    } <= names
    assert result.folder == (tmp_path / "out" / parent / "report").resolve()
    for png in (p for p in result.files if p.suffix == ".png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(open(result.folder / "games.csv")))
    assert {r["game"] for r in rows} == {"alien", "ms_pacman"} and len(rows) == 4
    client = mlflow.MlflowClient(uri)
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert "report/report.md" in logged and "report/aggregates.png" in logged
    assert client.get_run(parent).data.metrics["report/ife/hns_iqm"] == pytest.approx(
        result.aggregates["ife"]["iqm"].point
    )
    md = result.markdown
    assert "| method | lift |" in md  # the explain table shows ife explain's headline keys
    assert "| alien | ife | 3 (0,1,2) | 800.0 +- 81.6 | 0.083 | 739.9 | 1.08 |" in md


def test_der_column_only_for_the_atari100k_budget(tmp_path: Path) -> None:
    uri, parent = _store(tmp_path, total_steps=2000)
    result = report([parent], tracking_uri=uri, output_dir=str(tmp_path / "out"), reps=50)
    assert all(g["der_100k"] is None for g in result.games)
    assert "DER's published scores are shown only" in result.markdown


def test_methods_label_by_the_keys_that_vary() -> None:
    from ife_platform.report import RunRow

    rows = [
        RunRow("a", "train", "pong", 0, {"agent.name": "rainbow_der", "model.extractor": "ife"}),
        RunRow("b", "train", "pong", 0, {"agent.name": "s3ta", "model.extractor": "s3ta"}),
    ]
    assert label_methods(rows, ["agent.name", "model.extractor"]) == [
        "agent.name",
        "model.extractor",
    ]
    assert [r.method for r in rows] == ["rainbow_der/ife", "s3ta/s3ta"]
    same = rows[:1]
    assert label_methods(same, ["agent.name", "model.extractor"]) == ["model.extractor"]


def test_bad_references_are_refused(tmp_path: Path) -> None:
    uri, parent = _store(tmp_path)
    client = mlflow.MlflowClient(uri)
    running = client.create_run(client.get_run(parent).info.experiment_id).info.run_id
    with pytest.raises(ConfigError, match="no run 'nope'"):
        report(["nope"], tracking_uri=uri, output_dir=str(tmp_path), reps=10)
    with pytest.raises(ConfigError, match="is RUNNING, not FINISHED"):
        report([running], tracking_uri=uri, output_dir=str(tmp_path), reps=10)
    proc = run_ife(tmp_path, ["report", "nope", f"tracking.uri={uri}"], expect=2)
    assert "no run 'nope'" in proc.stderr
    proc = run_ife(tmp_path, ["report", parent, "--reps", "0", f"tracking.uri={uri}"], expect=2)
    assert "--reps must be >= 1" in proc.stderr


def test_protocol_notes_say_how_scores_were_measured() -> None:
    from ife_platform.report import RunRow, protocol_notes

    def row(cap: int | None, cut: int | None) -> RunRow:
        r = RunRow("r", "train", "pong", 0, {})
        r.cap_frames, r.truncated = cap, cut
        return r

    assert protocol_notes([row(108_000, 0), row(108_000, 0)]) == []
    (note,) = protocol_notes([row(108_000, 0), row(40_000, 0)])
    assert "different caps (40,000 frames, 108,000 frames)" in note
    assert protocol_notes([row(18_000, 3), row(18_000, 0)]) == [
        "evaluation games were capped at 18,000 frames (the standard: 108,000)",
        "3 evaluation games in 1 runs were ended by the cap, not by the game: their scores are "
        "of partial games",
    ]
    notes = protocol_notes([row(None, None)])
    assert notes == [
        "1 runs carry no record of their evaluation cap or truncations (evaluated before the "
        "evaluation protocol was fixed, or exported without them): re-evaluate them with "
        "ife evaluate"
    ]


def test_score_prefix_prefers_an_evaluation_under_the_current_protocol() -> None:
    from ife_platform.report import score_prefix

    new = {"eval/return_mean": 1.0, "eval/cap_frames": 108_000.0}
    old = {"eval/return_mean": 1.0}
    later = {**old, "evaluate/return_mean": 2.0, "evaluate/cap_frames": 108_000.0}
    assert score_prefix(new) == "eval/"
    assert score_prefix(old) == "eval/"  # (and the report says it predates the protocol)
    assert score_prefix(later) == "evaluate/"
    assert score_prefix({**new, **later}) == "eval/"  # its own final evaluation is current
    assert score_prefix({}) is None


def test_a_reports_run_record_stands_in_for_its_store(tmp_path: Path) -> None:
    """The store stays on the machine that trained; a report's runs.json travels instead."""
    from ife_platform.report import load_rows, save_rows

    uri, parent = _store(tmp_path)
    first = report([parent], tracking_uri=uri, output_dir=str(tmp_path / "out"), reps=200)
    record = first.folder / "runs.json"
    assert record in first.files
    (tmp_path / "mlflow.db").rename(tmp_path / "gone.db")  # the store no longer exists
    # no store is opened for records: an unreachable server would fail before any work
    again = report(
        [str(first.folder)],
        tracking_uri="http://127.0.0.1:9",
        output_dir=str(tmp_path / "out2"),
        reps=200,
    )
    assert again.games == first.games
    for method, table in first.aggregates.items():
        for metric, ci in table.items():
            assert again.aggregates[method][metric] == pytest.approx(ci)
    assert again.notes == [n for n in first.notes if "trial 99" not in n]  # (a store note)
    row = next(r for r in again.rows if (r.game, r.seed, r.method) == ("alien", 1, "ife"))
    assert (row.truncated, row.cap_frames, row.evaluation) == (2, 108_000, "eval")
    assert row.params["env.protocol"] == "atari100k" and row.explain["explain/lift"] == 3.0

    # records and run ids mix; a run named twice (here: in two records) is counted once
    (tmp_path / "gone.db").rename(tmp_path / "mlflow.db")
    extra = mlflow.MlflowClient(uri)
    exp = extra.get_run(parent).info.experiment_id
    new = extra.create_run(exp).info.run_id
    params = {"env.game": "alien", "seed": 3, "model.extractor": "ife"}
    params.update({"agent.name": "rainbow_der", "env.protocol": "atari100k"})
    for k, v in {**params, "train.total_steps": 100_000}.items():
        extra.log_param(new, k, v)
    for k, v in {
        "eval/return_mean": 1100.0,
        "eval/cap_frames": 108_000,
        "eval/truncated": 0,
    }.items():
        extra.log_metric(new, k, v)
    extra.set_terminated(new)
    mixed = report(
        [str(record), str(record), new], tracking_uri=uri, output_dir=str(tmp_path), reps=50
    )
    assert len(mixed.rows) == len(SCORES) + 1
    alien_ife = next(g for g in mixed.games if (g["game"], g["method"]) == ("alien", "ife"))
    assert alien_ife["score_mean"] == pytest.approx((700 + 900 + 800 + 1100) / 4)

    # save_rows(merge=True) replaces rows by run id and keeps the rest
    path = tmp_path / "merged.json"
    rows = load_rows(record)
    save_rows(rows[:3], path)
    changed = load_rows(record)[2]
    changed.score = 1.0
    save_rows([changed, *rows[3:5]], path, merge=True)
    back = {r.run_id: r for r in load_rows(path)}
    assert len(back) == 5 and back[changed.run_id].score == 1.0


def test_bad_run_records_are_refused(tmp_path: Path) -> None:
    import json

    def write(name: str, text: str) -> str:
        (tmp_path / name).write_text(text)
        return str(tmp_path / name)

    good = {"run_id": "a", "kind": "train", "game": "pong", "seed": 0, "params": {}}
    cases = {
        str(tmp_path / "missing.json"): "no run record at",
        str(tmp_path): "no run record at",  # a folder without runs.json
        write("corrupt.json", '{"format": "ife-report-runs/1", "runs": [{'): "not a readable",
        write("other.json", json.dumps({"runs": [good]})): "not a run record of format",
        write("empty.json", json.dumps({"format": "ife-report-runs/1", "runs": []})): "no runs",
        write(
            "typed.json",
            json.dumps({"format": "ife-report-runs/1", "runs": [{**good, "seed": "0"}]}),
        ): "missing or mistyped ['seed']",
        write(
            "unknown.json",
            json.dumps({"format": "ife-report-runs/1", "runs": [{**good, "sore": 1.0}]}),
        ): "unknown keys ['sore']",
    }
    for ref, message in cases.items():
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            report([ref], tracking_uri=None, output_dir=str(tmp_path), reps=10)
    proc = run_ife(tmp_path, ["report", str(tmp_path / "missing.json")], expect=2)
    assert "no run record at" in proc.stderr


def test_records_rebuilt_from_an_exported_runs_csv(tmp_path: Path) -> None:
    """scripts/der_parity.py record-from-csv: runs whose store is gone enter ife report."""
    import subprocess
    import sys

    from ife_platform.report import load_rows

    fields = "run_name,run_id,game,seed,extractor,weight_norm,alpha,blank,total_steps,"
    fields += "eval_return_mean,eval_return_std,eval_episodes,wall_minutes"
    lines = [
        "der_alien_s1,r1,alien,1,der_cnn,batch,0.5,True,100000,800.0,10.0,30,50.0",
        "der_alien_s2,r2,alien,2,der_cnn,batch,0.5,True,100000,600.0,10.0,30,50.0",
    ]
    (tmp_path / "runs.csv").write_text("\n".join([fields, *lines]) + "\n")
    script = Path(__file__).resolve().parents[1] / "scripts" / "der_parity.py"
    cmd = [sys.executable, str(script), "record-from-csv", "--data", str(tmp_path)]
    subprocess.run([*cmd, "der_alien_s1", "der_alien_s2"], check=True, capture_output=True)
    (row,) = load_rows(tmp_path / "der_alien_s1.run.json")
    assert (row.run_id, row.game, row.seed, row.score, row.episodes) == ("r1", "alien", 1, 800, 30)
    assert row.params["replay.blank_before_life_start"] == "True"
    assert (row.cap_frames, row.truncated) == (None, None)  # not in the export: unknown
    refs = [str(tmp_path / f"der_alien_s{s}.run.json") for s in (1, 2)]
    result = report(refs, tracking_uri=None, output_dir=str(tmp_path), reps=20)
    (game,) = result.games
    assert game["score_mean"] == pytest.approx(700.0) and game["der_100k"] == pytest.approx(739.9)
    assert game["hns_mean"] == pytest.approx(hns("alien", 700.0))
    assert any("2 runs carry no record of their evaluation cap" in n for n in result.notes)
    proc = subprocess.run([*cmd, "der_alien_s9"], capture_output=True, text=True)
    assert proc.returncode != 0 and "not in" in proc.stderr and "der_alien_s9" in proc.stderr


def test_export_names_a_sweep_trial_by_its_file_stem(tmp_path: Path) -> None:
    """scripts/der_parity.py export --as: a trial (run name with '/' and '=') gets its files."""
    import subprocess
    import sys

    from ife_platform.report import load_rows

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("ife")
    name = "der-parity-extractors/game=alien-seed=1-extractor=ife"
    run = client.create_run(exp, run_name=name).info.run_id
    params = {"env.game": "alien", "seed": 1, "model.extractor": "ife", "agent.name": "rainbow_der"}
    for k, v in {**params, "env.protocol": "atari100k", "train.total_steps": 100_000}.items():
        client.log_param(run, k, v)
    for step, ret in [(900, 210.0), (2_400, 340.0)]:
        client.log_metric(run, "episode/return", ret, step=step)
    client.log_metric(run, "train/loss", 3.5, step=2_000)
    client.log_metric(run, "eval/return_mean", 812.5)
    client.log_metric(run, "eval/return_std", 40.0)
    client.log_metric(run, "eval/episodes", 30)
    client.set_terminated(run)
    script = Path(__file__).resolve().parents[1] / "scripts" / "der_parity.py"
    cmd = [sys.executable, str(script), "export", "--tracking-uri", uri, "--out", str(tmp_path)]
    proc = subprocess.run([*cmd, name], capture_output=True, text=True)
    assert proc.returncode != 0 and "use --as" in proc.stderr  # the name is no file name
    assert not (tmp_path / "runs.csv").exists()  # nothing written
    subprocess.run([*cmd, name, "--as", "ife_alien_s1"], check=True, capture_output=True)
    curve = np.loadtxt(tmp_path / "ife_alien_s1.csv", delimiter=",", skiprows=1, ndmin=2)
    assert curve.tolist() == [[900.0, 210.0], [2_400.0, 340.0]]
    with (tmp_path / "runs.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert (row["run_name"], row["run_id"], row["extractor"]) == ("ife_alien_s1", run, "ife")
    assert (row["eval_return_mean"], row["eval_episodes"]) == ("812.5", "30")
    (record,) = load_rows(tmp_path / "ife_alien_s1.run.json")
    assert (record.run_id, record.game, record.seed, record.score) == (run, "alien", 1, 812.5)

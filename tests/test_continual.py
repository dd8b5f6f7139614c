"""Continual sequences end to end: real games, parent + child MLflow runs, stop and resume."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
from pathlib import Path

import pytest
import torch
from conftest import TINY, tracking_args
from mlflow.tracking import MlflowClient

from ife_platform.cli import main
from ife_platform.config import ConfigError, compose
from ife_platform.evaluation import EvaluationStopped
from ife_platform.runs import RunInterrupted
from ife_platform.sequences import RegistryContinual, SequenceRunner, preflight

pytestmark = pytest.mark.slow

SEQ = [
    "sequence.games=[pong,boxing]",
    "sequence.steps_per_task=240",
    "sequence.eval_every=120",
    "sequence.eval_episodes=1",
    "sequence.eval_max_steps=60",
    "sequence.alignment_steps=20",
    "model.extractor=ife",
    "model.width=1",
    "env.full_action_space=true",
    "tracking.video=false",
]


class StopAfterFirstTask(RegistryContinual):
    """Trains task 0, then 'crashes' when task 1 starts (as a killed process would)."""

    calls = 0

    def train_task(self, cfg, **kwargs):  # noqa: D102
        StopAfterFirstTask.calls += 1
        if StopAfterFirstTask.calls == 2:
            raise KeyboardInterrupt("stopped between tasks")
        return super().train_task(cfg, **kwargs)


def test_two_task_sequence_stops_and_resumes_without_retraining(workdir: Path) -> None:
    # as a sweep's trial: the sequence run is nested under the sweep and is the trial's run
    sweep = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}").create_run("0").info.run_id
    trial = [
        f"tracking.parent_run={sweep}",
        f'tracking.tags={{ife.sweep.trial: "0", ife.sweep.id: {sweep}, note: mine}}',
    ]
    args = [*TINY, *tracking_args(workdir), *SEQ, "sequence.mode=freeze_hue", *trial]
    cfg = compose(args)
    with pytest.raises(KeyboardInterrupt):
        SequenceRunner(cfg, agent=StopAfterFirstTask()).run()
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ife").experiment_id
    (parent,) = client.search_runs([exp], "tags.`ife.kind` = 'sequence'")
    pid = parent.info.run_id
    assert parent.info.status == "KILLED"  # stopped (Ctrl-C), resumable; an error is FAILED
    assert parent.data.tags["ife.process"]  # owned: a kill -9 would be found by the next run
    children = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{pid}'")
    assert [c.data.tags["ife.task_index"] for c in children] == ["0"]
    first_child = children[0].info.run_id
    assert parent.data.tags["mlflow.parentRunId"] == sweep
    assert parent.data.tags["ife.sweep.trial"] == "0" and parent.data.tags["note"] == "mine"
    # the task runs keep the user's tags but not the sweep's: one run per trial
    assert children[0].data.tags["note"] == "mine"
    assert not any(k.startswith("ife.sweep.") for k in children[0].data.tags)

    # resume through the CLI: only task 1 trains
    assert main(["continual", *args, f"resume={pid}"]) == 0
    children = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{pid}'")
    assert sorted(c.data.tags["ife.task_index"] for c in children) == ["0", "1"]
    assert first_child in {c.info.run_id for c in children}
    parent = client.get_run(pid)
    assert parent.info.status == "FINISHED"
    assert "continual/average_performance" in parent.data.metrics
    progress = json.loads((workdir / "out" / pid / "progress.json").read_text())
    assert [c["task"] for c in progress["completed"]] == [0, 1]
    assert len(progress["raw_R"]) == 3  # before, after pong, after boxing
    # freeze_hue: HUE after task 1 is bit-identical to HUE after task 0; AFE and head trained
    d0, d1 = (c["group_digests"] for c in progress["completed"])
    assert d0["hue"] == d1["hue"] and d0["afe"] != d1["afe"] and d0["head"] != d1["head"]
    assert progress["switch_reports"]["1"]["frozen_groups"] == ["hue"]

    # ife report over the "sweep": its trial is the sequence run, reported by its CL metrics
    from ife_platform.report import report

    client.set_tag(sweep, "ife.kind", "sweep")
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    result = report([sweep], tracking_uri=uri, output_dir=str(workdir / "out"), reps=50)
    assert [(r.kind, r.run_id) for r in result.rows] == [("sequence", pid)]
    (method,) = result.continual
    assert method == "ife freeze_hue"  # the extractor, and the mode
    want = parent.data.metrics["continual/average_performance"]
    assert result.continual[method]["average_performance"]["mean"] == pytest.approx(want)
    assert "## Continual learning" in result.markdown and "## Per game" not in result.markdown
    # every game evaluated at every point: before, mid task, end of task, for both games
    assert progress["curves"]["steps"] == [0, 120, 240, 360, 480]
    assert all(len(v) == 5 for v in progress["curves"]["returns"].values())
    # mask alignment on both games (built-in boxes for pong and boxing) after every task
    assert all(v is not None for row in progress["alignment"] for v in row)
    arts = {a.path for a in client.list_artifacts(pid, "report")}
    assert {"report/metrics.json", "report/R.png", "report/alignment_lift.png"} <= arts
    snaps = {a.path for a in client.list_artifacts(pid, "snapshots")}
    assert snaps == {"snapshots/task0_pong.pt", "snapshots/task1_boxing.pt"}
    # the report rebuilds from logged data alone (no local files)
    (workdir / "out" / pid / "progress.json").unlink()
    assert main(["continual-report", pid, *tracking_args(workdir)]) == 0


class SignalDuringEvaluation(RegistryContinual):
    """Sends this process SIGTERM 0.2 s into the first evaluation made during training."""

    def __init__(self) -> None:
        self.training = False
        self.fired = False
        self.abandoned = 0  # evaluations that ended in EvaluationStopped

    def train_task(self, cfg, **kwargs):  # noqa: D102
        self.training = True
        try:
            return super().train_task(cfg, **kwargs)
        finally:
            self.training = False

    def evaluate(self, network, game, cfg, should_stop=None):  # noqa: D102
        if self.training and not self.fired:
            self.fired = True
            threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
        try:
            return super().evaluate(network, game, cfg, should_stop)
        except EvaluationStopped:
            self.abandoned += 1
            raise


def test_sigterm_during_a_sequence_evaluation_abandons_it_and_the_task_resumes(
    workdir: Path,
) -> None:
    # Before, the evaluation of every game played on to its end after the signal (here 2
    # games of up to 1,500 steps), was logged, and only then did the task stop.
    args = [
        *TINY,
        *tracking_args(workdir),
        *SEQ,
        "sequence.games=[pong]",
        "sequence.eval_episodes=2",
        "sequence.eval_max_steps=1500",
        "sequence.alignment_steps=0",
    ]
    agent = SignalDuringEvaluation()
    with pytest.raises(RunInterrupted):
        SequenceRunner(compose(args), agent=agent).run()
    assert agent.fired and agent.abandoned == 1
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ife").experiment_id
    (parent,) = client.search_runs([exp], "tags.`ife.kind` = 'sequence'")
    assert parent.info.status == "KILLED"
    (task,) = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert task.info.status == "KILLED"
    assert client.get_metric_history(task.info.run_id, "eval/pong/return_mean") == []
    # the resumed sequence trains the task again, evaluations included, and finishes
    SequenceRunner(compose(args)).run(resume=parent.info.run_id)
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    progress = json.loads((workdir / "out" / parent.info.run_id / "progress.json").read_text())
    assert progress["curves"]["steps"] == [0, 120, 240]


def test_sequence_config_errors_fail_before_work(workdir: Path, capsys) -> None:
    base = [*tracking_args(workdir), "env.full_action_space=true"]
    with pytest.raises(ConfigError, match="freeze_hue"):
        preflight(compose([*base, "sequence.games=[pong]", "sequence.mode=frezee_hue"]))
    with pytest.raises(ConfigError, match="nature_cnn"):
        preflight(
            compose(
                [
                    *base,
                    "sequence.games=[pong]",
                    "sequence.mode=freeze_hue",
                    "model.extractor=nature_cnn",
                ]
            )
        )
    with pytest.raises(ConfigError, match="full_action_space"):
        preflight(compose(["sequence.games=[pong,boxing]", "env.full_action_space=false"]))
    with pytest.raises(ConfigError, match="no games"):
        preflight(compose(base))
    assert main(["continual", "sequence.games=[pong,boxng]", *base]) == 2
    assert "boxing" in capsys.readouterr().err
    assert main(["continual", "demo3", "sequence.mode=reset_hue+freeze_hue", *base]) == 2
    assert main(["continual-report", "no-such-run", *base]) == 2
    assert "not a sequence run" in capsys.readouterr().err


def test_per_game_heads_kept_replay_and_scratch_references(workdir: Path) -> None:
    args = [
        *TINY,
        *tracking_args(workdir),
        *SEQ,
        "sequence.mode=reset_afe",
        "sequence.head=per_game",
        "sequence.replay=keep",
        "sequence.eval_every=100000",
        "sequence.alignment_steps=0",
        "sequence.reference=true",
    ]
    report = SequenceRunner(compose(args)).run()
    assert report["tasks_completed"] == 2 and len(report["R"]) == 3
    # the scratch references ran (one child run per game) and give forward transfer
    assert len(report["forward_transfer"]) == 2
    assert all(math.isfinite(v) for v in report["auc_reference"])
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ife").experiment_id
    (parent,) = client.search_runs([exp], "tags.`ife.kind` = 'sequence'")
    pid = parent.info.run_id
    progress = json.loads((workdir / "out" / pid / "progress.json").read_text())
    assert progress["switch_reports"]["1"]["reset_groups"] == ["afe"]
    snap = torch.load(progress["completed"][1]["snapshot"], weights_only=True)
    assert {k.split(".")[0] for k in snap["heads"]} == {"pong", "boxing"}
    # the pong head did not train on boxing; the boxing head did
    first = torch.load(progress["completed"][0]["snapshot"], weights_only=True)
    for key, value in first["heads"].items():
        if key.startswith("pong."):
            assert torch.equal(value, snap["heads"][key]), key
    assert any(
        not torch.equal(first["heads"][k], v) for k, v in snap["heads"].items() if "boxing" in k
    )
    # the kept buffer: task 1 starts learning with task 0's transitions already stored
    refs = client.search_runs([exp], "tags.`ife.kind` = 'sequence_reference'")
    assert sorted(r.data.tags["ife.game"] for r in refs) == ["boxing", "pong"]
    (child1,) = client.search_runs(
        [exp], f"tags.`mlflow.parentRunId` = '{pid}' and tags.`ife.task_index` = '1'"
    )
    sizes = [m.value for m in client.get_metric_history(child1.info.run_id, "train/replay_size")]
    assert sizes and sizes[0] > 240


@pytest.mark.parametrize(
    ("agent", "mode", "frozen"),
    [("a3c_lstm", "freeze_hue", "hue"), ("s3ta", "freeze_extractor", "extractor")],
)
def test_actor_critic_runs_a_sequence_with_a_frozen_encoder(
    workdir: Path, agent: str, mode: str, frozen: str
) -> None:
    args = [
        f"agent={agent}",
        *tracking_args(workdir),
        "sequence.games=[pong,boxing]",
        "sequence.steps_per_task=160",
        "sequence.eval_every=80",
        "sequence.eval_episodes=1",
        "sequence.eval_max_steps=30",
        "sequence.alignment_steps=10",
        f"sequence.mode={mode}",
        *(["model.width=1"] if agent == "a3c_lstm" else []),
        "env.num_envs=2",
        "agent.actors=2",
        "trainer.steps_per_epoch=160",
        "tracking.video=false",
        "tracking.eval_episodes=1",
        "tracking.eval_max_steps=30",
        "trainer.progress_bar=false",
    ]
    assert main(["continual", *args]) == 0
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ife").experiment_id
    (parent,) = client.search_runs([exp], "tags.`ife.kind` = 'sequence'")
    progress = json.loads((workdir / "out" / parent.info.run_id / "progress.json").read_text())
    d0, d1 = (c["group_digests"] for c in progress["completed"])
    # the encoder frozen after task 0 (IFE's HUE; S3TA's vision core, queries and answer
    # processor); the policy LSTM and its heads (the "head" group) trained on
    assert d0[frozen] == d1[frozen] and d0["head"] != d1["head"]
    assert len(progress["raw_R"]) == 3 and progress["curves"]["steps"] == [0, 80, 160, 240, 320]
    # mask-object lift after each task on both games (Pong and Boxing have object boxes)
    assert all(v is not None for row in progress["alignment"] for v in row)
    # 30-step evaluation games are cut short of the 108k-frame cap, and the run says so
    cap = progress["eval_cap"]
    assert cap["short"] and cap["cap_frames"] == 120 and cap["max_episode_frames"] == 108_000
    assert cap["games"] == 10 and cap["truncated"] == 10  # 5 points x 2 games, none finished
    assert "(30 agent steps" in parent.data.tags["ife.eval_cap"]
    report = json.loads(
        (workdir / "out" / parent.info.run_id / "report" / "metrics.json").read_text()
    )
    assert any("10 of 10 evaluation games were cut short" in n for n in report["notes"])
    history = client.get_metric_history(parent.info.run_id, "eval/pong/truncated")
    assert [m.value for m in history] == [1.0, 1.0, 1.0]  # rows 0..2 of R
    with pytest.raises(ConfigError, match="per_game"):
        preflight(compose([f"agent={agent}", "sequence.games=[pong]", "sequence.head=per_game"]))

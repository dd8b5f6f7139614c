"""``ife sweep``: grid expansion, validation before work, resources, resume decisions, and real
sweeps (a local process pool with a failing trial and its resume; a local Ray instance)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from conftest import run_ife, subprocess_env

from ife_platform.config import ConfigError, compose
from ife_platform.sweep import (
    SWEEP_TAG,
    TRIAL_TAG,
    SweepPlan,
    Trial,
    TrialState,
    _action,
    excluded,
    expand_grid,
    flatten_exclusions,
    flatten_grid,
    format_value,
    gpu_slot,
    local_slots,
    plan_sweep,
    status_table,
)

# The smallest real DER-profile training: 120 agent steps, 60 updates, one short evaluation.
MICRO = [
    "demo",
    "model.extractor=der_cnn",
    "train.total_steps=120",
    "agent.learning_starts=60",
    "trainer.steps_per_epoch=60",
    "replay.capacity=1000",
    "agent.batch_size=8",
    "agent.n_step=3",
    "agent.target_update_period=40",
    "tracking.eval_episodes=1",
    "tracking.eval_max_steps=50",
    "tracking.video=false",
    "trainer.progress_bar=false",
]


def _tracking(tmp: Path) -> list[str]:
    return [f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}", f"tracking.output_dir={tmp / 'out'}"]


# ---------------------------------------------------------------------------------------------
# Expansion and validation (pure)
# ---------------------------------------------------------------------------------------------


def test_flatten_grid_takes_nested_and_dotted_axes() -> None:
    nested = {"env": {"game": ["pong", "boxing"]}, "seed": [0, 1]}
    dotted = {"env.game": ["pong", "boxing"], "seed": [0, 1]}
    want = {"env.game": ["pong", "boxing"], "seed": [0, 1]}
    assert flatten_grid(nested) == want
    assert flatten_grid(dotted) == want
    with pytest.raises(ConfigError, match="sweep.grid.seed must be a non-empty list"):
        flatten_grid({"seed": 3})
    with pytest.raises(ConfigError, match="non-empty list"):
        flatten_grid({"seed": []})


def test_expand_grid_is_the_product_with_the_first_axis_slowest() -> None:
    trials = expand_grid({"a": [1, 2], "b": ["x", "y", "z"]})
    assert len(trials) == 6
    assert trials[:4] == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 1, "b": "z"},
        {"a": 2, "b": "x"},
    ]
    assert expand_grid({}) == [{}]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("ms_pacman", "ms_pacman"),
        ("1", '"1"'),  # a string that YAML would read as an int keeps its quotes
        ("null", '"null"'),
        (None, "null"),
        (True, "true"),
        (3, "3"),
        (1e-4, "0.0001"),
        (["pong", "boxing"], '["pong", "boxing"]'),
    ],
)
def test_format_value_round_trips_through_compose(value: object, text: str) -> None:
    assert format_value(value) == text
    cfg = compose([f"tracking.run_name={format_value(str(value))}"])
    assert cfg.tracking.run_name == str(value)


def test_plan_validates_every_trial_before_anything_runs(tmp_path: Path) -> None:
    cfg, plan = plan_sweep(
        [*MICRO, "sweep.grid.env.game=[pong,boxing]", "sweep.grid.seed=[0,1,2]", "sweep.name=g"]
    )
    assert [t.name for t in plan.trials][:2] == ["game=pong-seed=0", "game=pong-seed=1"]
    assert len(plan.trials) == 6 and plan.name == "g" and plan.command == "train"
    assert plan.trials[4].words == ["env.game=boxing", "seed=1"]
    assert not any(w.startswith("sweep.") for w in plan.base)  # trials never see sweep keys
    # one bad value anywhere in the grid stops the sweep before it starts, naming the trial
    with pytest.raises(ConfigError, match=r"trial 1 \(game=pongg\).*unknown game 'pongg'"):
        plan_sweep([*MICRO, "sweep.grid.env.game=[pong,pongg]"])
    with pytest.raises(ConfigError, match="cannot be an axis"):
        plan_sweep([*MICRO, "sweep.grid.sweep.workers=[1,2]"])
    with pytest.raises(ConfigError, match="sweep.backend must be one of local, ray"):
        plan_sweep([*MICRO, "sweep.backend=slurm"])


def test_exclusions_leave_grid_points_out_and_keep_trial_numbers() -> None:
    axes = {"env.game": ["pong", "boxing"], "seed": [0, 1], "model.extractor": ["ife", "der_cnn"]}
    rules = flatten_exclusions(
        [{"env": {"game": "pong"}, "seed": 1}, {"model.extractor": "der_cnn", "seed": 0}], axes
    )
    assert rules == [{"env.game": "pong", "seed": 1}, {"model.extractor": "der_cnn", "seed": 0}]
    kept = [v for v in expand_grid(axes) if not excluded(v, rules)]
    assert [(v["env.game"], v["seed"], v["model.extractor"]) for v in kept] == [
        ("pong", 0, "ife"),
        ("boxing", 0, "ife"),
        ("boxing", 1, "ife"),
        ("boxing", 1, "der_cnn"),
    ]
    _, plan = plan_sweep(
        [*MICRO, "sweep.grid.env.game=[pong,boxing]", "sweep.grid.seed=[0,1,2]"]
        + ["sweep.exclude=[{env.game: pong, seed: 1}, {seed: 2}]"]
    )
    assert [(t.index, t.name) for t in plan.trials] == [
        (0, "game=pong-seed=0"),
        (3, "game=boxing-seed=0"),
        (4, "game=boxing-seed=1"),
    ]
    for bad, msg in [
        ("[{env.game: tennis}]", r"env.game=tennis is not on its axis \['pong', 'boxing'\]"),
        ("[{agent: a3c_lstm}]", "agent is not an axis of the grid"),
        ("[{env.game:pong}]", "a space after the colon"),
        ("[seed]", "must map axis keys to values"),
        ("[{env.game: pong}, {env.game: boxing}]", "leaves out every trial"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            plan_sweep([*MICRO, "sweep.grid.env.game=[pong,boxing]", f"sweep.exclude={bad}"])


def test_plan_mixes_agent_families_with_their_own_keys() -> None:
    _, plan = plan_sweep(["sweep.grid.agent=[rainbow_der,a3c_lstm]", "model.extractor=ife"])
    assert [t.family for t in plan.trials] == ["rainbow", "actor_critic"]
    assert plan.trials[1].words == ["agent=a3c_lstm"]


def test_plan_json_round_trip() -> None:
    plan = SweepPlan("s", "train", ["demo"], [Trial(0, "seed=0", {"seed": 0}, ["seed=0"])], True)
    assert SweepPlan.from_json(plan.to_json()) == plan


@pytest.mark.parametrize(
    ("cores", "workers", "cpus", "want"),
    [
        (2, 0, 0, (1, 2)),
        (16, 0, 0, (8, 2)),
        (16, 3, 0, (3, 5)),
        (16, 0, 4, (4, 4)),
        (1, 0, 0, (1, 1)),
    ],
)
def test_local_slots_share_the_machine(cores: int, workers: int, cpus: int, want: tuple) -> None:
    assert local_slots(cores, workers, cpus) == want


def test_gpu_slots_hand_out_whole_devices_round_robin() -> None:
    assert gpu_slot(0, 2, 4) == "0,1"
    assert gpu_slot(1, 2, 4) == "2,3"
    assert gpu_slot(2, 2, 4) == "0,1"
    assert gpu_slot(3, 0.5, 2) == "1"
    assert gpu_slot(0, 1, 0) is None and gpu_slot(0, 0, 8) is None


def test_status_table_counts_and_eta() -> None:
    states = [TrialState(Trial(i, f"seed={i}", {}, [])) for i in range(5)]
    states[0].status, states[0].seconds = "finished", 100.0
    states[1].status, states[1].seconds = "finished", 300.0
    states[2].status, states[2].started = "running", 1000.0
    states[3].status, states[3].note = "failed", "exit code 1"
    text = status_table(states, workers=2, now=1060.0)
    # 1 running + 1 pending left, mean 200 s a trial, 2 at once: 200 s
    assert text.splitlines()[0] == (
        "trials: 2 finished, 1 running, 1 failed, 1 pending of 5; ETA 0:03:20"
    )
    assert "running  #2   seed=2  (train, 0:01:00)" in text
    assert "FAILED   #3   seed=3  exit code 1" in text
    assert "ETA unknown" in status_table(states[2:], workers=2, now=0.0)


def test_resume_decision_per_trial_status(tmp_path: Path) -> None:
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    exp = client.create_experiment("e")
    runs = {}
    for status in ("FINISHED", "KILLED", "FAILED"):
        run = client.create_run(exp)
        client.set_terminated(run.info.run_id, status=status)
        runs[status] = client.get_run(run.info.run_id)
    assert _action(None, explain=False) == "train"
    assert _action(runs["FINISHED"], explain=False) == "skip"
    assert _action(runs["FINISHED"], explain=True) == "explain"  # not explained yet
    client.log_metric(runs["FINISHED"].info.run_id, "explain/lift", 1.5)
    assert _action(client.get_run(runs["FINISHED"].info.run_id), explain=True) == "skip"
    assert _action(runs["KILLED"], explain=False) == "resume"  # continue from its checkpoint
    assert _action(runs["FAILED"], explain=False) == "train"  # from scratch
    running = client.get_run(client.create_run(exp).info.run_id)  # e.g. a -9 sweep's orphan
    assert _action(running, explain=False) == "wait"  # never started twice


# ---------------------------------------------------------------------------------------------
# Real sweeps
# ---------------------------------------------------------------------------------------------


def _children(uri: str, parent: str) -> list:
    client = mlflow.MlflowClient(uri)
    exp = client.get_run(parent).info.experiment_id
    return client.search_runs(
        [exp], f"tags.{SWEEP_TAG} = '{parent}'", order_by=["attributes.start_time ASC"]
    )


def _parent_of(stdout: str) -> str:
    for line in stdout.splitlines():
        if line.startswith("sweep run "):
            return line.split()[2]
    raise AssertionError(f"no sweep run id in:\n{stdout}")


@pytest.mark.slow
def test_local_sweep_records_a_failed_trial_goes_on_and_resumes(workdir: Path) -> None:
    """Two trials, one of which diverges (lr 1e30: a non-finite loss stops it, exit 1); a
    third grid point is excluded, so the trials are numbers 0 and 2."""
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    args = [
        "sweep",
        *MICRO,
        "sweep.grid.optim.lr=[0.0001,0.5,1.0e+30]",
        "sweep.exclude=[{optim.lr: 0.5}]",
        "sweep.name=lr",
        "seed=3",
    ]
    proc = run_ife(workdir, [*args, *_tracking(workdir)], expect=101)  # 100 + 1 failed trial
    parent = _parent_of(proc.stdout)
    assert "1 trial(s) failed" in proc.stderr and f"resume={parent}" in proc.stderr
    client = mlflow.MlflowClient(uri)
    assert client.get_run(parent).info.status == "FAILED"
    assert client.get_run(parent).data.tags["ife.kind"] == "sweep"
    kids = _children(uri, parent)
    by_trial = {r.data.tags[TRIAL_TAG]: r for r in kids}
    assert {r.data.tags["mlflow.parentRunId"] for r in kids} == {parent}
    assert by_trial["0"].info.status == "FINISHED"
    assert by_trial["0"].data.params["optim.lr"] == "0.0001"
    # local trials take their share of the cores through the machine's registry (0)
    assert by_trial["0"].data.params["trainer.threads"] == "0"
    assert "eval/return_mean" in by_trial["0"].data.metrics
    assert by_trial["2"].info.status == "FAILED"
    assert by_trial["2"].data.tags["ife.sweep.exit_code"] == "1"
    assert by_trial["2"].data.tags["mlflow.runName"] == "lr/lr=1e+30"
    # the failed trial's log is an artifact of its run, and says why it failed
    log = client.download_artifacts(by_trial["2"].info.run_id, "sweep/0002.log", str(workdir))
    assert "non-finite" in Path(log).read_text()
    plan = json.loads(
        Path(client.download_artifacts(parent, "sweep.json", str(workdir))).read_text()
    )
    assert [t["words"] for t in plan["trials"]] == [["optim.lr=0.0001"], ["optim.lr=1e+30"]]
    assert [t["index"] for t in plan["trials"]] == [0, 2]

    # resume: the finished trial is skipped, the failed one runs again from scratch
    proc = run_ife(workdir, ["sweep", f"resume={parent}", *_tracking(workdir)], expect=101)
    assert "(1 finished before)" in proc.stdout
    kids = _children(uri, parent)
    assert [r.data.tags[TRIAL_TAG] for r in kids] == ["0", "2", "2"]
    assert [r.info.status for r in kids] == ["FINISHED", "FAILED", "FAILED"]
    # another sweep's command with this id is refused before anything runs
    other = run_ife(
        workdir,
        ["sweep", *MICRO, "sweep.grid.seed=[7]", f"resume={parent}", *_tracking(workdir)],
        expect=2,
    )
    assert "describes another sweep" in other.stderr
    assert len(_children(uri, parent)) == 3


@pytest.mark.slow
def test_a_stopped_sweep_resumes_its_killed_trial_from_the_checkpoint(workdir: Path) -> None:
    """SIGTERM to the sweep: the trial checkpoints (KILLED); the resumed sweep continues that
    same run from its checkpoint to the end of its budget."""
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    explain = [  # ife explain on the finished trial, as small as it goes
        "sweep.explain=true", "explain.max_steps=40", "explain.analysis_frames=4",
        "explain.leakage_frames=1", "explain.deletion_steps=2", "explain.random_orders=1",
        "explain.video=false",
    ]  # fmt: skip
    args = [
        "sweep", *MICRO, "train.total_steps=300", "sweep.grid.seed=[0]", *explain,
        *_tracking(workdir),
    ]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "ife_platform.cli", *args],
        cwd=workdir, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    ckpts: list[Path] = []
    deadline = time.time() + 600
    while not ckpts and time.time() < deadline and proc.poll() is None:
        time.sleep(1)  # until the trial has checkpointed once (every 60 steps)
        ckpts = list((workdir / "out").glob("*/checkpoints/step-*.ckpt"))
    assert ckpts, "the trial never checkpointed"
    proc.send_signal(15)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + 15, err[-2000:]
    parent = _parent_of(out)
    assert "ife sweep resume=" in err
    client = mlflow.MlflowClient(uri)
    assert client.get_run(parent).info.status == "KILLED"
    (kid,) = _children(uri, parent)
    assert kid.info.status == "KILLED"

    done = run_ife(workdir, ["sweep", f"resume={parent}", *_tracking(workdir)])
    assert client.get_run(parent).info.status == "FINISHED"
    (again,) = _children(uri, parent)  # the same run, not a new one
    assert again.info.run_id == kid.info.run_id and again.info.status == "FINISHED"
    assert client.get_metric_history(again.info.run_id, "eval/return_mean")[-1].step >= 300
    log = Path(workdir / "out" / parent / "trials" / "0000.log").read_text()
    assert f"resume={kid.info.run_id}" in log and "Restored all states" in log
    assert "trial #0 seed=0: trained; ife explain next" in done.stdout
    assert "trial #0 seed=0: finished" in done.stdout
    explained = client.get_run(kid.info.run_id).data.metrics
    assert any(k.startswith("explain/") for k in explained)  # logged to the trial's run


@pytest.mark.slow
def test_ray_backend_runs_trials_on_a_local_ray_instance(workdir: Path) -> None:
    pytest.importorskip("ray")
    ray_bin = Path(sys.executable).with_name("ray")
    assert ray_bin.exists()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**subprocess_env(), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    tmp = Path(f"/tmp/ray-ife-{os.getpid()}")  # Ray's socket paths must stay short
    start = [
        str(ray_bin), "start", "--head", f"--port={port}", "--num-cpus=2",
        "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={tmp}",
    ]  # fmt: skip
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=180)
    try:
        uri = f"sqlite:///{workdir / 'mlflow.db'}"
        args = [
            "sweep", *MICRO, "sweep.grid.seed=[0,1]", "sweep.backend=ray",
            f"sweep.address=127.0.0.1:{port}", "sweep.cpus_per_trial=1", *_tracking(workdir),
        ]  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-m", "ife_platform.cli", *args],
            cwd=workdir, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        parent = _parent_of(proc.stdout)
        assert "backend ray" in proc.stdout
        kids = _children(uri, parent)
        assert sorted(r.data.tags[TRIAL_TAG] for r in kids) == ["0", "1"]
        assert all(r.info.status == "FINISHED" for r in kids)
        assert sorted(r.data.params["seed"] for r in kids) == ["0", "1"]
        assert all(r.data.params["trainer.threads"] == "1" for r in kids)
        client = mlflow.MlflowClient(uri)
        assert client.get_run(parent).info.status == "FINISHED"
        # the log came back from the Ray worker and is attached to the trial's run
        names = [a.path for a in client.list_artifacts(kids[0].info.run_id, "sweep")]
        assert names and names[0].endswith(".log")
    finally:
        subprocess.run([str(ray_bin), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)


def test_every_shipped_sweep_preset_plans(roomy_host) -> None:
    """Each preset composes and expands to its documented size; the 12-trial one is planned
    in full (every trial composed and validated), as ``ife sweep`` does before it starts."""
    from ife_platform.config import available_presets
    from ife_platform.sweep import sweep_words

    sizes = {"der_parity": 12, "atari100k_full": 390, "fast_rainbow_gpu": 234, "bf16_parity": 4}
    assert set(available_presets("sweep")) == set(sizes)
    for name, size in sizes.items():
        cfg = compose(sweep_words([name]))
        assert len(expand_grid(flatten_grid(cfg.sweep.grid))) == size, name
    _, plan = plan_sweep(["der_parity"])
    assert len(plan.trials) == 12 and plan.explain
    assert plan.trials[1].name == "game=ms_pacman-seed=1-extractor=cnn_attention"


def test_exit_codes_say_how_the_sweep_ended() -> None:
    from ife_platform.sweep import SweepResult

    def result(*statuses: str, signal: int | None = None) -> SweepResult:
        states = [TrialState(Trial(i, "t", {}, []), status=s) for i, s in enumerate(statuses)]
        return SweepResult("run", "uri", states, stopped_by=signal)

    assert result("finished", "finished").exit_code == 0
    assert result("finished", "failed", "failed").exit_code == 102
    assert result(*["failed"] * 40).exit_code == 127
    assert result("finished", "stopped").exit_code == 3  # a trial still runs elsewhere
    assert result("failed", "stopped").exit_code == 101
    assert result("stopped", "pending", signal=15).exit_code == 143


def test_an_unreachable_ray_address_fails_fast_before_any_run(workdir: Path) -> None:
    pytest.importorskip("ray")
    from ife_platform.sweep import check_ray_address, run_sweep

    with socket.socket() as s:  # a port nothing listens on (bound, then closed)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.time()
    with pytest.raises(ConfigError, match=f"sweep.address=127.0.0.1:{port}: no Ray cluster"):
        run_sweep(
            [*MICRO, "sweep.backend=ray", f"sweep.address=127.0.0.1:{port}", *_tracking(workdir)]
        )
    assert time.time() - start < 60
    with pytest.raises(ConfigError, match="expected auto, HOST:PORT"):
        check_ray_address("ray://nohost")
    check_ray_address(None)
    check_ray_address("auto")
    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []

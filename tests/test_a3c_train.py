"""Actor-critic agents end to end: 2 actor processes on real games, MLflow, masks, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY_ACTOR_CRITIC, run_ife, tracking_args
from ife_platform.tasks.a3c import ActorCriticTask, acting_state_dict, build_acting_model
from mlflow.tracking import MlflowClient

from ife_platform.checkpoint import load_checkpoint
from ife_platform.config import compose
from ife_platform.video import read_mp4

pytestmark = pytest.mark.slow

SMALL = TINY_ACTOR_CRITIC


@pytest.mark.parametrize(
    ("agent", "game", "grid"),
    [("a3c_lstm", "pong", (14, 14)), ("s3ta", "boxing", (11, 11))],
)
def test_actor_critic_trains_with_two_actor_processes(
    workdir: Path, agent: str, game: str, grid: tuple[int, int]
) -> None:
    extra = ["model.width=1"] if agent == "a3c_lstm" else []
    args = [f"agent={agent}", f"env.game={game}", *SMALL, *extra, *tracking_args(workdir)]
    run_ife(workdir, ["train", *args, "train.total_steps=480"])
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("ife").experiment_id])
    run_id = run.info.run_id
    # the params hold only what an actor-critic run reads (issue 11)
    assert run.data.params["agent.rollout"] == "20"
    assert not any(k.startswith(("replay.", "explain.", "sequence.")) for k in run.data.params)
    assert "agent.n_step" not in run.data.params and "model.noisy" not in run.data.params
    m = run.data.metrics
    for key in ("train/loss_policy", "train/loss_value", "train/entropy", "train/mask_entropy"):
        assert key in m, key
    # 2 actors: an update uses rollouts acted by weights at most a few updates old
    assert 0 <= m["train/policy_lag_max"] <= 8
    video = Path(client.download_artifacts(run_id, "videos/eval_mask.mp4", str(workdir)))
    frames = read_mp4(video)  # raw | overlay, 3x, legend below
    assert frames.shape[2:] == (3 * 320, 3) and frames.shape[1] > 3 * 210
    ckpt = load_checkpoint(workdir / "out" / run_id / "checkpoints" / "last.ckpt")
    assert ckpt["ife"]["counters"]["env_steps"] == 480
    assert ckpt["ife"]["config"]["agent"]["name"] == agent

    if agent == "a3c_lstm":  # (one agent of the family: they share ActorCriticTask's resume)
        # resume by run id: the counters continue in the same run
        run_ife(workdir, ["train", *args, "train.total_steps=960", f"resume={run_id}"])
        ckpt = load_checkpoint(workdir / "out" / run_id / "checkpoints" / "last.ckpt")
        assert ckpt["ife"]["counters"]["env_steps"] == 960
        assert ckpt["ife"]["counters"]["updates"] > 480 // 40
    # the mask of the trained network has the agent's grid and sums to 1
    cfg = compose([f"agent={agent}", f"env.game={game}", *extra])
    task = ActorCriticTask(cfg)
    task.load_state_dict(ckpt["state_dict"])
    obs = torch.randint(0, 256, (2, 1, 84, 84), dtype=torch.uint8)
    task.model.step(obs, task.model.initial_state(2), torch.ones(2, dtype=torch.bool))
    mask = task.model.attention_mask
    assert mask.shape == (2, *grid) and torch.allclose(mask.sum((1, 2)), torch.ones(2))


def test_actors_act_with_pushed_weights() -> None:
    cfg = compose(["agent=a3c_lstm", "model.width=1", "env.num_envs=2", "agent.actors=2"])
    task = ActorCriticTask(cfg)
    task._collector = task.build_collector()
    try:
        it = iter(task._collector)
        assert int(next(it)["policy_version"].max()) == 0
        task.updates = 7  # as after 7 updates
        task.push_weights()
        versions = [int(next(it)["policy_version"].min()) for _ in range(8)]
        # batches already in flight (at most one queued and one being collected per actor)
        # may be older; once an actor has the new weights it keeps them, so the last batches
        # carry version 7, and no batch carries anything but 0 or 7
        assert versions[-2:] == [7, 7], versions
        assert set(versions) <= {0, 7}
    finally:
        threads = task._threads_before
        task.shutdown_collector()
    assert torch.get_num_threads() == threads  # the collector's thread change is undone
    # the actors' copy (no parametrizations) computes what the learner computes
    acting = build_acting_model(cfg, task.num_actions)
    acting.load_state_dict(acting_state_dict(task.model))
    obs = torch.randint(0, 256, (3, 1, 84, 84), dtype=torch.uint8)
    first = torch.ones(3, dtype=torch.bool)
    task.model.eval()
    with torch.no_grad():
        a = task.model.step(obs, task.model.initial_state(3), first)[0]
        b = acting.step(obs, acting.initial_state(3), first)[0]
    assert torch.allclose(a, b, atol=1e-5)

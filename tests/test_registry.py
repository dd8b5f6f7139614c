"""The agent registry is the extension point: an agent registered from this file alone trains,
evaluates, resumes and runs a continual sequence, with no edit anywhere else."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY, tracking_args
from mlflow.tracking import MlflowClient

from ife_platform import experiment
from ife_platform.config import ConfigError, compose
from ife_platform.extractors import build_extractor
from ife_platform.policies import QPolicy, RecurrentPolicy, is_recurrent
from ife_platform.rainbow.agent import QNetwork
from ife_platform.registry import (
    AgentSpec,
    UnknownAgentError,
    agent_names,
    get_agent,
    key_family,
    register,
    unregister,
)
from ife_platform.sequences import RegistryContinual, SequenceRunner

BUILT: list[int] = []


def build_tiny(cfg, num_actions: int) -> QNetwork:
    """A small Q-network: the Nature CNN with a 16-unit scalar head, no noise."""
    BUILT.append(num_actions)
    extractor = build_extractor("nature_cnn", in_channels=cfg.env.frame_stack)
    return QNetwork(extractor, num_actions, hidden=16, dueling=False, noisy=False)


@pytest.fixture
def tiny_agent(tmp_path: Path):
    preset = tmp_path / "tiny_q.yaml"
    preset.write_text(
        "agent: {loss: huber, epsilon_start: 1.0, epsilon_end: 0.1, epsilon_decay_steps: 200}\n"
        "model: {extractor: nature_cnn, noisy: false}\n"
    )
    spec = register(
        AgentSpec(
            name="tiny_q",
            family="rainbow",
            task="ife_platform.tasks.rainbow:RainbowTask",
            network=build_tiny,
            extractors=("nature_cnn",),
            losses=("huber",),
            preset=preset,
        )
    )
    BUILT.clear()
    yield spec
    unregister("tiny_q")


def test_registry_lookup_and_errors() -> None:
    assert {"rainbow_der", "rainbow_fast", "a3c_lstm", "s3ta"} <= set(agent_names())
    assert get_agent("a3c_lstm").family == "actor_critic" and not get_agent("s3ta").off_policy
    with pytest.raises(UnknownAgentError):
        get_agent("rainbow_dr")
    with pytest.raises(ValueError, match="already registered"):
        register(get_agent("rainbow_der"))
    with pytest.raises(ValueError, match="unknown family"):
        register(AgentSpec(name="x", family="evolution", task="m:T", network="m:b"))
    assert key_family("agent.n_step") == "rainbow" and key_family("replay.alpha") == "rainbow"
    assert key_family("agent.rollout") == "actor_critic" and key_family("agent.gamma") is None
    # the shipped builders meet the network contracts
    cfg = compose(["agent=a3c_lstm", "model.width=1"])
    a3c = get_agent("a3c_lstm").build_network(cfg, 6)
    q = get_agent("rainbow_der").build_network(compose(["model.width=1"]), 6)
    assert isinstance(a3c, RecurrentPolicy) and is_recurrent(a3c)
    assert isinstance(q, QPolicy) and not is_recurrent(q)
    with pytest.raises(TypeError, match="neither a QPolicy"):
        is_recurrent(torch.nn.Linear(2, 2))
    # an agent may bring its own continual adapter
    spec = AgentSpec(
        name="x", family="rainbow", task="m:T", network="m:b", sequence_agent=RegistryContinual
    )
    assert isinstance(spec.continual_adapter(), RegistryContinual)
    assert get_agent("rainbow_der").continual_adapter() is None


@pytest.mark.slow
def test_a_registered_agent_trains_evaluates_resumes_and_runs_a_sequence(
    tiny_agent: AgentSpec, workdir: Path
) -> None:
    with pytest.raises(ConfigError, match="loss 'c51'"):
        compose(["agent=tiny_q", "agent.loss=c51"])
    args = ["agent=tiny_q", "env.game=pong", *TINY, *tracking_args(workdir)]
    args.append("tracking.video=false")

    # train: the registry's task with the registry's network builder
    first = experiment.train(compose(args))
    assert BUILT and first.task.online.head.q[0].out_features == 16  # our builder built it
    assert first.evaluation is not None and len(first.evaluation.returns) == 1
    client = MlflowClient(first.tracking_uri)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.data.params["agent.loss"] == "huber"

    # evaluate through the loader: the checkpoint names the agent, the registry rebuilds it
    agent = experiment.load_agent(first.run_id, [f"tracking.uri={first.tracking_uri}"])
    assert isinstance(agent.network, QNetwork) and agent.method == "nature_cnn"
    scores = experiment.evaluate(agent, episodes=1, video=False)
    assert scores.run_id == first.run_id and len(scores.result.returns) == 1

    # resume: the same run goes on from its checkpoint
    resumed = experiment.train(compose([*args, "train.total_steps=360", f"resume={first.run_id}"]))
    assert resumed.run_id == first.run_id and resumed.task.env_steps == 360

    # a two-game continual sequence
    seq = [
        "sequence.games=[pong,boxing]",
        "env.full_action_space=true",
        "sequence.steps_per_task=240",
        "sequence.eval_every=240",
        "sequence.eval_episodes=1",
        "sequence.eval_max_steps=40",
        "sequence.alignment_steps=0",
    ]
    runner = SequenceRunner(compose([*args, *seq]))
    assert isinstance(runner.agent, RegistryContinual)  # no adapter registered: the generic one
    report = runner.run()
    assert report["games"] == ["pong", "boxing"] and report["tasks_completed"] == 2
    assert len(report["R"]) == 3  # row 0 (before training) and one row per task
    assert all(n == 18 for n in BUILT[-3:])  # full action set: one head for both games

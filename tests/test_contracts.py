"""Contract tests generated from the registries: every registered agent with every extractor
it takes builds, takes one real update on a real game, saves and reloads to identical outputs,
is deterministic under a seed and names its loss terms ``loss`` / ``loss_*``.

Nothing here lists agents or extractors by hand: a new agent (``registry.register``) or a new
extractor (``extractors.EXTRACTORS``) is tested as soon as it is registered. The batch comes
from the task's own data path (``on_fit_start`` -> ``train_dataloader``), so every family is
exercised through its real collector; how the network is read follows its contract
(``QPolicy`` / ``RecurrentPolicy``), never its name.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from ife_platform.config import compose
from ife_platform.extractors import EXTRACTORS
from ife_platform.policies import is_recurrent
from ife_platform.registry import agent_names, get_agent

#: Small sizes every agent accepts: shared keys, plus each family's own (FAMILY_KEYS).
SMALL = ["env.game=pong", "model.width=1", "env.num_envs=2", "seed=5"]
SMALL_FAMILY = {
    "rainbow": [
        "agent.batch_size=8",
        "agent.learning_starts=24",
        "agent.n_step=3",
        "replay.capacity=1000",
    ],
    "actor_critic": ["agent.actors=1", "agent.rollout=5", "agent.lstm_hidden=32"],
}


def _cases() -> list[tuple[str, str]]:
    return [
        (name, extractor)
        for name in agent_names()
        for extractor in (get_agent(name).extractors or tuple(EXTRACTORS))
    ]


def _config(agent: str, extractor: str):
    family = get_agent(agent).family
    return compose(
        [f"agent={agent}", f"model.extractor={extractor}", *SMALL, *SMALL_FAMILY[family]]
    )


def _outputs(network: torch.nn.Module, obs: torch.Tensor) -> torch.Tensor:
    """What the network acts on: Q values, or the policy logits of a first step."""
    network.eval()
    with torch.no_grad():
        if is_recurrent(network):
            first = torch.ones(obs.shape[0], dtype=torch.bool)
            logits, _, _ = network.step(obs, network.initial_state(obs.shape[0]), first)
            return logits
        return network.q_values(obs)


def _one_batch(task):
    task.on_fit_start()
    try:
        return next(iter(task.train_dataloader()))
    finally:
        task.on_fit_end()


def test_every_registered_agent_has_a_case() -> None:
    cases = _cases()
    assert {agent for agent, _ in cases} == set(agent_names())
    assert len(cases) >= len(agent_names())


@pytest.mark.slow
@pytest.mark.parametrize(("agent", "extractor"), _cases())
def test_agent_contract(agent: str, extractor: str) -> None:
    cfg = _config(agent, extractor)
    Task = get_agent(agent).task_class()

    # builds, from the seed: two tasks have the same weights
    task, twin = Task(cfg), Task(cfg)
    assert all(torch.equal(v, twin.state_dict()[k]) for k, v in task.state_dict().items())

    # one real update on a real game, through the task's own data path
    batch = _one_batch(task)
    assert task.env_steps > 0
    # (acting ran forwards in train mode: spectral-norm power iterations moved their vectors)
    before = {k: v.clone() for k, v in task.state_dict().items()}
    optimiser = task.configure_optimizers()
    torch.manual_seed(0)
    terms = task.loss(batch)
    scalar = {k: float(v.detach()) for k, v in terms.items() if v.ndim == 0}
    assert "loss" in scalar and any(k.startswith("loss_") for k in scalar), sorted(terms)
    assert all(math.isfinite(v) for v in scalar.values()), scalar
    optimiser.zero_grad()
    terms["loss"].backward()
    optimiser.step()
    after = task.state_dict()
    assert any(not torch.equal(after[k], before[k]) for k in before), "nothing learnt"

    # deterministic: from the same state, batch and RNG state, the same loss
    twin.load_state_dict(before)
    torch.manual_seed(0)
    again = twin.loss(batch)
    assert float(again["loss"].detach()) == scalar["loss"]

    # saves and reloads to identical outputs
    obs = batch["pixels"] if "pixels" in batch.keys() else batch["obs"]
    obs = obs.reshape(-1, *obs.shape[-3:])[:4]
    reloaded = Task(cfg)
    reloaded.load_state_dict(copy.deepcopy(task.state_dict()))
    assert torch.equal(_outputs(task.online, obs), _outputs(reloaded.online, obs))

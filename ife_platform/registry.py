"""The agent registry: one place that maps an agent name to everything that varies by family.

An agent is a name (``agent=NAME`` on the command line) bound to an :class:`AgentSpec`: its
family (which ``agent.*`` keys it reads), the extractors it accepts, its YAML preset, its
network builder, its Lightning task, where its network's weights sit in a checkpoint, and
whether it learns off-policy (a replay buffer and a target network). Everything above the
registry (config validation, ``ife train``, ``ife evaluate`` / ``explain``, continual
sequences, the benchmark) asks the spec instead of branching on a name, so adding an agent is
one :func:`register` call::

    from ife_platform.registry import AgentSpec, register

    register(AgentSpec(
        name="my_rainbow",
        family="rainbow",
        preset="path/to/my_rainbow.yaml",
        task="my_package.tasks:MyRainbowTask",
        network="my_package.tasks:build_network",
    ))

Like Gymnasium's ``entry_point``, the task and network builder may be given as
``"module:attribute"`` strings, resolved on first use: the registry (and the config layer
that validates against it) then imports neither torch nor Lightning, and this low layer of
the package never imports the layers above it (``pyproject.toml``, import-linter contracts).

How a policy acts (greedy on Q values, or a recurrent step) is not a registry field: it
follows from the network's contract, :class:`~ife_platform.policies.QPolicy` or
:class:`~ife_platform.policies.RecurrentPolicy`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Config keys that only one family reads (a dotted key, or a whole group such as ``replay``).
#: Every other key is shared. ``ife_platform.config`` refuses a key of another family with a
#: message that names the family that has it, and logs only the run's family to MLflow.
FAMILY_KEYS: dict[str, tuple[str, ...]] = {
    "rainbow": (
        "agent.batch_size",
        "agent.n_step",
        "agent.double_q",
        "agent.learning_starts",
        "agent.updates_per_step",
        "agent.target_update_period",
        "agent.epsilon_start",
        "agent.epsilon_end",
        "agent.epsilon_decay_steps",
        "model.hidden",
        "model.dueling",
        "model.noisy",
        "model.noisy_sigma0",
        "model.num_atoms",
        "model.v_min",
        "model.v_max",
        "replay",
        "trainer.threads",
        "trainer.compile",
    ),
    "actor_critic": (
        "agent.actors",
        "agent.rollout",
        "agent.gae_lambda",
        "agent.entropy_coef",
        "agent.value_coef",
        "agent.lstm_hidden",
    ),
}


def key_family(key: str) -> str | None:
    """The family that alone reads the dotted config ``key`` (None: a shared key)."""
    for family, keys in FAMILY_KEYS.items():
        if any(key == k or key.startswith(k + ".") for k in keys):
            return family
    return None


class UnknownAgentError(KeyError):
    """No agent is registered under this name."""


@dataclass(frozen=True)
class AgentSpec:
    """Everything that varies by agent.

    Attributes:
        name: the ``agent=`` name.
        family: ``rainbow`` (value-based, off-policy: replay + target network) or
            ``actor_critic`` (on-policy rollouts, recurrent policy); decides which
            ``agent.*`` / ``replay.*`` / ``model.*`` keys apply (``FAMILY_KEYS``).
        task: the LightningModule class, or ``"module:attr"``; built as ``Task(cfg)``.
        network: ``build(cfg, num_actions) -> nn.Module``, or ``"module:attr"``; the same
            network the task trains, so a checkpoint's weights load into it.
        weights_prefix: prefix of the network's weights in the task's ``state_dict``.
        extractors: ``model.extractor`` values this agent takes (None: every extractor in
            :data:`ife_platform.extractors.EXTRACTORS`).
        preset: the agent's YAML defaults (None: ``configs/agent/<name>.yaml``).
        losses: the ``agent.loss`` values it trains with (the first is the preset's).
        continual: whether ``ife continual`` can run sequences with it.
        frame_stack: required ``env.frame_stack`` (None: any).
        sequence_agent: its continual-learning adapter, a class (or ``"module:attr"``)
            implementing ``ife_platform.sequences.ContinualAgent``; None: the generic
            ``RegistryContinual``, which trains through the registry's task and network.
    """

    name: str
    family: str
    task: str | type
    network: str | Callable[..., Any]
    weights_prefix: str = "online."
    extractors: tuple[str, ...] | None = None
    preset: str | Path | None = None
    losses: tuple[str, ...] = ("c51", "huber")
    continual: bool = True
    frame_stack: int | None = None
    sequence_agent: str | Callable[[], Any] | None = None

    @property
    def off_policy(self) -> bool:
        """Whether the agent learns from a replay buffer with a target network."""
        return self.family == "rainbow"

    def task_class(self) -> type:
        """The LightningModule class that trains this agent."""
        return _resolve(self.task)

    def build_network(self, cfg: Any, num_actions: int) -> Any:
        """The agent's network for ``cfg`` (initialised from torch's current RNG state)."""
        return _resolve(self.network)(cfg, num_actions)

    def continual_adapter(self) -> Any:
        """A fresh continual-learning adapter (None: use the generic one)."""
        return None if self.sequence_agent is None else _resolve(self.sequence_agent)()

    def preset_path(self) -> Path | None:
        """The agent's YAML defaults (None for the shipped agents: the config layer finds them)."""
        return None if self.preset is None else Path(self.preset)


def _resolve(target: Any) -> Any:
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


_REGISTRY: dict[str, AgentSpec] = {}


def register(spec: AgentSpec, *, replace: bool = False) -> AgentSpec:
    """Add an agent.

    Raises:
        ValueError: the name is taken (and ``replace`` is False) or the family is unknown.
    """
    if spec.family not in FAMILY_KEYS:
        raise ValueError(
            f"agent {spec.name}: unknown family '{spec.family}' (known: {', '.join(FAMILY_KEYS)})"
        )
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"an agent named '{spec.name}' is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove an agent (tests that register a throwaway agent clean up with this)."""
    _REGISTRY.pop(name, None)


def get_agent(name: str) -> AgentSpec:
    """The spec of agent ``name``. Raises :class:`UnknownAgentError`."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownAgentError(name) from None


def agent_names() -> list[str]:
    """Every registered agent name, sorted."""
    return sorted(_REGISTRY)


def agents_of(family: str) -> list[str]:
    """The registered agents of one family."""
    return sorted(n for n, s in _REGISTRY.items() if s.family == family)


def _rainbow(name: str) -> AgentSpec:
    return AgentSpec(
        name=name,
        family="rainbow",
        task="ife_platform.tasks.rainbow:RainbowTask",
        network="ife_platform.tasks.rainbow:build_network",
        weights_prefix="online.",
    )


def _actor_critic(name: str, network: str, extractors: tuple[str, ...]) -> AgentSpec:
    return AgentSpec(
        name=name,
        family="actor_critic",
        task="ife_platform.tasks.a3c:ActorCriticTask",
        network=network,
        weights_prefix="model.",
        extractors=extractors,
        losses=("a2c",),
        frame_stack=1,
    )


register(_rainbow("rainbow_der"))
register(_rainbow("rainbow_fast"))
register(
    _actor_critic(
        "a3c_lstm", "ife_platform.tasks.a3c:build_a3c_lstm", ("ife", "cnn_attention", "a3c_cnn")
    )
)
register(_actor_critic("s3ta", "ife_platform.tasks.a3c:build_s3ta", ("s3ta",)))

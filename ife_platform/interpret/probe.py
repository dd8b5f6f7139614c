"""What the interpretability analysis reads from an agent: Q-networks and recurrent agents alike.

Every perturbation method (saliency, deletion / insertion, leakage) changes one observation and
reads the agent's outputs again. A Q-network's outputs depend on that observation only. A
recurrent agent's (A3C-LSTM, S3TA) also depend on its state, which carries the game so far; its
outputs at frame ``t`` are read here with the state it had when it played frame ``t``
(recorded by ``ife explain``), so that only frame ``t`` is perturbed and the past stays as the
agent saw it. This is how Greydanus et al. 2018 ("Visualizing and Understanding Atari Agents",
Sec. 4) perturb their LSTM agents: the perturbation enters at time ``t`` only.

- :class:`FrozenState`: a recurrent agent at one recorded moment, as a function of the
  observation (``[N, C, H, W]`` copies of one frame -> logits, value, attention).
- :class:`Readout`: the three read-outs the analysis needs of a module (saliency outputs,
  per-action faithfulness score, attention logits for leakage).
- :class:`AgentProbe`: serves readouts for a set of recorded frames: one readout for all of
  them for a Q-network, one per frame for a recurrent agent.
- :func:`replay`: run a network over a recorded frame sequence, carrying its own recurrent
  state (``ife compare`` and the parameter-randomisation check).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ife_platform.evaluation import ActingPolicy, torch_threads
from ife_platform.interpret import perturb as P
from ife_platform.policies import is_recurrent

State = tuple[Tensor, ...]


def state_free_attention(network: nn.Module) -> bool:
    """Whether the attention mask is a function of the current observation alone.

    True for every attention extractor (IFE, ``cnn_attention``) also inside an A3C-LSTM, whose
    mask is computed before the LSTM. False for S3TA, whose queries come from the policy state.
    """
    return not hasattr(network, "attention_logits")


class FrozenState(nn.Module):
    """A recurrent agent at one recorded step: ``obs -> (logits, value)`` with the state fixed.

    ``forward(obs [N, C, H, W])`` runs ``network.step`` on every row with the same recorded
    state (no episode reset: a recorded state is already zeroed at a game's first step), so a
    batch of perturbed copies of one frame is read exactly as the agent read that frame.
    It exposes the cell geometry and ``attention_logits`` of the last forward, as
    :func:`~ife_platform.interpret.perturb.spatial_leakage` expects of an extractor.

    Args:
        network: A recurrent actor-critic (``step``, ``initial_state``).
        state: The state that entered the step, each tensor ``[1, ...]``.
    """

    def __init__(self, network: nn.Module, state: State) -> None:
        super().__init__()
        self.network = network
        device = next(network.parameters()).device
        self.state = tuple(s.to(device) for s in state)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """``(logits [N, A], value [N])`` for ``obs [N, C, H, W]`` (uint8 or float in [0, 1])."""
        n = obs.shape[0]
        state = tuple(s.expand(n, *s.shape[1:]).contiguous() for s in self.state)
        first = torch.zeros(n, dtype=torch.bool, device=obs.device)
        logits, value, _ = self.network.step(obs, state, first)
        return logits, value

    @property
    def cell_grid(self) -> tuple[int, int]:
        """The attention grid ``(rows, cols)``."""
        return self.network.extractor.cell_grid

    def cell_input_windows(self) -> Tensor:
        """int64 ``[rows, cols, 4]`` input windows of the cells."""
        return self.network.extractor.cell_input_windows()

    @property
    def attention_logits(self) -> Tensor | None:
        """Pre-softmax scores of the last forward: ``[N, (heads,) rows, cols]``.

        S3TA's are the agent's own; every other agent's are its extractor's.
        """
        net = self.network
        return (net.extractor if state_free_attention(net) else net).attention_logits


@dataclass
class Readout:
    """The agent as a function of a batch of observations, for the perturbation methods.

    Attributes:
        outputs: ``obs -> {"policy", "value"}`` for perturbation saliency. Q-networks:
            centred Q and ``max_a Q`` (:func:`~.perturb.rainbow_outputs`); actor-critics: the
            centred policy logits (a softmax over them is the policy) and the critic's V.
        score: ``obs -> [N, A]`` per-action scores for deletion / insertion: Q-values, or the
            policy's probabilities ``pi(a | s)`` (a bounded score, as RISE's class probability).
        attention: the module whose forward sets the ``attention_logits`` leakage reads.
    """

    outputs: P.OutputsFn
    score: P.ScoreFn
    attention: nn.Module


def actor_critic_readout(module: nn.Module) -> Readout:
    """The :class:`Readout` of a :class:`FrozenState` (eval mode, no gradients)."""

    @torch.no_grad()
    def outputs(obs: Tensor) -> dict[str, Tensor]:
        with P.eval_mode(module):
            logits, value = module(obs)
        return {"policy": logits - logits.mean(dim=-1, keepdim=True), "value": value}

    @torch.no_grad()
    def score(obs: Tensor) -> Tensor:
        with P.eval_mode(module):
            logits, _ = module(obs)
        return torch.softmax(logits, dim=-1)

    return Readout(outputs, score, module)


class AgentProbe:
    """Readouts of an agent at recorded frames (see the module docstring).

    Args:
        network: A Q-network or a recurrent actor-critic.
        states: For a recurrent agent, the state that entered every recorded step (each
            tensor ``[T, ...]``, as :class:`~ife_platform.interpret.explain.Recording` keeps).
    """

    def __init__(self, network: nn.Module, states: State | None = None) -> None:
        self.network = network
        self.recurrent = is_recurrent(network)
        if self.recurrent and states is None:
            raise ValueError("a recurrent agent needs the recorded state of every frame")
        self.states = states
        self.device = next(network.parameters()).device
        self.score_name = "policy_prob" if self.recurrent else "q"

    def groups(self, idx: np.ndarray) -> Iterator[tuple[np.ndarray, Readout]]:
        """``(frames, readout)`` pairs covering ``idx`` in order.

        All frames at once for a Q-network; one frame at a time for a recurrent agent (each
        with its own recorded state).
        """
        idx = np.asarray(idx, dtype=np.int64)
        if not self.recurrent:
            readout = Readout(
                P.rainbow_outputs(self.network),
                P.rainbow_action_score(self.network, "q"),
                self.network,
            )
            yield idx, readout
            return
        assert self.states is not None
        for i in idx:
            state = tuple(s[int(i) : int(i) + 1] for s in self.states)
            yield np.array([i]), actor_critic_readout(FrozenState(self.network, state))

    def map(
        self,
        idx: np.ndarray,
        obs: np.ndarray,
        fn: Callable[[Readout, Tensor, np.ndarray], Tensor],
    ) -> Tensor:
        """``fn(readout, obs[frames], frames)`` over :meth:`groups`, concatenated along frames.

        Args:
            idx: Frame indices into ``obs``.
            obs: uint8 ``[T, C, H, W]`` recorded observations.
            fn: A batched measurement returning ``[len(frames), ...]``.
        """
        parts = [
            fn(readout, torch.from_numpy(obs[frames]).to(self.device), frames)
            for frames, readout in self.groups(idx)
        ]
        return torch.cat(parts)


@dataclass
class Replay:
    """A network's read-out along a recorded frame sequence (see :func:`replay`).

    Attributes:
        scores: float32 ``[T, A]``: Q-values or policy logits.
        masks: float32 ``[T, rows, cols]`` or None (no attention).
        heads: float32 ``[T, heads, rows, cols]`` (multi-head attention) or None.
        states: recurrent state that entered every step (each ``[T, ...]``) or None.
    """

    scores: np.ndarray
    masks: np.ndarray | None
    heads: np.ndarray | None
    states: State | None


@torch.no_grad()
def replay(
    network: nn.Module,
    obs: np.ndarray,
    first: np.ndarray,
    *,
    batch_size: int = 64,
    keep_states: bool = False,
) -> Replay:
    """Run ``network`` over recorded observations as if it had played them.

    A Q-network reads the frames in batches. A recurrent agent steps through them in order
    with batch 1 (the rounding of its acting steps), carrying its own state and resetting it
    where ``first`` marks a game's first frame: its read-out of another agent's game (``ife
    compare``), or a randomised copy's read-out of the recorded game (sanity check).

    Args:
        network: A Q-network or a recurrent actor-critic (eval mode here, flag restored).
        obs: uint8 ``[T, C, H, W]``.
        first: bool ``[T]``: frame ``t`` starts a game.
        batch_size: Frames per forward for a Q-network.
        keep_states: Keep the recurrent state that entered every step.
    """
    policy = ActingPolicy(network)
    scores, masks, heads, states = [], [], [], []
    was_training = network.training
    network.eval()
    try:
        with torch_threads(1):
            if policy.recurrent:
                policy.reset(1)
                for t in range(len(obs)):
                    x = torch.from_numpy(obs[t : t + 1]).to(policy.device)
                    scores.append(policy.scores(x, torch.tensor([bool(first[t])])).float().cpu())
                    if keep_states:
                        states.append(tuple(s.cpu() for s in policy.input_state or ()))
                    _collect(policy, masks, heads)
            else:
                for start in range(0, len(obs), batch_size):
                    x = torch.from_numpy(obs[start : start + batch_size]).to(policy.device)
                    scores.append(network.q_values(x).float().cpu())
                    _collect(policy, masks, heads)
    finally:
        network.train(was_training)
    return Replay(
        scores=torch.cat(scores).numpy(),
        masks=torch.cat(masks).numpy() if masks else None,
        heads=torch.cat(heads).numpy() if heads else None,
        states=stack_states(states) if states else None,
    )


def stack_states(states: list[State]) -> State:
    """Per-step states (each tensor ``[1, ...]``) -> one tensor ``[T, ...]`` per state part."""
    return tuple(torch.cat(parts) for parts in zip(*states, strict=True))


def _collect(policy: ActingPolicy, masks: list[Tensor], heads: list[Tensor]) -> None:
    if policy.attention_mask is not None:
        masks.append(policy.attention_mask.float().cpu())
    if policy.head_masks is not None:
        heads.append(policy.head_masks.float().cpu())

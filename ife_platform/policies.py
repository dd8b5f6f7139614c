"""Network contracts: what evaluation, ``ife explain`` and continual sequences may call.

Two kinds of trained network act in this platform, and code that plays or measures them
checks which contract a network meets (``isinstance(net, QPolicy)``), never its class or
its agent's name:

- :class:`QPolicy`: a value network that maps a stack of frames to Q values (every Rainbow
  profile, :class:`~ife_platform.rainbow.agent.QNetwork`);
- :class:`RecurrentPolicy`: an actor-critic with a recurrent state carried across steps
  (A3C-LSTM, :class:`~ife_platform.a3c.model.RecurrentActorCritic`, and S3TA,
  :class:`~ife_platform.a3c.s3ta.S3TAAgent`).

Both expose ``num_actions``, their ``extractor`` (cell geometry for the mask pictures) and the
``attention_mask`` of the last forward (None without attention).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor

State = tuple[Tensor, ...]


@runtime_checkable
class QPolicy(Protocol):
    """A network that scores actions from the observation alone."""

    num_actions: int
    extractor: Any

    def q_values(self, obs: Tensor) -> Tensor:
        """Expected Q values ``[B, A]`` for uint8 frames ``[B, C, 84, 84]``."""
        ...

    @property
    def attention_mask(self) -> Tensor | None:
        """The mask of the last forward ``[B, rows, cols]``, or None."""
        ...


@runtime_checkable
class RecurrentPolicy(Protocol):
    """A network that acts from the observation and a state carried across steps."""

    num_actions: int
    extractor: Any

    def initial_state(self, batch: int, device: Any = None) -> Any:
        """The state of ``batch`` new games."""
        ...

    def step(self, obs: Tensor, state: Any, first: Tensor) -> tuple[Tensor, Tensor, Any]:
        """(policy logits ``[B, A]``, values ``[B]``, next state) for one step.

        ``first [B]`` marks new games, whose state rows are reset before the step.
        """
        ...

    @property
    def attention_mask(self) -> Tensor | None:
        """The mask of the last forward ``[B, rows, cols]``, or None."""
        ...


def is_recurrent(network: Any) -> bool:
    """Whether ``network`` acts through a recurrent state (:class:`RecurrentPolicy`).

    Raises:
        TypeError: the network meets neither contract.
    """
    if isinstance(network, QPolicy):
        return False
    if isinstance(network, RecurrentPolicy):
        return True
    raise TypeError(
        f"{type(network).__name__} is neither a QPolicy (q_values) nor a RecurrentPolicy "
        "(initial_state + step); see ife_platform/policies.py"
    )

"""A3C-LSTM building blocks: the recurrent actor-critic network and its losses."""

from ife_platform.a3c.losses import actor_critic_loss, gae
from ife_platform.a3c.model import (
    RecurrentActorCritic,
    build_actor_critic,
    normalized_columns_init_,
)

__all__ = [
    "RecurrentActorCritic",
    "actor_critic_loss",
    "build_actor_critic",
    "gae",
    "normalized_columns_init_",
]

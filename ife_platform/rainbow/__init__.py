"""Rainbow building blocks: Q heads, n-step accumulation and losses."""

from ife_platform.rainbow.heads import NoisyLinear, QHead, expected_q
from ife_platform.rainbow.losses import (
    categorical_double_q_loss,
    huber_double_q_loss,
    make_support,
    project_distribution,
)
from ife_platform.rainbow.nstep import NStepAccumulator, nstep_returns, nstep_targets

__all__ = [
    "NStepAccumulator",
    "NoisyLinear",
    "QHead",
    "categorical_double_q_loss",
    "expected_q",
    "huber_double_q_loss",
    "make_support",
    "nstep_returns",
    "nstep_targets",
    "project_distribution",
]

"""The optimiser of every learner: Adam (Kingma & Ba 2015) from the ``optim`` config group."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from omegaconf import DictConfig

#: Device types with a fused Adam kernel in this PyTorch.
FUSED_DEVICES = ("cpu", "cuda")


def make_adam(params: Iterable[torch.nn.Parameter], optim: DictConfig) -> torch.optim.Adam:
    """Adam over the trainable ``params`` (``requires_grad``) with ``optim.lr``, ``optim.eps``.

    Frozen parameters (continual transfer modes) get neither updates nor Adam state.

    With ``optim.fused`` (default) and every parameter a float tensor on a CPU or CUDA device,
    the update runs as one fused kernel over all parameters instead of a Python loop of
    per-tensor ops. It computes the same update up to float rounding. For the 9.6M parameters
    of an IFE-width-2 A3C-LSTM on one CPU thread, a step takes 13 ms instead of 66 ms
    (docs/benchmarks.md). Other devices or dtypes fall back to the default implementation.

    Args:
        params: The network's parameters.
        optim: The ``optim`` config group.

    Returns:
        The optimiser.
    """
    params = [p for p in params if p.requires_grad]
    fused = bool(optim.get("fused", True)) and all(
        p.device.type in FUSED_DEVICES and p.is_floating_point() for p in params
    )
    return torch.optim.Adam(params, lr=optim.lr, eps=optim.eps, fused=fused or None)

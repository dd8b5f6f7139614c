"""The parameter-randomisation sanity check (Adebayo et al. 2018, "Sanity Checks for Saliency").

A mask that survives re-initialising the weights does not explain the trained agent.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ife_platform.seeding import TORCH_SEED_BITS, fold_seed


def _selected(name: str, only: Sequence[str] | None) -> bool:
    if only is None:
        return True
    return any(name == p or name.startswith(p + ".") for p in only)


def resettable(network: nn.Module, only: Sequence[str] | None) -> list[tuple[str, nn.Module]]:
    """(name, module) of every module with ``reset_parameters``, under the ``only`` prefixes."""
    return [
        (name, m)
        for name, m in network.named_modules()
        if callable(getattr(m, "reset_parameters", None)) and _selected(name, only)
    ]


_SPECTRAL_NORM_ATTRS = ("_u", "_v", "_power_method", "_reshape_weight_to_matrix")


def reset_module(module: nn.Module) -> None:
    """``module.reset_parameters()``, also through ``torch.nn.utils.parametrize`` (e.g. SN).

    A parametrized module (``weight`` computed from ``parametrizations.weight.original``) is
    reset through a plain twin of its original class that shares its parameters but holds a
    fresh tensor for every parametrized name; ``ParametrizationList.right_inverse`` then writes
    each fresh tensor back to the stored originals. Nothing is removed or re-registered: the
    dynamically created parametrized class is shared with the deep-copied-from network, and
    ``remove_parametrizations`` would delete its properties from under it.
    """
    if not parametrize.is_parametrized(module):
        module.reset_parameters()  # type: ignore[operator]
        return
    plain_cls = type(module).__bases__[0]  # how torch.nn.utils.parametrize un-injects
    twin = plain_cls.__new__(plain_cls)
    state = dict(module.__dict__)
    state["_parameters"] = dict(module._parameters)
    state["_modules"] = {k: v for k, v in module._modules.items() if k != "parametrizations"}
    object.__setattr__(twin, "__dict__", state)
    fresh = {}
    for name in module.parametrizations:
        fresh[name] = nn.Parameter(torch.empty_like(getattr(module, name)))
        state["_parameters"][name] = fresh[name]
    plain_cls.reset_parameters(twin)  # type: ignore[attr-defined]
    for name, plist in module.parametrizations.items():
        plist.right_inverse(fresh[name].detach())
        first = plist[0]
        if plist.is_tensor and all(hasattr(first, a) for a in _SPECTRAL_NORM_ATTRS):
            # Spectral norm: fresh power-iteration vectors for the new weight, as at build.
            mat = first._reshape_weight_to_matrix(plist.original)
            first._u.copy_(F.normalize(torch.randn_like(first._u), dim=0, eps=first.eps))
            first._v.copy_(F.normalize(torch.randn_like(first._v), dim=0, eps=first.eps))
            first._power_method(mat, 15)


def not_reinitialised(network: nn.Module, only: Sequence[str] | None = None) -> list[str]:
    """Names of the parameters that :func:`randomised_copy` would leave unchanged.

    Those are the parameters that belong to no module (at any depth) with a
    ``reset_parameters`` method (or lie outside ``only``). Empty for every ``QNetwork`` here.

    Args:
        network: The network.
        only: As for :func:`randomised_copy`.

    Returns:
        Parameter names, as in ``network.named_parameters()``.
    """
    covered: set[str] = set()
    for name, m in resettable(network, only):
        prefix = f"{name}." if name else ""
        covered.update(prefix + n for n, _ in m.named_parameters())
    return [n for n, _ in network.named_parameters() if n not in covered]


def randomised_copy(network: nn.Module, seed: int, only: Sequence[str] | None = None) -> nn.Module:
    """A deep copy of ``network`` with its parameters re-initialised (Adebayo et al. 2018).

    For the parameter-randomisation sanity check: masks/saliency of the copy must differ from
    those of the trained network. ``reset_parameters()`` is called on every module that has one
    (``nn.Conv2d``, ``nn.Linear``, ``NoisyLinear``, norm layers, ...): PyTorch's default init
    for convolutions and linear layers (note: the extractors' build-time ReLU-gain x sqrt(2)
    scaling and zero conv biases are *not* re-applied; the weights are random either way), the
    NoisyLinear init (mu uniform, sigma = sigma0 / sqrt(p)). Convolutions under spectral norm
    are re-initialised through the parametrization and get fresh power-iteration vectors.
    Parameters of modules without ``reset_parameters`` stay as they are (see
    :func:`not_reinitialised`; none in a ``QNetwork``); buffers such as noise samples too.
    The original network is not touched; the global RNG state is restored afterwards.

    Args:
        network: The (trained) network.
        seed: Seed of the new weights (same seed, same weights).
        only: Module-name prefixes to randomise (e.g. ``["head"]`` or ``["extractor.afe"]``,
            for the cascading variant); everything by default.

    Returns:
        The randomised copy, on the same device(s) and in the same train/eval mode.
    """
    clone = copy.deepcopy(network)
    cuda = sorted({p.device.index or 0 for p in clone.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda), torch.no_grad():
        torch.manual_seed(fold_seed(seed, TORCH_SEED_BITS))
        for _, module in resettable(clone, only):
            reset_module(module)
    return clone

"""Rainbow's network and actor, built from explicit arguments (the config stays in the task).

``QNetwork`` = feature extractor (any of :data:`ife_platform.extractors.EXTRACTORS`) + ``QHead``.
``Actor`` turns it into a TorchRL-compatible policy: uint8 pixels in, actions out, with
epsilon-greedy on top (Fast Rainbow) or noisy-net exploration (DER: fresh noise every step).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ife_platform.compiled import Forward, no_grad_forward
from ife_platform.extractors import FeatureExtractor, build_extractor
from ife_platform.precision import autocast
from ife_platform.rainbow.heads import QHead, expected_q
from ife_platform.rainbow.losses import make_support
from ife_platform.seeding import TORCH_SEED_BITS, fold_seed


class QNetwork(nn.Module):
    """Extractor -> (dueling, noisy, C51) head.

    Args:
        extractor: the feature extractor (``features_dim`` output features).
        num_actions: |A|.
        hidden: hidden units per head stream.
        dueling: dueling streams (Wang et al. 2016).
        noisy: factorised noisy layers in the head (Fortunato et al. 2018).
        noisy_sigma0: initial noise scale.
        num_atoms: 1 for a scalar Q head; > 1 for C51 over ``[v_min, v_max]``.
        v_min: lowest support atom.
        v_max: highest support atom.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        num_actions: int,
        *,
        hidden: int = 256,
        dueling: bool = True,
        noisy: bool = False,
        noisy_sigma0: float = 0.1,
        num_atoms: int = 1,
        v_min: float = -10.0,
        v_max: float = 10.0,
    ) -> None:
        super().__init__()
        self.extractor = extractor
        self.head = QHead(
            extractor.features_dim,
            num_actions,
            hidden=hidden,
            dueling=dueling,
            noisy=noisy,
            num_atoms=num_atoms,
            sigma0=noisy_sigma0,
        )
        self.num_actions = num_actions
        self.distributional = num_atoms > 1
        support = make_support(v_min, v_max, num_atoms) if num_atoms > 1 else torch.zeros(1)
        self.register_buffer("support", support, persistent=False)

    def forward(self, obs: Tensor) -> Tensor:
        """Q values ``[B, A]``, or log-probabilities ``[B, A, atoms]`` for C51."""
        return self.head(self.extractor(obs))

    def q_values(self, obs: Tensor) -> Tensor:
        """Expected Q values ``[B, A]`` whatever the head."""
        return self.expected_q(self(obs))

    def expected_q(self, out: Tensor) -> Tensor:
        """Expected Q values ``[B, A]`` of this network's output ``out`` (see ``forward``)."""
        return expected_q(out, self.support if self.distributional else None)

    def reset_noise(self) -> None:
        """Resample the head's noise (no-op without noisy layers)."""
        self.head.reset_noise()

    @property
    def attention_mask(self) -> Tensor | None:
        """The extractor's mask from the last forward ``[B, rows, cols]``, if it has one."""
        return getattr(self.extractor, "attention_mask", None)


def build_q_network(
    extractor: str,
    num_actions: int,
    *,
    extractor_kwargs: dict | None = None,
    **head_kwargs,
) -> QNetwork:
    """Build a :class:`QNetwork` from an extractor name (see ``build_extractor``)."""
    return QNetwork(
        build_extractor(extractor, **(extractor_kwargs or {})), num_actions, **head_kwargs
    )


def linear_schedule(start: float, end: float, duration: int, t: int) -> float:
    """Linear interpolation from ``start`` to ``end`` over ``duration`` steps, then constant."""
    frac = min(max(t, 0) / max(duration, 1), 1.0)
    return start + frac * (end - start)


class Actor:
    """Acting policy over a :class:`QNetwork`: greedy on Q, epsilon-greedy, noisy exploration.

    A plain callable (not an ``nn.Module``), so the network's parameters are registered
    once, in the task. It reads uint8 ``pixels [N, C, H, W]`` on the CPU and returns CPU
    ``action [N]``; the network may live on another device. Noise (if any) is resampled
    before every acting step. Exploration randomness comes from its own generator, so acting
    is reproducible by seed.

    Args:
        network: the online network (shared with the learner, not copied).
        epsilon: exploration rate now; the task updates it from its schedule.
        seed: seed of the epsilon generator.
        autocast_dtype: run the forward under ``torch.autocast`` with this dtype (the
            learner's mixed precision), or None for the network's own precision.
        forward: ``forward(network, pixels)``, for example a compiled one
            (:func:`ife_platform.compiled.no_grad_forward`); default: ``network(pixels)``.
    """

    def __init__(
        self,
        network: QNetwork,
        epsilon: float = 0.0,
        seed: int = 0,
        autocast_dtype: torch.dtype | None = None,
        forward: Forward | None = None,
    ) -> None:
        self.network = network
        self.epsilon = epsilon
        self.autocast_dtype = autocast_dtype
        self.forward: Forward = forward or no_grad_forward(False)
        self.generator = torch.Generator().manual_seed(fold_seed(seed, TORCH_SEED_BITS))

    @torch.no_grad()
    def __call__(self, pixels: Tensor) -> Tensor:
        """Actions ``[N]`` (int64, CPU) for uint8 ``pixels [N, C, H, W]``."""
        device = self.network.support.device
        if self.network.training:
            self.network.reset_noise()
        with autocast(device, self.autocast_dtype):
            obs = pixels.to(device, non_blocking=True)
            q = self.network.expected_q(self.forward(self.network, obs))
        action = q.argmax(dim=-1).cpu()
        if self.epsilon > 0.0:
            n = action.shape[0]
            explore = torch.rand(n, generator=self.generator) < self.epsilon
            random = torch.randint(self.network.num_actions, (n,), generator=self.generator)
            action = torch.where(explore, random, action)
        return action

"""Stable-Baselines3 adapter: any extractor of this platform as an SB3 features extractor.

SB3 builds a features extractor as ``cls(observation_space, **kwargs)`` and reads its
``features_dim``; this platform's extractors take ``in_channels`` and keyword arguments
(``ife_platform.extractors.build_extractor``). :class:`SB3FeaturesExtractor` bridges the two,
so IFE (or any other extractor) drops into PPO, A2C, DQN, ...::

    from stable_baselines3 import PPO
    from ife_platform.integrations.sb3 import SB3FeaturesExtractor

    model = PPO(
        "CnnPolicy",
        env,  # Atari frames stacked channel-first: [C, 84, 84]
        policy_kwargs={
            "features_extractor_class": SB3FeaturesExtractor,
            "features_extractor_kwargs": {"extractor": "ife", "width": 2},
        },
    )
    model.learn(10_000)
    model.policy.features_extractor.attention_mask  # [B, 14, 14] of the last forward

Install with ``pip install -e ".[sb3]"``. Observations may be uint8 or float in [0, 1] (SB3's
``normalize_images=True`` default): the extractors scale uint8 themselves.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import Tensor

from ife_platform.extractors import build_extractor


class SB3FeaturesExtractor(BaseFeaturesExtractor):
    """One of :data:`ife_platform.extractors.EXTRACTORS` behind SB3's extractor contract.

    Args:
        observation_space: a channel-first image space ``[C, H, W]`` (SB3 transposes Atari's
            channel-last frames with ``VecTransposeImage`` before building the policy).
        extractor: the extractor's name (``ife``, ``cnn_attention``, ``der_cnn``, ...).
        **kwargs: its constructor arguments (``width``, ``hue_window``, ...).
    """

    def __init__(
        self, observation_space: gym.spaces.Box, extractor: str = "ife", **kwargs: Any
    ) -> None:
        shape = observation_space.shape
        if shape is None or len(shape) != 3 or shape[0] > shape[-1]:
            raise ValueError(
                f"expected a channel-first image observation [C, H, W], got shape {shape}; "
                "wrap the env with VecTransposeImage (SB3 does this for CnnPolicy)"
            )
        inner = build_extractor(extractor, in_channels=int(shape[0]), **kwargs)
        super().__init__(observation_space, inner.features_dim)
        self.extractor = inner

    def forward(self, observations: Tensor) -> Tensor:
        """``[B, features_dim]`` features of ``[B, C, H, W]`` observations."""
        return self.extractor(observations)

    @property
    def attention_mask(self) -> Tensor | None:
        """The mask of the last forward ``[B, rows, cols]`` (None without attention)."""
        return getattr(self.extractor, "attention_mask", None)

"""Large IMPALA CNN (Espeholt et al. 2018, arXiv 1802.01561) as in Fast Rainbow.

Schmidt & Schmied 2021 (arXiv 2111.10247) use it as the Rainbow body: three blocks of
conv3x3 -> MaxPool(3, 2, 1) -> 2 pre-activation residual blocks, channels 16/32/32 x width,
spectral norm on the residual convs, then ReLU and adaptive max-pool to 8 x 8. The third
block's pool + residual blocks + output pooling is exactly IFE's AFE, so it is reused here.
At 84 x 84 the spatial size goes 84 -> 42 -> 21 -> 11 -> (adaptive) 8.
"""

from __future__ import annotations

from torch import Tensor, nn

from .base import FeatureExtractor
from .blocks import AgentFriendlyEncoder, ResidualStage, make_conv


class ImpalaExtractor(FeatureExtractor):
    """Large IMPALA CNN; ``features_dim = 32 * width * 64`` (4096 at width 2).

    Args:
        in_channels: Stacked input frames.
        width: Channel multiplier: 2 -> 32/64/64 channels.
        spectral_norm: Spectral norm on the residual convolutions.
    """

    def __init__(self, in_channels: int = 4, width: int = 2, spectral_norm: bool = True) -> None:
        super().__init__(in_channels, input_size=None)  # adaptive pooling: any input size
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        c1, c2, c3 = 16 * width, 32 * width, 32 * width
        self.body = nn.Sequential(
            make_conv(in_channels, c1, 3, padding=1),
            ResidualStage(c1, spectral_norm),
            make_conv(c1, c2, 3, padding=1),
            ResidualStage(c2, spectral_norm),
            make_conv(c2, c3, 3, padding=1),
        )
        self.afe = AgentFriendlyEncoder(c3, spectral_norm)
        self.features_dim = self.afe.features_dim

    def encode(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, 32 * width * 64]``."""
        return self.afe(self.body(x))

"""Data-Efficient Rainbow CNN (van Hasselt et al. 2019, arXiv 1906.05243).

Conv 32@5x5/5 -> ReLU -> conv 64@5x5/5 -> ReLU -> flatten: 84 -> 16 -> 3, 64 * 3 * 3 = 576.
PyTorch's default init.
"""

from __future__ import annotations

from torch import Tensor, nn

from .base import FeatureExtractor, conv_output_size

DER_LAYERS: tuple[tuple[int, int], ...] = ((5, 5), (5, 5))


class DERCNNExtractor(FeatureExtractor):
    """Two-layer data-efficient CNN; ``features_dim = 576`` at 84 x 84.

    Args:
        in_channels: Stacked input frames.
        input_size: Square input size in pixels.
    """

    def __init__(self, in_channels: int = 4, input_size: int = 84) -> None:
        super().__init__(in_channels, input_size)
        out = conv_output_size(input_size, DER_LAYERS)
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5, stride=5),
            nn.ReLU(),
            nn.Conv2d(32, 64, 5, stride=5),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.features_dim = 64 * out * out

    def encode(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, 576]`` at 84 x 84."""
        return self.net(x)

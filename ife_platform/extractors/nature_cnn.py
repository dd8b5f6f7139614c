"""Nature DQN CNN (Mnih et al. 2015, doi:10.1038/nature14236).

Conv 32@8x8/4 -> 64@4x4/2 -> 64@3x3/1, ReLU after each, flatten: 84 -> 20 -> 9 -> 7,
64 * 7 * 7 = 3136. PyTorch's default init.
"""

from __future__ import annotations

from torch import Tensor, nn

from .base import FeatureExtractor, conv_output_size

NATURE_LAYERS: tuple[tuple[int, int], ...] = ((8, 4), (4, 2), (3, 1))


class NatureCNNExtractor(FeatureExtractor):
    """The DQN Nature CNN; ``features_dim = 3136`` at 84 x 84.

    Args:
        in_channels: Stacked input frames.
        input_size: Square input size in pixels.
    """

    def __init__(self, in_channels: int = 4, input_size: int = 84) -> None:
        super().__init__(in_channels, input_size)
        out = conv_output_size(input_size, NATURE_LAYERS)
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 32, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.features_dim = 64 * out * out

    def encode(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, 3136]`` at 84 x 84."""
        return self.net(x)

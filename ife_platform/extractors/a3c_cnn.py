"""The A3C-LSTM body: four convolutions, each followed by max-pool 2 and ReLU.

The CNN of the A3C-LSTM code the IFE paper builds on (the widely used ``rl_a3c_pytorch``
``A3Clstm`` model), not the smaller 2-conv net of the A3C paper itself (Mnih et al. 2016,
arXiv 1602.01783). Every conv has stride 1; spatial reduction comes from the pools:

    conv 32@5x5 pad 2 -> maxpool 2 -> ReLU
    conv 32@5x5 pad 1 -> maxpool 2 -> ReLU
    conv 64@4x4 pad 1 -> maxpool 2 -> ReLU
    conv 64@3x3 pad 1 -> maxpool 2 -> ReLU -> flatten

Side length per layer (conv ``n + 2p - k + 1``, then pool ``floor(n / 2)``):

    80 (reference input):    80 -> 40, 38 -> 19, 18 -> 9, 9 -> 4    64 * 4 * 4 = 1024
    84 (this platform):      84 -> 42, 40 -> 20, 19 -> 9, 9 -> 4    64 * 4 * 4 = 1024

Deviation from the reference, on purpose: the reference feeds one 80 x 80 gray frame with the
screen's rows cropped; here the input is one 84 x 84 gray frame of the whole screen resized as
for Rainbow (no crop), so the mask-to-screen geometry, videos and object-box metrics are shared
across agents. The floors in the pools make ``features_dim`` 1024 at 84 too, so the
``LSTMCell(1024, 512)`` behind it is the reference's.

Max-pool and ReLU commute (both monotone), so pool-then-ReLU (reference order) equals
ReLU-then-pool. Init as in the reference: Glorot-uniform weights scaled by the ReLU gain
sqrt(2), zero biases.
"""

from __future__ import annotations

from torch import Tensor, nn

from .base import FeatureExtractor

# (out_channels, kernel, padding) of the four stride-1 convolutions, each followed by maxpool 2.
A3C_LAYERS: tuple[tuple[int, int, int], ...] = ((32, 5, 2), (32, 5, 1), (64, 4, 1), (64, 3, 1))


def a3c_output_size(size: int) -> int:
    """Side length after the four conv + max-pool-2 stages.

    Args:
        size: Input height (or width) in pixels.

    Returns:
        ``floor((n + 2p - k + 1) / 2)`` applied stage by stage (4 at both 80 and 84).

    Raises:
        ValueError: If the input is too small for some stage.
    """
    n = size
    for _, kernel, padding in A3C_LAYERS:
        conv = n + 2 * padding - kernel + 1
        if conv < 2:
            raise ValueError(
                f"input of size {size} is too small for the A3C CNN "
                f"(size {n} before a {kernel}x{kernel} conv with padding {padding})"
            )
        n = conv // 2
    return n


def _a3c_conv(in_channels: int, out_channels: int, kernel: int, padding: int) -> nn.Conv2d:
    """Stride-1 conv with the reference init: Glorot-uniform x ReLU gain, zero bias."""
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride=1, padding=padding)
    nn.init.xavier_uniform_(conv.weight, gain=nn.init.calculate_gain("relu"))
    nn.init.zeros_(conv.bias)
    return conv


class A3CCNNExtractor(FeatureExtractor):
    """The A3C-LSTM CNN; ``features_dim = 1024`` at 84 x 84 (and at the reference's 80 x 80).

    Args:
        in_channels: Input frames. The default 4 is every extractor's (so the registry's
            contract tests build them alike); A3C-LSTM passes 1 (memory is the LSTM, not a
            frame stack).
        input_size: Square input size in pixels (84 here; the reference crops to 80).
    """

    def __init__(self, in_channels: int = 4, input_size: int = 84) -> None:
        super().__init__(in_channels, input_size)
        out = a3c_output_size(input_size)
        layers: list[nn.Module] = []
        channels = in_channels
        for out_channels, kernel, padding in A3C_LAYERS:
            layers += [
                _a3c_conv(channels, out_channels, kernel, padding),
                nn.MaxPool2d(2, 2),
                nn.ReLU(),
            ]
            channels = out_channels
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.features_dim = channels * out * out

    def encode(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, 1024]`` at 84 x 84."""
        return self.net(x)

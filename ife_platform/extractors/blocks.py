"""Building blocks shared by the extractors: initialisation, residual stages, soft attention.

One implementation of the IMPALA residual stage serves both the IMPALA CNN (Espeholt et al.
2018, arXiv 1802.01561; the large variant as used by Fast Rainbow, Schmidt & Schmied 2021,
arXiv 2111.10247) and IFE's Agent-Friendly Encoding (Pham & Cangelosi 2025, arXiv 2504.10071),
which *is* the tail of IMPALA's third block.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

# Every AFE / IMPALA output is adaptively max-pooled to this grid before flattening.
POOL_GRID = 8


def relu_gain_init_(module: nn.Conv2d) -> nn.Conv2d:
    """Scale PyTorch's default conv init by the ReLU gain sqrt(2) and zero the bias, in place.

    This is the IFE authors' convolution init (arXiv 2504.10071, public implementation).
    Apply it before wrapping a conv in spectral norm.

    Args:
        module: A freshly built convolution.

    Returns:
        The same module.
    """
    with torch.no_grad():
        module.weight.mul_(nn.init.calculate_gain("relu"))
        if module.bias is not None:
            module.bias.zero_()
    return module


def make_conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    spectral_norm: bool = False,
) -> nn.Module:
    """A ``Conv2d`` with the ReLU-gain init, optionally wrapped in spectral norm.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Square kernel size.
        stride: Stride.
        padding: Zero padding.
        spectral_norm: Wrap the weight in ``torch.nn.utils.parametrizations.spectral_norm``
            (Miyato et al. 2018; one power iteration per training forward).

    Returns:
        The convolution module.
    """
    conv = relu_gain_init_(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
    )
    return _spectral_norm(conv) if spectral_norm else conv


class ResidualBlock(nn.Module):
    """Pre-activation residual block: ``x + conv3x3(relu(conv3x3(relu(x))))``, padding 1."""

    def __init__(self, channels: int, spectral_norm: bool = True) -> None:
        super().__init__()
        self.conv0 = make_conv(channels, channels, 3, padding=1, spectral_norm=spectral_norm)
        self.conv1 = make_conv(channels, channels, 3, padding=1, spectral_norm=spectral_norm)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block; shape ``[B, C, H, W]`` is preserved."""
        h = self.conv0(torch.relu(x))
        h = self.conv1(torch.relu(h))
        return x + h


class ResidualStage(nn.Sequential):
    """IMPALA stage after the entry conv: MaxPool(3, 2, 1) -> 2 residual blocks.

    ``[B, C, H, W] -> [B, C, ceil(H / 2), ceil(W / 2)]``.
    """

    def __init__(self, channels: int, spectral_norm: bool = True) -> None:
        super().__init__(
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            ResidualBlock(channels, spectral_norm),
            ResidualBlock(channels, spectral_norm),
        )


class AgentFriendlyEncoder(nn.Module):
    """IFE's AFE = the tail of IMPALA's third block plus its output pooling.

    MaxPool(3, 2, 1) -> 2 pre-activation residual blocks -> ReLU -> AdaptiveMaxPool2d(8) ->
    flatten; ``[B, C, H, W] -> [B, C * 64]`` (Pham & Cangelosi 2025, arXiv 2504.10071).
    """

    def __init__(self, channels: int, spectral_norm: bool = True) -> None:
        super().__init__()
        self.stage = ResidualStage(channels, spectral_norm)
        self.pool = nn.AdaptiveMaxPool2d(POOL_GRID)
        self.features_dim = channels * POOL_GRID * POOL_GRID

    def forward(self, x: Tensor) -> Tensor:
        """Encode ``[B, C, H, W]`` to ``[B, C * 64]``."""
        x = torch.relu(self.stage(x))  # [B, C, ceil(H/2), ceil(W/2)]
        return self.pool(x).flatten(1)  # [B, C * 8 * 8]


class SpatialSoftAttention(nn.Module):
    """Single-head soft spatial attention over feature cells (arXiv 2504.10071, HUE).

    For cell vectors ``z_i`` (the channel vector at each grid position):
    ``e_i = W2 relu(W1 z_i + b1) + b2``, ``alpha = softmax(e)`` over all cells (no
    temperature), and the masked features are ``z_i * alpha_i`` (no rescaling by the number
    of cells, as published). Linear layers keep PyTorch's default init.
    """

    def __init__(self, channels: int, hidden: int = 512) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Score, normalise and apply the mask.

        Args:
            z: ``[B, C, rows, cols]`` cell features.

        Returns:
            ``(masked [B, C, rows, cols], logits [B, rows, cols], mask [B, rows, cols])``.
        """
        b, _, rows, cols = z.shape
        cells = z.flatten(2).transpose(1, 2)  # [B, L, C], L = rows * cols
        logits = self.score(cells).squeeze(-1)  # [B, L]  e_i
        # The softmax runs in fp32 under any autocast (CUDA autocast does so already, CPU
        # autocast would keep bf16); the product with z stays in z's dtype. No-ops in fp32.
        mask = torch.softmax(logits.float(), dim=-1)  # [B, L]  alpha_i, sums to 1
        masked = z * mask.to(z.dtype).view(b, 1, rows, cols)  # [B, C, rows, cols]  z_i * alpha_i
        return masked, logits.view(b, rows, cols), mask.view(b, rows, cols)

"""CNN-attention baseline: the same soft attention on ordinary (overlapping) conv features.

The baseline of Pham & Cangelosi 2025 (arXiv 2504.10071): at 84 x 84 input a 15 x 15 mask, from
convs 8x8/4 -> 4x4/1 -> 3x3/1 (84 -> 20 -> 17 -> 15). Each cell's receptive field is 28 x 28
input pixels with a step of 4, so neighbouring cells overlap by 24 pixels: attending a cell
does not single out one image region (the displacement IFE removes).

Tail: the paper only swaps the encoder in front of the mask, so after masking we use the same
AFE as IFE (MaxPool(3,2,1): 15 -> 8, two residual blocks, ReLU, adaptive max-pool 8 x 8), giving
the same ``features_dim`` (4096 at width 2) and an identical decision head; the comparison then
differs only in the overlapping vs non-overlapping encoder. This tail is our choice.
"""

from __future__ import annotations

from torch import Tensor, nn

from .base import AttentionExtractor
from .blocks import AgentFriendlyEncoder, SpatialSoftAttention, make_conv

# (kernel, stride) of the three overlapping convs in front of the mask.
CNN_ATTENTION_LAYERS: tuple[tuple[int, int], ...] = ((8, 4), (4, 1), (3, 1))


class CNNAttentionExtractor(AttentionExtractor):
    """Soft spatial attention over overlapping CNN features, then AFE (arXiv 2504.10071).

    Args:
        in_channels: Stacked input frames.
        width: Channel multiplier: 2 -> 32/64/64 channels, 1 -> 16/32/32.
        input_size: Square input size in pixels (at least 28).
        spectral_norm: Spectral norm on the AFE residual convolutions.
        attention_hidden: Hidden units of the attention MLP.
    """

    # the AFE's max-pooling is 15x faster in NHWC; with the overlapping convs in NHWC too, an
    # update (batch 32) took 0.87x the NCHW time on this CPU (docs/benchmarks.md)
    channels_last = True

    def __init__(
        self,
        in_channels: int = 4,
        width: int = 2,
        input_size: int = 84,
        spectral_norm: bool = True,
        attention_hidden: int = 512,
    ) -> None:
        super().__init__(in_channels, input_size)
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        c1, c2, c3 = 16 * width, 32 * width, 32 * width
        (k1, s1), (k2, s2), (k3, s3) = CNN_ATTENTION_LAYERS
        self.encoder = nn.Sequential(
            make_conv(in_channels, c1, k1, stride=s1),
            nn.ReLU(),
            make_conv(c1, c2, k2, stride=s2),
            nn.ReLU(),
            make_conv(c2, c3, k3, stride=s3),
            nn.ReLU(),
        )
        self._set_geometry(CNN_ATTENTION_LAYERS)  # grid 15, receptive field 28, jump 4 at 84
        self.attention = SpatialSoftAttention(c3, attention_hidden)
        self.afe = AgentFriendlyEncoder(c3, spectral_norm)
        self.features_dim = self.afe.features_dim

    def encode(self, x: Tensor) -> Tensor:
        """Overlapping convs -> attention -> AFE; stores the mask and logits of this pass."""
        z = self.encoder(x)  # [B, c3, 15, 15] at 84 x 84
        masked, logits, mask = self.attention(z)
        self.attention_logits = logits
        self.attention_mask = mask
        return self.afe(masked)  # [B, c3 * 64]

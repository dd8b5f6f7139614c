"""The Interpretable Feature Extractor (IFE): HUE -> AFE.

Pham & Cangelosi, "Pay Attention to What and Where? Interpretable Feature Extractor in
Vision-based Deep Reinforcement Learning", arXiv 2504.10071 (IJCNN 2025).

HUE (Human-Understandable Encoding) uses only non-overlapping convolutions (stride = kernel),
so every mask cell sees exactly one disjoint ``hue_window`` x ``hue_window`` input window (the
same window in all stacked frames); a single soft spatial attention mask over those cells
multiplies the features. AFE (Agent-Friendly Encoding) then applies ordinary overlapping
convolutions (the tail of IMPALA's third block) to the masked features.

Shapes at the defaults (4 x 84 x 84 input, width 2, window 6 = 3 x 2):

    conv1 3x3/3  4 -> 32, ReLU   32 x 28 x 28
    conv2 2x2/2 32 -> 64, ReLU   64 x 14 x 14
    conv3 1x1   64 -> 64, ReLU   64 x 14 x 14
    attention 64 -> 512 -> 1, softmax over 196 cells, z_i * alpha_i
    AFE  maxpool(3,2,1) -> 2 residual blocks (spectral norm) -> ReLU -> adaptive max 8x8
    features 64 * 8 * 8 = 4096
"""

from __future__ import annotations

from torch import Tensor, nn

from .base import AttentionExtractor
from .blocks import AgentFriendlyEncoder, SpatialSoftAttention, make_conv


def split_hue_window(hue_window: int) -> tuple[int, int]:
    """Split the HUE window into the kernel (= stride) of conv1 and conv2.

    ``k2 = 2`` when the window is even, else 1; ``k1 = window // k2``; so ``k1 * k2 == window``
    (6 -> (3, 2) as published; 12 -> (6, 2); 7 -> (7, 1)).

    Args:
        hue_window: Side of the input window each mask cell sees.

    Returns:
        ``(k1, k2)``.
    """
    if hue_window < 1:
        raise ValueError(f"hue_window must be >= 1, got {hue_window}")
    k2 = 2 if hue_window % 2 == 0 else 1
    return hue_window // k2, k2


class IFEExtractor(AttentionExtractor):
    """IFE feature extractor (HUE -> AFE), arXiv 2504.10071.

    Args:
        in_channels: Stacked input frames.
        width: Channel multiplier: 2 -> 32/64/64 channels (published), 1 -> 16/32/32.
        hue_window: Input window per mask cell; must divide ``input_size``.
        input_size: Square input size in pixels.
        spectral_norm: Spectral norm on the AFE residual convolutions.
        attention_hidden: Hidden units of the attention MLP (512 as published).

    Raises:
        ValueError: If ``hue_window`` does not tile the input exactly.
    """

    channels_last = True  # its max-pooling dominated the eager NCHW forward (issue 13)

    def __init__(
        self,
        in_channels: int = 4,
        width: int = 2,
        hue_window: int = 6,
        input_size: int = 84,
        spectral_norm: bool = True,
        attention_hidden: int = 512,
    ) -> None:
        super().__init__(in_channels, input_size)
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        if hue_window < 1 or input_size % hue_window != 0:
            divisors = ", ".join(str(d) for d in range(1, input_size + 1) if input_size % d == 0)
            raise ValueError(
                f"HUE window {hue_window} does not tile the {input_size}x{input_size} input "
                f"exactly ({input_size} % {hue_window} = {input_size % max(hue_window, 1)}); "
                f"choose a divisor of {input_size}: {divisors}"
            )
        k1, k2 = split_hue_window(hue_window)
        c1, c2, c3 = 16 * width, 32 * width, 32 * width
        self.hue_window = hue_window
        # HUE: non-overlapping convs only (stride == kernel), so cell i sees one input window.
        self.hue = nn.Sequential(
            make_conv(in_channels, c1, k1, stride=k1),
            nn.ReLU(),
            make_conv(c1, c2, k2, stride=k2),
            nn.ReLU(),
            make_conv(c2, c3, 1),
            nn.ReLU(),
        )
        self._set_geometry([(k1, k1), (k2, k2), (1, 1)])
        assert self._rf == self._jump == hue_window  # one disjoint window per cell
        self.attention = SpatialSoftAttention(c3, attention_hidden)
        self.afe = AgentFriendlyEncoder(c3, spectral_norm)
        self.features_dim = self.afe.features_dim

    def encode(self, x: Tensor) -> Tensor:
        """HUE -> attention -> AFE; stores the mask and logits of this pass."""
        z = self.hue(x)  # [B, c3, G, G], G = input_size / hue_window
        masked, logits, mask = self.attention(z)  # [B, c3, G, G], [B, G, G], [B, G, G]
        self.attention_logits = logits
        self.attention_mask = mask
        return self.afe(masked)  # [B, c3 * 64]

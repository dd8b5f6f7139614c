"""The feature-extractor contract shared by every extractor.

An extractor maps a stacked observation ``[B, C, H, W]`` (uint8 in [0, 255] or float already
in [0, 1]) to a flat feature vector ``[B, features_dim]``; a decision head is built on top of
``features_dim`` alone (the Stable-Baselines3 contract). Extractors with a spatial attention
mask (:class:`AttentionExtractor`) also expose the mask of the last forward pass and the
geometry that maps every mask cell to the input pixels and the raw Atari screen it looks at.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

# Raw Atari screen (height, width); observations are this whole screen resized, no crop.
ATARI_SCREEN_HW: tuple[int, int] = (210, 160)


def conv_output_size(size: int, layers: Sequence[tuple[int, int]]) -> int:
    """Spatial size after a stack of unpadded convolutions.

    Args:
        size: Input height (or width) in pixels.
        layers: ``(kernel, stride)`` of each convolution, in order.

    Returns:
        The output size, ``floor((n - k) / s) + 1`` applied layer by layer.

    Raises:
        ValueError: If the input is too small for some layer.
    """
    n = size
    for kernel, stride in layers:
        if n < kernel:
            raise ValueError(
                f"input of size {size} is too small for convolutions {list(layers)} "
                f"(size {n} before a kernel of {kernel})"
            )
        n = (n - kernel) // stride + 1
    return n


def mask_entropy(mask: Tensor) -> Tensor:
    """Mean Shannon entropy (nats) of attention masks ``[B, rows, cols]`` that sum to 1.

    ``H = -sum_i a_i log a_i``; ln(rows * cols) for a uniform mask, 0 for a one-hot one.
    """
    m = mask.detach().flatten(1).float()
    return -(m * (m + 1e-12).log()).sum(-1).mean()


class FeatureExtractor(nn.Module):
    """Base class: observation ``[B, C, H, W]`` -> features ``[B, features_dim]``.

    Subclasses set ``features_dim`` in ``__init__`` and implement :meth:`encode`, which
    receives a float tensor in [0, 1]. ``forward`` does the uint8 scaling so that replay
    buffers can keep uint8 observations.

    Attributes:
        features_dim: Size of the flat output vector.
        has_attention: Whether the extractor exposes a spatial attention mask.
        in_channels: Number of stacked input channels (frames).
        input_size: Expected square input size in pixels, or None if any size works.
    """

    has_attention: bool = False
    #: Run the convolutions in the channels-last (NHWC) layout: ``forward`` converts the input,
    #: and every activation after it stays NHWC. Parameters keep the standard layout, so code
    #: that initialises them (SB3's orthogonal init views them) works unchanged. A layout, not
    #: a change of the math: on CPU the max-pooling kernels are about 15x faster in NHWC
    #: (docs/benchmarks.md, issue 13).
    channels_last: bool = False

    def __init__(self, in_channels: int, input_size: int | None) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.in_channels = in_channels
        self.input_size = input_size
        self.features_dim: int = 0

    def forward(self, obs: Tensor) -> Tensor:
        """Extract features.

        Args:
            obs: ``[B, C, H, W]`` uint8 (scaled by 1/255 here) or float already in [0, 1].

        Returns:
            ``[B, features_dim]`` features.
        """
        if obs.dim() != 4:
            raise ValueError(f"expected a [B, C, H, W] observation, got shape {tuple(obs.shape)}")
        if self.input_size is not None and tuple(obs.shape[-2:]) != (
            self.input_size,
            self.input_size,
        ):
            raise ValueError(
                f"{type(self).__name__} was built for {self.input_size}x{self.input_size} "
                f"inputs, got {tuple(obs.shape[-2:])}"
            )
        if obs.dtype == torch.uint8:
            # the weights' dtype; TorchRL's functional calls (target networks in its losses)
            # hold the weights as plain tensors, with no registered parameter left
            param = next(self.parameters(), None)
            dtype = param.dtype if param is not None else torch.get_default_dtype()
            obs = obs.to(dtype) / 255.0
        if self.channels_last:
            obs = obs.contiguous(memory_format=torch.channels_last)
        return self.encode(obs)

    def encode(self, x: Tensor) -> Tensor:
        """Map a float observation in [0, 1] ``[B, C, H, W]`` to ``[B, features_dim]``."""
        raise NotImplementedError


class AttentionExtractor(FeatureExtractor):
    """An extractor with one soft spatial attention mask over a grid of feature cells.

    After every forward pass ``attention_mask`` and ``attention_logits`` hold the mask of that
    pass (``[B, rows, cols]``; the mask is a softmax over all cells and sums to 1). They are
    kept attached to the autograd graph so a loss may use them; call ``.detach()`` to log.

    Cell geometry comes from the stack of unpadded convolutions in front of the mask
    (``_set_geometry``): cell ``i`` along an axis sees input pixels
    ``[i * jump, i * jump + rf)`` clipped to the image, where ``rf`` is the receptive field
    and ``jump`` the product of the strides. For IFE's HUE ``rf == jump`` (stride = kernel
    everywhere), so the windows tile the input exactly; for an ordinary CNN they overlap.

    Attributes:
        attention_mask: ``[B, rows, cols]`` softmax weights of the last forward, or None.
        attention_logits: ``[B, rows, cols]`` pre-softmax scores of the last forward, or None.
    """

    has_attention: bool = True

    def __init__(self, in_channels: int, input_size: int) -> None:
        super().__init__(in_channels, input_size)
        self.input_size: int = input_size
        self.attention_mask: Tensor | None = None
        self.attention_logits: Tensor | None = None
        self._grid = 0
        self._rf = 1
        self._jump = 1

    def _set_geometry(self, layers: Sequence[tuple[int, int]]) -> None:
        """Derive grid size, receptive field and jump from the convs in front of the mask."""
        self._grid = conv_output_size(self.input_size, layers)
        rf, jump = 1, 1
        for kernel, stride in layers:
            rf += (kernel - 1) * jump
            jump *= stride
        self._rf, self._jump = rf, jump

    @property
    def cell_grid(self) -> tuple[int, int]:
        """Mask grid ``(rows, cols)``."""
        return (self._grid, self._grid)

    def _axis_window(self, i: int) -> tuple[int, int]:
        if not 0 <= i < self._grid:
            raise IndexError(f"cell index {i} outside a grid of {self._grid}")
        lo = i * self._jump
        return lo, min(lo + self._rf, self.input_size)

    def cell_input_window(self, r: int, c: int) -> tuple[int, int, int, int]:
        """Input pixels seen by mask cell ``(r, c)``.

        Args:
            r: Cell row.
            c: Cell column.

        Returns:
            Half-open ``(y0, y1, x0, x1)`` in input pixels: the exact window for IFE, the
            receptive field clipped to the image for an overlapping CNN.
        """
        y0, y1 = self._axis_window(r)
        x0, x1 = self._axis_window(c)
        return y0, y1, x0, x1

    def cell_input_windows(self) -> Tensor:
        """All input windows at once: int64 ``[rows, cols, 4]`` of ``(y0, y1, x0, x1)``."""
        idx = torch.arange(self._grid)
        lo = idx * self._jump
        hi = (lo + self._rf).clamp(max=self.input_size)
        rows, cols = self.cell_grid
        y = torch.stack([lo, hi], dim=-1)[:, None, :].expand(rows, cols, 2)
        x = torch.stack([lo, hi], dim=-1)[None, :, :].expand(rows, cols, 2)
        return torch.cat([y, x], dim=-1)

    def cell_screen_rect(
        self, r: int, c: int, screen_hw: tuple[int, int] = ATARI_SCREEN_HW
    ) -> tuple[float, float, float, float]:
        """Raw-screen rectangle of mask cell ``(r, c)``.

        The observation is the whole screen resized to ``input_size`` x ``input_size`` (no
        crop), so input pixel edge ``y`` sits at screen row ``y * H / input_size`` and edge
        ``x`` at screen column ``x * W / input_size``. The rectangle is returned as floats
        (not rounded): at 210x160 -> 84x84 one input pixel is 2.5 x 1.905 screen pixels.

        Args:
            r: Cell row.
            c: Cell column.
            screen_hw: Raw screen ``(height, width)``.

        Returns:
            Half-open ``(y0, y1, x0, x1)`` in (fractional) screen pixels.
        """
        y0, y1, x0, x1 = self.cell_input_window(r, c)
        h, w, n = screen_hw[0], screen_hw[1], self.input_size
        return (y0 * h / n, y1 * h / n, x0 * w / n, x1 * w / n)

    def cell_screen_rects(self, screen_hw: tuple[int, int] = ATARI_SCREEN_HW) -> Tensor:
        """All screen rectangles at once: float64 ``[rows, cols, 4]`` of ``(y0, y1, x0, x1)``.

        Same mapping (and same floating-point values) as :meth:`cell_screen_rect`.
        """
        win = self.cell_input_windows().to(torch.float64)
        scale = torch.tensor(
            [screen_hw[0], screen_hw[0], screen_hw[1], screen_hw[1]], dtype=torch.float64
        )
        return win * scale / self.input_size

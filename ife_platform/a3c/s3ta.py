"""S3TA: the attention-augmented recurrent actor-critic of Mott et al. 2019 (the IFE baseline).

Mott, Zoran, Chrzanowski, Wierstra & Rezende, "Towards Interpretable Reinforcement Learning
Using Attention Augmented Agents", NeurIPS 2019, arXiv 1906.02500. Section 2 ("Model") and its
Figure 1 describe the agent; the numbers below follow the paper where it gives them and are
marked as our choice where it does not (see "Deviations").

One agent step ``t`` (Sec. 2; ``B`` frames, grid ``h x w``, ``N_q = 4`` heads):

    (S1) vision core      F_t = relu(conv4x4/2(relu(conv8x8/4(X_t)))), then a
                          ConvLSTM with 128 channels, 3x3 kernel, padding 1:
                          (O_t, C_t) = ConvLSTM(F_t, (O_{t-1}, C_{t-1}))      O_t: [B, 128, h, w]
    (S2) keys / values    K_t, V_t = split(O_t, [c_k = 8, c_v = 120]) along channels
    (S3) spatial basis    K_t <- [K_t ; S],  V_t <- [V_t ; S]   with a FIXED S: [c_s = 64, h, w]
                          K_t: [B, 72, h, w],  V_t: [B, 184, h, w]
    (S4) top-down queries q^n_t = W_q s_{t-1} + b_q,  n = 1..N_q,  q^n_t in R^72, where s_{t-1}
                          is the policy LSTM's output of the PREVIOUS step: the queries are
                          chosen before frame t is seen (top-down), only the keys depend on it
    (S5) attention logits a^n_{t,ij} = <q^n_t, K_{t,:,ij}>              (no 1/sqrt(d) scale)
    (S6) spatial softmax  A^n_{t,ij} = exp(a^n_{t,ij}) / sum_{i'j'} exp(a^n_{t,i'j'})
                          (one softmax per query: sum_ij A^n_{t,ij} = 1 for every head n)
    (S7) answers          r^n_t = sum_ij A^n_{t,ij} V_{t,:,ij}                 r^n_t in R^184
    (S8) answer processor z_t = MLP([r^1_t ... r^4_t ; q^1_t ... q^4_t])  (4*184 + 4*72 = 1024
                          -> 512 -> 256, ReLU after each layer)
    (S9) policy core      (s_t, m_t) = LSTM(z_t, (s_{t-1}, m_{t-1}))      s_t in R^256
    (S10) heads           logits_t = W_pi s_t + b_pi,  V(x_t) = w_v . s_t + b_v

Spatial basis (S3), our concrete choice of the paper's fixed Fourier basis: for grid row
``i`` in ``0..h-1``, column ``j`` in ``0..w-1`` and frequencies ``u, v`` in ``0..7``,

    S[8u + v, i, j] = cos(pi * u * i / h) * cos(pi * v * j / w)        (64 channels)

``u`` is the vertical and ``v`` the horizontal frequency; channel 0 (u = v = 0) is the constant
1, which lets a query carry a content-independent bias. The basis is a ``register_buffer``
(non-persistent, so a checkpoint does not pin the grid), never a Parameter: it gets no gradient
and no optimiser ever changes it. Because it is part of every key, a query can attend to a
place ("where") independently of the content ("what"), the split the paper analyses.

Padding and grid: the paper reports a 27 x 20 grid for its 210 x 160 input, which is what
TensorFlow "SAME" padding gives (ceil(210 / 4) = 53, ceil(53 / 2) = 27; 160 -> 40 -> 20; unpadded
convs would give 24 x 18), so we infer it; the convolutions here pad the same way (asymmetric:
the extra pixel goes after). At this platform's 84 x 84 input: 84 -> 21 -> 11, so the mask grid
is 11 x 11 (121 cells).

Cell geometry (:class:`S3TAVision`): a cell of ``O_t`` sees, through the current frame, the
input pixels of the conv stack AND of the ConvLSTM's 3x3 input-to-hidden kernel (which adds
``2 x 8 = 16`` pixels: one cell either side, at a jump of 8). At 84 x 84 cell ``i`` along an
axis sees ``[8 i - 14, 8 i + 22)`` clipped to ``[0, 84)``: a 36-pixel receptive field, a step of
8, so neighbouring windows share 28 pixels (cell 0: ``[0, 22)``, cell 10: ``[66, 84)``). These
windows are the ONE-STEP receptive field. Through the recurrent state the 3x3 hidden-to-hidden
kernel widens what a cell has seen by one cell (8 px) each side per past step, so after ``k``
steps a cell may carry information from ``36 + 16 k`` pixels around it (soon the whole screen).
That recurrent spread is part of why S3TA's masks are hard to read as "this region matters".

Deviations from the paper (all constructor arguments unless stated):
    * Input: ONE 84 x 84 gray frame per step (uint8 ``[B, 1, 84, 84]``, whole screen resized),
      the same input as this platform's A3C-LSTM agent; the paper feeds the full 210 x 160 RGB
      frame (``in_channels=3, input_hw=(210, 160)`` gives its 27 x 20 grid).
    * Queries: one linear layer from the policy-LSTM state (``query_hidden=()``); the paper's
      "query network" is an MLP (pass hidden sizes in ``query_hidden`` to get one).
    * Policy-core input: only the answer-processor output. IMPALA-style agents, this paper's
      public reproductions among them, also feed the previous reward and one-hot previous action;
      we do not, so that ``step``/``forward`` mirror :class:`RecurrentActorCritic` exactly.
    * Channel widths 32 / 64 of the two convs, the answer MLP 512 -> 256, the ConvLSTM's
      forget-gate bias of +1 (no peepholes) and the initialisation are our reading or our
      choice. Init: convs default x ReLU gain with zero bias (as every extractor here); query
      and answer layers PyTorch defaults; policy LSTM, actor and critic exactly as in
      :class:`RecurrentActorCritic` (zero LSTM biases, normalised-column heads with std 0.01
      and 1.0), so that both agents start alike under the same A3C task.
    * Spatial basis: the paper's exact frequency set is not reproduced beyond "64 fixed cosine
      channels" (our form above).
    * Training (not in this file): the paper trains with IMPALA / V-trace; this platform's A3C
      task drives the same ``step``/``forward`` API.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ife_platform.a3c.model import normalized_columns_init_, zero_rows
from ife_platform.extractors.base import ATARI_SCREEN_HW, AttentionExtractor
from ife_platform.extractors.blocks import make_conv

__all__ = [
    "S3TA_CONV_LAYERS",
    "AxisGeometry",
    "ConvLSTMCell",
    "S3TAAgent",
    "S3TAVision",
    "axis_geometry",
    "build_s3ta",
    "cosine_spatial_basis",
    "same_padding",
    "spatial_attention",
]

# (kernel, stride) of the two convolutions of the vision core (Mott et al. 2019, Sec. 2).
S3TA_CONV_LAYERS: tuple[tuple[int, int], ...] = ((8, 4), (4, 2))
# The ConvLSTM's kernel (stride 1, "SAME" = padding 1): it widens each cell's receptive field.
CONVLSTM_KERNEL = 3

# State tuple: (ConvLSTM h [B, C, rows, cols], ConvLSTM c, policy LSTM h [B, H], policy LSTM c).
S3TAState = tuple[Tensor, Tensor, Tensor, Tensor]


# --------------------------------------------------------------------------------------------
# Pure functions
# --------------------------------------------------------------------------------------------


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow "SAME" padding along one axis.

    ``out = ceil(n / s)``; ``total = max((out - 1) * s + k - n, 0)``; ``before = total // 2``,
    ``after = total - before`` (the odd pixel goes after, as in TensorFlow).

    Args:
        size: Input length ``n``.
        kernel: Kernel size ``k``.
        stride: Stride ``s``.

    Returns:
        ``(out, before, after)``.
    """
    if size < 1:
        raise ValueError(f"input size must be >= 1, got {size}")
    out = -(-size // stride)  # ceil(n / s)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


class AxisGeometry(NamedTuple):
    """Where the cells of a padded conv stack look, along one axis.

    Cell ``i`` sees input pixels ``[offset + i * jump, offset + i * jump + rf)`` clipped to
    ``[0, size)``.

    Attributes:
        size: Input length in pixels.
        grid: Number of cells.
        rf: Receptive field in pixels (before clipping).
        jump: Distance in pixels between neighbouring cells (product of the strides).
        offset: Input position of cell 0's first pixel (<= 0 with padding).
    """

    size: int
    grid: int
    rf: int
    jump: int
    offset: int


def axis_geometry(size: int, layers: Sequence[tuple[int, int]]) -> AxisGeometry:
    """Grid and receptive fields of a stack of "SAME"-padded convolutions along one axis.

    Per layer ``(k, s)`` with ``before`` padding pixels: ``offset -= before * jump``,
    ``rf += (k - 1) * jump``, ``jump *= s``, ``n = ceil(n / s)``.

    Args:
        size: Input length in pixels.
        layers: ``(kernel, stride)`` of each convolution, in order.

    Returns:
        The :class:`AxisGeometry`.
    """
    n, rf, jump, offset = size, 1, 1, 0
    for kernel, stride in layers:
        out, before, _ = same_padding(n, kernel, stride)
        offset -= before * jump
        rf += (kernel - 1) * jump
        jump *= stride
        n = out
    return AxisGeometry(size=size, grid=n, rf=rf, jump=jump, offset=offset)


def cosine_spatial_basis(rows: int, cols: int, freqs: int = 8) -> Tensor:
    """The fixed spatial basis: products of cosines over the grid (module docstring, S3).

    ``S[u * freqs + v, i, j] = cos(pi * u * i / rows) * cos(pi * v * j / cols)`` for
    ``u, v`` in ``0..freqs-1``.

    Args:
        rows: Grid height ``h``.
        cols: Grid width ``w``.
        freqs: Frequencies per axis; ``freqs ** 2`` channels (8 -> 64, the paper's ``c_s``).

    Returns:
        float32 ``[freqs ** 2, rows, cols]``.
    """
    if rows < 1 or cols < 1 or freqs < 1:
        raise ValueError(f"rows, cols and freqs must be >= 1, got {rows}, {cols}, {freqs}")
    f = torch.arange(freqs, dtype=torch.float64)
    cy = torch.cos(math.pi * f[:, None] * torch.arange(rows, dtype=torch.float64) / rows)  # [u, i]
    cx = torch.cos(math.pi * f[:, None] * torch.arange(cols, dtype=torch.float64) / cols)  # [v, j]
    basis = cy[:, None, :, None] * cx[None, :, None, :]  # [u, v, i, j]
    return basis.reshape(freqs * freqs, rows, cols).to(torch.float32)


def spatial_attention(queries: Tensor, keys: Tensor, values: Tensor) -> tuple[Tensor, ...]:
    """Multi-query soft spatial attention (module docstring, S5-S7).

    Args:
        queries: ``[B, N_q, d_k]``.
        keys: ``[B, d_k, L]`` (``L = rows * cols`` cells).
        values: ``[B, d_v, L]``.

    Returns:
        ``(answers [B, N_q, d_v], weights [B, N_q, L], logits [B, N_q, L])``; every row of
        ``weights`` is a softmax over the ``L`` cells (sums to 1).
    """
    logits = torch.einsum("bnk,bkl->bnl", queries, keys)  # (S5) <q^n, K_ij>
    # (S6) one spatial softmax per query, in fp32 under any autocast (CPU autocast keeps bf16)
    weights = torch.softmax(logits.float(), dim=-1)
    answers = torch.einsum("bnl,bvl->bnv", weights.to(values.dtype), values)  # (S7) sum A V
    return answers, weights, logits


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------


class ConvLSTMCell(nn.Module):
    """Convolutional LSTM cell (Shi et al. 2015, arXiv 1506.04214; no peepholes).

    With ``*`` a 3x3 convolution (padding 1) and ``.`` the elementwise product:

        [i; f; g; o] = W_x * x_t + W_h * h_{t-1} + b
        c_t = sigmoid(f + forget_bias) . c_{t-1} + sigmoid(i) . tanh(g)
        h_t = sigmoid(o) . tanh(c_t)

    ``W_x * x`` and ``W_h * h`` are separate convolutions (their sum is the conv of the
    concatenation) so that the input part can be computed for a whole rollout at once.

    Args:
        in_channels: Channels of ``x``.
        hidden_channels: Channels of ``h`` and ``c``.
        kernel_size: Odd square kernel; padding ``kernel_size // 2`` keeps the grid.
        forget_bias: Constant added to the forget gate's pre-activation.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int = CONVLSTM_KERNEL,
        forget_bias: float = 1.0,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        pad = kernel_size // 2
        self.hidden_channels = hidden_channels
        self.forget_bias = forget_bias
        self.input_conv = nn.Conv2d(in_channels, 4 * hidden_channels, kernel_size, padding=pad)
        self.hidden_conv = nn.Conv2d(
            hidden_channels, 4 * hidden_channels, kernel_size, padding=pad, bias=False
        )

    def input_gates(self, x: Tensor) -> Tensor:
        """``W_x * x + b``: ``[N, in, h, w]`` -> ``[N, 4 * hidden, h, w]``."""
        return self.input_conv(x)

    def step(self, gates_x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """One step from precomputed input gates.

        Args:
            gates_x: ``W_x * x_t + b``, ``[B, 4 * hidden, h, w]``.
            state: ``(h_{t-1}, c_{t-1})``, each ``[B, hidden, h, w]``.

        Returns:
            ``(h_t, c_t)``.
        """
        h, c = state
        i, f, g, o = (gates_x + self.hidden_conv(h)).chunk(4, dim=1)
        c = torch.sigmoid(f + self.forget_bias) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """One step: ``x_t [B, in, h, w]`` and ``(h_{t-1}, c_{t-1})`` -> ``(h_t, c_t)``."""
        return self.step(self.input_gates(x), state)


class S3TAVision(AttentionExtractor):
    """S3TA's vision core (conv 8x8/4 -> conv 4x4/2 -> ConvLSTM) and its cell geometry.

    The attention itself needs the policy state, so it lives in :class:`S3TAAgent`; this module
    is the agent's ``extractor`` so that code written for :class:`AttentionExtractor` finds the
    grid and the cell-to-input / cell-to-screen geometry at ``model.extractor``.

    Geometry: ``_set_geometry`` is called with the two convs AND the ConvLSTM's 3x3 kernel
    (module docstring, "Cell geometry"): the windows are the receptive field of a cell through
    the current frame; the recurrent state widens it by 16 px per past step. Inputs need not be
    square (``input_hw``); ``input_size`` is the side for square inputs, else None.

    ``forward``/``encode`` run one vision-core step from a ZERO state (the first step of an
    episode) and return the ConvLSTM output flattened (``features_dim = hidden * rows *
    cols``); they set no attention mask (``attention_mask`` / ``attention_logits`` stay None),
    so a tool that needs the mask fails loudly instead of reading a stale one. The masks are on
    the agent (:attr:`S3TAAgent.attention_mask`).

    Args:
        in_channels: Input channels (1 gray frame here; 3 for the paper's RGB).
        input_hw: Input ``(height, width)`` in pixels (84 x 84 here; the paper's 210 x 160).
        conv_channels: Output channels of the two convolutions.
        hidden_channels: ConvLSTM channels (128 = keys + values).
        forget_bias: ConvLSTM forget-gate bias.
    """

    def __init__(
        self,
        in_channels: int = 1,
        input_hw: tuple[int, int] = (84, 84),
        conv_channels: tuple[int, int] = (32, 64),
        hidden_channels: int = 128,
        forget_bias: float = 1.0,
    ) -> None:
        height, width = int(input_hw[0]), int(input_hw[1])
        super().__init__(in_channels, height)
        self.input_size = height if height == width else None  # type: ignore[assignment]
        self.input_hw = (height, width)
        if len(conv_channels) != len(S3TA_CONV_LAYERS):
            raise ValueError(f"conv_channels needs 2 entries, got {conv_channels}")
        # Per conv: (left, right, top, bottom) "SAME" padding for F.pad.
        pads: list[tuple[int, int, int, int]] = []
        convs: list[nn.Module] = []
        h, w, channels = height, width, in_channels
        for (kernel, stride), out_channels in zip(S3TA_CONV_LAYERS, conv_channels, strict=True):
            if h < 1 or w < 1:
                raise ValueError(f"input {input_hw} is too small for the S3TA convolutions")
            h, top, bottom = same_padding(h, kernel, stride)
            w, left, right = same_padding(w, kernel, stride)
            pads.append((left, right, top, bottom))
            convs.append(make_conv(channels, out_channels, kernel, stride=stride))
            channels = out_channels
        self.convs = nn.ModuleList(convs)
        self._pads = tuple(pads)
        self.hidden_channels = hidden_channels
        self.convlstm = ConvLSTMCell(channels, hidden_channels, CONVLSTM_KERNEL, forget_bias)
        self._set_geometry((*S3TA_CONV_LAYERS, (CONVLSTM_KERNEL, 1)))
        assert self.cell_grid == (h, w), "geometry and convolutions disagree on the grid"
        self.features_dim = hidden_channels * h * w

    # ---- geometry -----------------------------------------------------------------------

    def _set_geometry(self, layers: Sequence[tuple[int, int]]) -> None:
        """Grid, receptive field, jump and offset per axis of the "SAME"-padded stack."""
        self.geometry_h = axis_geometry(self.input_hw[0], layers)
        self.geometry_w = axis_geometry(self.input_hw[1], layers)

    @property
    def cell_grid(self) -> tuple[int, int]:
        """Mask grid ``(rows, cols)``: (11, 11) at 84 x 84, (27, 20) at 210 x 160."""
        return (self.geometry_h.grid, self.geometry_w.grid)

    @staticmethod
    def _axis_windows(geo: AxisGeometry) -> Tensor:
        lo = torch.arange(geo.grid) * geo.jump + geo.offset
        return torch.stack([lo.clamp(min=0), (lo + geo.rf).clamp(max=geo.size)], dim=-1)

    def cell_input_window(self, r: int, c: int) -> tuple[int, int, int, int]:
        """Input pixels seen by cell ``(r, c)`` through the current frame.

        Args:
            r: Cell row.
            c: Cell column.

        Returns:
            Half-open ``(y0, y1, x0, x1)``: the one-step receptive field clipped to the image.
        """
        rows, cols = self.cell_grid
        if not (0 <= r < rows and 0 <= c < cols):
            raise IndexError(f"cell ({r}, {c}) outside a grid of {rows} x {cols}")
        y0, y1 = self._axis_windows(self.geometry_h)[r].tolist()
        x0, x1 = self._axis_windows(self.geometry_w)[c].tolist()
        return y0, y1, x0, x1

    def cell_input_windows(self) -> Tensor:
        """All input windows at once: int64 ``[rows, cols, 4]`` of ``(y0, y1, x0, x1)``."""
        rows, cols = self.cell_grid
        y = self._axis_windows(self.geometry_h)[:, None, :].expand(rows, cols, 2)
        x = self._axis_windows(self.geometry_w)[None, :, :].expand(rows, cols, 2)
        return torch.cat([y, x], dim=-1)

    def cell_screen_rect(
        self, r: int, c: int, screen_hw: tuple[int, int] = ATARI_SCREEN_HW
    ) -> tuple[float, float, float, float]:
        """Raw-screen rectangle of cell ``(r, c)`` (the input is the whole screen resized).

        Args:
            r: Cell row.
            c: Cell column.
            screen_hw: Raw screen ``(height, width)``.

        Returns:
            Half-open ``(y0, y1, x0, x1)`` in (fractional) screen pixels.
        """
        y0, y1, x0, x1 = self.cell_input_window(r, c)
        sy, sx = screen_hw[0] / self.input_hw[0], screen_hw[1] / self.input_hw[1]
        return (y0 * sy, y1 * sy, x0 * sx, x1 * sx)

    def cell_screen_rects(self, screen_hw: tuple[int, int] = ATARI_SCREEN_HW) -> Tensor:
        """All screen rectangles at once: float64 ``[rows, cols, 4]`` of ``(y0, y1, x0, x1)``."""
        win = self.cell_input_windows().to(torch.float64)
        (h, w), (n_h, n_w) = screen_hw, self.input_hw
        scale = torch.tensor([h / n_h, h / n_h, w / n_w, w / n_w], dtype=torch.float64)
        return win * scale

    # ---- computation --------------------------------------------------------------------

    def conv_features(self, x: Tensor) -> Tensor:
        """The two "SAME"-padded convs with ReLU: ``[N, C, H, W]`` float -> ``[N, 64, h, w]``."""
        for pad, conv in zip(self._pads, self.convs, strict=True):
            x = torch.relu(conv(F.pad(x, pad)))
        return x

    def zero_state(self, batch: int, device: Any = None, dtype: Any = None) -> tuple[Tensor, ...]:
        """ConvLSTM ``(h, c)`` zeros, each ``[batch, hidden, rows, cols]``."""
        shape = (batch, self.hidden_channels, *self.cell_grid)
        return tuple(torch.zeros(shape, device=device, dtype=dtype) for _ in range(2))

    def check_obs(self, obs: Tensor, dims: int) -> None:
        """Raise ValueError unless ``obs`` has ``dims`` dims ending in ``[C, H, W]`` as built."""
        expected = (self.in_channels, *self.input_hw)
        if obs.dim() != dims or tuple(obs.shape[-3:]) != expected:
            lead = "[B, " if dims == 4 else "[T, B, "
            raise ValueError(
                f"{type(self).__name__} expects {lead}{', '.join(map(str, expected))}] "
                f"observations, got {tuple(obs.shape)}"
            )

    def forward(self, obs: Tensor) -> Tensor:
        """One vision-core step from a zero state; uint8 is scaled by 1/255.

        Args:
            obs: ``[B, C, H, W]`` uint8 or float in [0, 1].

        Returns:
            ``[B, features_dim]``: the flattened ConvLSTM output.
        """
        self.check_obs(obs, 4)
        if obs.dtype == torch.uint8:
            obs = obs.to(next(self.parameters()).dtype) / 255.0
        return self.encode(obs)

    def encode(self, x: Tensor) -> Tensor:
        """Float ``[B, C, H, W]`` -> ``[B, hidden * rows * cols]`` (zero ConvLSTM state)."""
        state = self.zero_state(x.shape[0], x.device, x.dtype)
        h, _ = self.convlstm(self.conv_features(x), state)
        return h.flatten(1)


class S3TAAgent(nn.Module):
    """S3TA recurrent actor-critic (Mott et al. 2019), with ``RecurrentActorCritic``'s API.

    The equations are in the module docstring (S1-S10). State is a tuple
    ``(conv_h [B, 128, rows, cols], conv_c, policy_h [B, 256], policy_c [B, 256])``; every row
    where ``first`` is set is zeroed before the step that uses it (an episode starts there).

    After :meth:`step` or :meth:`forward`, ``attention_masks`` holds ``[N, heads, rows, cols]``
    (one spatial softmax per query; ``N = B`` after ``step``, ``N = T * B`` in time-major
    order after ``forward``), ``attention_logits`` the matching pre-softmax scores and
    ``attention_mask`` the average over heads ``[N, rows, cols]`` (still sums to 1). They stay
    attached to the autograd graph; call ``.detach()`` to log.

    Args:
        num_actions: Number of discrete actions.
        in_channels: Input channels per step (1 gray frame here; 3 for the paper's RGB).
        input_hw: Input ``(height, width)``: (84, 84) here -> 11 x 11 grid; (210, 160) -> 27 x 20.
        conv_channels: Output channels of the two vision convolutions.
        key_channels: ``c_k`` (8 in the paper).
        value_channels: ``c_v`` (120); ConvLSTM channels are ``c_k + c_v`` (128).
        basis_freqs: Cosine frequencies per axis; ``c_s = basis_freqs ** 2`` (8 -> 64).
        num_heads: Number of queries ``N_q`` (4).
        hidden_size: Policy LSTM size (256).
        query_hidden: Hidden sizes of the query network; ``()`` is one linear layer.
        answer_hidden: Layer sizes of the answer processor (ReLU after each); the last one is
            the policy LSTM's input size.
        forget_bias: ConvLSTM forget-gate bias.
    """

    has_attention: bool = True

    def __init__(
        self,
        num_actions: int,
        in_channels: int = 1,
        input_hw: tuple[int, int] = (84, 84),
        conv_channels: tuple[int, int] = (32, 64),
        key_channels: int = 8,
        value_channels: int = 120,
        basis_freqs: int = 8,
        num_heads: int = 4,
        hidden_size: int = 256,
        query_hidden: Sequence[int] = (),
        answer_hidden: Sequence[int] = (512, 256),
        forget_bias: float = 1.0,
    ) -> None:
        super().__init__()
        if num_actions < 1:
            raise ValueError(f"num_actions must be >= 1, got {num_actions}")
        if min(key_channels, value_channels, num_heads, hidden_size) < 1:
            raise ValueError("key_channels, value_channels, num_heads, hidden_size must be >= 1")
        if not answer_hidden:
            raise ValueError("answer_hidden needs at least one layer")
        self.num_actions = num_actions
        self.num_heads = num_heads
        self.hidden_size = hidden_size
        self.key_channels = key_channels
        self.value_channels = value_channels
        # (S1) vision core; also the geometry provider for masks/videos/metrics.
        self.extractor = S3TAVision(
            in_channels, input_hw, conv_channels, key_channels + value_channels, forget_bias
        )
        rows, cols = self.extractor.cell_grid
        # (S3) the fixed basis: a buffer, not a Parameter (no gradient, never optimised).
        self.register_buffer(
            "spatial_basis", cosine_spatial_basis(rows, cols, basis_freqs), persistent=False
        )
        basis_channels = basis_freqs * basis_freqs
        self.query_dim = key_channels + basis_channels  # 72
        self.answer_dim = value_channels + basis_channels  # 184
        # (S4) queries from the previous policy state.
        q_layers: list[nn.Module] = []
        width = hidden_size
        for size in query_hidden:
            q_layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        q_layers.append(nn.Linear(width, num_heads * self.query_dim))
        self.query = nn.Sequential(*q_layers)
        # (S8) answer processor over [answers ; queries].
        a_layers: list[nn.Module] = []
        width = num_heads * (self.answer_dim + self.query_dim)  # 4 * (184 + 72) = 1024
        for size in answer_hidden:
            a_layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.answer_mlp = nn.Sequential(*a_layers)
        # (S9) policy core, (S10) heads.
        self.lstm = nn.LSTMCell(width, hidden_size)
        with torch.no_grad():
            self.lstm.bias_ih.zero_()
            self.lstm.bias_hh.zero_()
        self.policy = normalized_columns_init_(nn.Linear(hidden_size, num_actions), 0.01)
        self.value = normalized_columns_init_(nn.Linear(hidden_size, 1), 1.0)
        self.attention_masks: Tensor | None = None
        self.attention_logits: Tensor | None = None

    # ---- geometry (delegated to the vision core) ------------------------------------------

    @property
    def cell_grid(self) -> tuple[int, int]:
        """Mask grid ``(rows, cols)``: (11, 11) at 84 x 84."""
        return self.extractor.cell_grid

    def cell_input_windows(self) -> Tensor:
        """int64 ``[rows, cols, 4]`` one-step receptive fields (see :class:`S3TAVision`)."""
        return self.extractor.cell_input_windows()

    def cell_screen_rects(self, screen_hw: tuple[int, int] = ATARI_SCREEN_HW) -> Tensor:
        """float64 ``[rows, cols, 4]`` rectangles on the raw screen."""
        return self.extractor.cell_screen_rects(screen_hw)

    @property
    def attention_mask(self) -> Tensor | None:
        """``[N, rows, cols]``: the last step's/forward's masks averaged over the heads."""
        return None if self.attention_masks is None else self.attention_masks.mean(dim=1)

    # ---- recurrent API ---------------------------------------------------------------------

    def initial_state(self, batch: int, device: torch.device | str | None = None) -> S3TAState:
        """All-zero state for ``batch`` environments.

        Args:
            batch: Number of environments ``B``.
            device: Device of the state (default: the parameters').

        Returns:
            ``(conv_h, conv_c, policy_h, policy_c)``: ``[B, 128, rows, cols]`` twice, then
            ``[B, hidden_size]`` twice.
        """
        param = next(self.parameters())
        device = param.device if device is None else device
        conv_h, conv_c = self.extractor.zero_state(batch, device, param.dtype)
        pol_h, pol_c = (
            torch.zeros(batch, self.hidden_size, device=device, dtype=param.dtype) for _ in "hc"
        )
        return conv_h, conv_c, pol_h, pol_c

    def step(
        self, obs: Tensor, state: S3TAState, first: Tensor
    ) -> tuple[Tensor, Tensor, S3TAState]:
        """One agent step.

        Args:
            obs: ``[B, C, H, W]`` uint8 (scaled by 1/255) or float in [0, 1].
            state: The state after the previous step.
            first: ``[B]`` bool: the frame starts an episode (that row's state is zeroed).

        Returns:
            ``(logits [B, A], value [B], new_state)``.
        """
        self.extractor.check_obs(obs, 4)
        if first.shape != obs.shape[:1]:
            raise ValueError(f"first must be [B] = {tuple(obs.shape[:1])}, got {first.shape}")
        logits, values, state = self.forward(obs.unsqueeze(0), state, first.unsqueeze(0))
        return logits[0], values[0], state

    def forward(
        self, obs: Tensor, state: S3TAState, first: Tensor
    ) -> tuple[Tensor, Tensor, S3TAState]:
        """Unroll ``T`` steps, zeroing the state rows where ``first[t]`` before step ``t``.

        Args:
            obs: ``[T, B, C, H, W]`` uint8 (scaled by 1/255) or float in [0, 1].
            state: The state before ``obs[0]``.
            first: ``[T, B]`` bool: ``obs[t, b]`` starts an episode.

        Returns:
            ``(logits [T, B, A], values [T, B], final_state)``.
        """
        self.extractor.check_obs(obs, 5)
        t_len, batch = obs.shape[:2]
        if first.shape != (t_len, batch):
            raise ValueError(f"first must be [T, B] = {(t_len, batch)}, got {tuple(first.shape)}")
        dtype = next(self.parameters()).dtype if obs.dtype == torch.uint8 else obs.dtype
        x = obs.flatten(0, 1).to(dtype)
        if obs.dtype == torch.uint8:
            x = x / 255.0
        rows, cols = self.cell_grid
        # The input side of (S1) has no recurrence: computed for all T * B frames at once.
        gates_x = self.extractor.convlstm.input_gates(self.extractor.conv_features(x))
        gates_x = gates_x.view(t_len, batch, *gates_x.shape[1:])  # [T, B, 4 * 128, h, w]
        basis = self.spatial_basis.flatten(1).to(dtype).expand(batch, -1, -1)  # [B, 64, L]
        conv_h, conv_c, pol_h, pol_c = state
        outputs, masks, scores = [], [], []
        for t in range(t_len):
            reset = first[t].to(device=gates_x.device, dtype=torch.bool)
            conv_h, conv_c, pol_h, pol_c = zero_rows((conv_h, conv_c, pol_h, pol_c), reset)
            conv_h, conv_c = self.extractor.convlstm.step(gates_x[t], (conv_h, conv_c))  # (S1)
            feats = conv_h.flatten(2)  # [B, 128, L]
            keys = torch.cat([feats[:, : self.key_channels], basis], dim=1)  # (S2, S3) [B, 72, L]
            values = torch.cat([feats[:, self.key_channels :], basis], dim=1)  # [B, 184, L]
            queries = self.query(pol_h).view(batch, self.num_heads, self.query_dim)  # (S4)
            answers, weights, logits = spatial_attention(queries, keys, values)  # (S5-S7)
            z = self.answer_mlp(torch.cat([answers.flatten(1), queries.flatten(1)], dim=1))  # S8
            pol_h, pol_c = self.lstm(z, (pol_h, pol_c))  # (S9)
            outputs.append(pol_h)
            masks.append(weights)
            scores.append(logits)
        core = torch.stack(outputs)  # [T, B, 256]
        grid = (t_len * batch, self.num_heads, rows, cols)
        self.attention_masks = torch.stack(masks).view(grid)
        self.attention_logits = torch.stack(scores).view(grid)
        return self.policy(core), self.value(core).squeeze(-1), (conv_h, conv_c, pol_h, pol_c)


def build_s3ta(num_actions: int, **kwargs: Any) -> S3TAAgent:
    """Build an :class:`S3TAAgent`.

    Args:
        num_actions: Number of discrete actions.
        **kwargs: Constructor arguments of :class:`S3TAAgent` (an unknown one raises TypeError).

    Returns:
        The agent.
    """
    return S3TAAgent(num_actions, **kwargs)

"""Perturbation-based interpretability: leakage, saliency, deletion/insertion, randomisation.

Definitions follow ``shared/reference/metrics.md`` ("Spatial leakage", "Faithfulness"). All
functions are batched (perturbations of one or many frames go through the network together,
``batch_size`` inputs per forward), run under ``torch.no_grad()`` and on the device of the
observation / network given. Observations are stacked frames ``[B, C, H, W]``, uint8 in
[0, 255] or float in [0, 1] (the extractors' contract); every perturbation touches all stacked
frames of a pixel at once.

Public API:

- :func:`spatial_leakage` -> :class:`LeakageResult`: how much of the change of the attention
  logits caused by perturbing one cell's input window lands on other cells.
- :func:`perturbation_saliency`: Greydanus et al. 2018 blur-perturbation saliency for each named
  output of a network; :func:`rainbow_outputs` gives "policy" and "value" of a Rainbow
  ``QNetwork``; :func:`upsample_saliency` and :func:`normalise_saliency` to show the maps;
  :func:`saliency_throughput` / :func:`saliency_benchmark` for frames/s.
- :func:`deletion_insertion` (+ :func:`curve_auc`, :func:`cells_to_pixels`,
  :func:`rainbow_action_score`): faithfulness curves against random order.
- :func:`randomised_copy` (+ :func:`not_reinitialised`): the parameter-randomisation sanity
  check (Adebayo et al. 2018).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

__all__ = [
    "GREYDANUS_BLUR_SIGMA",
    "GREYDANUS_MASK_SIGMA",
    "GREYDANUS_STRIDE",
    "LeakageResult",
    "cells_to_pixels",
    "curve_auc",
    "deletion_insertion",
    "eval_mode",
    "gaussian_blur",
    "greydanus_masks",
    "merge_leakage",
    "normalise_saliency",
    "not_reinitialised",
    "perturbation_saliency",
    "rainbow_action_score",
    "rainbow_outputs",
    "randomised_copy",
    "saliency_benchmark",
    "saliency_grid",
    "saliency_throughput",
    "spatial_leakage",
    "upsample_saliency",
]

#: Greydanus et al. 2018: sigma of the Gaussian perturbation mask, in input pixels.
GREYDANUS_MASK_SIGMA = 5.0
#: Greydanus et al. 2018: sigma of the Gaussian blur A(I, sigma_A) that is blended in.
GREYDANUS_BLUR_SIGMA = 3.0
#: Greydanus et al. 2018: stride of the grid of mask centres, in input pixels.
GREYDANUS_STRIDE = 5

OutputsFn = Callable[[Tensor], dict[str, Tensor]]
ScoreFn = Callable[[Tensor], Tensor]


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` (and every submodule) in eval mode, restoring each one's flag afterwards.

    Eval mode matters for the perturbation methods: in train mode a spectral-norm layer runs a
    power iteration (and changes its weight) on every forward, and noisy layers add noise, so
    two forwards of the same input would differ.

    Args:
        module: The network.

    Yields:
        The same module, in eval mode.
    """
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, flag in flags:
            m.training = flag


def _to_unit_float(obs: Tensor) -> Tensor:
    """uint8 [0, 255] -> float32 in [0, 1]; a float observation is returned as float32."""
    if obs.dtype == torch.uint8:
        return obs.to(torch.float32) / 255.0
    if not obs.is_floating_point():
        raise TypeError(f"expected a uint8 or float observation, got {obs.dtype}")
    return obs.to(torch.float32)


def _check_obs(obs: Tensor) -> None:
    if obs.dim() != 4:
        raise ValueError(f"expected a [B, C, H, W] observation, got shape {tuple(obs.shape)}")


def _module_device(module: nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _window_masks(windows: Tensor, size_hw: tuple[int, int], device: torch.device) -> Tensor:
    """Bool ``[K, H, W]`` masks of half-open windows ``[K, 4]`` = ``(y0, y1, x0, x1)``."""
    windows = windows.to(device)
    h, w = size_hw
    ys = torch.arange(h, device=device)
    xs = torch.arange(w, device=device)
    in_y = (ys >= windows[:, 0:1]) & (ys < windows[:, 1:2])  # [K, H]
    in_x = (xs >= windows[:, 2:3]) & (xs < windows[:, 3:4])  # [K, W]
    return in_y[:, :, None] & in_x[:, None, :]


# --------------------------------------------------------------------------------------------
# Spatial leakage
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeakageResult:
    """Spatial leakage of an attention extractor (see :func:`spatial_leakage`).

    ``K`` cells were perturbed (``cells``), each in ``B`` frames. All tensors are float64 on
    the CPU except ``cells``.

    Attributes:
        cells: int64 ``[K, 2]`` ``(row, col)`` of the perturbed cells, in evaluation order.
        leakage: ``[rows, cols]`` leakage of every perturbed cell, pooled over frames:
            ``sum_b outside[b, k] / sum_b total[b, k]`` (0.0 where the denominator is 0);
            NaN for cells that were not perturbed.
        mean: Mean of ``leakage`` over the perturbed cells.
        max: Max of ``leakage`` over the perturbed cells.
        total: ``[B, K]`` sum over all cells ``j`` of ``|logit_j(perturbed) - logit_j(obs)|``.
        outside: ``[B, K]`` the same sum over the cells ``j != k`` (all but the perturbed cell).
        outside_receptive: ``[B, K]`` the same sum over the cells whose input window does not
            intersect the perturbed window. Such a cell cannot see the perturbation, so this
            is exactly 0 for every extractor whose ``cell_input_windows`` is right: a check of
            the geometry, not a metric. For HUE it equals ``outside`` (windows are disjoint).
        delta_sum: ``[K, rows, cols]`` ``|delta logit|`` of every cell, summed over frames:
            the raw leakage pattern (e.g. to plot leakage against distance).
        unchanged: Number of (frame, cell) perturbations that changed no logit at all
            (``total == 0``); their leakage counts as 0.
        perturbation: How the windows were perturbed, in words.
    """

    cells: Tensor
    leakage: Tensor
    mean: float
    max: float
    total: Tensor
    outside: Tensor
    outside_receptive: Tensor
    delta_sum: Tensor
    unchanged: int
    perturbation: str

    @property
    def per_frame(self) -> Tensor:
        """``[B, K]`` leakage of every frame and perturbed cell (0.0 where ``total == 0``)."""
        safe = torch.where(self.total > 0, self.total, torch.ones_like(self.total))
        return torch.where(self.total > 0, self.outside / safe, torch.zeros_like(self.total))


def _parse_cells(cells: Tensor | Sequence[Sequence[int]] | None, rows: int, cols: int) -> Tensor:
    if cells is None:
        r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        return torch.stack([r.flatten(), c.flatten()], dim=1)
    out = torch.as_tensor(cells, dtype=torch.int64).reshape(-1, 2)
    if out.numel() == 0:
        raise ValueError("cells is empty")
    if (
        (out[:, 0] < 0).any()
        or (out[:, 0] >= rows).any()
        or (out[:, 1] < 0).any()
        or (out[:, 1] >= cols).any()
    ):
        raise IndexError(f"cells outside the {rows}x{cols} grid: {out.tolist()}")
    return out


def _replacement(
    x: Tensor, n: int, value: float | str, generator: torch.Generator | None
) -> Tensor:
    """Values written into a perturbed window, ``[n, C, H, W]`` (or broadcastable)."""
    top = 255 if x.dtype == torch.uint8 else 1.0
    if isinstance(value, str):
        if value == "invert":
            return (top - x).unsqueeze(0)
        if value == "noise":
            shape = (n, *x.shape)
            if x.dtype == torch.uint8:
                noise = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
            else:
                noise = torch.rand(shape, generator=generator).to(x.dtype)
            return noise.to(x.device)
        raise ValueError(f"value must be a number, 'invert' or 'noise', got {value!r}")
    return torch.full_like(x, value).unsqueeze(0)


def _extractor_logits(extractor: nn.Module, batch: Tensor) -> Tensor:
    """``[N, heads, rows * cols]`` float64 logits of a forward (``heads = 1`` for one mask)."""
    extractor(batch)
    logits = getattr(extractor, "attention_logits", None)
    if logits is None:
        raise TypeError(f"{type(extractor).__name__} sets no attention_logits in its forward")
    logits = logits.detach().to(torch.float64)
    if logits.dim() == 3:  # [N, rows, cols]: one mask
        logits = logits.unsqueeze(1)
    return logits.flatten(2)


@torch.no_grad()
def spatial_leakage(
    extractor: nn.Module,
    obs: Tensor,
    value: float | str = "invert",
    cells: Tensor | Sequence[Sequence[int]] | None = None,
    batch_size: int = 64,
    atol: float = 0.0,
    generator: torch.Generator | None = None,
) -> LeakageResult:
    """Spatial leakage of an attention extractor's mask logits (metrics.md, "Spatial leakage").

    For every frame ``b`` and every perturbed cell ``k``: the input window of ``k``
    (``extractor.cell_input_windows()[k]``, all stacked frames) is overwritten, the attention
    logits (before the softmax) are recomputed and ``delta_j = |logit_j(perturbed) -
    logit_j(obs)|`` is recorded for every cell ``j``. Then

        leakage of cell k = sum_b sum_{j != k} delta_j / sum_b sum_j delta_j,

    i.e. the fraction of the total logit change that lands outside the perturbed cell itself,
    pooled over frames; it is defined as exactly 0.0 when the perturbation changed no logit
    (``sum == 0``; counted in ``LeakageResult.unchanged``). For HUE every window belongs to one
    cell only and no other cell sees it, so leakage is exactly 0. For an overlapping CNN the
    perturbed window (the cell's whole receptive field) lies inside the receptive fields of the
    neighbouring cells, whose logits legitimately change: counting them as leakage is what
    measures the one-to-many mapping of overlapping attention, so they are counted. The part
    that lands on cells whose windows do not even intersect the perturbed one is reported
    separately (``outside_receptive``; 0 by construction for a correct geometry). With
    several masks per frame (S3TA's heads: logits ``[N, heads, rows, cols]``), ``delta_j`` is
    summed over the heads.

    Numerics: a forward's rounding depends on the batch shape, so the unperturbed reference
    logits are computed in a batch of exactly the same shape as the perturbed ones (with the
    same frame at every position); unaffected logits then match bit for bit and HUE's leakage
    is exactly 0.0 rather than 1e-9. On devices with nondeterministic kernels, set ``atol``.

    Args:
        extractor: An :class:`~ife_platform.extractors.AttentionExtractor` (or a network with
            one as ``.extractor``). Run in eval mode here; its flags are restored.
        obs: ``[B, C, H, W]`` uint8 or float observations; moved to the extractor's device.
        value: The perturbation: ``"invert"`` (default: ``255 - x`` for uint8, ``1 - x`` for
            float, which changes every uint8 pixel), ``"noise"`` (uniform random values, fresh
            for every perturbation, from ``generator``), or a number written into the window
            (in the units of ``obs``: 0..255 for uint8).
        cells: ``(row, col)`` pairs of the cells to perturb (a subset to save time); all cells
            by default.
        batch_size: Perturbed inputs per forward.
        atol: Logit changes ``<= atol`` count as 0 (default 0.0: exact).
        generator: CPU random generator for ``value="noise"``.

    Returns:
        A :class:`LeakageResult`.
    """
    _check_obs(obs)
    if not hasattr(extractor, "cell_input_windows") and hasattr(extractor, "extractor"):
        extractor = extractor.extractor
    if not hasattr(extractor, "cell_input_windows"):
        raise TypeError(f"{type(extractor).__name__} has no attention mask / cell geometry")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = _module_device(extractor)
    obs = obs.to(device)
    rows, cols = extractor.cell_grid
    n_cells = rows * cols
    cell_rc = _parse_cells(cells, rows, cols)
    flat = cell_rc[:, 0] * cols + cell_rc[:, 1]  # [K]
    k_total = flat.numel()
    windows = extractor.cell_input_windows().reshape(n_cells, 4)  # [L, 4]
    masks = _window_masks(windows[flat], tuple(obs.shape[-2:]), device)  # [K, H, W]
    # Cells whose window intersects the perturbed window: the only ones that can change.
    pw = windows[flat]  # [K, 4]
    intersects = (
        (windows[None, :, 0] < pw[:, None, 1])
        & (pw[:, None, 0] < windows[None, :, 1])
        & (windows[None, :, 2] < pw[:, None, 3])
        & (pw[:, None, 2] < windows[None, :, 3])
    ).to(device)  # [K, L]
    own = F.one_hot(flat, n_cells).bool().to(device)  # [K, L]

    n_chunks = math.ceil(k_total / batch_size)
    chunk = math.ceil(k_total / n_chunks)  # equal-sized chunks: the least padding
    b_frames = obs.shape[0]
    total = torch.zeros(b_frames, k_total, dtype=torch.float64, device=device)
    outside = torch.zeros_like(total)
    outside_rf = torch.zeros_like(total)
    delta_sum = torch.zeros(k_total, n_cells, dtype=torch.float64, device=device)
    with eval_mode(extractor):
        for b in range(b_frames):
            x = obs[b]
            same = x.expand(chunk, *x.shape).contiguous()  # same shape and layout as below
            ref = _extractor_logits(extractor, same)  # [chunk, heads, L]
            for start in range(0, k_total, chunk):
                stop = min(start + chunk, k_total)
                n = stop - start
                batch = same.clone()  # padding rows stay unperturbed
                repl = _replacement(x, n, value, generator)
                m = masks[start:stop, None]  # [n, 1, H, W]
                batch[:n] = torch.where(m, repl.expand(n, *x.shape), batch[:n])
                # |delta| per cell, summed over the heads of a multi-head mask: [n, L]
                delta = (_extractor_logits(extractor, batch)[:n] - ref[:n]).abs().sum(1)
                if atol > 0:
                    delta = torch.where(delta <= atol, torch.zeros_like(delta), delta)
                total[b, start:stop] = delta.sum(1)
                outside[b, start:stop] = (delta * ~own[start:stop]).sum(1)
                outside_rf[b, start:stop] = (delta * ~intersects[start:stop]).sum(1)
                delta_sum[start:stop] += delta

    if isinstance(value, str):
        what = {
            "invert": "window inverted (255 - x for uint8, 1 - x for float), all stacked frames",
            "noise": "window replaced by uniform noise, all stacked frames",
        }[value]
    else:
        what = f"window set to {value}, all stacked frames"
    return _leakage_result(
        cell_rc, (rows, cols), total.cpu(), outside.cpu(), outside_rf.cpu(), delta_sum.cpu(), what
    )


def _leakage_result(
    cells: Tensor,
    grid: tuple[int, int],
    total: Tensor,
    outside: Tensor,
    outside_rf: Tensor,
    delta_sum: Tensor,
    what: str,
) -> LeakageResult:
    """Pool per-frame sums ``[B, K]`` into a :class:`LeakageResult` (:func:`spatial_leakage`)."""
    rows, cols = grid
    flat = cells[:, 0] * cols + cells[:, 1]
    den = total.sum(0)
    per_cell = torch.where(den > 0, outside.sum(0) / den.clamp_min(1e-300), torch.zeros_like(den))
    leakage = torch.full((rows * cols,), float("nan"), dtype=torch.float64)
    leakage[flat] = per_cell
    return LeakageResult(
        cells=cells,
        leakage=leakage.view(rows, cols),
        mean=float(per_cell.mean()),
        max=float(per_cell.max()),
        total=total,
        outside=outside,
        outside_receptive=outside_rf,
        delta_sum=delta_sum.view(len(cells), rows, cols),
        unchanged=int((total == 0).sum()),
        perturbation=what,
    )


def merge_leakage(results: Sequence[LeakageResult]) -> LeakageResult:
    """One :class:`LeakageResult` of several runs on different frames (same cells).

    Pools exactly as one :func:`spatial_leakage` call on all the frames would: per-frame sums
    are concatenated, ``delta_sum`` is added up and the leakage is recomputed from the pooled
    sums. Used for recurrent agents, whose frames are measured one at a time, each with its
    own recorded state.
    """
    if not results:
        raise ValueError("no leakage results to merge")
    first = results[0]
    if any(not torch.equal(r.cells, first.cells) for r in results):
        raise ValueError("leakage results over different cells cannot be merged")
    return _leakage_result(
        first.cells,
        tuple(first.leakage.shape),  # type: ignore[arg-type]
        torch.cat([r.total for r in results]),
        torch.cat([r.outside for r in results]),
        torch.cat([r.outside_receptive for r in results]),
        torch.stack([r.delta_sum for r in results]).sum(0),
        first.perturbation,
    )


# --------------------------------------------------------------------------------------------
# Perturbation saliency (Greydanus et al. 2018)
# --------------------------------------------------------------------------------------------


def _reflect_index(n: int, pad: int, device: torch.device) -> Tensor:
    """Indices of a length-n axis padded by ``pad`` on both sides, scipy's 'reflect' mode.

    scipy's 'reflect' (numpy's 'symmetric') repeats the edge sample: ``d c b a | a b c d``.
    """
    i = torch.arange(-pad, n + pad, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def gaussian_blur(images: Tensor, sigma: float, truncate: float = 4.0) -> Tensor:
    """Separable 2-D Gaussian blur over the last two dims, as ``scipy.ndimage.gaussian_filter``.

    Kernel radius ``int(truncate * sigma + 0.5)``, normalised to sum 1, boundary mode
    'reflect' (edge sample repeated): the same numbers as scipy on a 2-D image.

    Args:
        images: ``[..., H, W]`` float tensor.
        sigma: Standard deviation in pixels (0 returns the input).
        truncate: Kernel radius in sigmas.

    Returns:
        The blurred images, same shape and dtype.
    """
    if sigma <= 0:
        return images
    radius = int(truncate * sigma + 0.5)
    h, w = images.shape[-2:]
    x = images.reshape(-1, 1, h, w)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    x = x.index_select(3, _reflect_index(w, radius, x.device))
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = x.index_select(2, _reflect_index(h, radius, x.device))
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    return x.reshape(images.shape)


def saliency_grid(size: int, stride: int = GREYDANUS_STRIDE) -> Tensor:
    """Pixel coordinates of the mask centres along one axis: ``0, stride, 2 * stride, ...``.

    Args:
        size: Axis length in pixels (84 -> 17 centres at stride 5: 0, 5, ..., 80).
        stride: Grid stride.

    Returns:
        int64 ``[ceil(size / stride)]``.
    """
    return torch.arange(0, size, stride)


def greydanus_masks(
    size_hw: tuple[int, int],
    sigma: float = GREYDANUS_MASK_SIGMA,
    stride: int = GREYDANUS_STRIDE,
    device: torch.device | str | None = None,
) -> Tensor:
    """Gaussian perturbation masks ``M(i, j)`` of Greydanus et al. 2018, one per grid point.

    ``M(y, x) = exp(-((y - i)^2 + (x - j)^2) / (2 sigma^2))``: 1 at the centre ``(i, j)``. (The
    authors' code blurs a one-pixel disc with ``gaussian_filter(sigma)`` and divides by its max,
    a near-identical bump; the analytic Gaussian is used here.)

    Args:
        size_hw: ``(H, W)`` of the observation.
        sigma: Mask standard deviation in pixels.
        stride: Spacing of the centres (see :func:`saliency_grid`).
        device: Device of the result.

    Returns:
        float32 ``[gh, gw, H, W]``.
    """
    h, w = size_hw
    cy = saliency_grid(h, stride).to(device=device, dtype=torch.float32)
    cx = saliency_grid(w, stride).to(device=device, dtype=torch.float32)
    ys = torch.arange(h, device=device, dtype=torch.float32)
    xs = torch.arange(w, device=device, dtype=torch.float32)
    gy = torch.exp(-((ys[None, :] - cy[:, None]) ** 2) / (2 * sigma**2))  # [gh, H]
    gx = torch.exp(-((xs[None, :] - cx[:, None]) ** 2) / (2 * sigma**2))  # [gw, W]
    return gy[:, None, :, None] * gx[None, :, None, :]  # [gh, gw, H, W]


@torch.no_grad()
def perturbation_saliency(
    outputs_fn: OutputsFn,
    obs: Tensor,
    sigma: float = GREYDANUS_MASK_SIGMA,
    stride: int = GREYDANUS_STRIDE,
    batch_size: int = 64,
    blur_sigma: float = GREYDANUS_BLUR_SIGMA,
) -> dict[str, Tensor]:
    """Perturbation saliency of Greydanus et al. 2018 ("Visualizing and Understanding Atari").

    For every grid point ``(i, j)`` (stride ``stride`` on the ``H x W`` observation) the
    observation is blended with its blur under a Gaussian mask centred there,

        I' = I * (1 - M(i, j)) + A(I, blur_sigma) * M(i, j),

    on all stacked frames (``M`` from :func:`greydanus_masks`, sigma 5; ``A`` =
    :func:`gaussian_blur`, sigma 3, as in the paper), and for each named output ``f``

        S_f(i, j) = 0.5 * || f(I) - f(I') ||^2

    (sum of squares over all of the output's elements, per frame). ``B * gh * gw`` perturbed
    inputs go through ``outputs_fn`` in batches of ``batch_size``.

    Args:
        outputs_fn: ``obs [N, C, H, W] float in [0, 1] -> {name: Tensor [N, ...]}``, e.g.
            :func:`rainbow_outputs`. It must be deterministic (eval mode).
        obs: ``[B, C, H, W]`` uint8 (scaled to [0, 1] here) or float in [0, 1]; all work
            happens on ``obs.device``.
        sigma: Mask sigma in pixels (5 in the paper).
        stride: Grid stride in pixels (5 in the paper).
        batch_size: Perturbed inputs per call of ``outputs_fn``.
        blur_sigma: Sigma of the blur that is blended in (3 in the paper).

    Returns:
        ``{name: float32 [B, gh, gw]}`` saliency maps at grid resolution (``gh =
        ceil(H / stride)``; grid point ``(r, c)`` is pixel ``(r * stride, c * stride)``). See
        :func:`upsample_saliency` and :func:`normalise_saliency`.
    """
    _check_obs(obs)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x = _to_unit_float(obs)  # [B, C, H, W]
    b_frames, _, h, w = x.shape
    blurred = gaussian_blur(x, blur_sigma)
    masks = greydanus_masks((h, w), sigma, stride, x.device)
    gh, gw = masks.shape[:2]
    masks = masks.reshape(gh * gw, h, w)
    g_total = gh * gw

    parts: dict[str, list[Tensor]] = {}
    for start in range(0, b_frames, batch_size):
        for name, t in outputs_fn(x[start : start + batch_size]).items():
            parts.setdefault(name, []).append(t.detach().reshape(t.shape[0], -1).float())
    ref = {name: torch.cat(p).to(x.device) for name, p in parts.items()}  # [B, D] each
    maps = {name: torch.zeros(b_frames * g_total, device=x.device) for name in ref}

    diff = blurred - x
    for start in range(0, b_frames * g_total, batch_size):
        idx = torch.arange(start, min(start + batch_size, b_frames * g_total), device=x.device)
        fb, g = idx // g_total, idx % g_total
        batch = x[fb] + diff[fb] * masks[g][:, None]  # [n, C, H, W]
        out = outputs_fn(batch)
        for name, t in out.items():
            d = t.detach().reshape(t.shape[0], -1).float().to(x.device) - ref[name][fb]
            maps[name][idx] = 0.5 * d.pow(2).sum(1)
    return {name: m.view(b_frames, gh, gw) for name, m in maps.items()}


def upsample_saliency(
    maps: Tensor,
    size_hw: tuple[int, int] = (84, 84),
    stride: int = GREYDANUS_STRIDE,
    mode: Literal["bilinear", "nearest"] = "bilinear",
) -> Tensor:
    """Grid-resolution saliency ``[B, gh, gw]`` -> pixel resolution ``[B, H, W]``.

    Pixel-accurate: grid point ``(r, c)`` sits at pixel ``(r * stride, c * stride)``, so pixel
    ``p`` reads grid coordinate ``p / stride``. ``"bilinear"`` interpolates between the two
    neighbouring grid points on each axis (constant beyond the last one, e.g. pixels 81..83 at
    84 / 5); ``"nearest"`` takes the nearest grid point (ties upwards). (Greydanus et al. resize
    the grid bilinearly to the frame without this alignment.)

    Args:
        maps: ``[B, gh, gw]`` maps from :func:`perturbation_saliency`.
        size_hw: Output ``(H, W)``.
        stride: The stride the maps were computed with.
        mode: ``"bilinear"`` or ``"nearest"``.

    Returns:
        ``[B, H, W]`` maps, same dtype and device.
    """
    out = maps
    for axis, size in ((1, size_hw[0]), (2, size_hw[1])):
        n = maps.shape[axis]
        coord = (torch.arange(size, device=maps.device, dtype=torch.float64) / stride).clamp(
            max=n - 1
        )
        if mode == "nearest":
            idx = torch.floor(coord + 0.5).long().clamp(max=n - 1)
            out = out.index_select(axis, idx)
        elif mode == "bilinear":
            i0 = coord.floor().long()
            i1 = (i0 + 1).clamp(max=n - 1)
            wt = (coord - i0).to(maps.dtype)
            shape = [1, 1, 1]
            shape[axis] = size
            wt = wt.view(shape)
            out = out.index_select(axis, i0) * (1 - wt) + out.index_select(axis, i1) * wt
        else:
            raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    return out


def normalise_saliency(
    maps: Tensor, mode: Literal["minmax", "max", "sum"] = "minmax", eps: float = 1e-12
) -> Tensor:
    """Normalise every map ``[..., H, W]`` on its own (over the last two dims).

    Args:
        maps: Saliency maps, e.g. ``[B, gh, gw]`` or ``[B, H, W]``.
        mode: ``"minmax"`` -> [0, 1]; ``"max"`` -> divided by the max (saliency is >= 0);
            ``"sum"`` -> sums to 1, a distribution comparable with an attention mask. A map
            that is constant (``minmax``) or all zero gives zeros.
        eps: Denominators ``<= eps`` give zeros.

    Returns:
        Normalised maps, same shape.
    """
    flat = maps.flatten(-2)
    if mode == "minmax":
        lo = flat.amin(-1, keepdim=True)
        num, den = flat - lo, flat.amax(-1, keepdim=True) - lo
    elif mode == "max":
        num, den = flat, flat.amax(-1, keepdim=True)
    elif mode == "sum":
        num, den = flat, flat.sum(-1, keepdim=True)
    else:
        raise ValueError(f"mode must be 'minmax', 'max' or 'sum', got {mode!r}")
    out = torch.where(den > eps, num / den.clamp_min(eps), torch.zeros_like(num))
    return out.view(maps.shape)


def rainbow_outputs(
    network: nn.Module,
    policy: Literal["centered", "q", "softmax"] = "centered",
    temperature: float = 1.0,
) -> OutputsFn:
    """The "policy" and "value" outputs of a Rainbow ``QNetwork`` for saliency.

    Greydanus et al. take the actor's logits (action preferences, before the softmax) as
    "policy" and the critic's V as "value". For a value-based agent we use:

    - ``"value"``: ``max_a Q(s, a)``, the greedy policy's state value, ``[N]``;
    - ``"policy"`` (default ``"centered"``): ``Q(s, a) - mean_a Q(s, a)``, ``[N, A]``: the
      action preferences with the state-value level removed (the dueling advantage; a softmax
      over them is the same as over Q), so the value change does not leak into the policy
      map. ``"q"``: the raw Q vector. ``"softmax"``: ``softmax(Q / temperature)``.

    Q is ``network.q_values(obs)`` (the expected Q of a C51 head). The returned function runs
    the network in eval mode (flags restored) and moves its input to the network's device.

    Args:
        network: A :class:`~ife_platform.rainbow.agent.QNetwork` (anything with ``q_values``).
        policy: Which "policy" output (see above).
        temperature: Softmax temperature for ``policy="softmax"``.

    Returns:
        ``obs -> {"policy": Tensor, "value": Tensor}``.
    """
    if policy not in ("centered", "q", "softmax"):
        raise ValueError(f"policy must be 'centered', 'q' or 'softmax', got {policy!r}")
    device = _module_device(network)

    @torch.no_grad()
    def outputs(obs: Tensor) -> dict[str, Tensor]:
        with eval_mode(network):
            q = network.q_values(obs.to(device))  # [N, A]
        if policy == "centered":
            pol = q - q.mean(dim=-1, keepdim=True)
        elif policy == "softmax":
            pol = torch.softmax(q / temperature, dim=-1)
        else:
            pol = q
        return {"policy": pol, "value": q.amax(dim=-1)}

    return outputs


def saliency_throughput(
    outputs_fn: OutputsFn, obs: Tensor, warmup: bool = True, **kwargs: Any
) -> dict[str, float]:
    """Time :func:`perturbation_saliency` on ``obs``.

    Args:
        outputs_fn: As for :func:`perturbation_saliency`.
        obs: ``[B, C, H, W]`` frames.
        warmup: First run saliency on one frame (untimed) so lazy init is not counted.
        **kwargs: Passed to :func:`perturbation_saliency` (sigma, stride, batch_size, ...).

    Returns:
        ``frames``, ``perturbations`` (forwards per frame, the grid size), ``seconds``,
        ``frames_per_s`` and ``forwards_per_s`` (perturbed inputs per second).
    """
    if warmup:
        perturbation_saliency(outputs_fn, obs[:1], **kwargs)
    _sync(obs.device)
    t0 = time.perf_counter()
    maps = perturbation_saliency(outputs_fn, obs, **kwargs)
    _sync(obs.device)
    seconds = time.perf_counter() - t0
    gh, gw = next(iter(maps.values())).shape[-2:]
    frames = obs.shape[0]
    return {
        "frames": float(frames),
        "perturbations": float(gh * gw),
        "seconds": seconds,
        "frames_per_s": frames / seconds,
        "forwards_per_s": frames * (gh * gw + 1) / seconds,
    }


def saliency_benchmark(
    extractor_name: str = "ife",
    frames: int = 8,
    num_actions: int = 18,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Frames/s of Greydanus saliency (policy and value) with a real, untrained ``QNetwork``.

    Builds ``build_q_network(extractor_name, num_actions)`` (default head: dueling, no noise,
    scalar Q) on ``device``, feeds ``frames`` random uint8 ``4 x 84 x 84`` observations and
    times :func:`perturbation_saliency` (17 x 17 = 289 perturbed forwards per frame at stride 5
    plus one reference) after a one-frame warm-up.

    Args:
        extractor_name: A registered extractor name.
        frames: Frames to explain.
        num_actions: |A| of the head.
        batch_size: Perturbed inputs per forward.
        device: Where to run; CUDA if available, else CPU, by default.
        seed: Seed of the weights and the observations.

    Returns:
        The dict of :func:`saliency_throughput` plus ``extractor``, ``device``,
        ``batch_size`` and ``torch_threads``.
    """
    from ife_platform.rainbow.agent import build_q_network

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = build_q_network(extractor_name, num_actions).to(dev).eval()
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 256, (frames, 4, 84, 84), generator=gen, dtype=torch.uint8).to(dev)
    result: dict[str, Any] = saliency_throughput(
        rainbow_outputs(network), obs, batch_size=batch_size
    )
    result.update(
        extractor=extractor_name,
        device=str(dev),
        batch_size=batch_size,
        torch_threads=torch.get_num_threads(),
    )
    return result


# --------------------------------------------------------------------------------------------
# Deletion / insertion
# --------------------------------------------------------------------------------------------


def cells_to_pixels(
    cell_values: Tensor,
    windows: Tensor,
    size_hw: tuple[int, int] = (84, 84),
    reduce: Literal["density", "max"] = "density",
) -> Tensor:
    """Project per-cell values (e.g. an attention mask) onto input pixels.

    ``"density"``: every cell's value is spread evenly over its input window (clipped to the
    image) and the contributions of overlapping windows add up, so a mask's total mass is
    preserved; for disjoint windows (HUE) every pixel simply gets ``value / window area``.
    ``"max"``: every pixel gets the largest value of the cells whose windows cover it.
    Pixels covered by no window get 0 (density) or -inf (max).

    Args:
        cell_values: ``[B, rows, cols]``.
        windows: int64 ``[rows, cols, 4]`` half-open ``(y0, y1, x0, x1)`` (from
            ``extractor.cell_input_windows()``).
        size_hw: ``(H, W)`` of the input.
        reduce: ``"density"`` or ``"max"``.

    Returns:
        ``[B, H, W]`` pixel values, float, on ``cell_values.device``.
    """
    b = cell_values.shape[0]
    vals = cell_values.reshape(b, -1).float()
    masks = _window_masks(windows.reshape(-1, 4), size_hw, vals.device)  # [L, H, W]
    if reduce == "density":
        area = masks.flatten(1).sum(1).clamp_min(1).float()  # [L]
        return torch.einsum("bl,lhw->bhw", vals / area, masks.float())
    if reduce == "max":
        neg = torch.tensor(float("-inf"), device=vals.device)
        return torch.stack(
            [torch.where(masks, v[:, None, None], neg).amax(0) for v in vals]
        )  # one frame at a time: [L, H, W] each
    raise ValueError(f"reduce must be 'density' or 'max', got {reduce!r}")


def rainbow_action_score(
    network: nn.Module, kind: Literal["q", "prob"] = "q", temperature: float = 1.0
) -> ScoreFn:
    """Per-action scores of a ``QNetwork`` for :func:`deletion_insertion`.

    With ``target=None``, :func:`deletion_insertion` then tracks the score of the action that
    is greedy on the unperturbed frame.

    Args:
        network: Anything with ``q_values(obs) -> [N, A]``; run in eval mode.
        kind: ``"q"``: Q values; ``"prob"``: ``softmax(Q / temperature)``.
        temperature: Softmax temperature for ``kind="prob"``.

    Returns:
        ``obs [N, C, H, W] -> [N, A]``.
    """
    device = _module_device(network)

    @torch.no_grad()
    def score(obs: Tensor) -> Tensor:
        with eval_mode(network):
            q = network.q_values(obs.to(device))
        return torch.softmax(q / temperature, dim=-1) if kind == "prob" else q

    return score


def _scores(
    score_fn: ScoreFn, batch: Tensor, frame: Tensor, target: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    s = score_fn(batch).detach()
    if s.dim() == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.dim() == 1:
        return s.float(), target
    if s.dim() != 2:
        raise ValueError(f"score_fn must return [N] or [N, A], got shape {tuple(s.shape)}")
    if target is None:
        raise ValueError("a [N, A] score needs a target (computed from the unperturbed frame)")
    t = target.to(s.device)[frame.to(s.device)]
    return s.gather(1, t[:, None])[:, 0].float(), target


@torch.no_grad()
def deletion_insertion(
    score_fn: ScoreFn,
    obs: Tensor,
    importance: Tensor,
    steps: int = 20,
    mode: Literal["deletion", "insertion"] = "deletion",
    baseline: Literal["blur", "zero"] | Tensor = "blur",
    random_order: bool = False,
    generator: torch.Generator | None = None,
    windows: Tensor | None = None,
    target: Tensor | None = None,
    batch_size: int = 64,
    blur_sigma: float = 5.0,
) -> Tensor:
    """Deletion or insertion curve (metrics.md, "Faithfulness"; Petsiuk et al. 2018, RISE).

    Pixels (all stacked frames of a pixel together) are ranked by ``importance``, highest
    first (ties: lower flat index ``y * W + x`` first), or in a random order. At step ``s``
    (``s = 0..steps``) the first ``round(s * H * W / steps)`` pixels are

    - ``"deletion"``: replaced by the baseline (curve runs from ``f(obs)`` to ``f(baseline)``);
    - ``"insertion"``: copied from ``obs`` onto the baseline (from ``f(baseline)`` to
      ``f(obs)``),

    and the score is recorded. A faithful importance makes deletion fall fast (low AUC) and
    insertion rise fast (high AUC) compared with ``random_order=True``. All ``B * (steps + 1)``
    inputs go through ``score_fn`` in batches of ``batch_size``.

    Args:
        score_fn: ``obs [N, C, H, W] float in [0, 1] -> [N]`` (a scalar score per input) or
            ``[N, A]`` (per-action scores, e.g. :func:`rainbow_action_score`; the column
            ``target[frame]`` is tracked).
        obs: ``[B, C, H, W]`` uint8 (scaled to [0, 1] here) or float in [0, 1].
        importance: ``[B, H, W]`` pixel importance, or ``[B, rows, cols]`` cell importance
            when ``windows`` is given (projected by :func:`cells_to_pixels`, ``"density"``).
        steps: Number of equal pixel fractions; the curve has ``steps + 1`` points.
        mode: ``"deletion"`` or ``"insertion"``.
        baseline: ``"blur"`` (Gaussian blur of ``obs`` with ``blur_sigma``, per frame and
            channel), ``"zero"`` (black), or a tensor broadcastable to ``[B, C, H, W]`` (in
            [0, 1] units).
        random_order: Rank pixels by a random permutation per frame instead (the reference).
        generator: CPU random generator for ``random_order``.
        windows: int64 ``[rows, cols, 4]`` cell windows; makes ``importance`` per cell.
        target: int64 ``[B]`` action per frame for a ``[N, A]`` score; default: the argmax of
            the score on the unperturbed frame.
        batch_size: Inputs per call of ``score_fn``.
        blur_sigma: Sigma of the ``"blur"`` baseline in pixels.

    Returns:
        float32 ``[B, steps + 1]`` scores at pixel fractions ``0, 1/steps, ..., 1`` (on
        ``obs.device``). See :func:`curve_auc`.
    """
    _check_obs(obs)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    x = _to_unit_float(obs)
    b_frames, _, h, w = x.shape
    device = x.device
    if isinstance(baseline, Tensor):
        base = baseline.to(device=device, dtype=x.dtype).expand_as(x)
    elif baseline == "blur":
        base = gaussian_blur(x, blur_sigma)
    elif baseline == "zero":
        base = torch.zeros_like(x)
    else:
        raise ValueError(f"baseline must be 'blur', 'zero' or a tensor, got {baseline!r}")

    n_pix = h * w
    if random_order:
        order = torch.stack([torch.randperm(n_pix, generator=generator) for _ in range(b_frames)])
        order = order.to(device)
    else:
        imp = importance.to(device)
        if windows is not None:
            imp = cells_to_pixels(imp, windows, (h, w))
        if tuple(imp.shape) != (b_frames, h, w):
            raise ValueError(f"importance must be [B, H, W] = {(b_frames, h, w)}, got {imp.shape}")
        order = torch.argsort(imp.reshape(b_frames, n_pix), dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n_pix, device=device).expand(b_frames, n_pix))
    counts = torch.round(torch.arange(steps + 1, dtype=torch.float64) * n_pix / steps).long()
    counts = counts.to(device)

    if target is None:
        ref = torch.cat([score_fn(x[i : i + batch_size]) for i in range(0, b_frames, batch_size)])
        if ref.dim() == 2 and ref.shape[1] > 1:
            target = ref.argmax(1)  # the action chosen on the unperturbed frame

    total = b_frames * (steps + 1)
    curves = torch.zeros(total, device=device)
    for start in range(0, total, batch_size):
        idx = torch.arange(start, min(start + batch_size, total), device=device)
        fb, s = idx // (steps + 1), idx % (steps + 1)
        sel = (rank[fb] < counts[s][:, None]).view(-1, 1, h, w)  # [n, 1, H, W] chosen pixels
        if mode == "deletion":
            batch = torch.where(sel, base[fb], x[fb])
        else:
            batch = torch.where(sel, x[fb], base[fb])
        scores, target = _scores(score_fn, batch, fb, target)
        curves[idx] = scores.to(device)
    return curves.view(b_frames, steps + 1)


def curve_auc(curves: Tensor) -> Tensor:
    """Area under deletion/insertion curves ``[..., steps + 1]`` over fractions 0..1 (trapezoid).

    Args:
        curves: Scores at equally spaced pixel fractions ``0, 1/steps, ..., 1``.

    Returns:
        ``[...]`` areas (the mean score over the fraction axis, trapezoid rule).
    """
    steps = curves.shape[-1] - 1
    if steps < 1:
        raise ValueError("a curve needs at least two points")
    return torch.trapezoid(curves, dx=1.0 / steps, dim=-1)


# --------------------------------------------------------------------------------------------
# Parameter randomisation (Adebayo et al. 2018)
# --------------------------------------------------------------------------------------------


def _selected(name: str, only: Sequence[str] | None) -> bool:
    if only is None:
        return True
    return any(name == p or name.startswith(p + ".") for p in only)


def resettable(network: nn.Module, only: Sequence[str] | None) -> list[tuple[str, nn.Module]]:
    """(name, module) of every module with ``reset_parameters``, under the ``only`` prefixes."""
    return [
        (name, m)
        for name, m in network.named_modules()
        if callable(getattr(m, "reset_parameters", None)) and _selected(name, only)
    ]


_SPECTRAL_NORM_ATTRS = ("_u", "_v", "_power_method", "_reshape_weight_to_matrix")


def reset_module(module: nn.Module) -> None:
    """``module.reset_parameters()``, also through ``torch.nn.utils.parametrize`` (e.g. SN).

    A parametrized module (``weight`` computed from ``parametrizations.weight.original``) is
    reset through a plain twin of its original class that shares its parameters but holds a
    fresh tensor for every parametrized name; ``ParametrizationList.right_inverse`` then writes
    each fresh tensor back to the stored originals. Nothing is removed or re-registered: the
    dynamically created parametrized class is shared with the deep-copied-from network, and
    ``remove_parametrizations`` would delete its properties from under it.
    """
    if not parametrize.is_parametrized(module):
        module.reset_parameters()  # type: ignore[operator]
        return
    plain_cls = type(module).__bases__[0]  # how torch.nn.utils.parametrize un-injects
    twin = plain_cls.__new__(plain_cls)
    state = dict(module.__dict__)
    state["_parameters"] = dict(module._parameters)
    state["_modules"] = {k: v for k, v in module._modules.items() if k != "parametrizations"}
    object.__setattr__(twin, "__dict__", state)
    fresh = {}
    for name in module.parametrizations:
        fresh[name] = nn.Parameter(torch.empty_like(getattr(module, name)))
        state["_parameters"][name] = fresh[name]
    plain_cls.reset_parameters(twin)  # type: ignore[attr-defined]
    for name, plist in module.parametrizations.items():
        plist.right_inverse(fresh[name].detach())
        first = plist[0]
        if plist.is_tensor and all(hasattr(first, a) for a in _SPECTRAL_NORM_ATTRS):
            # Spectral norm: fresh power-iteration vectors for the new weight, as at build.
            mat = first._reshape_weight_to_matrix(plist.original)
            first._u.copy_(F.normalize(torch.randn_like(first._u), dim=0, eps=first.eps))
            first._v.copy_(F.normalize(torch.randn_like(first._v), dim=0, eps=first.eps))
            first._power_method(mat, 15)


def not_reinitialised(network: nn.Module, only: Sequence[str] | None = None) -> list[str]:
    """Names of the parameters that :func:`randomised_copy` would leave unchanged.

    Those are the parameters that belong to no module (at any depth) with a
    ``reset_parameters`` method (or lie outside ``only``). Empty for every ``QNetwork`` here.

    Args:
        network: The network.
        only: As for :func:`randomised_copy`.

    Returns:
        Parameter names, as in ``network.named_parameters()``.
    """
    covered: set[str] = set()
    for name, m in resettable(network, only):
        prefix = f"{name}." if name else ""
        covered.update(prefix + n for n, _ in m.named_parameters())
    return [n for n, _ in network.named_parameters() if n not in covered]


def randomised_copy(network: nn.Module, seed: int, only: Sequence[str] | None = None) -> nn.Module:
    """A deep copy of ``network`` with its parameters re-initialised (Adebayo et al. 2018).

    For the parameter-randomisation sanity check: masks/saliency of the copy must differ from
    those of the trained network. ``reset_parameters()`` is called on every module that has one
    (``nn.Conv2d``, ``nn.Linear``, ``NoisyLinear``, norm layers, ...): PyTorch's default init
    for convolutions and linear layers (note: the extractors' build-time ReLU-gain x sqrt(2)
    scaling and zero conv biases are *not* re-applied; the weights are random either way), the
    NoisyLinear init (mu uniform, sigma = sigma0 / sqrt(p)). Convolutions under spectral norm
    are re-initialised through the parametrization and get fresh power-iteration vectors.
    Parameters of modules without ``reset_parameters`` stay as they are (see
    :func:`not_reinitialised`; none in a ``QNetwork``); buffers such as noise samples too.
    The original network is not touched; the global RNG state is restored afterwards.

    Args:
        network: The (trained) network.
        seed: Seed of the new weights (same seed, same weights).
        only: Module-name prefixes to randomise (e.g. ``["head"]`` or ``["extractor.afe"]``,
            for the cascading variant); everything by default.

    Returns:
        The randomised copy, on the same device(s) and in the same train/eval mode.
    """
    clone = copy.deepcopy(network)
    cuda = sorted({p.device.index or 0 for p in clone.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda), torch.no_grad():
        torch.manual_seed(seed)
        for _, module in resettable(clone, only):
            reset_module(module)
    return clone

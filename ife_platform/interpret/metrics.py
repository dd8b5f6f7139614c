"""Mask-object alignment and faithfulness metrics (pure numpy).

Definitions follow ``shared/reference/metrics.md``: sections "Mask-object alignment (spatial
preservation, measured)" and "Faithfulness". Everything here works on plain arrays, so the
functions are shared by every extractor (IFE's 14 x 14 tiling mask, the overlapping 15 x 15
CNN-attention mask, ...) and by the ``ife explain`` command, which calls
:func:`alignment_metrics` once per frame.

Geometry. Object boxes ``(x, y, w, h)`` live on the raw 210 x 160 Atari screen (``x``: column of
the left edge, ``y``: row of the top edge; the box covers columns ``[x, x + w)`` and rows
``[y, y + h)``, as in OCAtari). The observation is the WHOLE screen resized to 84 x 84 with
``cv2.INTER_AREA`` (no crop, see ``AtariEvalEnv._observe``), so observation pixel ``(i, j)`` is
the area average of screen rows ``[i * 210 / 84, (i + 1) * 210 / 84)`` and columns
``[j * 160 / 84, (j + 1) * 160 / 84)``. metrics.md asks to "map every box through the exact
crop/resize used for observations": :func:`boxes_to_obs_coverage` does so exactly, giving per
observation pixel the fraction of its area covered by the union of the boxes. An observation
pixel is *in the box set B* when that fraction is > 0, i.e. exactly when an object contributes
to its INTER_AREA value. A mask cell is in B when its input window contains such a pixel.

Two resolutions are reported, because grids differ between extractors:

* cell level: the mask itself, B = cells whose window touches an object;
* pixel level: the mask spread over the 84 x 84 observation by :func:`upsample_mask` (each
  cell's mass uniform over its window), which is the only level at which an overlapping CNN
  mask and IFE's tiling mask are compared on the same footing.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

ATARI_SCREEN_HW: tuple[int, int] = (210, 160)
OBS_HW: tuple[int, int] = (84, 84)
# Tolerance on "a mask sums to 1": float32 softmax over a few hundred cells is off by ~1e-7.
MASK_SUM_ATOL: float = 1e-3
# Default Spearman threshold of :func:`randomisation_sanity`: below it, masks "differ".
SANITY_SPEARMAN_THRESHOLD: float = 0.5
# Coverage values closer than this to 0 or 1 are snapped (float noise of the interval sums).
_SNAP: float = 1e-9

TieRule = Literal["expected", "any"]


# --------------------------------------------------------------------------------------------
# Input checking
# --------------------------------------------------------------------------------------------


def _as_float_array(x: Any, name: str, ndim: int | None = None) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _as_bool_array(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype != np.bool_:
        if not np.all(np.isin(arr, (0, 1))):
            raise ValueError(f"{name} must be boolean (or 0/1), got dtype {arr.dtype}")
        arr = arr.astype(bool)
    return arr


def _check_mask(mask: Any, name: str = "mask") -> np.ndarray:
    """A non-negative 2-D mask summing to 1 (within ``MASK_SUM_ATOL``)."""
    m = _as_float_array(mask, name, ndim=2)
    if m.size == 0:
        raise ValueError(f"{name} is empty")
    if m.min() < -1e-9:
        raise ValueError(f"{name} has negative values (min {m.min():.3g})")
    total = float(m.sum())
    if abs(total - 1.0) > MASK_SUM_ATOL:
        raise ValueError(f"{name} must sum to 1 (a softmax over cells), sums to {total:.6g}")
    return m


def _check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} has shape {a.shape} but {name_b} has shape {b.shape}")


def _check_windows(windows: Any, obs_hw: tuple[int, int]) -> np.ndarray:
    """Integer ``[R, C, 4]`` half-open ``(y0, y1, x0, x1)`` windows inside the observation."""
    w = np.asarray(windows)
    if w.ndim != 3 or w.shape[-1] != 4:
        raise ValueError(f"windows must have shape [rows, cols, 4], got {w.shape}")
    if not np.issubdtype(w.dtype, np.integer):
        if not np.all(np.isfinite(w)) or not np.all(w == np.round(w)):
            raise ValueError("windows must hold integer pixel indices")
    w = w.astype(np.int64)
    y0, y1, x0, x1 = (w[..., k] for k in range(4))
    h, wd = obs_hw
    if (y0 < 0).any() or (x0 < 0).any() or (y1 > h).any() or (x1 > wd).any():
        raise ValueError(f"windows reach outside the {h}x{wd} observation")
    if (y1 <= y0).any() or (x1 <= x0).any():
        raise ValueError("every window must be non-empty (y0 < y1 and x0 < x1)")
    return w


# --------------------------------------------------------------------------------------------
# Boxes -> observation pixels -> cells
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    """An object box on the raw screen.

    Attributes:
        category: Object kind (e.g. ``"Player"``, ``"Ball"``).
        x: Column of the left edge, screen pixels.
        y: Row of the top edge, screen pixels.
        w: Width, screen pixels.
        h: Height, screen pixels.
    """

    category: str
    x: float
    y: float
    w: float
    h: float


def as_boxes(boxes: Sequence[Any]) -> list[Box]:
    """Normalise boxes to :class:`Box`.

    Args:
        boxes: Objects with attributes ``category, x, y, w, h`` (OCAtari game objects, or
            :class:`Box`), or tuples ``(category, x, y, w, h)``.

    Returns:
        One :class:`Box` per input, same order.

    Raises:
        ValueError: If an entry has neither form or a coordinate is not finite.
    """
    out: list[Box] = []
    for k, b in enumerate(boxes):
        if all(hasattr(b, a) for a in ("category", "x", "y", "w", "h")):
            cat, x, y, w, h = b.category, b.x, b.y, b.w, b.h
        elif isinstance(b, Sequence) and not isinstance(b, str) and len(b) == 5:
            cat, x, y, w, h = b
        else:
            raise ValueError(
                f"box {k} ({b!r}) is neither an object with category/x/y/w/h attributes "
                "nor a (category, x, y, w, h) tuple"
            )
        coords = tuple(float(v) for v in (x, y, w, h))
        if not all(math.isfinite(v) for v in coords):
            raise ValueError(f"box {k} has a non-finite coordinate: {coords}")
        out.append(Box(str(cat), *coords))
    return out


def boxes_to_obs_coverage(
    boxes: Any,
    screen_hw: tuple[int, int] = ATARI_SCREEN_HW,
    obs_hw: tuple[int, int] = OBS_HW,
) -> np.ndarray:
    """Fraction of every observation pixel covered by the union of screen boxes.

    The observation is the whole screen resized with ``cv2.INTER_AREA``, so observation pixel
    ``(i, j)`` averages screen rows ``[i * H / h, (i + 1) * H / h)`` and columns
    ``[j * W / w, (j + 1) * W / w)``. The union of the boxes is rasterised exactly on the grid
    made of all box edges and all observation-pixel edges (every cell of that grid lies inside
    one observation pixel and is either inside or outside every box), so the result is the
    exact union area per pixel up to float rounding: overlapping boxes never count twice.

    Boxes are clipped to the screen; a box with ``w <= 0`` or ``h <= 0``, or entirely
    off-screen, contributes nothing.

    Args:
        boxes: ``(x, y, w, h)`` per box in screen pixels (float or int): a ``[N, 4]`` array or a
            sequence of 4-sequences; may be empty.
        screen_hw: Raw screen ``(height, width)``.
        obs_hw: Observation ``(height, width)``.

    Returns:
        float64 ``[obs_h, obs_w]`` in [0, 1]; values within 1e-9 of 0 or 1 are snapped.

    Raises:
        ValueError: If the boxes are not ``[N, 4]`` or not finite.
    """
    sh, sw = (float(v) for v in screen_hw)
    oh, ow = obs_hw
    cov = np.zeros((oh, ow), dtype=np.float64)
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return cov
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must be [N, 4] (x, y, w, h), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("boxes contain NaN or infinite values")
    x0 = np.clip(arr[:, 0], 0.0, sw)
    x1 = np.clip(arr[:, 0] + arr[:, 2], 0.0, sw)
    y0 = np.clip(arr[:, 1], 0.0, sh)
    y1 = np.clip(arr[:, 1] + arr[:, 3], 0.0, sh)
    keep = (x1 > x0) & (y1 > y0)
    if not keep.any():
        return cov
    x0, x1, y0, y1 = x0[keep], x1[keep], y0[keep], y1[keep]
    # Observation-pixel edges in screen coordinates (k * H / h is exact for integer results).
    oy = np.arange(oh + 1, dtype=np.float64) * sh / oh
    ox = np.arange(ow + 1, dtype=np.float64) * sw / ow
    ys = np.unique(np.concatenate([oy, y0, y1]))
    xs = np.unique(np.concatenate([ox, x0, x1]))
    inside = np.zeros((ys.size - 1, xs.size - 1), dtype=bool)
    for a, b, c, d in zip(
        np.searchsorted(ys, y0),
        np.searchsorted(ys, y1),
        np.searchsorted(xs, x0),
        np.searchsorted(xs, x1),
        strict=True,
    ):
        inside[a:b, c:d] = True
    area = np.outer(np.diff(ys), np.diff(xs)) * inside
    # Observation pixel holding each fine cell (its lower edge lies in [oy[i], oy[i + 1])).
    row = np.clip(np.searchsorted(oy, ys[:-1], side="right") - 1, 0, oh - 1)
    col = np.clip(np.searchsorted(ox, xs[:-1], side="right") - 1, 0, ow - 1)
    np.add.at(cov, (row[:, None], col[None, :]), area)
    cov /= (sh / oh) * (sw / ow)
    cov[cov < _SNAP] = 0.0
    cov[cov > 1.0 - _SNAP] = 1.0
    return cov


def coverage_to_cells(coverage: Any, windows: Any) -> np.ndarray:
    """Fraction of each mask cell's input window covered by objects.

    Args:
        coverage: ``[H, W]`` per-pixel coverage in [0, 1] (:func:`boxes_to_obs_coverage`).
        windows: ``[R, C, 4]`` half-open ``(y0, y1, x0, x1)`` input-pixel windows, e.g.
            ``AttentionExtractor.cell_input_windows().numpy()``.

    Returns:
        float64 ``[R, C]``: mean of ``coverage`` over each window (exactly 0 for a window
        without any covered pixel).
    """
    cov = _as_float_array(coverage, "coverage", ndim=2)
    win = _check_windows(windows, cov.shape)
    rows, cols = win.shape[:2]
    out = np.zeros((rows, cols), dtype=np.float64)
    for r in range(rows):
        for c in range(cols):
            y0, y1, x0, x1 = win[r, c]
            out[r, c] = cov[y0:y1, x0:x1].mean()
    return out


def cells_in_box(cell_coverage: Any, threshold: float = 0.0) -> np.ndarray:
    """Cells counted as in the box set B.

    Args:
        cell_coverage: ``[R, C]`` from :func:`coverage_to_cells`.
        threshold: A cell is in B when its coverage is strictly greater than this. The default
            0 puts in B every cell whose window contains any object pixel.

    Returns:
        bool ``[R, C]``.
    """
    return _as_float_array(cell_coverage, "cell_coverage") > threshold


def upsample_mask(mask: Any, windows: Any, obs_hw: tuple[int, int] = OBS_HW) -> np.ndarray:
    """Spread a cell mask over observation pixels, conserving mass.

    Every cell's mass is distributed uniformly over its input window (value / window area per
    pixel) and contributions of overlapping windows are summed. For a tiling grid (IFE) each
    pixel simply gets its cell's value divided by the cell's pixel area. Pixels that no window
    covers get 0. The result sums to the mask's sum (1 for a softmax mask). Pixels covered by
    the same set of windows get bit-identical values, so ties stay exact.

    Args:
        mask: ``[R, C]`` non-negative mask summing to 1.
        windows: ``[R, C, 4]`` half-open ``(y0, y1, x0, x1)`` input-pixel windows.
        obs_hw: Observation ``(height, width)``.

    Returns:
        float64 ``[obs_h, obs_w]`` pixel map summing to 1.

    Raises:
        ValueError: On a shape mismatch, or a mask that is negative or does not sum to 1.
    """
    m = _check_mask(mask)
    win = _check_windows(windows, obs_hw)
    if win.shape[:2] != m.shape:
        raise ValueError(f"windows grid {win.shape[:2]} does not match mask shape {m.shape}")
    out = np.zeros(obs_hw, dtype=np.float64)
    for r in range(m.shape[0]):
        for c in range(m.shape[1]):
            y0, y1, x0, x1 = win[r, c]
            out[y0:y1, x0:x1] += m[r, c] / ((y1 - y0) * (x1 - x0))
    return out


# --------------------------------------------------------------------------------------------
# Alignment metrics (metrics.md, "Mask-object alignment")
# --------------------------------------------------------------------------------------------


def dilate(in_box: Any, tolerance: int) -> np.ndarray:
    """Cells within Chebyshev distance ``tolerance`` of a cell of ``in_box``.

    Args:
        in_box: bool ``[R, C]``.
        tolerance: Non-negative distance in cells (or pixels).

    Returns:
        bool ``[R, C]`` (``in_box`` itself when ``tolerance == 0``).
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    out = _as_bool_array(in_box, "in_box").copy()
    for axis in range(out.ndim):
        src = out.copy()
        n = out.shape[axis]
        for d in range(1, min(tolerance, n - 1) + 1):
            lo = [slice(None)] * out.ndim
            hi = [slice(None)] * out.ndim
            lo[axis], hi[axis] = slice(0, n - d), slice(d, n)
            out[tuple(lo)] |= src[tuple(hi)]
            out[tuple(hi)] |= src[tuple(lo)]
    return out


def pointing_game(
    mask: Any,
    in_box: Any,
    tolerance: int = 0,
    ties: TieRule = "expected",
) -> float:
    """Pointing game (metrics.md): does the mask's maximum land on an object?

    A cell hits when it is in B or within Chebyshev distance ``tolerance`` (in cells, or pixels
    for a pixel map) of a cell of B. When several cells share the maximum value exactly:

    * ``ties="expected"`` (default): the probability of a hit when the tie is broken uniformly
      at random, i.e. the fraction of tied maximal cells that hit. A uniform mask thus scores
      the chance level, and a unique argmax gives exactly 0.0 or 1.0.
    * ``ties="any"``: 1.0 when any tied maximal cell hits.

    Args:
        mask: ``[R, C]`` attention mask (any non-negative scores; need not sum to 1).
        in_box: bool ``[R, C]``, the box set B; must not be empty.
        tolerance: Chebyshev tolerance in cells, >= 0.
        ties: Tie rule, ``"expected"`` or ``"any"``.

    Returns:
        Hit score in [0, 1] (0.0 or 1.0 without ties).

    Raises:
        ValueError: On a shape mismatch, an empty B, or an unknown tie rule.
    """
    m = _as_float_array(mask, "mask", ndim=2)
    b = _as_bool_array(in_box, "in_box")
    _check_same_shape(m, b, "mask", "in_box")
    if not b.any():
        raise ValueError("pointing game is undefined for an empty box set")
    hit = dilate(b, tolerance)
    top = m == m.max()
    if ties == "expected":
        return float(hit[top].mean())
    if ties == "any":
        return float(hit[top].any())
    raise ValueError(f"ties must be 'expected' or 'any', got {ties!r}")


def chance_pointing(in_box: Any, tolerance: int = 0) -> float:
    """Pointing-game score of a uniformly random argmax: fraction of cells that would hit."""
    return float(dilate(in_box, tolerance).mean())


def mass_in_box(mask: Any, in_box: Any) -> float:
    """Mass-in-box (metrics.md): sum of the mask over B.

    Args:
        mask: ``[R, C]`` (or ``[H, W]``) non-negative mask summing to 1.
        in_box: bool B of the same shape, or float weights in [0, 1] (e.g. cell coverage) for a
            soft version ``sum(mask * weights)``.

    Returns:
        The mass in [0, 1]; 0.0 for an empty B.
    """
    m = _check_mask(mask)
    w = _box_weights(in_box)
    _check_same_shape(m, w, "mask", "in_box")
    return float(np.sum(m * w))


def _box_weights(in_box: Any) -> np.ndarray:
    arr = np.asarray(in_box)
    if arr.dtype == np.bool_:
        return arr.astype(np.float64)
    w = _as_float_array(arr, "in_box")
    if w.min() < 0.0 or w.max() > 1.0:
        raise ValueError("in_box weights must lie in [0, 1]")
    return w


def area_fraction(in_box: Any) -> float:
    """Area of B over the whole area, in the units of ``in_box`` (cells or pixels).

    This is the chance level of :func:`mass_in_box`: the mass a uniform mask puts on B.
    """
    return float(np.mean(_box_weights(in_box)))


def lift(mask: Any, in_box: Any) -> float:
    """Lift (metrics.md): mass-in-box / (area of B / area of screen); 1 = chance.

    The area fraction is measured in the same units as the mask (cells for a cell mask,
    observation pixels for an upsampled mask); soft weights count fractionally in both.

    Args:
        mask: ``[R, C]`` non-negative mask summing to 1.
        in_box: bool B (or weights in [0, 1]) of the same shape.

    Returns:
        The lift, ``nan`` when B is empty (lift is undefined without objects).
    """
    area = area_fraction(in_box)
    mass = mass_in_box(mask, in_box)
    if area == 0.0:
        return float("nan")
    return mass / area


def average_ranks(x: Any) -> np.ndarray:
    """1-based ranks of the flattened ``x``; tied values get the mean of their ranks."""
    v = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(v, kind="stable")
    sv = v[order]
    # Start index of each run of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, sv[1:] != sv[:-1]])
    ends = np.r_[starts[1:], sv.size]
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(v.size, dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def pixel_auroc(scores: Any, positives: Any) -> float:
    """AUROC of ``scores`` for separating positives from negatives (Mann-Whitney U).

    Equals the probability that a random positive outscores a random negative, with ties
    counted 1/2: ``(sum of positive ranks - P (P + 1) / 2) / (P N)`` with average ranks.

    Args:
        scores: Any-shape array of scores (e.g. the upsampled mask).
        positives: bool array of the same shape (e.g. in-box pixels).

    Returns:
        AUROC in [0, 1]; ``nan`` when there are no positives or no negatives.
    """
    s = _as_float_array(scores, "scores")
    p = _as_bool_array(positives, "positives")
    _check_same_shape(s, p, "scores", "positives")
    n_pos = int(p.sum())
    n_neg = p.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = average_ranks(s)
    u = ranks[p.ravel()].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def top_k_weights(scores: Any, k: int) -> np.ndarray:
    """Fractional membership of the ``k`` highest-scoring entries, ties shared evenly.

    Entries strictly above the k-th largest value get 1; the entries tied with it share the
    remaining slots equally (the expected membership under a uniformly random tie-break);
    the weights sum to exactly ``k``. A constant array thus gives ``k / n`` everywhere.

    Args:
        scores: Any-shape array.
        k: Number of top entries, ``1 <= k <= size``.

    Returns:
        float64 weights, same shape as ``scores``.
    """
    s = _as_float_array(scores, "scores")
    if not 1 <= k <= s.size:
        raise ValueError(f"top_k must be in [1, {s.size}], got {k}")
    kth = np.sort(s.ravel())[::-1][k - 1]
    above = s > kth
    tied = s == kth
    w = above.astype(np.float64)
    w[tied] = (k - int(above.sum())) / int(tied.sum())
    return w


def top_k_from_fraction(size: int, fraction: float) -> int:
    """``k = max(1, round(fraction * size))``, the top-k size used for a top fraction."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"top fraction must be in (0, 1], got {fraction}")
    return max(1, min(size, int(round(fraction * size))))


def category_recall(
    mask: Any, category_cell_masks: Mapping[str, Any], top_k: int
) -> dict[str, float]:
    """Per-category recall (metrics.md "Per-category recall"): which object kinds are attended.

    For category ``c`` with cell set ``S_c`` (cells, or pixels, the category's objects touch):
    ``recall_c = sum over S_c of top_k_weights(mask, top_k) / |S_c|``, the fraction of the
    category's cells among the ``top_k`` most attended cells (ties at the k-th value shared as
    in :func:`top_k_weights`). A uniform mask gives ``top_k / n``, the chance level.

    Args:
        mask: ``[R, C]`` attention scores.
        category_cell_masks: Category name -> bool ``[R, C]`` set ``S_c``.
        top_k: Number of top cells, ``1 <= top_k <= R * C``.

    Returns:
        Category -> recall in [0, 1]; ``nan`` for a category absent in the frame (empty set).
    """
    m = _as_float_array(mask, "mask", ndim=2)
    w = top_k_weights(m, top_k)
    out: dict[str, float] = {}
    for cat, cells in category_cell_masks.items():
        b = _as_bool_array(cells, f"category_cell_masks[{cat!r}]")
        _check_same_shape(m, b, "mask", f"category_cell_masks[{cat!r}]")
        out[cat] = float(w[b].sum() / b.sum()) if b.any() else float("nan")
    return out


def category_mass(mask: Any, category_cell_masks: Mapping[str, Any]) -> dict[str, float]:
    """Mask mass on each category's cells: :func:`mass_in_box` per category, nan if absent."""
    m = _check_mask(mask)
    out: dict[str, float] = {}
    for cat, cells in category_cell_masks.items():
        b = _as_bool_array(cells, f"category_cell_masks[{cat!r}]")
        _check_same_shape(m, b, "mask", f"category_cell_masks[{cat!r}]")
        out[cat] = float(m[b].sum()) if b.any() else float("nan")
    return out


def alignment_metrics(
    mask: Any,
    windows: Any,
    boxes: Sequence[Any],
    categories: Sequence[str] | None = None,
    *,
    relevant: Collection[str] | None = None,
    tolerance_cells: int = 0,
    tolerance_px: int = 0,
    top_fraction: float = 0.1,
    screen_hw: tuple[int, int] = ATARI_SCREEN_HW,
    obs_hw: tuple[int, int] = OBS_HW,
) -> dict[str, float]:
    """All mask-object alignment metrics of one frame, as a flat dict.

    B is the set of observation pixels with coverage > 0 by the union of the relevant boxes
    (pixel level) and the set of cells whose window contains such a pixel (cell level). The
    pixel-level mask is :func:`upsample_mask`. Keys (all floats):

    * ``n_boxes``: relevant boxes with a positive on-screen area.
    * ``pointing`` / ``chance_pointing``: cell-level pointing game (tolerance
      ``tolerance_cells``, tie rule ``"expected"``) and its uniform-argmax chance.
    * ``pointing_px`` / ``chance_pointing_px``: the same on the upsampled pixel map
      (tolerance ``tolerance_px``); it penalises coarse cells: an argmax cell half on an object
      scores 0.5.
    * ``mass_in_box`` / ``chance_mass`` / ``lift``: pixel level; ``chance_mass`` is the area
      fraction of B in observation pixels and ``lift = mass_in_box / chance_mass``.
    * ``mass_in_box_cells`` / ``chance_mass_cells`` / ``lift_cells``: the same in cells.
    * ``auroc``: :func:`pixel_auroc` of the upsampled mask with B's pixels as positives;
      ``auroc_cells``: the same over cells.
    * per category ``c`` in ``categories``: ``recall/c`` (:func:`category_recall` on the pixel
      map, ``k = top_k_from_fraction(H * W, top_fraction)``), ``mass/c`` and ``lift/c``
      (pixel-level mass and lift on that category's pixels).

    Every pooled key (all but ``n_boxes`` and the per-category ones) is ``nan`` when B is
    empty (no relevant object on screen), and ``auroc*`` also when B covers everything;
    per-category keys are ``nan`` for a category absent from the frame. Average frames with
    ``nanmean`` (and report how many frames were defined).

    Args:
        mask: ``[R, C]`` attention mask summing to 1.
        windows: ``[R, C, 4]`` half-open ``(y0, y1, x0, x1)`` input windows of the cells.
        boxes: Objects with ``category, x, y, w, h`` attributes or ``(category, x, y, w, h)``
            tuples, in raw screen pixels.
        categories: Categories to report per-category keys for (stable keys across frames);
            None: the categories of all boxes of this frame.
        relevant: Categories that make up B for the pooled keys (``pointing``, ``lift``, ...);
            None: every box. Per-category keys always use all boxes of their category.
        tolerance_cells: Pointing tolerance in cells.
        tolerance_px: Pointing tolerance in observation pixels.
        top_fraction: Fraction of pixels counted as "top attended" for the recall.
        screen_hw: Raw screen ``(height, width)``.
        obs_hw: Observation ``(height, width)``.

    Returns:
        Flat ``{name: value}`` dict.
    """
    m = _check_mask(mask)
    win = _check_windows(windows, obs_hw)
    if win.shape[:2] != m.shape:
        raise ValueError(f"windows grid {win.shape[:2]} does not match mask shape {m.shape}")
    all_boxes = as_boxes(boxes)
    chosen = [b for b in all_boxes if relevant is None or b.category in relevant]
    if categories is None:
        categories = sorted({b.category for b in all_boxes})
    sh, sw = screen_hw

    def cover(bs: list[Box]) -> np.ndarray:
        return boxes_to_obs_coverage([(b.x, b.y, b.w, b.h) for b in bs], screen_hw, obs_hw)

    def on_screen(b: Box) -> bool:
        return min(b.x + b.w, sw) > max(b.x, 0.0) and min(b.y + b.h, sh) > max(b.y, 0.0)

    b_px = cover(chosen) > 0.0
    b_cells = cells_in_box(coverage_to_cells(b_px.astype(np.float64), win))
    out: dict[str, float] = {"n_boxes": float(sum(on_screen(b) for b in chosen))}
    keys = [
        "pointing",
        "chance_pointing",
        "pointing_px",
        "chance_pointing_px",
        "mass_in_box",
        "chance_mass",
        "lift",
        "mass_in_box_cells",
        "chance_mass_cells",
        "lift_cells",
        "auroc",
        "auroc_cells",
    ]
    px = upsample_mask(m, win, obs_hw)
    if b_px.any():
        out["pointing"] = pointing_game(m, b_cells, tolerance_cells)
        out["chance_pointing"] = chance_pointing(b_cells, tolerance_cells)
        out["pointing_px"] = pointing_game(px, b_px, tolerance_px)
        out["chance_pointing_px"] = chance_pointing(b_px, tolerance_px)
        out["mass_in_box"] = float(px[b_px].sum())
        out["chance_mass"] = area_fraction(b_px)
        out["lift"] = out["mass_in_box"] / out["chance_mass"]
        out["mass_in_box_cells"] = float(m[b_cells].sum())
        out["chance_mass_cells"] = area_fraction(b_cells)
        out["lift_cells"] = out["mass_in_box_cells"] / out["chance_mass_cells"]
        out["auroc"] = pixel_auroc(px, b_px)
        out["auroc_cells"] = pixel_auroc(m, b_cells)
    else:
        out.update({k: float("nan") for k in keys})
    cat_px = {c: cover([b for b in all_boxes if b.category == c]) > 0.0 for c in categories}
    recall = category_recall(px, cat_px, top_k_from_fraction(px.size, top_fraction))
    for c in categories:
        area = area_fraction(cat_px[c])
        mass = float(px[cat_px[c]].sum()) if area > 0 else float("nan")
        out[f"recall/{c}"] = recall[c]
        out[f"mass/{c}"] = mass
        out[f"lift/{c}"] = mass / area if area > 0 else float("nan")
    return out


# --------------------------------------------------------------------------------------------
# Faithfulness (metrics.md, "Faithfulness")
# --------------------------------------------------------------------------------------------


def curve_auc(fractions: Any, values: Any) -> float:
    """Trapezoidal area under a deletion/insertion curve.

    Args:
        fractions: ``[K]`` fractions of the input removed (deletion) or revealed (insertion),
            non-decreasing, in [0, 1], ``K >= 2``.
        values: ``[K]`` model output (e.g. the chosen action's probability or value) at each
            fraction.

    Returns:
        ``sum_k (f[k+1] - f[k]) * (v[k] + v[k+1]) / 2`` over the given range (no extrapolation:
        with fractions spanning [0, 1] it is the curve's mean height).
    """
    f = _as_float_array(fractions, "fractions", ndim=1)
    v = _as_float_array(values, "values", ndim=1)
    _check_same_shape(f, v, "fractions", "values")
    if f.size < 2:
        raise ValueError("a curve needs at least 2 points")
    if f.min() < 0.0 or f.max() > 1.0:
        raise ValueError("fractions must lie in [0, 1]")
    if np.any(np.diff(f) < 0):
        raise ValueError("fractions must be non-decreasing")
    return float(np.sum(np.diff(f) * (v[1:] + v[:-1]) / 2.0))


def _mean_auc(fractions: np.ndarray, curves: Any, name: str) -> float:
    c = _as_float_array(curves, name)
    if c.ndim == 1:
        c = c[None]
    if c.ndim != 2:
        raise ValueError(f"{name} must be [K] or [repeats, K], got shape {c.shape}")
    return float(np.mean([curve_auc(fractions, row) for row in c]))


def deletion_insertion_summary(
    deletion: Any,
    insertion: Any,
    random_deletion: Any,
    random_insertion: Any,
    fractions: Any | None = None,
) -> dict[str, float]:
    """Deletion / insertion AUCs against a random order (metrics.md "Faithfulness").

    Deletion removes input regions in decreasing mask order and tracks the model output; a
    faithful mask makes it drop fast (low AUC). Insertion reveals regions in the same order
    starting from a blank/blurred input; a faithful mask makes it rise fast (high AUC). The
    random curves use a random region order (any number of repeats, averaged).

    Args:
        deletion: ``[K]`` output after removing the top fractions of the mask.
        insertion: ``[K]`` output after revealing the top fractions.
        random_deletion: ``[K]`` or ``[repeats, K]``, same with random orders.
        random_insertion: ``[K]`` or ``[repeats, K]``.
        fractions: ``[K]`` fractions in [0, 1]; default ``linspace(0, 1, K)``.

    Returns:
        ``deletion_auc``, ``insertion_auc``, ``random_deletion_auc``, ``random_insertion_auc``,
        ``deletion_gain = random_deletion_auc - deletion_auc`` and
        ``insertion_gain = insertion_auc - random_insertion_auc`` (both > 0 = more faithful
        than a random order), ``insertion_minus_deletion = insertion_auc - deletion_auc``.
    """
    d = _as_float_array(deletion, "deletion", ndim=1)
    f = np.linspace(0.0, 1.0, d.size) if fractions is None else np.asarray(fractions, float)
    out = {
        "deletion_auc": curve_auc(f, d),
        "insertion_auc": curve_auc(f, insertion),
        "random_deletion_auc": _mean_auc(f, random_deletion, "random_deletion"),
        "random_insertion_auc": _mean_auc(f, random_insertion, "random_insertion"),
    }
    out["deletion_gain"] = out["random_deletion_auc"] - out["deletion_auc"]
    out["insertion_gain"] = out["insertion_auc"] - out["random_insertion_auc"]
    out["insertion_minus_deletion"] = out["insertion_auc"] - out["deletion_auc"]
    return out


def spearman(a: Any, b: Any) -> float:
    """Spearman rank correlation of two flattened arrays (average ranks for ties).

    Args:
        a: Any-shape array.
        b: Array with the same number of elements.

    Returns:
        Pearson correlation of the average ranks, in [-1, 1]; ``nan`` when either array is
        constant (no ordering to correlate).
    """
    x = _as_float_array(a, "a").ravel()
    y = _as_float_array(b, "b").ravel()
    if x.size != y.size:
        raise ValueError(f"a has {x.size} elements but b has {y.size}")
    if x.size < 2:
        raise ValueError("spearman needs at least 2 elements")
    rx = average_ranks(x)
    ry = average_ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    den = math.sqrt(float(np.sum(rx * rx)) * float(np.sum(ry * ry)))
    if den == 0.0:
        return float("nan")
    return float(np.clip(np.sum(rx * ry) / den, -1.0, 1.0))


def top_k_set(scores: Any, k: int) -> np.ndarray:
    """Mask of the entries >= the k-th largest value (ties included: may exceed k)."""
    s = _as_float_array(scores, "scores")
    if not 1 <= k <= s.size:
        raise ValueError(f"top_k must be in [1, {s.size}], got {k}")
    return s >= np.sort(s.ravel())[::-1][k - 1]


def randomisation_sanity(
    trained_masks: Any,
    random_masks: Any,
    top_fraction: float = 0.1,
    threshold: float = SANITY_SPEARMAN_THRESHOLD,
) -> dict[str, float | bool]:
    """Parameter-randomisation sanity check (metrics.md "Faithfulness"; Adebayo et al. 2018).

    Masks of a randomly re-initialised network must differ from the trained network's masks
    on the same frames. Per frame: Spearman rank correlation of the two masks (a frame where
    either mask is constant counts as 0: no shared ordering) and the IoU of their top-k cell
    sets (``k = top_k_from_fraction(R * C, top_fraction)``, ties at the k-th value included,
    see :func:`top_k_set`).

    Args:
        trained_masks: ``[N, R, C]`` masks of the trained network.
        random_masks: ``[N, R, C]`` masks of the re-initialised network, same frames.
        top_fraction: Fraction of cells in the top set.
        threshold: ``differs`` is True when the mean Spearman correlation is below this
            (default 0.5).

    Returns:
        ``spearman`` (mean over frames), ``top_k_iou`` (mean), ``n_frames``, ``n_constant``
        (frames where Spearman was undefined) and ``differs``.
    """
    t = _as_float_array(trained_masks, "trained_masks", ndim=3)
    r = _as_float_array(random_masks, "random_masks", ndim=3)
    _check_same_shape(t, r, "trained_masks", "random_masks")
    if t.shape[0] == 0:
        raise ValueError("no frames given")
    k = top_k_from_fraction(t.shape[1] * t.shape[2], top_fraction)
    rhos: list[float] = []
    ious: list[float] = []
    n_constant = 0
    for a, b in zip(t, r, strict=True):
        rho = spearman(a, b)
        if math.isnan(rho):
            n_constant += 1
            rho = 0.0
        rhos.append(rho)
        sa, sb = top_k_set(a, k), top_k_set(b, k)
        ious.append(float((sa & sb).sum() / (sa | sb).sum()))
    mean_rho = float(np.mean(rhos))
    return {
        "spearman": mean_rho,
        "top_k_iou": float(np.mean(ious)),
        "n_frames": int(t.shape[0]),
        "n_constant": n_constant,
        "differs": bool(mean_rho < threshold),
    }

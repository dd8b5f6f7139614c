"""Attention-mask overlays on the raw Atari screen, and H.264 mp4 writing.

How a mask is shown (docs/interpretability.md, "Reading a mask picture"): the ``[rows, cols]``
mask ``p`` (``L = rows * cols`` cells, summing to 1) becomes an intensity ``m`` in [0, 1] on a
*fixed* scale relative to uniform attention (:func:`mask_intensity`, ``scale="uniform"``)::

    m_i = clip(ln(L * p_i) / ln(L), 0, 1)     # 0: at or below uniform (1/L), 1: all mass in i

so a uniform mask is flat (``m = 0`` everywhere), a one-hot mask lights one cell at the top of
the scale, and the same colour means the same ratio to uniform in every frame, video and run.
The paper's per-frame min-max (``scale="minmax"``; ife-architecture.md, "Showing the mask")
stays available; it paints any mask, even a uniform one up to rounding, from black to full red,
and the legend says so. ``m`` is upsampled to the raw 210 x 160 RGB frame by *nearest* cell
(each raw pixel takes the value of the cell whose screen rectangle contains the pixel centre, so
cells stay visible as blocks) and added to the dimmed frame, saturating::

    out = clip(alpha * frame + m * 255 * colour, 0, 255)      # alpha = 0.6 as in the paper

Video frames (:func:`compose_frame`, :class:`MaskVideoRecorder`) are upscaled by an integer
factor (nearest: every screen pixel and mask cell becomes a block) and carry a legend strip
below the picture: the caller's caption (step, action, Q or V), the mask's max over uniform and
its entropy (:func:`mask_stats`), and a colour bar with the scale's ticks.

Cell rectangles come from the extractor (``cell_screen_rect(r, c)`` -> ``(y0, y1, x0, x1)`` in
raw-screen pixels through the observation warp); for IFE's 14 x 14 grid on an 84 x 84 observation
of the full screen they are the uniform grid of :func:`grid_cell_rects` (15 x 11.43 pixels).

Videos are H.264 (libx264, yuv420p) through imageio's ffmpeg plugin with the ffmpeg binary that
imageio-ffmpeg bundles, so browsers and the MLflow UI play them. yuv420p needs even sizes: odd
heights/widths are padded with black at the bottom/right (never rescaled); 210 x 160 is unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "MASK_SCALES",
    "SCREEN_HW",
    "MaskStats",
    "MaskVideoRecorder",
    "cell_index_map",
    "compose_frame",
    "grid_cell_rects",
    "legend_strip",
    "mask_intensity",
    "mask_stats",
    "overlay_mask",
    "read_mp4",
    "resize_nearest",
    "scale_ticks",
    "side_by_side",
    "upscale",
    "write_mp4",
]

SCREEN_HW: tuple[int, int] = (210, 160)
"""Height and width of the raw Atari screen."""

MASK_SCALES: tuple[str, ...] = ("uniform", "minmax")
"""Colour scales of a mask overlay: relative to uniform attention (default) or per-frame min-max."""

_CHANNEL_COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "white": (1.0, 1.0, 1.0),
}


def _as_numpy(x: Any) -> np.ndarray:
    """Convert numpy arrays, sequences and (CPU or GPU, grad or not) torch tensors to numpy."""
    if hasattr(x, "detach"):  # torch.Tensor without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def grid_cell_rects(rows: int, cols: int, screen_hw: tuple[int, int] = SCREEN_HW) -> NDArray:
    """Rectangles of a uniform ``rows x cols`` grid over the screen.

    Args:
        rows: Number of cell rows.
        cols: Number of cell columns.
        screen_hw: Screen ``(height, width)``.

    Returns:
        float64 ``[rows, cols, 4]`` with ``(y0, y1, x0, x1)`` per cell; cell ``(r, c)`` spans
        ``[r*H/rows, (r+1)*H/rows) x [c*W/cols, (c+1)*W/cols)``.
    """
    h, w = screen_hw
    ys = np.arange(rows + 1, dtype=np.float64) * (h / rows)
    xs = np.arange(cols + 1, dtype=np.float64) * (w / cols)
    rects = np.empty((rows, cols, 4), dtype=np.float64)
    rects[..., 0] = ys[:-1, None]
    rects[..., 1] = ys[1:, None]
    rects[..., 2] = xs[None, :-1]
    rects[..., 3] = xs[None, 1:]
    return rects


@functools.lru_cache(maxsize=32)
def _geometry(
    rect_bytes: bytes, grid: tuple[int, int], screen_hw: tuple[int, int]
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Pixel -> cell index map and cell-border mask for one geometry (cached, read-only)."""
    rects = np.frombuffer(rect_bytes, dtype=np.float64).reshape(-1, 4)  # [N, 4]
    h, w = screen_hw
    y0, y1, x0, x1 = rects.T  # each [N]
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2  # rect centres, tie-break for overlapping rects
    px = np.arange(w, dtype=np.float64) + 0.5  # pixel centres [W]
    in_x = (x0[:, None] <= px) & (px < x1[:, None])  # [N, W], half-open [x0, x1)
    dx2 = (px - cx[:, None]) ** 2  # [N, W]
    index = np.full((h, w), -1, dtype=np.int64)
    for y in range(h):  # one screen row at a time keeps memory at [N, W]
        py = y + 0.5
        in_y = (y0 <= py) & (py < y1)  # [N]
        if not in_y.any():
            continue
        inside = in_x & in_y[:, None]  # [N, W]
        dist = np.where(inside, dx2 + ((py - cy) ** 2)[:, None], np.inf)  # [N, W]
        best = dist.argmin(axis=0)  # [W]
        index[y] = np.where(inside.any(axis=0), best, -1)
    border = np.zeros((h, w), dtype=bool)
    border[:, :-1] |= index[:, :-1] != index[:, 1:]
    border[:-1, :] |= index[:-1, :] != index[1:, :]
    index.flags.writeable = False
    border.flags.writeable = False
    return index, border


def _checked_rects(cell_rects: ArrayLike) -> NDArray[np.float64]:
    rects = np.ascontiguousarray(_as_numpy(cell_rects), dtype=np.float64)
    if rects.ndim != 3 or rects.shape[-1] != 4:
        raise ValueError(f"cell_rects must be [rows, cols, 4] (y0, y1, x0, x1), got {rects.shape}")
    return rects


def cell_index_map(
    cell_rects: ArrayLike, screen_hw: tuple[int, int] = SCREEN_HW
) -> NDArray[np.int64]:
    """Map every screen pixel to the cell whose rectangle contains the pixel's centre.

    Pixel ``(y, x)`` has centre ``(y + 0.5, x + 0.5)``; rectangles are half-open
    ``[y0, y1) x [x0, x1)``, so a tiling assigns each pixel to exactly one cell. Where rectangles
    overlap (e.g. receptive fields of a conv attention baseline) the cell with the nearest
    rectangle centre wins. The result is cached per geometry (this runs per frame) and returned
    read-only.

    Args:
        cell_rects: ``[rows, cols, 4]`` rectangles ``(y0, y1, x0, x1)`` in screen pixels (floats).
        screen_hw: Screen ``(height, width)``.

    Returns:
        int64 ``[H, W]`` of flat cell indices ``r * cols + c``; -1 where no rectangle contains
        the pixel centre.
    """
    rects = _checked_rects(cell_rects)
    index, _ = _geometry(rects.tobytes(), rects.shape[:2], tuple(screen_hw))
    return index


def _colour_weights(color: str | tuple[float, float, float]) -> tuple[float, float, float] | None:
    if isinstance(color, str):
        if color == "heat":
            return None
        if color not in _CHANNEL_COLOURS:
            valid = ", ".join([*_CHANNEL_COLOURS, "heat"])
            raise ValueError(f"unknown overlay color {color!r}; valid: {valid} or an RGB tuple")
        return _CHANNEL_COLOURS[color]
    weights = tuple(float(v) for v in color)
    if len(weights) != 3:
        raise ValueError(f"color tuple must have 3 entries (RGB weights), got {color!r}")
    return weights  # type: ignore[return-value]


@dataclass(frozen=True)
class MaskStats:
    """What a video frame's legend says about one mask (:func:`mask_stats`).

    Attributes:
        cells: ``L``, the number of cells.
        max_over_uniform: ``L * max_i p_i`` (1: uniform, ``L``: one-hot).
        entropy: ``-sum_i p_i ln p_i`` in nats (``ln L``: uniform, 0: one-hot).
    """

    cells: int
    max_over_uniform: float
    entropy: float

    @property
    def max_entropy(self) -> float:
        """``ln L``, the entropy of the uniform mask."""
        return float(np.log(self.cells))

    def text(self) -> str:
        """One legend line, e.g. ``mask max 1.03x uniform, entropy 5.277 of ln 196 = 5.278``."""
        return (
            f"mask max {self.max_over_uniform:.3g}x uniform, entropy {self.entropy:.3f} "
            f"of ln {self.cells} = {self.max_entropy:.3f} nats"
        )


def _as_distribution(mask: ArrayLike) -> NDArray[np.float64]:
    """``mask`` as a distribution over its cells (divided by its sum; uniform if it is 0)."""
    p = np.clip(_as_numpy(mask).astype(np.float64), 0.0, None)
    total = p.sum()
    if not np.isfinite(total) or total <= 0:
        return np.full(p.shape, 1.0 / max(p.size, 1))
    return p / total


def mask_stats(mask: ArrayLike) -> MaskStats:
    """Max over uniform and entropy of a ``[rows, cols]`` mask (normalised to sum to 1).

    Example: the uniform 14 x 14 mask has ``max_over_uniform = 1`` and entropy ``ln 196 =
    5.278``; a one-hot mask has 196 and 0.
    """
    p = _as_distribution(mask)
    nz = p[p > 0]
    return MaskStats(
        cells=int(p.size),
        max_over_uniform=float(p.max() * p.size),
        entropy=max(0.0, float(-(nz * np.log(nz)).sum())),  # no -0.0
    )


def mask_intensity(mask: ArrayLike, scale: str = "uniform") -> NDArray[np.float32]:
    """Per-cell overlay intensity in [0, 1] on a stated scale.

    ``"uniform"`` (the default): ``m_i = clip(ln(L p_i) / ln L, 0, 1)`` with ``p`` the mask
    divided by its sum and ``L`` its number of cells. The scale is fixed: 0 is uniform attention
    (``p_i = 1/L``) or less, 1 is all the mass in one cell, and the middle is ``sqrt(L)`` times
    uniform. For a 14 x 14 mask: a cell at twice uniform gets ``ln 2 / ln 196 = 0.131``.

    ``"minmax"``: ``(x - min) / (max - min)`` of the raw values, per frame (a constant mask
    gives zeros); every frame spans the whole colour range, whatever its sharpness.

    Args:
        mask: ``[rows, cols]`` mask (numpy or torch).
        scale: one of :data:`MASK_SCALES`.

    Returns:
        float32 ``[rows, cols]`` intensities.
    """
    if scale == "uniform":
        p = _as_distribution(mask)
        if p.size < 2:
            return np.zeros(p.shape, np.float32)
        with np.errstate(divide="ignore"):
            m = np.log(p * p.size) / np.log(p.size)  # -inf where p = 0
        return np.clip(np.nan_to_num(m, neginf=0.0), 0.0, 1.0).astype(np.float32)
    if scale == "minmax":
        m = _as_numpy(mask).astype(np.float32)
        lo, hi = float(m.min()), float(m.max())
        span = hi - lo
        return (m - lo) / span if span > 0 and np.isfinite(span) else np.zeros_like(m)
    raise ValueError(f"unknown mask scale {scale!r}; valid: {', '.join(MASK_SCALES)}")


def scale_ticks(scale: str, cells: int) -> list[tuple[float, str]]:
    """Colour-bar ticks ``(intensity, label)`` of a scale for a mask of ``cells`` cells.

    ``"uniform"``: ``1x`` at 0, ``sqrt(L)x`` at 0.5 and ``Lx`` (one-hot) at 1, times uniform.
    ``"minmax"``: ``min`` and ``max`` of the frame.
    """
    if scale == "uniform":
        mid = float(np.sqrt(cells))
        return [(0.0, "1x"), (0.5, f"{mid:.3g}x"), (1.0, f"{cells}x uniform")]
    if scale == "minmax":
        return [(0.0, "frame min"), (1.0, "frame max")]
    raise ValueError(f"unknown mask scale {scale!r}; valid: {', '.join(MASK_SCALES)}")


def _colourise(pix: NDArray[np.float32], weights: tuple[float, float, float] | None) -> NDArray:
    """``[..., 3]`` colour added for intensities ``pix`` in [0, 1] (times 255 later)."""
    if weights is None:  # heat ramp: r, g, b rise one after the other
        return np.clip(3.0 * pix[..., None] - np.array([0.0, 1.0, 2.0], np.float32), 0.0, 1.0)
    return pix[..., None] * np.asarray(weights, dtype=np.float32)


def overlay_mask(
    frame_rgb: ArrayLike,
    mask: ArrayLike,
    cell_rects: ArrayLike,
    alpha: float = 0.6,
    grid: bool = False,
    color: str | tuple[float, float, float] = "red",
    grid_color: tuple[int, int, int] = (255, 255, 255),
    scale: str = "uniform",
) -> NDArray[np.uint8]:
    """Overlay a cell mask on a raw frame: ``clip(alpha * frame + m * 255 * colour, 0, 255)``.

    ``m = mask_intensity(mask, scale)`` (relative to uniform by default, or per-frame min-max),
    upsampled by nearest cell (:func:`cell_index_map`); pixels outside every cell get 0.

    Args:
        frame_rgb: uint8 ``[H, W, 3]`` raw frame (210 x 160 for Atari).
        mask: ``[rows, cols]`` mask (numpy or torch), any scale.
        cell_rects: ``[rows, cols, 4]`` screen rectangles ``(y0, y1, x0, x1)`` of the cells.
        alpha: Weight of the frame (0.6 in the paper).
        grid: Draw cell borders (blended half-way towards ``grid_color``).
        color: ``"red"`` (default), ``"green"``, ``"blue"``, ``"white"``, an RGB weight tuple
            (mask added as ``m * 255 * weight`` per channel) or ``"heat"`` (black-red-yellow-white
            ramp, like matplotlib's "hot").
        grid_color: RGB colour of the grid lines.
        scale: ``"uniform"`` or ``"minmax"`` (:func:`mask_intensity`).

    Returns:
        uint8 ``[H, W, 3]`` overlay.
    """
    frame = _as_numpy(frame_rgb)
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"frame_rgb must be [H, W, 3] RGB, got shape {frame.shape}")
    rects = _checked_rects(cell_rects)
    m = _as_numpy(mask)
    if m.shape != rects.shape[:2]:
        raise ValueError(f"mask shape {m.shape} does not match cell_rects grid {rects.shape[:2]}")
    index, border = _geometry(rects.tobytes(), rects.shape[:2], frame.shape[:2])

    m = mask_intensity(m, scale)
    flat = np.append(m.ravel(), np.float32(0.0))  # index -1 picks the trailing 0
    pix = flat[index]  # [H, W] nearest-cell upsampling

    add = _colourise(pix, _colour_weights(color))  # [H, W, 3]
    out = alpha * frame.astype(np.float32) + 255.0 * add
    if grid:
        out[border] = 0.5 * out[border] + 0.5 * np.asarray(grid_color, dtype=np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def upscale(image: ArrayLike, factor: int) -> NDArray[np.uint8]:
    """Integer nearest-neighbour upscaling: every pixel becomes a ``factor x factor`` block."""
    if int(factor) != factor or factor < 1:
        raise ValueError(f"upscale factor must be an integer >= 1, got {factor}")
    img = _to_rgb_uint8(image)
    if factor == 1:
        return img
    return np.repeat(np.repeat(img, factor, axis=0), factor, axis=1)


@functools.lru_cache(maxsize=8)
def _font(size: int) -> Any:
    from PIL import ImageFont  # deferred: only the legends need it

    try:
        return ImageFont.load_default(size=size)  # scalable with FreeType (Pillow >= 10.1)
    except (TypeError, OSError, ImportError):  # pragma: no cover - Pillow without FreeType
        return ImageFont.load_default()


def legend_strip(
    width: int,
    lines: list[str],
    *,
    scale: str | None = "uniform",
    cells: int = 196,
    color: str | tuple[float, float, float] = "red",
    font_px: int = 14,
) -> NDArray[np.uint8]:
    """A black strip of text lines and, with a ``scale``, the overlay's colour bar and ticks.

    The colour bar shows what the overlay adds over a black frame at each intensity (the
    frame's own pixels are dimmed by ``alpha`` below it); ticks are :func:`scale_ticks`.

    Args:
        width: strip width in pixels (the picture's).
        lines: text lines, top to bottom.
        scale: the overlay's scale, or None for no colour bar (no mask).
        cells: the mask's number of cells (sets the uniform scale's ticks).
        color: the overlay colour (see :func:`overlay_mask`).
        font_px: text height in pixels.

    Returns:
        uint8 ``[h, width, 3]`` with an even ``h``.
    """
    from PIL import Image, ImageDraw

    pad, line_h = max(2, font_px // 3), font_px + max(2, font_px // 4)
    bar_h = font_px if scale else 0
    height = pad + line_h * len(lines) + (bar_h + line_h + pad if scale else 0) + pad
    height += height % 2
    img = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(img)
    font = _font(font_px)
    y = pad
    for line in lines:
        draw.text((pad, y), line, fill=(235, 235, 235), font=font)
        y += line_h
    arr = np.asarray(img).copy()
    if scale:
        x0, x1 = 2 * pad, width - 2 * pad  # the bar spans the strip
        ramp = np.linspace(0.0, 1.0, x1 - x0, dtype=np.float32)
        colours = np.clip(np.rint(255.0 * _colourise(ramp, _colour_weights(color))), 0, 255)
        arr[y : y + bar_h, x0:x1] = colours.astype(np.uint8)[None]
        arr[y : y + bar_h, x0 - 1] = arr[y : y + bar_h, x1] = 128  # frame the bar
        img = Image.fromarray(arr)
        draw = ImageDraw.Draw(img)
        for pos, label in scale_ticks(scale, cells):
            x = round(x0 + pos * (x1 - 1 - x0))
            draw.line([(x, y + bar_h), (x, y + bar_h + pad)], fill=(235, 235, 235))
            size = font.getlength(label)
            left = x if pos == 0 else x - size if pos == 1 else x - size / 2  # inside the strip
            draw.text((left, y + bar_h + pad), label, fill=(235, 235, 235), font=font)
        arr = np.asarray(img)
    return np.ascontiguousarray(arr, dtype=np.uint8)


def compose_frame(
    panels: list[ArrayLike],
    lines: list[str],
    *,
    factor: int = 3,
    scale: str | None = "uniform",
    cells: int = 196,
    color: str | tuple[float, float, float] = "red",
) -> NDArray[np.uint8]:
    """Panels side by side, upscaled by ``factor`` (nearest), over a :func:`legend_strip`.

    Args:
        panels: images left to right (e.g. raw frame, mask overlay).
        lines: legend text lines (step, action, value; mask statistics).
        factor: integer upscaling factor.
        scale: the mask overlay's scale (None: no colour bar).
        cells: the mask's number of cells.
        color: the overlay colour.

    Returns:
        uint8 ``[factor * H + strip, factor * W, 3]``.
    """
    picture = upscale(side_by_side(*panels), factor)
    strip = legend_strip(
        picture.shape[1], lines, scale=scale, cells=cells, color=color, font_px=max(10, 5 * factor)
    )
    return np.concatenate([picture, strip], axis=0)


def resize_nearest(image: ArrayLike, out_hw: tuple[int, int]) -> NDArray:
    """Nearest-neighbour resize of an ``[H, W]`` or ``[H, W, C]`` image (e.g. 84x84 -> 210x160).

    Args:
        image: Image array (numpy or torch).
        out_hw: Output ``(height, width)``.

    Returns:
        The resized image, same dtype and channel layout.
    """
    img = _as_numpy(image)
    h, w = img.shape[:2]
    oh, ow = out_hw
    ys = np.minimum(((np.arange(oh) + 0.5) * h / oh).astype(np.int64), h - 1)
    xs = np.minimum(((np.arange(ow) + 0.5) * w / ow).astype(np.int64), w - 1)
    return img[ys[:, None], xs[None, :]]


def _to_rgb_uint8(panel: ArrayLike) -> NDArray[np.uint8]:
    img = _as_numpy(panel)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"panel must be [H, W], [H, W, 1] or [H, W, 3], got {img.shape}")
    if img.dtype != np.uint8:
        img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return img


def side_by_side(*panels: ArrayLike, pad_value: int = 0) -> NDArray[np.uint8]:
    """Concatenate images horizontally into one uint8 RGB image.

    Gray ``[H, W]`` / ``[H, W, 1]`` panels become RGB; non-uint8 panels are rounded and clipped
    to [0, 255]; shorter panels are padded at the bottom with ``pad_value``.

    Args:
        *panels: Images to put left to right.
        pad_value: Fill value for the padding.

    Returns:
        uint8 ``[max H, sum W, 3]``.
    """
    if not panels:
        raise ValueError("side_by_side needs at least one panel")
    imgs = [_to_rgb_uint8(p) for p in panels]
    height = max(img.shape[0] for img in imgs)
    padded = [
        np.pad(img, ((0, height - img.shape[0]), (0, 0), (0, 0)), constant_values=pad_value)
        for img in imgs
    ]
    return np.concatenate(padded, axis=1)


def _pad_even(frame: NDArray[np.uint8]) -> NDArray[np.uint8]:
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))


def write_mp4(
    path: str | Path,
    frames: Iterable[ArrayLike],
    fps: float = 15,
    quality: float = 8,
) -> Path:
    """Write RGB frames to an H.264 mp4 (libx264, yuv420p, faststart) with the bundled ffmpeg.

    Frames are streamed (not held in memory). yuv420p needs even sizes, so an odd height or
    width is padded by one black row/column at the bottom/right; the file then decodes to the
    padded (even) size. Frames are never rescaled (210 x 160 stays 210 x 160).

    Args:
        path: Output file; parent folders are created.
        frames: Iterable of ``[H, W, 3]`` (or gray ``[H, W]``) frames, all the same size.
        fps: Frames per second.
        quality: imageio quality 1-10 (10 best); for libx264 it sets crf = int((1 - q/10) * 51).

    Returns:
        The written path.

    Raises:
        ValueError: If there are no frames or the frame sizes differ.
    """
    import imageio.v2 as imageio  # deferred: only needed when a video is written

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    size: tuple[int, int] | None = None
    try:
        for i, frame in enumerate(frames):
            img = _to_rgb_uint8(frame)
            if size is None:
                size = img.shape[:2]
                writer = imageio.get_writer(
                    str(out),
                    format="FFMPEG",
                    mode="I",
                    fps=fps,
                    codec="libx264",
                    pixelformat="yuv420p",
                    quality=quality,
                    macro_block_size=2,  # sizes are made even below; never let ffmpeg rescale
                    ffmpeg_log_level="error",
                    output_params=["-movflags", "+faststart"],
                )
            elif img.shape[:2] != size:
                raise ValueError(f"frame {i} has size {img.shape[:2]}, expected {size}")
            writer.append_data(_pad_even(img))
    finally:
        if writer is not None:
            writer.close()
    if size is None:
        raise ValueError("write_mp4 got no frames")
    return out


def read_mp4(path: str | Path) -> NDArray[np.uint8]:
    """Decode a video into uint8 ``[T, H, W, 3]`` (for tests and inspection).

    Args:
        path: Video file.

    Returns:
        All frames, stacked.
    """
    import imageio.v2 as imageio

    reader = imageio.get_reader(str(path), format="FFMPEG")
    try:
        return np.stack([np.asarray(f, dtype=np.uint8) for f in reader])
    finally:
        reader.close()


class MaskVideoRecorder:
    """Collect (frame, mask, caption) per agent step and write a mask-overlay mp4.

    ``add`` only copies the raw frame (about 100 kB) and the small mask; overlays and legends
    are rendered when the video is written, so recording costs next to nothing per step.
    Rectangles are stored once per distinct geometry. One mask per agent step covers that
    step's emulator frames. Every written frame is :func:`compose_frame`: the picture upscaled
    by ``upscale`` over a legend with the step's caption, the mask's max over uniform and
    entropy (:func:`mask_stats`), and the colour bar of ``scale``.

    Args:
        cell_rects: Default ``[rows, cols, 4]`` cell rectangles, used when ``add`` gets none.
        alpha: Frame weight of :func:`overlay_mask`.
        grid: Draw cell borders.
        color: Overlay colour (see :func:`overlay_mask`).
        with_raw: Put the unmodified frame to the left of each overlay.
        fps: Default frames per second of :meth:`write`.
        max_frames: Keep at most this many steps; later ``add`` calls are ignored and counted in
            ``dropped``. None keeps everything.
        scale: ``"uniform"`` (default) or ``"minmax"`` (:func:`mask_intensity`).
        upscale: integer upscaling factor of the written frames (nearest).
        legend: put the legend strip under every frame.
    """

    def __init__(
        self,
        cell_rects: ArrayLike | None = None,
        alpha: float = 0.6,
        grid: bool = False,
        color: str | tuple[float, float, float] = "red",
        with_raw: bool = False,
        fps: float = 15,
        max_frames: int | None = None,
        scale: str = "uniform",
        upscale: int = 3,
        legend: bool = True,
    ) -> None:
        self.alpha = alpha
        self.grid = grid
        self.color = color
        self.with_raw = with_raw
        self.fps = fps
        self.max_frames = max_frames
        self.scale = scale
        self.upscale = upscale
        self.legend = legend
        self.dropped = 0
        _colour_weights(color)  # fail early on a bad colour or scale
        scale_ticks(scale, 2)
        self._default_rects = None if cell_rects is None else _checked_rects(cell_rects)
        self._geometries: list[NDArray[np.float64]] = []
        self._steps: list[tuple[NDArray[np.uint8], NDArray[np.float32] | None, int, str]] = []

    def __len__(self) -> int:
        return len(self._steps)

    def _geometry_id(self, cell_rects: ArrayLike | None) -> int:
        if cell_rects is None:
            if self._default_rects is None:
                raise ValueError("no cell_rects given to add() and none set on the recorder")
            rects = self._default_rects
        else:
            rects = cell_rects if isinstance(cell_rects, np.ndarray) else _as_numpy(cell_rects)
        if self._geometries:
            last = self._geometries[-1]
            if rects is last or (rects.shape == last.shape and np.array_equal(rects, last)):
                return len(self._geometries) - 1
        self._geometries.append(_checked_rects(rects).copy())
        return len(self._geometries) - 1

    def add(
        self,
        frame: ArrayLike,
        mask: ArrayLike | None,
        cell_rects: ArrayLike | None = None,
        caption: str = "",
    ) -> None:
        """Record one step.

        Args:
            frame: uint8 ``[H, W, 3]`` raw RGB frame.
            mask: ``[rows, cols]`` attention mask (numpy or torch), or None (no attention:
                the frame alone, with the caption).
            cell_rects: ``[rows, cols, 4]`` rectangles; defaults to the recorder's.
            caption: the legend's first line (e.g. ``step 12  action FIRE  Q 1.25``).
        """
        if self.max_frames is not None and len(self._steps) >= self.max_frames:
            self.dropped += 1
            return
        img = np.array(_as_numpy(frame), dtype=np.uint8, copy=True)
        if mask is None:
            self._steps.append((img, None, -1, caption))
            return
        m = np.array(_as_numpy(mask), dtype=np.float32, copy=True)
        self._steps.append((img, m, self._geometry_id(cell_rects), caption))

    def clear(self) -> None:
        """Forget all recorded steps (kept geometries are dropped too)."""
        self._steps.clear()
        self._geometries.clear()
        self.dropped = 0

    def legend_lines(self, mask: ArrayLike | None, caption: str = "") -> list[str]:
        """The legend's text for one step: caption, mask statistics, the scale's name."""
        lines = [caption] if caption else []
        if mask is None:
            return [*lines, "no attention mask"]
        lines.append(mask_stats(mask).text())
        if self.scale == "uniform":
            lines.append("colour: mask / uniform, log scale, fixed (same in every frame)")
        else:
            lines.append("colour: per-frame min-max (NOT comparable across frames)")
        return lines

    def render(self) -> Iterator[NDArray[np.uint8]]:
        """Yield the composed video frames (overlay, or raw | overlay with ``with_raw``)."""
        for frame, mask, gid, caption in self._steps:
            if mask is None:
                panels: list[ArrayLike] = [frame]
            else:
                over = overlay_mask(
                    frame,
                    mask,
                    self._geometries[gid],
                    self.alpha,
                    self.grid,
                    self.color,
                    scale=self.scale,
                )
                panels = [frame, over] if self.with_raw else [over]
            if not self.legend:
                yield upscale(side_by_side(*panels), self.upscale)
                continue
            yield compose_frame(
                panels,
                self.legend_lines(mask, caption),
                factor=self.upscale,
                scale=None if mask is None else self.scale,
                cells=1 if mask is None else int(mask.size),
                color=self.color,
            )

    def write(self, path: str | Path, fps: float | None = None) -> Path:
        """Write the recorded steps as an H.264 mp4 (see :func:`write_mp4`).

        Args:
            path: Output file.
            fps: Frames per second; defaults to the recorder's.

        Returns:
            The written path.
        """
        return write_mp4(path, self.render(), fps=self.fps if fps is None else fps)

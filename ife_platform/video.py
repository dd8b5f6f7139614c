"""Attention-mask overlays on the raw Atari screen, and H.264 mp4 writing.

How a mask is shown (ife-architecture.md, "Showing the mask"): the ``[rows, cols]`` mask is
min-max normalised per frame, upsampled to the raw 210 x 160 RGB frame by *nearest* cell (each
raw pixel takes the value of the cell whose screen rectangle contains the pixel centre, so cells
stay visible as blocks) and added to the dimmed frame, saturating::

    out = clip(alpha * frame + m * 255 * colour, 0, 255)      # alpha = 0.6 as in the paper

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
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "SCREEN_HW",
    "MaskVideoRecorder",
    "cell_index_map",
    "grid_cell_rects",
    "overlay_mask",
    "read_mp4",
    "resize_nearest",
    "side_by_side",
    "write_mp4",
]

SCREEN_HW: tuple[int, int] = (210, 160)
"""Height and width of the raw Atari screen."""

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


def overlay_mask(
    frame_rgb: ArrayLike,
    mask: ArrayLike,
    cell_rects: ArrayLike,
    alpha: float = 0.6,
    grid: bool = False,
    color: str | tuple[float, float, float] = "red",
    grid_color: tuple[int, int, int] = (255, 255, 255),
) -> NDArray[np.uint8]:
    """Overlay a cell mask on a raw frame: ``clip(alpha * frame + m * 255 * colour, 0, 255)``.

    The mask is min-max normalised per frame to ``m`` in [0, 1] (a constant mask gives zeros)
    and upsampled by nearest cell (:func:`cell_index_map`); pixels outside every cell get 0.

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

    Returns:
        uint8 ``[H, W, 3]`` overlay.
    """
    frame = _as_numpy(frame_rgb)
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"frame_rgb must be [H, W, 3] RGB, got shape {frame.shape}")
    m = _as_numpy(mask).astype(np.float32)
    rects = _checked_rects(cell_rects)
    if m.shape != rects.shape[:2]:
        raise ValueError(f"mask shape {m.shape} does not match cell_rects grid {rects.shape[:2]}")
    index, border = _geometry(rects.tobytes(), rects.shape[:2], frame.shape[:2])

    lo, hi = float(m.min()), float(m.max())
    span = hi - lo
    m = (m - lo) / span if span > 0 and np.isfinite(span) else np.zeros_like(m)
    flat = np.append(m.ravel(), np.float32(0.0))  # index -1 picks the trailing 0
    pix = flat[index]  # [H, W] nearest-cell upsampling

    weights = _colour_weights(color)
    if weights is None:  # heat ramp: r, g, b rise one after the other
        add = np.clip(3.0 * pix[..., None] - np.array([0.0, 1.0, 2.0], np.float32), 0.0, 1.0)
    else:
        add = pix[..., None] * np.asarray(weights, dtype=np.float32)  # [H, W, 3]
    out = alpha * frame.astype(np.float32) + 255.0 * add
    if grid:
        out[border] = 0.5 * out[border] + 0.5 * np.asarray(grid_color, dtype=np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


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
    """Collect (frame, mask, cell rects) per agent step and write a mask-overlay mp4.

    ``add`` only copies the raw frame (about 100 kB) and the small mask; overlays are rendered
    when the video is written, so recording costs next to nothing per step. Rectangles are stored
    once per distinct geometry. One mask per agent step covers that step's emulator frames.

    Args:
        cell_rects: Default ``[rows, cols, 4]`` cell rectangles, used when ``add`` gets none.
        alpha: Frame weight of :func:`overlay_mask`.
        grid: Draw cell borders.
        color: Overlay colour (see :func:`overlay_mask`).
        with_raw: Put the unmodified frame to the left of each overlay.
        fps: Default frames per second of :meth:`write`.
        max_frames: Keep at most this many steps; later ``add`` calls are ignored and counted in
            ``dropped``. None keeps everything.
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
    ) -> None:
        self.alpha = alpha
        self.grid = grid
        self.color = color
        self.with_raw = with_raw
        self.fps = fps
        self.max_frames = max_frames
        self.dropped = 0
        _colour_weights(color)  # fail early on a bad colour
        self._default_rects = None if cell_rects is None else _checked_rects(cell_rects)
        self._geometries: list[NDArray[np.float64]] = []
        self._steps: list[tuple[NDArray[np.uint8], NDArray[np.float32], int]] = []

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

    def add(self, frame: ArrayLike, mask: ArrayLike, cell_rects: ArrayLike | None = None) -> None:
        """Record one step.

        Args:
            frame: uint8 ``[H, W, 3]`` raw RGB frame.
            mask: ``[rows, cols]`` attention mask (numpy or torch).
            cell_rects: ``[rows, cols, 4]`` rectangles; defaults to the recorder's.
        """
        if self.max_frames is not None and len(self._steps) >= self.max_frames:
            self.dropped += 1
            return
        img = np.array(_as_numpy(frame), dtype=np.uint8, copy=True)
        m = np.array(_as_numpy(mask), dtype=np.float32, copy=True)
        self._steps.append((img, m, self._geometry_id(cell_rects)))

    def clear(self) -> None:
        """Forget all recorded steps (kept geometries are dropped too)."""
        self._steps.clear()
        self._geometries.clear()
        self.dropped = 0

    def render(self) -> Iterator[NDArray[np.uint8]]:
        """Yield the composed video frames (overlay, or raw | overlay with ``with_raw``)."""
        for frame, mask, gid in self._steps:
            over = overlay_mask(
                frame, mask, self._geometries[gid], self.alpha, self.grid, self.color
            )
            yield side_by_side(frame, over) if self.with_raw else over

    def write(self, path: str | Path, fps: float | None = None) -> Path:
        """Write the recorded steps as an H.264 mp4 (see :func:`write_mp4`).

        Args:
            path: Output file.
            fps: Frames per second; defaults to the recorder's.

        Returns:
            The written path.
        """
        return write_mp4(path, self.render(), fps=self.fps if fps is None else fps)

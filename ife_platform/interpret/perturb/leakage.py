"""Spatial leakage (``shared/reference/metrics.md``, "Spatial leakage").

How much of the change of the attention logits caused by perturbing one cell's input window
lands on other cells: exactly 0 for IFE's HUE (non-overlapping windows), not for overlapping
convolutions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ife_platform.interpret.perturb.common import (
    check_obs,
    eval_mode,
    module_device,
    window_masks,
)


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
    check_obs(obs)
    if not hasattr(extractor, "cell_input_windows") and hasattr(extractor, "extractor"):
        extractor = extractor.extractor
    if not hasattr(extractor, "cell_input_windows"):
        raise TypeError(f"{type(extractor).__name__} has no attention mask / cell geometry")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = module_device(extractor)
    obs = obs.to(device)
    rows, cols = extractor.cell_grid
    n_cells = rows * cols
    cell_rc = _parse_cells(cells, rows, cols)
    flat = cell_rc[:, 0] * cols + cell_rc[:, 1]  # [K]
    k_total = flat.numel()
    windows = extractor.cell_input_windows().reshape(n_cells, 4)  # [L, 4]
    masks = window_masks(windows[flat], tuple(obs.shape[-2:]), device)  # [K, H, W]
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

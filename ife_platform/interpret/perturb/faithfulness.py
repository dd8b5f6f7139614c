"""Faithfulness: deletion / insertion curves (``shared/reference/metrics.md``, "Faithfulness").

Cells are deleted (or inserted) in the order of the mask and in random orders; a faithful mask
makes the action score fall faster (rise faster) than random.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from ife_platform.interpret.perturb.common import (
    ScoreFn,
    check_obs,
    eval_mode,
    module_device,
    to_unit_float,
    window_masks,
)
from ife_platform.interpret.perturb.saliency import gaussian_blur


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
    masks = window_masks(windows.reshape(-1, 4), size_hw, vals.device)  # [L, H, W]
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
    device = module_device(network)

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
    check_obs(obs)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    x = to_unit_float(obs)
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

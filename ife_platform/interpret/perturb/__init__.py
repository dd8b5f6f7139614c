"""Perturbation-based interpretability: leakage, saliency, deletion/insertion, randomisation.

One module per measurement (``leakage``, ``saliency``, ``faithfulness``, ``randomisation``)
over shared helpers (``common``); this package re-exports their public API.

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

from ife_platform.interpret.perturb.common import (
    GREYDANUS_BLUR_SIGMA,
    GREYDANUS_MASK_SIGMA,
    GREYDANUS_STRIDE,
    OutputsFn,
    ScoreFn,
    eval_mode,
)
from ife_platform.interpret.perturb.faithfulness import (
    cells_to_pixels,
    curve_auc,
    deletion_insertion,
    rainbow_action_score,
)
from ife_platform.interpret.perturb.leakage import (
    LeakageResult,
    merge_leakage,
    spatial_leakage,
)
from ife_platform.interpret.perturb.randomisation import (
    not_reinitialised,
    randomised_copy,
    reset_module,
    resettable,
)
from ife_platform.interpret.perturb.saliency import (
    gaussian_blur,
    greydanus_masks,
    normalise_saliency,
    perturbation_saliency,
    rainbow_outputs,
    saliency_benchmark,
    saliency_grid,
    saliency_throughput,
    upsample_saliency,
)

__all__ = [
    "GREYDANUS_BLUR_SIGMA",
    "GREYDANUS_MASK_SIGMA",
    "GREYDANUS_STRIDE",
    "LeakageResult",
    "OutputsFn",
    "ScoreFn",
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
    "reset_module",
    "resettable",
    "saliency_benchmark",
    "saliency_grid",
    "saliency_throughput",
    "spatial_leakage",
    "upsample_saliency",
]

"""Continual-learning metrics over a task sequence T_1 .. T_K (pure numpy).

Implements ``metrics.md`` ("Continual learning over a task sequence" and "Scores") exactly:
average performance, Continual World (CW) forgetting and forward transfer, CORA's isolated
forgetting and zero-shot forward transfer, with percentile bootstrap intervals over seeds.

Score matrix convention (used by every function taking ``R``)::

    R has shape (K + 1, K)
    R[i, j - 1] = normalised evaluation score on task j (1-based) after training on task i
    row i = 0   : before any training
    row i = 1..K: after training on task i (i.e. on T_1 .. T_i in order)
    column j - 1: task j = 1..K in sequence order

The formulas below use 1-based task numbers as in metrics.md; in code a task j is column ``j - 1``
and "after task i" is row ``i``. Scores are normalised per task (:func:`normalise_scores`).

Missing values: a row (or cell) that was never evaluated, e.g. because the sequence was stopped
early after m < K tasks (rows m+1 .. K all nan), is nan. nan propagates: every quantity whose
formula reads a nan cell is nan, and every mean over tasks that includes a nan term is nan (no
silent averaging over the tasks that happened to finish). Nothing raises on nan input.
Only :func:`bootstrap_interval` / :func:`summarise_over_seeds` drop nan *seeds*, and they report
how many seeds were used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ife_platform.scores import has_reference, human_normalized_score

__all__ = [
    "HEADLINE_METRICS",
    "average_performance",
    "bootstrap_interval",
    "forgetting_cora",
    "forgetting_cw",
    "forgetting_cw_mean",
    "forward_transfer_cw",
    "normalise_scores",
    "plot_matrix",
    "summarise_over_seeds",
    "training_auc",
    "zero_shot_transfer_cora",
    "zero_shot_transfer_cora_mean",
]

HEADLINE_METRICS: tuple[str, ...] = (
    "average_performance",
    "forgetting_cw_mean",
    "forgetting_cora_mean",
    "forward_transfer_mean",
    "zero_shot_mean",
)
"""Keys of :func:`summarise_over_seeds`, one scalar per seed each."""

FloatArray = NDArray[np.float64]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _as_matrix(R: ArrayLike) -> tuple[FloatArray, int]:
    """Validate a score matrix of shape (K + 1, K) and return it as float64 with K."""
    m = np.asarray(R, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] < 1 or m.shape[0] != m.shape[1] + 1:
        raise ValueError(
            "R must have shape (K + 1, K) with K >= 1: row 0 = before any training, row i = "
            f"after training on task i, column j - 1 = task j; got shape {m.shape}"
        )
    return m, m.shape[1]


def _strict_mean(values: FloatArray) -> float:
    """Mean that is nan for an empty input or any nan value (no RuntimeWarning)."""
    if values.size == 0 or np.isnan(values).any():
        return float("nan")
    return float(values.mean())


# --------------------------------------------------------------------------------------------
# Normalisation (metrics.md "Scores" and "Continual learning over a task sequence")
# --------------------------------------------------------------------------------------------


def normalise_scores(
    raw: ArrayLike,
    games: Sequence[str],
    method: Literal["hns", "best_abs", "auto"] = "auto",
    best_abs: ArrayLike | None = None,
) -> FloatArray:
    """Normalise raw returns per task, as metrics.md requires before any CL metric.

    Methods (metrics.md, "Continual learning over a task sequence": "normalised per task: HNS,
    or divided by the best |return| seen for that task"):

    * ``"hns"``: human-normalised score ``(score - random) / (human - random)`` per game via
      :func:`ife_platform.scores.human_normalized_score` (table ``atari_human_random.csv``;
      Video Pinball's random score is 0.0 there).
    * ``"best_abs"``: ``raw[:, j] / b_j`` with ``b_j`` the largest ``|return|`` seen for task j,
      taken over all rows of ``raw`` *and* over the extra values in ``best_abs`` (e.g. the
      from-scratch reference runs, or the other seeds, so that every run of a comparison shares
      one scale and normalised scores lie in [-1, 1]). ``b_j == 0`` (or no finite value at all)
      gives a nan column instead of a division by zero.
    * ``"auto"``: ``"hns"`` when every game has a reference score, else ``"best_abs"``.

    nan entries (tasks never evaluated) stay nan and are ignored when finding ``b_j``.

    Args:
        raw: Raw full-game returns, shape ``[rows, K]`` (any number of rows, e.g. the (K + 1, K)
            matrix R or an evaluation curve per task). A 1-D array is taken as one row.
        games: The K game names of the columns, in sequence order (any naming accepted by
            :func:`ife_platform.scores.canonical_game_name`).
        method: ``"hns"``, ``"best_abs"`` or ``"auto"``.
        best_abs: Optional extra returns for ``"best_abs"``: shape ``[K]`` or ``[n, K]``
            (nan ignored); their absolute values join the per-task maximum. Ignored by ``"hns"``.

    Returns:
        Normalised scores, float64, same shape as ``raw``.

    Raises:
        ValueError: On a column/game count mismatch, an unknown method, ``"hns"`` with a game
            missing from the reference table (the message names it), or a bad ``best_abs`` shape.
    """
    scores = np.asarray(raw, dtype=np.float64)
    one_row = scores.ndim == 1
    scores = np.atleast_2d(scores)  # [rows, K]
    if scores.ndim != 2:
        raise ValueError(f"raw must be [rows, K] or [K], got shape {np.shape(raw)}")
    k = scores.shape[1]
    games = list(games)
    if len(games) != k:
        raise ValueError(f"got {len(games)} games for {k} score columns")
    if method == "auto":
        method = "hns" if all(has_reference(g) for g in games) else "best_abs"
    if method == "hns":
        missing = [g for g in games if not has_reference(g)]
        if missing:
            raise ValueError(
                f"method='hns' needs reference scores; none for {missing} "
                "(use method='best_abs' or 'auto')"
            )
        out = np.empty_like(scores)
        for j, game in enumerate(games):
            out[:, j] = [human_normalized_score(game, s) for s in scores[:, j]]
    elif method == "best_abs":
        pool = np.abs(scores)  # [rows, K]
        if best_abs is not None:
            extra = np.atleast_2d(np.abs(np.asarray(best_abs, dtype=np.float64)))  # [n, K]
            if extra.ndim != 2 or extra.shape[1] != k:
                raise ValueError(
                    f"best_abs must have shape [K] or [n, K] with K = {k}, got {np.shape(best_abs)}"
                )
            pool = np.concatenate([pool, extra], axis=0)
        best = np.where(np.isnan(pool), -np.inf, pool).max(axis=0)  # [K]; -inf: no value
        denom = np.where(best > 0, best, np.nan)  # guard 0 and "never seen" -> nan
        out = scores / denom
    else:
        raise ValueError(f"unknown method {method!r}; valid: 'hns', 'best_abs', 'auto'")
    return out[0] if one_row else out


# --------------------------------------------------------------------------------------------
# Metrics on one run's matrix R (metrics.md "Continual learning over a task sequence")
# --------------------------------------------------------------------------------------------


def average_performance(R: ArrayLike) -> float:
    """Average performance: mean over tasks j of R[K][j] (metrics.md; CW and CORA).

    Args:
        R: Score matrix of shape (K + 1, K) (module docstring: row i = after task i, column
            j - 1 = task j).

    Returns:
        ``mean_j R[K, j - 1]``; nan if any task lacks a final score (e.g. stopped early).

    Raises:
        ValueError: If R does not have shape (K + 1, K).
    """
    m, k = _as_matrix(R)
    return _strict_mean(m[k])


def forgetting_cw(R: ArrayLike) -> FloatArray:
    """Continual World forgetting per task: ``F_j = R[j][j] - R[K][j]`` (metrics.md).

    Positive = forgot (the score at the end of the sequence is below the score right after
    training on that task); negative = the task improved while training on later tasks.
    For the last task ``F_K = R[K][K] - R[K][K] = 0`` by definition (nan only if that cell is
    nan); :func:`forgetting_cw_mean` therefore averages over j < K only.

    Args:
        R: Score matrix of shape (K + 1, K).

    Returns:
        ``[K]`` array, entry ``j - 1`` = F_j; nan where a needed cell is nan.

    Raises:
        ValueError: If R does not have shape (K + 1, K).
    """
    m, k = _as_matrix(R)
    tasks = np.arange(1, k + 1)
    return m[tasks, tasks - 1] - m[k]  # R[j][j] - R[K][j], j = 1..K


def forgetting_cw_mean(R: ArrayLike) -> float:
    """Mean CW forgetting over tasks j = 1 .. K - 1 (the last task's 0 is excluded).

    Args:
        R: Score matrix of shape (K + 1, K).

    Returns:
        The mean of :func:`forgetting_cw` over j < K; nan if K == 1 or any term is nan.
    """
    return _strict_mean(forgetting_cw(R)[:-1])


def forgetting_cora(R: ArrayLike) -> dict[str, Any]:
    """CORA's isolated forgetting ``F[j, i] = R[i-1][j] - R[i][j]`` for later tasks i > j.

    metrics.md: "CORA's isolated version: for each later task i, R[i-1][j] - R[i][j], reported
    per (task, impactor) and averaged. Positive = forgot." Each entry isolates the drop on task
    j caused by training on one impactor task i.

    Args:
        R: Score matrix of shape (K + 1, K).

    Returns:
        A dict with

        * ``"matrix"``: ``[K, K]`` array; ``matrix[j - 1, i - 1] = R[i-1][j] - R[i][j]`` for
          impactor i > j (row = forgotten task j, column = impactor i); nan where i <= j
          (undefined) and where a needed cell is nan.
        * ``"defined"``: ``[K, K]`` bool mask of the pairs i > j (so an undefined pair is not
          confused with a nan score).
        * ``"per_task"``: ``[K]``, mean over the impactors i = j+1 .. K of task j's row;
          nan for the last task (no later task) and where any of its terms is nan.
        * ``"mean"``: mean over all K(K-1)/2 defined (task, impactor) pairs, each pair weighted
          equally (not the mean of ``per_task``); nan if K == 1 or any pair is nan.

    Raises:
        ValueError: If R does not have shape (K + 1, K).
    """
    m, k = _as_matrix(R)
    # drop[i - 1, j - 1] = R[i-1][j] - R[i][j]: change on task j while training task i (i=1..K)
    drop = m[:-1] - m[1:]  # [K impactors, K tasks]
    defined = np.triu(np.ones((k, k), dtype=bool), k=1)  # [task j, impactor i]: i > j
    matrix = np.where(defined, drop.T, np.nan)  # [K tasks, K impactors]
    per_task = np.array([_strict_mean(matrix[j, defined[j]]) for j in range(k)])
    return {
        "matrix": matrix,
        "defined": defined,
        "per_task": per_task,
        "mean": _strict_mean(matrix[defined]),
    }


def training_auc(
    curve_steps: ArrayLike,
    curve_scores: ArrayLike,
    *,
    start: float | None = None,
    end: float | None = None,
) -> float:
    """AUC_j: mean normalised score during a task's training window (metrics.md, CW).

    metrics.md defines AUC_j as "the mean normalised score during task j's training window".
    This is the plain (unweighted) mean of the evaluation points whose step lies in the
    half-open window ``start < step <= end``, not a trapezoid rule; with evaluations at evenly
    spaced steps it equals the area under the step curve divided by the window length.
    The window is open at ``start`` so that the evaluation at a task boundary belongs to the
    task that just finished (consistent with row i of R = "after training task i"). Use the
    same convention for the from-scratch reference: pass ``start=0`` so that the untrained
    step-0 evaluation is excluded there too.

    Args:
        curve_steps: ``[P]`` environment steps of the evaluation points.
        curve_scores: ``[P]`` normalised scores at those steps.
        start: Window start (exclusive); None = no lower bound.
        end: Window end (inclusive); None = no upper bound.

    Returns:
        The mean score inside the window; nan if the window holds no point or any score in it
        is nan.

    Raises:
        ValueError: If steps and scores are not 1-D arrays of the same length.
    """
    steps = np.asarray(curve_steps, dtype=np.float64)
    scores = np.asarray(curve_scores, dtype=np.float64)
    if steps.ndim != 1 or steps.shape != scores.shape:
        raise ValueError(
            f"curve_steps and curve_scores must be 1-D of equal length, got {steps.shape} "
            f"and {scores.shape}"
        )
    inside = np.ones(steps.shape, dtype=bool)
    if start is not None:
        inside &= steps > start
    if end is not None:
        inside &= steps <= end
    return _strict_mean(scores[inside])


def forward_transfer_cw(auc: ArrayLike, auc_ref: ArrayLike) -> FloatArray:
    """CW forward transfer ``FT_j = (AUC_j - AUC_j^ref) / (1 - AUC_j^ref)`` (metrics.md).

    AUC_j is :func:`training_auc` of the continual run over task j's training window and
    AUC_j^ref the same for a from-scratch single-task run with the same budget. The formula
    assumes scores with ceiling 1 (CW success rates; :func:`normalise_scores` ``"best_abs"``
    with the reference runs' returns included keeps |score| <= 1).

    Guard: where ``AUC_j^ref >= 1`` the denominator is 0 (the reference is already at the
    ceiling, so no transfer can be measured) or negative (possible with HNS > 1, where the
    sign would flip); FT_j is nan there. nan inputs give nan.

    Args:
        auc: ``[K]`` AUC_j of the continual run.
        auc_ref: ``[K]`` AUC_j^ref of the from-scratch runs (or a scalar for all tasks).

    Returns:
        ``[K]`` forward transfer per task.

    Raises:
        ValueError: If the shapes do not broadcast to a 1-D ``[K]``.
    """
    a = np.atleast_1d(np.asarray(auc, dtype=np.float64))
    ref = np.asarray(auc_ref, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"auc must be [K], got shape {a.shape}")
    try:
        ref = np.broadcast_to(ref, a.shape)
    except ValueError as err:
        raise ValueError(f"auc_ref shape {ref.shape} does not match auc shape {a.shape}") from err
    headroom = 1.0 - ref
    safe = np.where(headroom > 0, headroom, np.nan)  # guard AUC_ref >= 1 -> nan
    return (a - ref) / safe


def zero_shot_transfer_cora(R: ArrayLike) -> FloatArray:
    """CORA zero-shot forward transfer ``Z_j = R[j-1][j] - R[0][j]`` (metrics.md).

    The score on task j just before training on it, minus the score before any training:
    what the earlier tasks T_1 .. T_{j-1} transferred to T_j without training on it.
    For j = 1 no task precedes it and ``Z_1 = R[0][1] - R[0][1] = 0`` by definition (nan only
    if that cell is nan); :func:`zero_shot_transfer_cora_mean` averages over j >= 2 only.

    Args:
        R: Score matrix of shape (K + 1, K).

    Returns:
        ``[K]`` array, entry ``j - 1`` = Z_j; nan where a needed cell is nan.

    Raises:
        ValueError: If R does not have shape (K + 1, K).
    """
    m, k = _as_matrix(R)
    tasks = np.arange(1, k + 1)
    return m[tasks - 1, tasks - 1] - m[0]  # R[j-1][j] - R[0][j], j = 1..K


def zero_shot_transfer_cora_mean(R: ArrayLike) -> float:
    """Mean CORA zero-shot transfer over tasks j = 2 .. K (the first task's 0 is excluded).

    Args:
        R: Score matrix of shape (K + 1, K).

    Returns:
        The mean of :func:`zero_shot_transfer_cora` over j >= 2; nan if K == 1 or any term is
        nan.
    """
    return _strict_mean(zero_shot_transfer_cora(R)[1:])


# --------------------------------------------------------------------------------------------
# Over seeds (metrics.md: "Report each with bootstrap confidence intervals over seeds.")
# --------------------------------------------------------------------------------------------


def _bootstrap_1d(
    values: FloatArray, level: float, resamples: int, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of a 1-D sample (nan dropped)."""
    x = values[~np.isnan(values)]
    if x.size < 2:
        return float("nan"), float("nan")
    if np.all(x == x[0]):  # every resample mean is exactly this value
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))  # [resamples, S]
    means = x[idx].mean(axis=1)  # [resamples]
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(lo), float(hi)


def bootstrap_interval(
    values_per_seed: ArrayLike,
    level: float = 0.95,
    resamples: int = 10000,
    seed: int = 0,
) -> tuple[float, float] | tuple[FloatArray, FloatArray]:
    """Percentile bootstrap confidence interval of the mean over seeds (metrics.md).

    Resamples the S seeds with replacement ``resamples`` times, takes the mean of each
    resample and returns the ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles.
    Deterministic given ``seed``. nan values (seeds whose run did not produce the metric,
    e.g. a sequence stopped early) are dropped first; with fewer than 2 remaining seeds the
    interval is ``(nan, nan)``. When all remaining values equal c the interval is exactly
    ``(c, c)``.

    Args:
        values_per_seed: ``[S]`` one value per seed, or ``[S, ...]`` (an interval per trailing
            element, each computed independently with the same ``seed``).
        level: Confidence level in (0, 1).
        resamples: Number of bootstrap resamples (>= 1).
        seed: Seed of the resampling generator.

    Returns:
        ``(lo, hi)`` as floats for ``[S]`` input, else two arrays of the trailing shape.

    Raises:
        ValueError: On a bad level, resample count or a 0-d input.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    v = np.asarray(values_per_seed, dtype=np.float64)
    if v.ndim == 0:
        raise ValueError("values_per_seed must have a leading seed axis [S] or [S, ...]")
    if v.ndim == 1:
        return _bootstrap_1d(v, level, resamples, seed)
    flat = v.reshape(v.shape[0], -1)  # [S, E]
    bounds = np.array(
        [_bootstrap_1d(flat[:, e], level, resamples, seed) for e in range(flat.shape[1])]
    )
    bounds = bounds.reshape(-1, 2)  # [E, 2]
    return bounds[:, 0].reshape(v.shape[1:]), bounds[:, 1].reshape(v.shape[1:])


def summarise_over_seeds(
    matrices: Sequence[ArrayLike],
    aucs: Sequence[ArrayLike] | None = None,
    aucs_ref: ArrayLike | None = None,
    level: float = 0.95,
    resamples: int = 10000,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Mean and bootstrap interval over seeds of each headline CL metric (metrics.md).

    Per seed s the scalars are: ``average_performance`` (:func:`average_performance`),
    ``forgetting_cw_mean`` (:func:`forgetting_cw_mean`, j < K), ``forgetting_cora_mean``
    (``forgetting_cora(R)["mean"]``, over all (task, impactor) pairs), ``forward_transfer_mean``
    (mean over all K tasks of :func:`forward_transfer_cw`; nan when no AUCs are given) and
    ``zero_shot_mean`` (:func:`zero_shot_transfer_cora_mean`, j >= 2). Seeds whose value is nan
    are left out of the mean and the interval; ``n`` says how many seeds were used.

    Args:
        matrices: One (K + 1, K) normalised score matrix R per seed (all with the same K).
        aucs: Optional ``[K]`` AUC_j per seed (same order as ``matrices``).
        aucs_ref: From-scratch reference AUCs: ``[K]`` shared by all seeds, or ``[S, K]`` one
            row per seed. Required when ``aucs`` is given.
        level: Confidence level of the intervals.
        resamples: Bootstrap resamples.
        seed: Seed of the bootstrap generator.

    Returns:
        ``{metric: {"mean": float, "lo": float, "hi": float, "n": int, "per_seed": [S]}}`` for
        each name in :data:`HEADLINE_METRICS`; ``mean`` is nan when ``n == 0``, ``lo``/``hi``
        nan when ``n < 2``.

    Raises:
        ValueError: On no matrices, differing K, or AUCs that do not match the seeds.
    """
    if len(matrices) == 0:
        raise ValueError("summarise_over_seeds needs at least one R matrix")
    mats = [_as_matrix(R)[0] for R in matrices]
    ks = {m.shape[1] for m in mats}
    if len(ks) != 1:
        raise ValueError(f"all R matrices must share K, got K values {sorted(ks)}")
    n_seeds = len(mats)
    per_seed: dict[str, FloatArray] = {
        "average_performance": np.array([average_performance(m) for m in mats]),
        "forgetting_cw_mean": np.array([forgetting_cw_mean(m) for m in mats]),
        "forgetting_cora_mean": np.array([forgetting_cora(m)["mean"] for m in mats]),
        "zero_shot_mean": np.array([zero_shot_transfer_cora_mean(m) for m in mats]),
    }
    ft = np.full(n_seeds, np.nan)
    if aucs is not None:
        if aucs_ref is None:
            raise ValueError("aucs_ref (from-scratch reference AUCs) is required with aucs")
        if len(aucs) != n_seeds:
            raise ValueError(f"got {len(aucs)} AUC vectors for {n_seeds} R matrices")
        ref = np.atleast_1d(np.asarray(aucs_ref, dtype=np.float64))
        refs = np.broadcast_to(ref, (n_seeds, *ref.shape[-1:])) if ref.ndim == 1 else ref
        if refs.shape[0] != n_seeds:
            raise ValueError(f"aucs_ref must be [K] or [S, K] with S = {n_seeds}, got {ref.shape}")
        ft = np.array(
            [_strict_mean(forward_transfer_cw(a, r)) for a, r in zip(aucs, refs, strict=True)]
        )
    per_seed["forward_transfer_mean"] = ft
    out: dict[str, dict[str, Any]] = {}
    for name in HEADLINE_METRICS:
        values = per_seed[name]
        finite = values[~np.isnan(values)]
        lo, hi = bootstrap_interval(values, level=level, resamples=resamples, seed=seed)
        out[name] = {
            "mean": float(finite.mean()) if finite.size else float("nan"),
            "lo": lo,
            "hi": hi,
            "n": int(finite.size),
            "per_seed": values.tolist(),
        }
    return out


# --------------------------------------------------------------------------------------------
# Figure
# --------------------------------------------------------------------------------------------


def plot_matrix(
    R: ArrayLike,
    games: Sequence[str],
    path: str | Path,
    title: str = "",
    colorbar_label: str = "",
    limits: tuple[float, float] | None = None,
) -> Path:
    """Write the score matrix R as an annotated heatmap PNG (matplotlib Agg, no pyplot state).

    Rows are labelled ``"before"`` (row 0) and ``"after <game>"`` (row i); columns are the
    games in sequence order. Each cell shows its value (``"n/a"`` for nan, drawn grey).

    Args:
        R: Score matrix of shape (K + 1, K).
        games: The K game names, in sequence order.
        path: Output PNG path; parent folders are created.
        title: Figure title.
        colorbar_label: What the colours measure, with its unit or reference.
        limits: A fixed colour range (None: the finite values' range).

    Returns:
        The written path.

    Raises:
        ValueError: If R does not have shape (K + 1, K) or ``len(games) != K``.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m, k = _as_matrix(R)
    games = list(games)
    if len(games) != k:
        raise ValueError(f"got {len(games)} games for a matrix with K = {k}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)

    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")
    finite = m[np.isfinite(m)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if limits is not None:
        vmin, vmax = limits
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    fig = Figure(figsize=(1.1 * k + 2.5, 0.5 * (k + 1) + 1.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    for i in range(k + 1):
        for j in range(k):
            value = m[i, j]
            if np.isfinite(value):
                shade = (value - vmin) / (vmax - vmin)
                color = "black" if shade > 0.6 else "white"
                text = f"{value:.2f}"
            else:
                color, text = "black", "n/a"
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=8)
    ax.set_xticks(np.arange(k), games, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(np.arange(k + 1), ["before"] + [f"after {g}" for g in games], fontsize=8)
    ax.set_xlabel("evaluated on task", fontsize=8)
    ax.set_ylabel("trained up to", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    bar = fig.colorbar(image, ax=ax)
    if colorbar_label:
        bar.set_label(colorbar_label, fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return out

"""PNG figures of ``ife report``: aggregates, performance profiles, probability of improvement.

The figures follow rliable's plots (Agarwal et al. 2021, "Deep RL at the Edge of the
Statistical Precipice"): per-metric panels of point estimates with 95 % stratified bootstrap
interval bars (``plot_interval_estimates``), performance profiles with shaded bands
(``plot_performance_profiles``) and probability-of-improvement intervals
(``plot_probability_of_improvement``); plus a per-game panel of raw (or normalised) scores with
every seed as a dot. The statistics come from :mod:`ife_platform.scores`; this module only
draws. Every figure has a title, labelled axes and a method legend; methods keep one colour,
in the order given, so the same method order gives the same colours in every figure.

matplotlib is used through ``Figure`` and the Agg canvas (no pyplot, no global backend).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ife_platform.scores import BootstrapCI, ProfileBand

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "METRIC_LABELS",
    "GameScoreRow",
    "plot_aggregates",
    "plot_game_scores",
    "plot_performance_profiles",
    "plot_probability_of_improvement",
]

#: Panel titles of :func:`plot_aggregates` for the keys of ``scores.aggregate_table``.
METRIC_LABELS: dict[str, str] = {
    "iqm": "IQM",
    "median": "Median",
    "mean": "Mean",
    "optimality_gap": "Optimality gap (lower is better)",
}

_DPI = 100


class GameScoreRow(NamedTuple):
    """One method on one game for :func:`plot_game_scores`.

    Attributes:
        game: Game name (one panel per game, in first-seen order).
        method: Method name.
        scores: Final score of each seed (raw or normalised, as the plot's ``ylabel`` says).
        reference: A reference score for the game drawn as a dashed line (for example DER's
            published 100k-step score, ``scores.der_100k_score``), or None.
    """

    game: str
    method: str
    scores: Sequence[float]
    reference: float | None = None


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=_DPI, bbox_inches="tight")
    return out


def _colors(methods: Sequence[str]) -> dict[str, Any]:
    """One colour per method, in the order given (tab10, then tab20 beyond 10 methods)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(methods) <= 10 else "tab20"]
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def _legend_handles(colors: Mapping[str, Any]) -> list[Any]:
    from matplotlib.patches import Patch

    return [Patch(facecolor=c, label=m) for m, c in colors.items()]


def _finite_ci(ci: Any, what: str) -> BootstrapCI:
    try:
        point, low, high = (float(v) for v in ci)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be a (point, low, high) triple, got {ci!r}") from err
    if not all(math.isfinite(v) for v in (point, low, high)):
        raise ValueError(f"{what} is not finite: {ci!r}")
    if low > high:
        raise ValueError(f"{what} has low > high: {ci!r}")
    return BootstrapCI(point, low, high)


# --------------------------------------------------------------------------------------------
# aggregates
# --------------------------------------------------------------------------------------------


def _aggregates_figure(table: Mapping[str, Mapping[str, Any]], title: str, xlabel: str) -> Figure:
    if not table:
        raise ValueError("plot_aggregates needs at least one method")
    methods = list(table)
    metrics = list(table[methods[0]])
    if not metrics:
        raise ValueError(f"method {methods[0]!r} has no aggregates")
    for m in methods:
        if list(table[m]) != metrics:
            raise ValueError(
                f"every method needs the same aggregates in the same order: {methods[0]!r} has "
                f"{metrics}, {m!r} has {list(table[m])}"
            )
    cis = {m: {k: _finite_ci(table[m][k], f"{m!r} {k}") for k in metrics} for m in methods}
    colors = _colors(methods)
    fig = _new_figure(3.2 * len(metrics) + 1.5, 0.45 * len(methods) + 1.8)
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    ys = np.arange(len(methods))
    for ax, metric in zip(axes, metrics, strict=True):
        for y, m in zip(ys, methods, strict=True):
            ci = cis[m][metric]
            ax.barh(y, ci.high - ci.low, left=ci.low, height=0.6, color=colors[m], alpha=0.75)
            ax.vlines(ci.point, y - 0.3, y + 0.3, color="black", linewidth=1.5)
        ax.set_title(METRIC_LABELS.get(metric, metric), fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(ys, methods, fontsize=9)
    axes[0].set_ylabel("method", fontsize=9)
    axes[0].invert_yaxis()  # first method on top
    fig.suptitle(title, fontsize=11)
    fig.legend(
        handles=_legend_handles(colors),
        loc="lower center",
        ncol=min(len(methods), 5),
        fontsize=8,
        bbox_to_anchor=(0.5, -0.02),
    )
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def plot_aggregates(
    table: Mapping[str, Mapping[str, BootstrapCI]],
    path: str | Path,
    title: str,
    xlabel: str = "human-normalised score",
) -> Path:
    """Point estimates and 95 % intervals of each aggregate, one panel per aggregate.

    rliable's ``plot_interval_estimates`` look: methods on the y axis, a bar from the
    interval's low to its high end and a black tick at the point estimate.

    Args:
        table: ``{method: {aggregate: BootstrapCI}}`` as ``scores.aggregate_table`` returns;
            every method with the same aggregates (keys of :data:`METRIC_LABELS` get titles).
        path: Output PNG path; parent folders are created.
        title: Figure title.
        xlabel: What the scores are (x axis of every panel).

    Returns:
        The written path.

    Raises:
        ValueError: If the table is empty, methods have different aggregates, or an
            interval is not a finite ``(point, low, high)`` with ``low <= high``.
    """
    return _save(_aggregates_figure(table, title, xlabel), path)


# --------------------------------------------------------------------------------------------
# performance profiles
# --------------------------------------------------------------------------------------------


def _profile_arrays(method: str, profile: Any) -> ProfileBand:
    try:
        taus, point, low, high = profile
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"profile of {method!r} must be (taus, point, low, high), got {type(profile).__name__}"
        ) from err
    arrays: list[NDArray[np.float64]] = []
    for name, values in (("taus", taus), ("point", point), ("low", low), ("high", high)):
        a = np.asarray(values, dtype=np.float64)
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"profile of {method!r}: {name} must be a non-empty 1-D array")
        arrays.append(a)
    sizes = {n: a.size for n, a in zip(("taus", "point", "low", "high"), arrays, strict=True)}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"profile of {method!r}: mismatched lengths {sizes}")
    return ProfileBand(*arrays)


def _profiles_figure(
    profiles: Mapping[str, ProfileBand | tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike]],
    title: str,
    xlabel: str,
) -> Figure:
    if not profiles:
        raise ValueError("plot_performance_profiles needs at least one method")
    bands = {m: _profile_arrays(m, p) for m, p in profiles.items()}
    colors = _colors(list(bands))
    fig = _new_figure(6.4, 4.4)
    ax = fig.add_subplot()
    for m, band in bands.items():
        ax.plot(band.taus, band.point, color=colors[m], linewidth=2, label=m)
        ax.fill_between(band.taus, band.low, band.high, color=colors[m], alpha=0.2, linewidth=0)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel("fraction of runs with score > \u03c4", fontsize=9)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=11)
    ax.legend(title="method", fontsize=8, title_fontsize=8)
    fig.tight_layout()
    return fig


def plot_performance_profiles(
    profiles: Mapping[str, ProfileBand | tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike]],
    path: str | Path,
    title: str,
    xlabel: str = "human-normalised score (\u03c4)",
) -> Path:
    """Performance profiles (score distributions) with their pointwise 95 % bands.

    Args:
        profiles: ``{method: (taus, point, low, high)}``, e.g. ``scores.performance_profile_ci``
            results; the four arrays of a method have the same length (methods may differ).
        path: Output PNG path; parent folders are created.
        title: Figure title.
        xlabel: The threshold axis (what the scores are).

    Returns:
        The written path.

    Raises:
        ValueError: If ``profiles`` is empty, a profile is not four arrays or their lengths
            differ.
    """
    return _save(_profiles_figure(profiles, title, xlabel), path)


# --------------------------------------------------------------------------------------------
# probability of improvement
# --------------------------------------------------------------------------------------------


def _poi_figure(pairs: Mapping[tuple[str, str], Any], title: str) -> Figure:
    if not pairs:
        raise ValueError("plot_probability_of_improvement needs at least one (x, y) pair")
    for key in pairs:
        if not (isinstance(key, tuple) and len(key) == 2):
            raise ValueError(f"pairs must be keyed by (x, y) method tuples, got {key!r}")
    cis = {key: _finite_ci(ci, f"P({key[0]} > {key[1]})") for key, ci in pairs.items()}
    for key, ci in cis.items():
        if not 0.0 <= ci.low <= ci.high <= 1.0:
            raise ValueError(f"P({key[0]} > {key[1]}) must lie in [0, 1], got {tuple(ci)}")
    x_methods = list(dict.fromkeys(x for x, _ in cis))
    colors = _colors(x_methods)
    fig = _new_figure(6.4, 0.45 * len(cis) + 1.8)
    ax = fig.add_subplot()
    ys = np.arange(len(cis))
    for y, ((x_m, _), ci) in zip(ys, cis.items(), strict=True):
        ax.barh(y, ci.high - ci.low, left=ci.low, height=0.6, color=colors[x_m], alpha=0.75)
        ax.vlines(ci.point, y - 0.3, y + 0.3, color="black", linewidth=1.5)
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(ys, [f"{x_m} vs {y_m}" for x_m, y_m in cis], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("P(X > Y): probability that method X beats method Y on a game", fontsize=9)
    ax.set_ylabel("X vs Y", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=11)
    ax.legend(handles=_legend_handles(colors), title="method X", fontsize=8, title_fontsize=8)
    fig.tight_layout()
    return fig


def plot_probability_of_improvement(
    pairs: Mapping[tuple[str, str], BootstrapCI], path: str | Path, title: str
) -> Path:
    """Probability of improvement of X over Y with 95 % intervals, one row per pair.

    Bars are coloured by method X; the dashed line at 0.5 marks "no difference".

    Args:
        pairs: ``{(x, y): BootstrapCI}`` as ``scores.probability_of_improvement_table`` returns.
        path: Output PNG path; parent folders are created.
        title: Figure title.

    Returns:
        The written path.

    Raises:
        ValueError: If ``pairs`` is empty, a key is not an ``(x, y)`` tuple, or an interval is
            not finite or not within [0, 1].
    """
    return _save(_poi_figure(pairs, title), path)


# --------------------------------------------------------------------------------------------
# per-game scores
# --------------------------------------------------------------------------------------------


def _as_row(row: Any) -> GameScoreRow:
    if isinstance(row, Mapping):
        try:
            return GameScoreRow(row["game"], row["method"], row["scores"], row.get("reference"))
        except KeyError as err:
            raise ValueError(f"row needs keys game, method, scores: {row!r}") from err
    try:
        return GameScoreRow(*row)
    except TypeError as err:
        raise ValueError(f"row must be (game, method, scores[, reference]): {row!r}") from err


def _game_scores_figure(
    rows: Sequence[GameScoreRow | Mapping[str, Any]],
    title: str,
    ylabel: str,
    reference_label: str,
) -> Figure:
    if not rows:
        raise ValueError("plot_game_scores needs at least one row")
    data: dict[str, dict[str, NDArray[np.float64]]] = {}
    references: dict[str, float] = {}
    methods: list[str] = []
    for raw in rows:
        row = _as_row(raw)
        values = np.asarray(row.scores, dtype=np.float64).ravel()
        if values.size == 0:
            raise ValueError(f"{row.method!r} on {row.game!r} has no scores")
        if not np.isfinite(values).all():
            raise ValueError(f"{row.method!r} on {row.game!r} has nan or inf scores")
        per_game = data.setdefault(row.game, {})
        if row.method in per_game:
            raise ValueError(f"two rows for {row.method!r} on {row.game!r}")
        per_game[row.method] = values
        if row.method not in methods:
            methods.append(row.method)
        if row.reference is not None:
            ref = float(row.reference)
            if row.game in references and references[row.game] != ref:
                raise ValueError(
                    f"two reference scores for {row.game!r}: {references[row.game]} and {ref}"
                )
            references[row.game] = ref
    colors = _colors(methods)
    games = list(data)
    ncols = min(4, len(games))
    nrows = math.ceil(len(games) / ncols)
    fig = _new_figure(0.9 * len(methods) * ncols + 1.5 * ncols + 0.5, 2.6 * nrows + 1.0)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.ravel()[len(games) :]:
        ax.set_visible(False)
    xs = {m: i for i, m in enumerate(methods)}
    for ax, game in zip(axes.ravel(), games, strict=False):
        for m, values in data[game].items():
            x = xs[m]
            offsets = np.linspace(-0.15, 0.15, values.size) if values.size > 1 else np.zeros(1)
            ax.scatter(x + offsets, values, s=14, color=colors[m], alpha=0.8, zorder=3)
            ax.hlines(values.mean(), x - 0.3, x + 0.3, color=colors[m], linewidth=2.5, zorder=2)
        if game in references:
            ax.axhline(references[game], color="black", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(methods) - 0.4)
        ax.set_title(game, fontsize=9)
        ax.set_xlabel("method", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    from matplotlib.lines import Line2D

    handles = _legend_handles(colors)
    handles.append(Line2D([], [], color="grey", marker="o", linestyle="", label="one seed"))
    handles.append(Line2D([], [], color="grey", linewidth=2.5, label="mean over seeds"))
    if references:
        handles.append(Line2D([], [], color="black", linestyle="--", label=reference_label))
    fig.suptitle(title, fontsize=11)
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=min(len(handles), 6),
        fontsize=8,
        bbox_to_anchor=(0.5, -0.01),
    )
    fig.tight_layout(rect=(0, 0.06 if nrows > 1 else 0.12, 1, 1))
    return fig


def plot_game_scores(
    rows: Sequence[GameScoreRow | Mapping[str, Any]],
    path: str | Path,
    title: str,
    ylabel: str = "raw score",
    reference_label: str = "DER (published, 100k steps)",
) -> Path:
    """Per game, per method: every seed's score as a dot and their mean as a bar.

    One panel per game (scores of different games are on different scales), methods along the
    x axis, a dashed line at the game's reference score when a row gives one.

    Args:
        rows: :class:`GameScoreRow` (or ``(game, method, scores[, reference])`` tuples, or
            mappings with those keys), at most one per (game, method).
        path: Output PNG path; parent folders are created.
        title: Figure title.
        ylabel: What the scores are, e.g. ``"raw score"`` or ``"human-normalised score"``.
        reference_label: Legend entry of the dashed reference line.

    Returns:
        The written path.

    Raises:
        ValueError: If ``rows`` is empty, a row is malformed or has no (or non-finite) scores,
            a (game, method) appears twice, or one game gets two different references.
    """
    return _save(_game_scores_figure(rows, title, ylabel, reference_label), path)

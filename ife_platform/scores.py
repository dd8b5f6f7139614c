"""Atari score normalisation and aggregate statistics over games x runs.

Human-normalised score (Mnih et al. 2015; metrics.md "Scores")::

    HNS = (score - random) / (human - random)

with the per-game random and human scores of ``ife_platform/data/atari_human_random.csv``
(57 games; its ``atari100k`` column marks the 26 Atari-100k games). Aggregates follow
Agarwal et al. 2021 ("Deep RL at the Edge of the Statistical Precipice", the rliable package):
IQM over all run-game scores and percentile confidence intervals from a stratified bootstrap
that resamples runs independently within each game; also median, mean, optimality gap,
probability of improvement and performance profiles (definitions in ``docs/report.md``, tested
number for number against rliable 1.2.0 in ``tests/test_scores_rliable.py``).

Raw scores passed here must be full-game (all lives), unclipped sums of game rewards.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib import resources
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "AGGREGATES",
    "BootstrapCI",
    "ProfileBand",
    "ScoreMatrix",
    "aggregate_mean",
    "aggregate_median",
    "aggregate_table",
    "atari100k_games",
    "canonical_game_name",
    "der_100k_score",
    "has_reference",
    "human_normalized_score",
    "iqm",
    "known_games",
    "optimality_gap",
    "performance_profile",
    "performance_profile_ci",
    "probability_of_improvement",
    "probability_of_improvement_ci",
    "probability_of_improvement_table",
    "reference_scores",
    "score_matrix",
    "stratified_bootstrap_ci",
    "stratified_bootstrap_ci_two_sample",
]

_CSV_NAME = "atari_human_random.csv"


class _Reference(NamedTuple):
    random: float
    human: float
    atari100k: bool
    der_100k: float | None


@functools.cache
def _table() -> dict[str, _Reference]:
    """Load the reference table once (package data, so it also works from an installed wheel)."""
    text = resources.files("ife_platform.data").joinpath(_CSV_NAME).read_text(encoding="utf-8")
    table: dict[str, _Reference] = {}
    for row in csv.DictReader(io.StringIO(text)):
        table[row["game"].strip()] = _Reference(
            random=float(row["random"]),
            human=float(row["human"]),
            atari100k=row["atari100k"].strip() == "1",
            der_100k=float(row["der_100k"]) if row.get("der_100k", "").strip() else None,
        )
    return table


_VERSION_SUFFIX = re.compile(r"-v\d+$")
_MODE_SUFFIX = re.compile(r"(NoFrameskip|Deterministic)$")
_CAMEL_BOUNDARY = re.compile(r"(?<!^)(?=[A-Z])")


def canonical_game_name(game: str) -> str:
    """Map a game name to the ale-py snake_case ROM id used by the reference table.

    The table already uses ale-py ROM ids ("ms_pacman", "montezuma_revenge", "up_n_down"), so
    those pass through unchanged. Gymnasium ids and CamelCase names are converted as well:
    ``"ALE/MsPacman-v5"``, ``"MsPacmanNoFrameskip-v4"`` and ``"MsPacman"`` -> ``"ms_pacman"``.

    Args:
        game: A ROM id, a CamelCase game name or a gymnasium environment id.

    Returns:
        The snake_case ROM id (not checked against the table).
    """
    name = game.strip()
    name = name.split("/")[-1]  # "ALE/Pong-v5" -> "Pong-v5"
    name = _VERSION_SUFFIX.sub("", name)
    name = _MODE_SUFFIX.sub("", name)
    if any(ch.isupper() for ch in name):
        name = _CAMEL_BOUNDARY.sub("_", name)
    return name.replace("-", "_").replace(" ", "_").lower()


def known_games() -> tuple[str, ...]:
    """Return the ROM ids of all 57 games with reference scores, in table order."""
    return tuple(_table())


def atari100k_games() -> tuple[str, ...]:
    """Return the ROM ids of the 26 Atari-100k games (Kaiser et al. 2020), in table order."""
    return tuple(game for game, ref in _table().items() if ref.atari100k)


def has_reference(game: str) -> bool:
    """Return whether the table has random and human scores for ``game`` (any naming)."""
    return canonical_game_name(game) in _table()


def reference_scores(game: str) -> tuple[float, float] | None:
    """Return ``(random, human)`` reference scores for ``game``, or None if not in the table.

    Video Pinball's random score is 0.0 in this table (some published tables use 16256.9).

    Args:
        game: ROM id such as ``"ms_pacman"`` (gymnasium ids and CamelCase are accepted too).
    """
    ref = _table().get(canonical_game_name(game))
    return None if ref is None else (ref.random, ref.human)


def der_100k_score(game: str) -> float | None:
    """DER's published raw score after 100k agent steps (van Hasselt et al. 2019, Table 6).

    Defined for the 26 Atari-100k games; None for the others and for unknown games.

    Args:
        game: ROM id such as ``"ms_pacman"`` (gymnasium ids and CamelCase are accepted too).
    """
    ref = _table().get(canonical_game_name(game))
    return None if ref is None else ref.der_100k


def human_normalized_score(game: str, score: float) -> float:
    """Human-normalised score ``(score - random) / (human - random)``.

    0 means random play, 1 means the human reference. Uses the table shipped in
    ``ife_platform/data/atari_human_random.csv``; note that there Video Pinball's random score
    is 0.0 (other published tables use 16256.9, which changes its HNS).

    Args:
        game: ROM id such as ``"pong"`` (gymnasium ids and CamelCase are accepted too).
        score: Raw, unclipped full-game score.

    Returns:
        The human-normalised score.

    Raises:
        KeyError: If the game has no reference scores; the message lists the valid ids.
    """
    ref = _table().get(canonical_game_name(game))
    if ref is None:
        raise KeyError(
            f"no human/random reference score for game {game!r} "
            f"(as {canonical_game_name(game)!r}); known games: {', '.join(known_games())}"
        )
    return (float(score) - ref.random) / (ref.human - ref.random)


# --------------------------------------------------------------------------------------------
# Aggregates (Agarwal et al. 2021). Inputs are score matrices [runs, games] or flat arrays.
# --------------------------------------------------------------------------------------------


def iqm(values: ArrayLike) -> float:
    """Interquartile mean: the mean of the middle 50 % of all values (flattened).

    Same as ``scipy.stats.trim_mean(np.ravel(values), 0.25)``: ``k = floor(0.25 * n)`` values are
    cut from each end of the sorted values and the rest averaged. For a [runs, games] matrix this
    is rliable's ``aggregate_iqm`` (IQM over all run-game scores).

    Args:
        values: Any array of scores; flattened.

    Returns:
        The interquartile mean.
    """
    flat = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n = flat.size
    if n == 0:
        raise ValueError("iqm of an empty array")
    k = int(0.25 * n)
    return float(flat[k : n - k].mean())


def aggregate_mean(scores: ArrayLike) -> float:
    """Mean over games of the per-game mean over runs (rliable ``aggregate_mean``).

    Args:
        scores: Score matrix ``[runs, games]`` (a 1-D array is taken as one run).
    """
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))  # [runs, games]
    return float(s.mean(axis=0).mean())


def aggregate_median(scores: ArrayLike) -> float:
    """Median over games of the per-game mean over runs (rliable ``aggregate_median``).

    Args:
        scores: Score matrix ``[runs, games]`` (a 1-D array is taken as one run).
    """
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))  # [runs, games]
    return float(np.median(s.mean(axis=0)))


def optimality_gap(scores: ArrayLike, gamma: float = 1.0) -> float:
    """Optimality gap ``gamma - mean(min(score, gamma))`` over all run-game scores (rliable).

    Args:
        scores: Normalised scores, any shape.
        gamma: Target score above which no further credit is given (1.0 = human level for HNS).
    """
    s = np.asarray(scores, dtype=np.float64)
    return float(gamma - np.minimum(s, gamma).mean())


class BootstrapCI(NamedTuple):
    """A point estimate with a percentile bootstrap confidence interval."""

    point: float
    low: float
    high: float


def _stratified_resamples(
    s: NDArray[np.float64], reps: int, rng: np.random.Generator
) -> Iterator[NDArray[np.float64]]:
    """Yield stratified resamples of ``s`` ([runs, games]) in chunks ``[n, runs, games]``.

    In every replicate each game (column) draws ``runs`` rows with replacement from its own
    column; ``reps`` replicates in all. The chunk size bounds the index array's memory.
    """
    runs, games = s.shape
    cols = np.arange(games)
    chunk = max(1, 2_000_000 // max(1, runs * games))
    for start in range(0, reps, chunk):
        n = min(chunk, reps - start)
        rows = rng.integers(0, runs, size=(n, runs, games))  # [n, runs, games]
        yield s[rows, cols]  # [n, runs, games]: column g only draws from column g


def _replicates(
    s: NDArray[np.float64],
    statistic: Callable[[NDArray[np.float64]], Any],
    reps: int,
    seed: int,
    shape: tuple[int, ...],
) -> NDArray[np.float64]:
    """``statistic`` of ``reps`` stratified resamples of ``s`` (``[reps, *shape]``)."""
    rng = np.random.default_rng(seed)
    estimates = np.empty((reps, *shape), dtype=np.float64)
    i = 0
    for resampled in _stratified_resamples(s, reps, rng):
        for m in resampled:
            estimates[i] = statistic(m)
            i += 1
    return estimates


def _percentile_interval(
    estimates: NDArray[np.float64], alpha: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The ``alpha/2`` and ``1 - alpha/2`` percentiles (linear interpolation) along axis 0."""
    low, high = np.percentile(estimates, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
    return low, high


def _check_bootstrap_args(reps: int, alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")


def _as_score_matrix(scores: ArrayLike, name: str = "scores") -> NDArray[np.float64]:
    """``scores`` as a float64 ``[runs, games]`` matrix; ValueError if empty or not finite."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] < 1 or s.shape[1] < 1:
        raise ValueError(f"{name} must be a non-empty [runs, games] matrix, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError(f"{name} contains nan or inf; drop unfinished runs before aggregating")
    return s


def stratified_bootstrap_ci(
    scores: ArrayLike,
    statistic: Callable[[NDArray[np.float64]], float] = iqm,
    reps: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> BootstrapCI:
    """Percentile confidence interval of an aggregate by stratified bootstrap over runs.

    Each replicate resamples, independently for every game (column), ``runs`` rows with
    replacement from that game's runs, then applies ``statistic`` to the resampled
    ``[runs, games]`` matrix (rliable's ``StratifiedBootstrap`` with percentile intervals).

    Args:
        scores: Score matrix ``[runs, games]``.
        statistic: Aggregate of a ``[runs, games]`` matrix, e.g. :func:`iqm`,
            :func:`aggregate_median`, :func:`aggregate_mean`.
        reps: Number of bootstrap replicates.
        alpha: 1 - confidence level (0.05 gives a 95 % interval).
        seed: Seed of the resampling generator (results are deterministic given the seed).

    Returns:
        ``BootstrapCI(point, low, high)``: ``point`` is the statistic on the original scores,
        ``low``/``high`` the ``alpha/2`` and ``1 - alpha/2`` percentiles of the replicates.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] < 1 or s.shape[1] < 1:
        raise ValueError(f"scores must be a non-empty [runs, games] matrix, got shape {s.shape}")
    _check_bootstrap_args(reps, alpha)
    estimates = _replicates(s, statistic, reps, seed, ())
    low, high = _percentile_interval(estimates, alpha)
    return BootstrapCI(point=float(statistic(s)), low=float(low), high=float(high))


# --------------------------------------------------------------------------------------------
# Uneven run counts: rliable's statistics need a full [runs, games] matrix.
# --------------------------------------------------------------------------------------------


class ScoreMatrix(NamedTuple):
    """A full ``[runs, games]`` score matrix built from per-game lists, and what was dropped.

    Attributes:
        scores: ``[runs, games]`` float64 matrix, ``runs`` = the smallest run count of a game.
        games: Game names, one per column.
        dropped: ``{game: number of its scores left out}`` for the games that had more runs.
        note: One line saying what was dropped (``""`` when every game had the same count),
            for the report to print next to the aggregates.
    """

    scores: NDArray[np.float64]
    games: tuple[str, ...]
    dropped: dict[str, int]
    note: str


def score_matrix(
    scores_by_game: Mapping[str, Sequence[float]], games: Sequence[str] | None = None
) -> ScoreMatrix:
    """Build the ``[runs, games]`` matrix the aggregates need from ``{game: [score per run]}``.

    Rule for uneven run counts: every game keeps its **first** ``n`` scores, where ``n`` is the
    smallest run count over the games; the rest are left out and named in ``note``. Pass each
    game's scores in seed order, so that the kept runs are the same seeds in every game where
    possible. A game with no score at all is an error (leave it out explicitly with ``games``
    and say so in the report): dropping a game silently would change what the aggregate means.

    Args:
        scores_by_game: Final score of each run (seed) of each game; raw or normalised.
        games: The games to put in the matrix, in column order; default: all, in dict order.

    Returns:
        ``ScoreMatrix(scores, games, dropped, note)``.

    Raises:
        ValueError: If there are no games, a requested game is missing, a game has no scores
            or a score is not finite.
    """
    names = tuple(scores_by_game) if games is None else tuple(games)
    if not names:
        raise ValueError("score_matrix needs at least one game")
    missing = [g for g in names if g not in scores_by_game]
    if missing:
        raise ValueError(f"no scores for game(s) {', '.join(missing)}")
    columns = {g: np.asarray(scores_by_game[g], dtype=np.float64).ravel() for g in names}
    empty = [g for g, c in columns.items() if c.size == 0]
    if empty:
        raise ValueError(
            f"game(s) {', '.join(empty)} have no finished run; leave them out with games=... "
            "and say so in the report"
        )
    bad = [g for g, c in columns.items() if not np.isfinite(c).all()]
    if bad:
        raise ValueError(f"game(s) {', '.join(bad)} have nan or inf scores")
    runs = min(c.size for c in columns.values())
    matrix = np.stack([columns[g][:runs] for g in names], axis=1)  # [runs, games]
    dropped = {g: int(c.size - runs) for g, c in columns.items() if c.size > runs}
    note = ""
    if dropped:
        parts = ", ".join(f"{n} of {g} ({columns[g].size} runs)" for g, n in dropped.items())
        note = (
            f"uneven run counts: kept the first {runs} run(s) of each of the {len(names)} games; "
            f"left out {parts}"
        )
    return ScoreMatrix(scores=matrix, games=names, dropped=dropped, note=note)


# --------------------------------------------------------------------------------------------
# Probability of improvement and performance profiles (Agarwal et al. 2021, rliable).
# --------------------------------------------------------------------------------------------


def _poi(x: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    """Probability of improvement of checked ``[runs_x, games]`` and ``[runs_y, games]``."""
    a = x[:, None, :]  # [runs_x, 1, games]
    b = y[None, :, :]  # [1, runs_y, games]
    wins = (a > b).sum(axis=(0, 1)) + 0.5 * (a == b).sum(axis=(0, 1))  # [games]
    return float((wins / (x.shape[0] * y.shape[0])).mean())


def _check_pair(x: ArrayLike, y: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    sx = _as_score_matrix(x, "x")
    sy = _as_score_matrix(y, "y")
    if sx.shape[1] != sy.shape[1]:
        raise ValueError(
            f"x and y must be scored on the same games: x has {sx.shape[1]} columns, "
            f"y has {sy.shape[1]}"
        )
    return sx, sy


def probability_of_improvement(x: ArrayLike, y: ArrayLike) -> float:
    """Average probability of improvement of method X over method Y (Agarwal et al. 2021).

    Per game ``m``: ``P(X_m > Y_m) = (1 / (N_x N_y)) sum_i sum_j S(x_im, y_jm)`` with
    ``S = 1`` if ``x > y``, ``1/2`` if equal and ``0`` otherwise, i.e. the Mann-Whitney U
    statistic of X against Y divided by ``N_x N_y``; then the mean over games (rliable
    ``metrics.probability_of_improvement``).

    Args:
        x: Scores of X, ``[runs_x, games]``.
        y: Scores of Y, ``[runs_y, games]``: the same games in the same column order; the run
            counts may differ.

    Returns:
        The average probability, in ``[0, 1]``; 0.5 when X and Y are indistinguishable.

    Raises:
        ValueError: If either is not a non-empty finite matrix or the game counts differ.
    """
    sx, sy = _check_pair(x, y)
    return _poi(sx, sy)


def stratified_bootstrap_ci_two_sample(
    x: ArrayLike,
    y: ArrayLike,
    statistic: Callable[[NDArray[np.float64], NDArray[np.float64]], float] = (
        probability_of_improvement
    ),
    reps: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> BootstrapCI:
    """Percentile interval of a two-sample statistic by independent stratified bootstraps.

    Each replicate resamples the runs of ``x`` within each game and, independently, the runs
    of ``y`` within each game (each keeps its own run count), then applies ``statistic`` to the
    pair (rliable ``StratifiedIndependentBootstrap``, as ``get_interval_estimates`` uses for a
    pair of score matrices).

    Args:
        x: Scores ``[runs_x, games]``.
        y: Scores ``[runs_y, games]`` on the same games.
        statistic: Function of ``(x, y)`` matrices; default :func:`probability_of_improvement`.
        reps: Number of bootstrap replicates.
        alpha: 1 - confidence level (0.05 gives a 95 % interval).
        seed: Seed of the resampling generator (results are deterministic given the seed).

    Returns:
        ``BootstrapCI(point, low, high)`` with ``point = statistic(x, y)``.

    Raises:
        ValueError: On bad shapes, non-finite scores, ``reps < 1`` or ``alpha`` outside (0, 1).
    """
    sx, sy = _check_pair(x, y)
    _check_bootstrap_args(reps, alpha)
    fast = _poi if statistic is probability_of_improvement else statistic  # inputs are checked
    rng = np.random.default_rng(seed)
    (rx, games), ry = sx.shape, sy.shape[0]
    cols = np.arange(games)
    estimates = np.empty(reps, dtype=np.float64)
    chunk = max(1, 2_000_000 // ((rx + ry) * games))
    for start in range(0, reps, chunk):
        n = min(chunk, reps - start)
        bx = sx[rng.integers(0, rx, size=(n, rx, games)), cols]  # [n, runs_x, games]
        by = sy[rng.integers(0, ry, size=(n, ry, games)), cols]  # [n, runs_y, games]
        for i in range(n):
            estimates[start + i] = fast(bx[i], by[i])
    low, high = _percentile_interval(estimates, alpha)
    return BootstrapCI(point=float(fast(sx, sy)), low=float(low), high=float(high))


def probability_of_improvement_ci(
    x: ArrayLike, y: ArrayLike, reps: int = 2000, alpha: float = 0.05, seed: int = 0
) -> BootstrapCI:
    """:func:`probability_of_improvement` of X over Y with its stratified bootstrap interval.

    Args:
        x: Scores of X, ``[runs_x, games]``.
        y: Scores of Y, ``[runs_y, games]`` on the same games.
        reps: Number of bootstrap replicates.
        alpha: 1 - confidence level (0.05 gives a 95 % interval).
        seed: Seed of the resampling generator.

    Returns:
        ``BootstrapCI(point, low, high)``; see :func:`stratified_bootstrap_ci_two_sample`.
    """
    return stratified_bootstrap_ci_two_sample(
        x, y, probability_of_improvement, reps=reps, alpha=alpha, seed=seed
    )


def probability_of_improvement_table(
    scores_by_method: Mapping[str, ArrayLike],
    pairs: Sequence[tuple[str, str]] | None = None,
    reps: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[tuple[str, str], BootstrapCI]:
    """Probability of improvement with intervals for pairs of methods.

    Args:
        scores_by_method: ``{method: [runs, games] scores}``, the same games for every method.
        pairs: ``(x, y)`` pairs to compare; default every pair with ``x`` before ``y`` in the
            dict's order.
        reps: Number of bootstrap replicates per pair.
        alpha: 1 - confidence level.
        seed: Seed of the resampling generator, the same for every pair.

    Returns:
        ``{(x, y): BootstrapCI}`` in the order of ``pairs``.

    Raises:
        ValueError: If a pair names an unknown method or compares a method with itself, or
            there is no pair.
    """
    methods = list(scores_by_method)
    if pairs is None:
        pairs = [(a, b) for i, a in enumerate(methods) for b in methods[i + 1 :]]
    if not pairs:
        raise ValueError("probability of improvement needs at least two methods or one pair")
    out: dict[tuple[str, str], BootstrapCI] = {}
    for a, b in pairs:
        unknown = [m for m in (a, b) if m not in scores_by_method]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; known: {methods}")
        if a == b:
            raise ValueError(f"pair ({a!r}, {b!r}) compares a method with itself")
        out[(a, b)] = probability_of_improvement_ci(
            scores_by_method[a], scores_by_method[b], reps=reps, alpha=alpha, seed=seed
        )
    return out


def _as_taus(taus: ArrayLike) -> NDArray[np.float64]:
    t = np.asarray(taus, dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"taus must be a non-empty 1-D array, got shape {t.shape}")
    return t


def _profile(flat_sorted: NDArray[np.float64], taus: NDArray[np.float64]) -> NDArray[np.float64]:
    above = flat_sorted.size - np.searchsorted(flat_sorted, taus, side="right")
    return above / flat_sorted.size


def performance_profile(scores: ArrayLike, taus: ArrayLike) -> NDArray[np.float64]:
    """Score distribution: the fraction of all run-game scores strictly above each ``tau``.

    ``F(tau) = (1 / (N M)) sum_n sum_m [x_nm > tau]`` over the ``N`` runs and ``M`` games
    (rliable ``create_performance_profile`` with ``use_score_distribution=True``, its default;
    not the "average" profile of per-game mean scores).

    Args:
        scores: Scores, ``[runs, games]`` (any shape is flattened).
        taus: Thresholds, 1-D.

    Returns:
        Array of the same length as ``taus``, each value in ``[0, 1]``.

    Raises:
        ValueError: If ``scores`` is empty or not finite, or ``taus`` is not a non-empty 1-D array.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise ValueError("performance_profile of an empty array")
    if not np.isfinite(s).all():
        raise ValueError("scores contain nan or inf; drop unfinished runs before aggregating")
    return _profile(np.sort(s), _as_taus(taus))


class ProfileBand(NamedTuple):
    """A performance profile on ``taus`` with its pointwise percentile bootstrap band."""

    taus: NDArray[np.float64]
    point: NDArray[np.float64]
    low: NDArray[np.float64]
    high: NDArray[np.float64]


def performance_profile_ci(
    scores: ArrayLike, taus: ArrayLike, reps: int = 2000, alpha: float = 0.05, seed: int = 0
) -> ProfileBand:
    """:func:`performance_profile` with a stratified bootstrap band, pointwise in ``tau``.

    The same replicates serve every ``tau`` (one resampled matrix gives a whole profile);
    ``low``/``high`` are the ``alpha/2`` and ``1 - alpha/2`` percentiles at each ``tau``
    (rliable ``create_performance_profile``, percentile method).

    Args:
        scores: Score matrix ``[runs, games]``.
        taus: Thresholds, 1-D.
        reps: Number of bootstrap replicates.
        alpha: 1 - confidence level (0.05 gives a 95 % band).
        seed: Seed of the resampling generator.

    Returns:
        ``ProfileBand(taus, point, low, high)``, each an array of ``len(taus)``.
    """
    s = _as_score_matrix(scores)
    t = _as_taus(taus)
    _check_bootstrap_args(reps, alpha)
    rng = np.random.default_rng(seed)
    estimates = np.empty((reps, t.size), dtype=np.float64)
    i = 0
    for resampled in _stratified_resamples(s, reps, rng):
        flat = np.sort(resampled.reshape(resampled.shape[0], -1), axis=1)
        for row in flat:
            estimates[i] = _profile(row, t)
            i += 1
    low, high = _percentile_interval(estimates, alpha)
    return ProfileBand(taus=t, point=_profile(np.sort(s.ravel()), t), low=low, high=high)


# --------------------------------------------------------------------------------------------
# The report's aggregate table.
# --------------------------------------------------------------------------------------------

#: The aggregates of :func:`aggregate_table`, in the order a report shows them.
AGGREGATES: tuple[str, ...] = ("iqm", "median", "mean", "optimality_gap")


def aggregate_table(
    scores_by_method: Mapping[str, ArrayLike],
    reps: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    gamma: float = 1.0,
) -> dict[str, dict[str, BootstrapCI]]:
    """IQM, median, mean and optimality gap of each method with stratified bootstrap intervals.

    For every method the same ``reps`` stratified resamples of its ``[runs, games]`` matrix
    give all four aggregates (so they are consistent with each other); every method uses the
    same ``seed``, so a method's row does not depend on which other methods are in the table.

    Args:
        scores_by_method: ``{method: [runs, games] scores}`` (normalised scores, e.g. HNS, for
            the optimality gap to mean anything); the same games, in the same column order,
            for every method; run counts may differ between methods.
        reps: Number of bootstrap replicates.
        alpha: 1 - confidence level (0.05 gives 95 % intervals).
        seed: Seed of the resampling generator.
        gamma: Threshold of the optimality gap (1.0 = human level for HNS).

    Returns:
        ``{method: {"iqm" | "median" | "mean" | "optimality_gap": BootstrapCI}}``, methods in
        the dict's order, aggregates in :data:`AGGREGATES` order.

    Raises:
        ValueError: If there is no method, a matrix is empty or not finite, or the methods
            have different game counts.
    """
    if not scores_by_method:
        raise ValueError("aggregate_table needs at least one method")
    _check_bootstrap_args(reps, alpha)
    matrices = {m: _as_score_matrix(s, f"scores of {m!r}") for m, s in scores_by_method.items()}
    counts = {m: s.shape[1] for m, s in matrices.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(f"methods must be scored on the same games; game counts: {counts}")

    def stats(m: NDArray[np.float64]) -> tuple[float, float, float, float]:
        return (iqm(m), aggregate_median(m), aggregate_mean(m), optimality_gap(m, gamma))

    table: dict[str, dict[str, BootstrapCI]] = {}
    for method, s in matrices.items():
        estimates = _replicates(s, stats, reps, seed, (len(AGGREGATES),))
        low, high = _percentile_interval(estimates, alpha)
        point = stats(s)
        table[method] = {
            name: BootstrapCI(point=float(point[k]), low=float(low[k]), high=float(high[k]))
            for k, name in enumerate(AGGREGATES)
        }
    return table

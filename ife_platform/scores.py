"""Atari score normalisation and aggregate statistics over games x runs.

Human-normalised score (Mnih et al. 2015; metrics.md "Scores")::

    HNS = (score - random) / (human - random)

with the per-game random and human scores of ``ife_platform/data/atari_human_random.csv``
(57 games; its ``atari100k`` column marks the 26 Atari-100k games). Aggregates follow
Agarwal et al. 2021 ("Deep RL at the Edge of the Statistical Precipice", the rliable package):
IQM over all run-game scores and percentile confidence intervals from a stratified bootstrap
that resamples runs independently within each game.

Raw scores passed here must be full-game (all lives), unclipped sums of game rewards.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Callable
from importlib import resources
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "BootstrapCI",
    "aggregate_mean",
    "aggregate_median",
    "atari100k_games",
    "canonical_game_name",
    "der_100k_score",
    "has_reference",
    "human_normalized_score",
    "iqm",
    "known_games",
    "optimality_gap",
    "reference_scores",
    "stratified_bootstrap_ci",
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
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    runs, games = s.shape
    rng = np.random.default_rng(seed)
    cols = np.arange(games)
    estimates = np.empty(reps, dtype=np.float64)
    chunk = max(1, 2_000_000 // max(1, runs * games))  # bound the index array's memory
    for start in range(0, reps, chunk):
        n = min(chunk, reps - start)
        rows = rng.integers(0, runs, size=(n, runs, games))  # [n, runs, games]
        resampled = s[rows, cols]  # [n, runs, games]: column g only draws from column g
        for i in range(n):
            estimates[start + i] = statistic(resampled[i])
    low, high = np.percentile(estimates, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return BootstrapCI(point=float(statistic(s)), low=float(low), high=float(high))

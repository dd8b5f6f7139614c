"""``ife compare``: several agents on the same game and the same frames, side by side.

The frames come from the first agent's evaluation games (:func:`explain.record`); every agent
is then run on exactly those observations (:func:`explain.rerecord`) and measured with
:func:`explain.analyse`. Agents are grouped by method: the extractor and the importance map
(``mask`` for attention extractors, ``saliency`` for the Greydanus baseline; an attention agent
with ``explain.saliency=true`` contributes to both). Checkpoints of one method with different
seeds give the confidence interval: a percentile bootstrap of the mean over seeds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ife_platform.interpret.explain import HEADLINE, Explanation, json_safe

#: Metrics of the comparison table (``explain`` summary keys, without the ``saliency/`` prefix).
COMPARE_METRICS = tuple(k for k in HEADLINE if not k.startswith("chance")) + ("chance_mass",)


def bootstrap_ci(
    values: Sequence[float], level: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean.

    Args:
        values: one value per seed (non-finite values are dropped).
        level: coverage of the interval.
        resamples: bootstrap resamples.
        seed: generator seed (the interval is reproducible).

    Returns:
        ``(low, high)``; ``(nan, nan)`` with fewer than two finite values.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(lo), float(hi)


@dataclass
class MethodResult:
    """One row of the comparison: a method measured over one or more seeds."""

    method: str
    agents: list[str]
    values: dict[str, list[float]]

    def row(self, level: float = 0.95) -> dict[str, Any]:
        """Mean, interval and seed count of every metric (flat keys)."""
        out: dict[str, Any] = {"method": self.method, "seeds": len(self.agents)}
        for key, vals in self.values.items():
            arr = np.asarray(vals, dtype=np.float64)
            finite = arr[np.isfinite(arr)]
            out[key] = float(finite.mean()) if finite.size else float("nan")
            out[f"{key}_lo"], out[f"{key}_hi"] = bootstrap_ci(finite, level)
        return out


def method_summaries(label: str, extractor: str, exp: Explanation) -> dict[str, dict[str, float]]:
    """``{method: metrics}`` of one agent's explanation (mask and/or saliency maps)."""
    s = exp.summary
    out: dict[str, dict[str, float]] = {}
    if s["attention"]:
        out[f"{extractor} (mask)"] = {k: _num(s.get(k)) for k in COMPARE_METRICS}
    if any(k.startswith("saliency/") for k in s):
        sal = {k: _num(s.get(f"saliency/{k}")) for k in COMPARE_METRICS}
        if not s["attention"]:  # saliency is the importance map: faithfulness is about it
            for k in ("deletion_gain", "insertion_gain", "sanity_spearman"):
                sal[k] = _num(s.get(k))
        out[f"{extractor} (saliency)"] = sal
    return out


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and value is not None else float("nan")


def group_methods(per_agent: list[tuple[str, dict[str, dict[str, float]]]]) -> list[MethodResult]:
    """Merge per-agent method metrics into one :class:`MethodResult` per method."""
    groups: dict[str, MethodResult] = {}
    for label, methods in per_agent:
        for method, values in methods.items():
            g = groups.setdefault(method, MethodResult(method, [], {k: [] for k in values}))
            g.agents.append(label)
            for k, v in values.items():
                g.values.setdefault(k, []).append(v)
    return list(groups.values())


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text table: one line per method, ``mean [lo, hi]`` per metric."""
    keys = [k for k in COMPARE_METRICS if any(np.isfinite(r.get(k, np.nan)) for r in rows)]
    head = f"{'method':<26}{'seeds':>6}  " + "  ".join(f"{k:>22}" for k in keys)
    lines = [head]
    for r in rows:
        cells = []
        for k in keys:
            v, lo, hi = r.get(k, np.nan), r.get(f"{k}_lo", np.nan), r.get(f"{k}_hi", np.nan)
            if not np.isfinite(v):
                cells.append(f"{'n/a':>22}")
            elif np.isfinite(lo):
                cells.append(f"{v:>8.3g} [{lo:.3g}, {hi:.3g}]".rjust(22))
            else:
                cells.append(f"{v:>22.4g}")
        lines.append(f"{r['method']:<26}{r['seeds']:>6}  " + "  ".join(cells))
    return "\n".join(lines)


def write_report(rows: list[dict[str, Any]], info: dict[str, Any], folder: Path) -> list[Path]:
    """``compare.csv``, ``compare.json`` and ``compare.png`` (bars with intervals) in folder."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "compare.csv", folder / "compare.json", folder / "compare.png"]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with paths[0].open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    paths[1].write_text(json.dumps(json_safe({**info, "methods": rows}), indent=2))
    shown = [k for k in COMPARE_METRICS if any(np.isfinite(r.get(k, np.nan)) for r in rows)]
    shown = [k for k in shown if k != "chance_mass"] or ["leakage"]
    fig, axes = plt.subplots(1, len(shown), figsize=(2.6 * len(shown), 3.2), squeeze=False)
    x = np.arange(len(rows))
    for ax, key in zip(axes[0], shown, strict=True):
        mean = np.array([r.get(key, np.nan) for r in rows], dtype=np.float64)
        lo = np.array([r.get(f"{key}_lo", np.nan) for r in rows], dtype=np.float64)
        hi = np.array([r.get(f"{key}_hi", np.nan) for r in rows], dtype=np.float64)
        err = np.where(np.isfinite(lo), np.stack([mean - lo, hi - mean]), 0.0)
        ax.bar(x, np.nan_to_num(mean), yerr=err, capsize=3, color="tab:blue")
        chance = {"lift": 1.0, "auroc": 0.5}.get(key)
        if key == "mass_in_box":
            chance = float(np.nanmean([r.get("chance_mass", np.nan) for r in rows]))
        if chance is not None and np.isfinite(chance):
            ax.axhline(chance, color="k", ls="--", lw=1)
        ax.set_xticks(x, [r["method"] for r in rows], rotation=45, ha="right", fontsize=7)
        ax.set_title(key, fontsize=8)
    fig.suptitle(f"{info['game']}: {info['frames']} shared frames (dashed: chance)", fontsize=9)
    fig.tight_layout()
    fig.savefig(paths[2], dpi=100)
    plt.close(fig)
    return paths

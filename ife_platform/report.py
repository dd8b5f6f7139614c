"""``ife report``: per-game scores and aggregate statistics of trained runs, from the store.

Reads finished runs from MLflow (a sweep's parent run stands for all its trials; a training
run for itself; a continual sequence run for its sequence) and writes, to a folder, to the
terminal and to every sweep parent named:

- per run: game, method, seed, final raw score (``eval/return_mean``), HNS;
- per game and method: mean raw score over seeds, HNS, the seeds, and DER's published
  100k-step score where the runs used the Atari-100k protocol at the 100k budget;
- per method: IQM, median, mean and optimality gap of HNS with stratified-bootstrap 95 %
  intervals, performance profiles and the probability of improvement between methods
  (Agarwal et al. 2021; :mod:`ife_platform.scores`, tested against rliable);
- ``ife explain`` metrics (alignment, leakage, faithfulness) and continual-learning metrics
  (average performance, forgetting, transfer) per method, mean with a bootstrap interval;
- PNG plots, CSV files and a markdown report (``docs/report.md`` defines every number).

Every report also writes ``runs.json``, the portable record of the runs it read (scores,
evaluation protocol, params, explain and continual metrics). A record file, or a folder that
holds ``runs.json``, can stand in for run ids in a later ``ife report``: the MLflow store stays
on the machine that trained, but reports of runs from many machines and sessions add up.

A method is the runs' values of the ``by`` keys (default: ``agent.name`` and
``model.extractor``, without the keys that are the same for every run).
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ife_platform.config import ConfigError

__all__ = [
    "ReportResult",
    "RunRow",
    "build_report",
    "collect_runs",
    "load_rows",
    "report",
    "save_rows",
]

DEFAULT_BY = ("agent.name", "model.extractor")
RUNS_FILE = "runs.json"  # the record of a report's runs, in its folder
RECORD_FORMAT = "ife-report-runs/1"


@dataclass
class RunRow:
    """One finished run as the report reads it."""

    run_id: str
    kind: str  # train | sequence
    game: str
    seed: int
    params: dict[str, str]
    score: float | None = None  # final evaluation, mean raw score over its games
    episodes: int = 0
    hns: float | None = None
    protocol: str = ""
    total_steps: int = 0
    truncated: int | None = None  # evaluation games a cap ended (None: not recorded)
    cap_frames: int | None = None  # the evaluation's cap in emulator frames
    evaluation: str = "eval"  # the metrics scored: eval (end of training) | evaluate (later)
    explain: dict[str, float] = field(default_factory=dict)
    sequence: dict[str, Any] | None = None  # a continual run's report (R, AUCs)
    method: str = ""


_REQUIRED = {"run_id": str, "kind": str, "game": str, "seed": int, "params": dict}


def save_rows(rows: Sequence[RunRow], path: str | Path, *, merge: bool = False) -> Path:
    """Write rows as a record that :func:`load_rows` (and ``ife report PATH``) reads back.

    Args:
        rows: the runs; ``method`` is not kept (a report labels methods itself).
        path: the JSON file.
        merge: keep the rows already in ``path``, replacing those with the same run id.
    """
    path = Path(path)
    kept: dict[str, RunRow] = {}
    if merge and path.exists():
        kept = {r.run_id: r for r in load_rows(path)}
    for r in rows:
        kept[r.run_id] = r
    runs = []
    for r in kept.values():
        d = {k: getattr(r, k) for k in r.__dataclass_fields__ if k != "method"}
        runs.append(d)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"format": RECORD_FORMAT, "runs": runs}, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def load_rows(path: str | Path) -> list[RunRow]:
    """The runs of a record written by :func:`save_rows` (a file, or a report's folder).

    Raises:
        ConfigError: no such file, or not a record of this format (nothing is guessed).
    """
    where = Path(path)
    if where.is_dir():
        where = where / RUNS_FILE
    if not where.is_file():
        raise ConfigError(f"ife report: no run record at {where} (a report folder's {RUNS_FILE})")
    try:
        data = json.loads(where.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"ife report: {where} is not a readable run record: {err}") from err
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
        raise ConfigError(f"ife report: {where} is not a run record of format {RECORD_FORMAT}")
    fields = set(RunRow.__dataclass_fields__) - {"method"}
    rows = []
    for i, entry in enumerate(data.get("runs", [])):
        if not isinstance(entry, dict):
            raise ConfigError(f"ife report: run {i} of {where} is not an object")
        bad = [k for k, t in _REQUIRED.items() if not isinstance(entry.get(k), t)]
        unknown = sorted(set(entry) - fields)
        if bad or unknown:
            what = f"missing or mistyped {bad}" if bad else f"unknown keys {unknown}"
            raise ConfigError(f"ife report: run {i} of {where}: {what}")
        rows.append(RunRow(**entry))
    if not rows:
        raise ConfigError(f"ife report: {where} holds no runs")
    return rows


def is_record_ref(ref: str) -> bool:
    """Whether an ``ife report`` reference names a record (a path) rather than a run id."""
    return ref.endswith(".json") or os.sep in ref or "/" in ref or Path(ref).is_dir()


def _sweep_children(client: Any, parent: Any) -> tuple[list[Any], list[str]]:
    """The newest FINISHED run of each trial of a sweep, and notes on trials without one."""
    from ife_platform.sweep import TRIAL_TAG, trial_runs

    runs = trial_runs(client, parent.info.experiment_id, parent.info.run_id)
    newest: dict[str, Any] = {}
    finished: dict[str, Any] = {}
    for run in runs:
        index = run.data.tags.get(TRIAL_TAG, "?")
        newest[index] = run
        if run.info.status == "FINISHED":
            finished[index] = run
    notes = [
        f"sweep {parent.info.run_id}: trial {i} has no finished run "
        f"(newest {run.info.run_id} is {run.info.status})"
        for i, run in sorted(newest.items())
        if i not in finished
    ]
    return [finished[i] for i in sorted(finished, key=lambda k: int(k) if k.isdigit() else -1)], (
        notes
    )


def score_prefix(metrics: Mapping[str, float]) -> str | None:
    """Which evaluation of a run the report scores: ``eval/`` or ``evaluate/`` (or None).

    The end-of-training evaluation (``eval/*``) unless it predates the evaluation protocol
    (no ``eval/cap_frames``) and an ``ife evaluate`` of the trained agent under the current
    protocol (``evaluate/*`` with its cap) was logged to the run since.
    """
    if "eval/return_mean" in metrics and "eval/cap_frames" in metrics:
        return "eval/"
    if "evaluate/return_mean" in metrics and "evaluate/cap_frames" in metrics:
        return "evaluate/"
    return "eval/" if "eval/return_mean" in metrics else None


def _row(client: Any, run: Any, output_dir: str) -> RunRow:
    from ife_platform.scores import has_reference, human_normalized_score

    p = run.data.params
    m = run.data.metrics
    kind = "sequence" if run.data.tags.get("ife.kind") == "sequence" else "train"
    row = RunRow(
        run_id=run.info.run_id,
        kind=kind,
        game=p.get("env.game", "?"),
        seed=int(p.get("seed", 0)),
        params=dict(p),
        protocol=p.get("env.protocol", ""),
        total_steps=int(float(p.get("train.total_steps", 0))),
    )
    if kind == "sequence":
        from ife_platform.sequences import build_report, load_progress

        row.sequence = build_report(load_progress(client, run.info.run_id, output_dir))
        row.game = "+".join(row.sequence["games"])
        return row
    prefix = score_prefix(m)
    if prefix is None:
        raise ConfigError(
            f"run {run.info.run_id} has no final evaluation (eval/return_mean): trained with "
            "tracking.eval_episodes=0, or not a training run"
        )
    row.evaluation = prefix.rstrip("/")
    row.score = float(m[f"{prefix}return_mean"])
    row.episodes = int(m.get(f"{prefix}episodes", 0))
    if f"{prefix}truncated" in m:
        row.truncated = int(m[f"{prefix}truncated"])
    if f"{prefix}cap_frames" in m:
        row.cap_frames = int(m[f"{prefix}cap_frames"])
    row.hns = human_normalized_score(row.game, row.score) if has_reference(row.game) else None
    row.explain = {k: float(v) for k, v in m.items() if k.startswith("explain/")}
    return row


def collect_runs(
    client: Any, refs: Sequence[str], output_dir: str
) -> tuple[list[RunRow], list[str], list[str]]:
    """Rows of every run the references stand for, the sweep parents among them, and notes.

    A reference is a run id (a sweep's parent stands for its trials) or a run record
    (:func:`is_record_ref`); ``client`` may be None when every reference is a record. A run
    named twice is read once (the first time).

    Raises:
        ConfigError: an unknown run id, an unfinished run named directly, a bad record, or
            nothing to report.
    """
    rows: list[RunRow] = []
    sweeps: list[str] = []
    notes: list[str] = []
    seen: set[str] = set()

    def add(row: RunRow) -> None:
        if row.run_id not in seen:
            seen.add(row.run_id)
            rows.append(row)

    for ref in refs:
        if is_record_ref(ref):
            for row in load_rows(ref):
                add(row)
            continue
        try:
            run = client.get_run(ref)
        except Exception as err:
            raise ConfigError(f"ife report: no run {ref!r} in the tracking store") from err
        if run.data.tags.get("ife.kind") == "sweep":
            sweeps.append(ref)
            children, more = _sweep_children(client, run)
            notes.extend(more)
        else:
            if run.info.status != "FINISHED":
                raise ConfigError(f"ife report: run {ref} is {run.info.status}, not FINISHED")
            children = [run]
        for child in children:
            if child.info.run_id not in seen:
                add(_row(client, child, output_dir))
    if not rows:
        raise ConfigError(f"ife report: no finished runs in {', '.join(refs)}")
    return rows, sweeps, notes


def label_methods(rows: list[RunRow], by: Sequence[str]) -> list[str]:
    """Set each row's method from its ``by`` params, leaving out keys equal for all rows."""
    varying = [k for k in by if len({r.params.get(k, "") for r in rows}) > 1]
    keys = varying or list(by[-1:])
    for r in rows:
        r.method = "/".join(r.params.get(k, "?") for k in keys)
    return keys


def protocol_notes(rows: Sequence[RunRow]) -> list[str]:
    """What the reader must know about how the scores were measured.

    The evaluation caps (every run should share one; 108k frames is the Atari standard),
    games that a cap ended before the game did, and runs that recorded neither (trained
    before the evaluation recorded its cap).
    """
    train = [r for r in rows if r.kind == "train"]
    notes = []
    caps = sorted({r.cap_frames for r in train if r.cap_frames is not None})
    if len(caps) > 1:
        notes.append(
            "the runs were evaluated under different caps ("
            + ", ".join(f"{c:,} frames" for c in caps)
            + "): their scores are not comparable"
        )
    elif caps and caps[0] != 108_000:
        notes.append(f"evaluation games were capped at {caps[0]:,} frames (the standard: 108,000)")
    cut = [r for r in train if r.truncated]
    if cut:
        games = sum(r.truncated or 0 for r in cut)
        notes.append(
            f"{games} evaluation games in {len(cut)} runs were ended by the cap, not by the "
            "game: their scores are of partial games"
        )
    later = [r for r in train if r.evaluation == "evaluate"]
    if later:
        notes.append(
            f"{len(later)} runs are scored by a later `ife evaluate` of the trained agent "
            "(their end-of-training evaluation predates the evaluation protocol)"
        )
    unknown = [r for r in train if r.cap_frames is None]
    if unknown:
        notes.append(
            f"{len(unknown)} runs carry no record of their evaluation cap or truncations "
            "(evaluated before the evaluation protocol was fixed, or exported without them): "
            "re-evaluate them with ife evaluate"
        )
    return notes


def _der_budget(rows: Sequence[RunRow]) -> bool:
    return bool(rows) and all(r.protocol == "atari100k" and r.total_steps == 100_000 for r in rows)


def _ci_cell(ci: Any, digits: int = 3) -> str:
    return f"{ci.point:.{digits}f} [{ci.low:.{digits}f}, {ci.high:.{digits}f}]"


def _fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


@dataclass
class ReportResult:
    """What :func:`build_report` computed and where it wrote it."""

    rows: list[RunRow]
    games: list[dict[str, Any]]
    aggregates: dict[str, dict[str, Any]]
    improvement: dict[tuple[str, str], Any]
    explain: dict[str, dict[str, Any]]
    continual: dict[str, dict[str, Any]]
    notes: list[str]
    folder: Path
    files: list[Path]
    markdown: str


def _game_table(rows: Sequence[RunRow], der: bool) -> list[dict[str, Any]]:
    from ife_platform.scores import der_100k_score

    groups: dict[tuple[str, str], list[RunRow]] = defaultdict(list)
    for r in rows:
        if r.kind == "train":
            groups[(r.game, r.method)].append(r)
    out = []
    for (game, method), rs in sorted(groups.items()):
        scores = [r.score for r in rs if r.score is not None]
        hns = [r.hns for r in rs if r.hns is not None]
        ref = der_100k_score(game) if der else None
        mean = float(np.mean(scores))
        out.append(
            {
                "game": game,
                "method": method,
                "seeds": ",".join(str(r.seed) for r in rs),
                "runs": len(rs),
                "score_mean": mean,
                "score_std": float(np.std(scores)),
                "scores": scores,
                "hns_mean": float(np.mean(hns)) if hns else None,
                "der_100k": ref,
                "score_over_der": mean / ref if ref else None,
            }
        )
    return out


def _matrices(
    rows: Sequence[RunRow], value: Callable[[RunRow], float | None]
) -> tuple[dict[str, Any], list[str], list[str]]:
    """Per method, the [runs, games] matrix of ``value`` over the games every method has."""
    from ife_platform.scores import score_matrix

    by_method: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        v = value(r)
        if v is not None and math.isfinite(v):
            by_method[r.method][r.game].append(float(v))
    if not by_method:
        return {}, [], []
    common = sorted(set.intersection(*(set(g) for g in by_method.values())))
    notes = []
    for method, games in by_method.items():
        left = sorted(set(games) - set(common))
        if left:
            notes.append(f"{method}: games {', '.join(left)} left out (not run by every method)")
    if not common:
        return {}, [], notes
    out = {}
    for method, games in sorted(by_method.items()):
        m = score_matrix(games, common)
        out[method] = m.scores
        if m.dropped:
            notes.append(f"{method}: {m.note}")
    return out, common, notes


def build_report(
    rows: list[RunRow],
    folder: Path,
    *,
    by: Sequence[str] = DEFAULT_BY,
    reps: int = 2000,
    seed: int = 0,
    notes: Sequence[str] = (),
) -> ReportResult:
    """Compute every table and figure of the report and write them to ``folder``."""
    from ife_platform import report_plots as RP
    from ife_platform import scores as S

    folder.mkdir(parents=True, exist_ok=True)
    notes = [*notes, *protocol_notes(rows)]
    keys = label_methods(rows, by)
    der = _der_budget([r for r in rows if r.kind == "train"])
    games = _game_table(rows, der)
    files: list[Path] = []

    hns, hns_games, more = _matrices(rows, lambda r: r.hns)
    notes.extend(more)
    aggregates: dict[str, dict[str, Any]] = {}
    improvement: dict[tuple[str, str], Any] = {}
    if hns:
        aggregates = S.aggregate_table(hns, reps=reps, seed=seed)
        files.append(
            RP.plot_aggregates(
                aggregates, folder / "aggregates.png", _title("HNS aggregates", hns, hns_games)
            )
        )
        # tau over the scores' range (Atari-100k HNS are mostly below 1): from min(0, lowest)
        # to 10 % above the highest
        low = min(0.0, min(float(np.min(m)) for m in hns.values()))
        top = max(float(np.max(m)) for m in hns.values())
        taus = np.linspace(low, max(top * 1.1, low + 0.1), 81)
        profiles = {
            m: S.performance_profile_ci(v, taus, reps=reps, seed=seed) for m, v in hns.items()
        }
        files.append(
            RP.plot_performance_profiles(
                profiles,
                folder / "performance_profiles.png",
                _title("Performance profiles", hns, hns_games),
            )
        )
        if len(hns) > 1:
            improvement = S.probability_of_improvement_table(hns, reps=reps, seed=seed)
            files.append(
                RP.plot_probability_of_improvement(
                    improvement,
                    folder / "probability_of_improvement.png",
                    _title("P(X > Y)", hns, hns_games),
                )
            )
    if games:
        plot_rows = [
            RP.GameScoreRow(g["game"], g["method"], g["scores"], g["der_100k"]) for g in games
        ]
        files.append(
            RP.plot_game_scores(
                plot_rows, folder / "game_scores.png", "Final raw score per game (dots: seeds)"
            )
        )

    explain: dict[str, dict[str, Any]] = {}
    explain_keys = sorted({k for r in rows for k in r.explain})
    for key in explain_keys:
        mats, _, _ = _matrices(rows, lambda r, k=key: r.explain.get(k))
        for method, mat in mats.items():
            explain.setdefault(method, {})[key] = S.stratified_bootstrap_ci(
                mat, S.aggregate_mean, reps=reps, seed=seed
            )

    continual: dict[str, dict[str, Any]] = {}
    seq = [r for r in rows if r.kind == "sequence" and r.sequence is not None]
    if seq:
        from ife_platform.continual import metrics as CM

        groups: dict[str, list[RunRow]] = defaultdict(list)
        for r in seq:
            mode = "" if "sequence.mode" in keys else r.params.get("sequence.mode", "")
            groups[f"{r.method} {mode}".strip()].append(r)
        for method, rs in groups.items():
            reports = [r.sequence for r in rs if r.sequence is not None]
            has_ref = all(rep.get("auc_reference") is not None for rep in reports)
            continual[method] = CM.summarise_over_seeds(
                [np.asarray(rep["R"], dtype=float) for rep in reports],
                aucs=[rep["auc"] for rep in reports] if has_ref else None,
                aucs_ref=[rep["auc_reference"] for rep in reports] if has_ref else None,
                seed=seed,
            )

    result = ReportResult(
        rows, games, aggregates, improvement, explain, continual, notes, folder, files, ""
    )
    result.markdown = render_markdown(result, keys, der, hns_games, reps)
    files.extend(write_tables(result))
    return result


def _title(what: str, mats: dict[str, Any], games: list[str]) -> str:
    runs = {m: v.shape[0] for m, v in mats.items()}
    per = ", ".join(f"{m}: {n}" for m, n in runs.items())
    return f"{what} ({len(games)} games; runs per game: {per})"


def render_markdown(
    result: ReportResult, keys: list[str], der: bool, hns_games: list[str], reps: int
) -> str:
    """The report as markdown (also printed to the terminal)."""
    lines = [f"# ife report ({time.strftime('%Y-%m-%d %H:%M')})", ""]
    lines.append(
        f"{len(result.rows)} finished runs; method = {' / '.join(keys)}. A run's score is its "
        "evaluation after training (the mean raw score over whole evaluation games; the notes "
        "say which evaluation); HNS = (score - random) / (human - random)."
    )
    if result.games:
        lines += ["", "## Per game", ""]
        head = "| game | method | runs (seeds) | raw score mean +- std | HNS |"
        sep = "|---|---|---|---|---|"
        if der:
            head += " DER published (100k) | mean / DER |"
            sep += "---|---|"
        lines += [head, sep]
    for g in result.games:
        line = (
            f"| {g['game']} | {g['method']} | {g['runs']} ({g['seeds']}) | "
            f"{_fmt(g['score_mean'])} +- {_fmt(g['score_std'])} | {_fmt(g['hns_mean'], 3)} |"
        )
        if der:
            line += f" {_fmt(g['der_100k'])} | {_fmt(g['score_over_der'], 2)} |"
        lines.append(line)
    if result.games and not der:
        lines += ["", "(DER's published scores are shown only for Atari-100k runs of 100k steps.)"]
    if result.aggregates:
        lines += [
            "",
            f"## Aggregates of HNS over {len(hns_games)} games "
            f"(95 % stratified bootstrap, {reps} resamples)",
            "",
            "| method | IQM | median | mean | optimality gap |",
            "|---|---|---|---|---|",
        ]
        for method, t in result.aggregates.items():
            lines.append(
                f"| {method} | {_ci_cell(t['iqm'])} | {_ci_cell(t['median'])} | "
                f"{_ci_cell(t['mean'])} | {_ci_cell(t['optimality_gap'])} |"
            )
    if result.improvement:
        lines += ["", "## Probability of improvement", "", "| X | Y | P(X > Y) |", "|---|---|---|"]
        for (x, y), ci in result.improvement.items():
            lines.append(f"| {x} | {y} | {_ci_cell(ci, 2)} |")
    if result.explain:
        from ife_platform.interpret.explain import HEADLINE  # what ife explain prints

        headline = [f"explain/{k}" for k in HEADLINE]
        shown = [k for k in headline if any(k in v for v in result.explain.values())]
        shown = shown or sorted({k for v in result.explain.values() for k in v})[:6]
        lines += [
            "",
            "## Interpretability (ife explain; mean over games and seeds, 95 % interval)",
            "",
        ]
        lines.append("| method | " + " | ".join(k.removeprefix("explain/") for k in shown) + " |")
        lines.append("|---|" + "---|" * len(shown))
        for method, v in result.explain.items():
            cells = [_ci_cell(v[k]) if k in v else "-" for k in shown]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if result.continual:
        lines += ["", "## Continual learning (mean over seeds [95 % bootstrap interval])", ""]
        names = sorted({k for v in result.continual.values() for k in v})
        lines.append("| method | " + " | ".join(names) + " |")
        lines.append("|---|" + "---|" * len(names))
        for method, v in result.continual.items():
            cells = [_interval_cell(v[k]) if k in v else "-" for k in names]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


def _interval_cell(v: dict[str, Any]) -> str:
    return f"{_fmt(v['mean'], 3)} [{_fmt(v['lo'], 3)}, {_fmt(v['hi'], 3)}] (n={v['n']})"


def write_tables(result: ReportResult) -> list[Path]:
    """``runs.csv``, ``games.csv``, ``aggregates.csv`` and ``report.md`` in the folder."""
    folder = result.folder
    paths = []
    explain_keys = sorted({k for r in result.rows for k in r.explain})
    path = folder / "runs.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["run_id", "kind", "game", "method", "seed", "score", "episodes", "hns"]
            + ["evaluation", "eval_truncated", "eval_cap_frames", *explain_keys]
        )
        for r in result.rows:
            w.writerow(
                [r.run_id, r.kind, r.game, r.method, r.seed, r.score, r.episodes, r.hns]
                + [r.evaluation, r.truncated, r.cap_frames]
                + [r.explain.get(k) for k in explain_keys]
            )
    paths.append(path)
    path = folder / "games.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        cols = [
            "game",
            "method",
            "runs",
            "seeds",
            "score_mean",
            "score_std",
            "hns_mean",
            "der_100k",
            "score_over_der",
        ]
        w.writerow(cols)
        for g in result.games:
            w.writerow([g[c] for c in cols])
    paths.append(path)
    path = folder / "aggregates.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["section", "method", "metric", "point", "low", "high"])
        for method, t in result.aggregates.items():
            for metric, ci in t.items():
                w.writerow(["hns", method, metric, ci.point, ci.low, ci.high])
        for (x, y), ci in result.improvement.items():
            w.writerow(
                ["probability_of_improvement", f"{x} > {y}", "poi", ci.point, ci.low, ci.high]
            )
        for method, t in result.explain.items():
            for metric, ci in t.items():
                w.writerow(["explain", method, metric, ci.point, ci.low, ci.high])
        for method, t in result.continual.items():
            for metric, v in t.items():
                w.writerow(["continual", method, metric, v["mean"], v["lo"], v["hi"]])
    paths.append(path)
    path = folder / "report.md"
    path.write_text(result.markdown)
    paths.append(path)
    paths.append(save_rows(result.rows, folder / RUNS_FILE))
    return paths


def report(
    refs: Sequence[str],
    *,
    tracking_uri: str | None,
    output_dir: str,
    by: Sequence[str] = DEFAULT_BY,
    reps: int = 2000,
    out: str | None = None,
) -> ReportResult:
    """``ife report``: collect the runs, build the report, log it to every sweep parent.

    ``refs`` are run ids (a sweep's parent stands for its trials) and run records (a report's
    ``runs.json`` or its folder, :func:`save_rows`); the store is opened only for run ids.

    Raises:
        ConfigError, TrackingUnreachableError: bad references or store, before any work.
    """
    import mlflow

    from ife_platform.tracking import open_tracking_store, retry_if_locked

    client = None
    if not all(is_record_ref(ref) for ref in refs):  # records alone need no store
        client = mlflow.MlflowClient(open_tracking_store(tracking_uri, create_dirs=False))
    rows, sweeps, notes = collect_runs(client, refs, output_dir)
    if out is not None:
        folder = Path(out).resolve()
    elif len(sweeps) == 1 and len(refs) == 1:
        folder = Path(output_dir).resolve() / sweeps[0] / "report"
    else:
        folder = Path(output_dir).resolve() / f"report-{time.strftime('%Y%m%d-%H%M%S')}"
    result = build_report(rows, folder, by=by, reps=reps, notes=notes)
    for parent in sweeps:
        for path in result.files:
            retry_if_locked(lambda p=path, r=parent: client.log_artifact(r, str(p), "report"))
        for method, t in result.aggregates.items():
            for metric, ci in t.items():
                key = f"report/{_metric_name(method)}/hns_{metric}"
                retry_if_locked(lambda k=key, v=ci.point, r=parent: client.log_metric(r, k, v))
    return result


def _metric_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in text)

r"""Rainbow/DER parity results (issue 10): export runs from MLflow, then plot and tabulate them.

Two steps, so results gathered on different machines and sessions add up:

    python scripts/der_parity.py export --tracking-uri sqlite:///results/mlflow.db \\
        --out docs/results/data RUN_NAME [RUN_NAME ...]
    python scripts/der_parity.py report --data docs/results/data --png docs/results/der_cnn.png

``export`` writes one small CSV per run (``episode/return`` against agent steps, plus the
importance-weight and priority logs), one row per run to ``runs.csv`` (game, seed,
extractor, weight normalisation, final evaluation) and the run's record as ``ife report``
reads it (``<name>.run.json``: ``ife report docs/results/data/der_*_blank.run.json``);
``--as STEM ...`` names the files of runs whose names are no file names (a sweep trial's
``sweep/game=...-seed=...``).
``record-from-csv NAME`` writes that record from ``runs.csv`` for runs exported before
records existed, whose store is gone. ``report`` reads only those files: it
draws the learning curves beside DER's published 100k score and prints the markdown table
that docs/results.md holds. ``noisy-eval RUN_NAME`` evaluates a run's final agent twice, with
the noisy layers off (the protocol) and sampling (a diagnostic for a greedy policy stuck in
one trajectory).
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

import numpy as np

from ife_platform.report import RunRow, collect_runs, save_rows
from ife_platform.scores import der_100k_score, human_normalized_score, reference_scores

RUN_FIELDS = [
    "run_name",
    "run_id",
    "game",
    "seed",
    "extractor",
    "weight_norm",
    "alpha",
    "blank",
    "total_steps",
    "eval_return_mean",
    "eval_return_std",
    "eval_episodes",
    "wall_minutes",
]
CURVE_KEYS = ["train/is_weight_mean", "train/priority_min", "train/loss_ce", "train/loss"]


def export(tracking_uri: str, names: list[str], out: Path, stems: list[str] | None = None) -> None:
    """Write ``out/<stem>.csv``, ``out/<stem>_train.csv`` and upsert rows of ``out/runs.csv``.

    ``stems`` name the files and the ``runs.csv`` rows, one per run (default: the run names).
    A sweep trial's run name (``sweep/game=...-seed=...``) is no file name, so it needs one.
    """
    from mlflow.tracking import MlflowClient

    stems = list(names) if stems is None else stems
    if len(stems) != len(names):
        raise SystemExit(f"--as gives {len(stems)} names for {len(names)} runs")
    bad = [s for s in stems if not re.fullmatch(r"[A-Za-z0-9_.-]+", s)]
    if bad:
        raise SystemExit(
            f"not a file name (letters, digits, _ . - only): {', '.join(bad)}; use --as"
        )
    client = MlflowClient(tracking_uri)
    out.mkdir(parents=True, exist_ok=True)
    index = out / "runs.csv"
    rows: dict[str, dict[str, str]] = {}
    if index.exists():
        with index.open() as f:
            rows = {r["run_name"]: r for r in csv.DictReader(f)}
    experiments = [e.experiment_id for e in client.search_experiments()]
    for name, stem in zip(names, stems, strict=True):
        found = client.search_runs(experiments, f"tags.mlflow.runName = '{name}'")
        if not found:
            raise SystemExit(f"no run named {name!r} in {tracking_uri}")
        run = found[0]
        rid, params, metrics = run.info.run_id, run.data.params, run.data.metrics
        episodes = client.get_metric_history(rid, "episode/return")
        with (out / f"{stem}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "return"])
            w.writerows((m.step, m.value) for m in sorted(episodes, key=lambda m: m.step))
        train = {
            k: {m.step: m.value for m in client.get_metric_history(rid, k)} for k in CURVE_KEYS
        }
        steps = sorted(set().union(*[set(v) for v in train.values()]))
        with (out / f"{stem}_train.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", *CURVE_KEYS])
            w.writerows([s, *(train[k].get(s, "") for k in CURVE_KEYS)] for s in steps)
        end = run.info.end_time or run.info.start_time
        rows[stem] = {
            "run_name": stem,
            "run_id": rid,
            "game": params["env.game"],
            "seed": params["seed"],
            "extractor": params["model.extractor"],
            "weight_norm": params.get("replay.weight_norm", "buffer"),
            "alpha": params.get("replay.alpha", ""),
            # replay.blank_before_life_start (absent: a run from before the option, no blanking)
            "blank": params.get("replay.blank_before_life_start", "False"),
            "total_steps": params["train.total_steps"],
            "eval_return_mean": str(metrics.get("eval/return_mean", "")),
            "eval_return_std": str(metrics.get("eval/return_std", "")),
            "eval_episodes": str(int(metrics.get("eval/episodes", 0))),
            "wall_minutes": f"{(end - run.info.start_time) / 60000:.1f}",
        }
        # the run as `ife report` reads it, so reports can add it up without the store
        save_rows(collect_runs(client, [rid], "")[0], out / f"{stem}.run.json")
    with index.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RUN_FIELDS)
        w.writeheader()
        w.writerows(rows[k] for k in sorted(rows))


def record_from_csv(data: Path, names: list[str]) -> list[Path]:
    """``<name>.run.json`` for exported runs whose MLflow store is gone, from ``runs.csv``.

    Exports written before the records existed kept the final score but not the evaluation's
    cap or truncation count, so those stay unknown (``ife report`` says so). Every run of
    ``runs.csv`` trained the DER profile (``agent=rainbow_der env=atari100k``).
    """
    from ife_platform.scores import has_reference

    by_name = {r["run_name"]: r for r in _read_runs(data)}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise SystemExit(f"not in {data / 'runs.csv'}: {', '.join(missing)}")
    paths = []
    for name in names:
        r = by_name[name]
        params = {
            "agent.name": "rainbow_der",
            "env.protocol": "atari100k",
            "env.game": r["game"],
            "seed": r["seed"],
            "model.extractor": r["extractor"],
            "train.total_steps": r["total_steps"],
            "replay.weight_norm": r["weight_norm"],
            "replay.alpha": r["alpha"],
            "replay.blank_before_life_start": r["blank"] or "False",
        }
        score = float(r["eval_return_mean"])
        row = RunRow(
            run_id=r["run_id"],
            kind="train",
            game=r["game"],
            seed=int(r["seed"]),
            params=params,
            score=score,
            episodes=int(r["eval_episodes"]),
            hns=human_normalized_score(r["game"], score) if has_reference(r["game"]) else None,
            protocol="atari100k",
            total_steps=int(r["total_steps"]),
        )
        paths.append(save_rows([row], data / f"{name}.run.json"))
    return paths


def _read_runs(data: Path) -> list[dict[str, str]]:
    with (data / "runs.csv").open() as f:
        return list(csv.DictReader(f))


def _replay(r: dict[str, str]) -> str:
    """How the run sampled: uniform (alpha 0, every weight 1) or prioritized with its weights.

    ``", blanked"`` is added when its replayed stacks zeroed the frames before a life start.
    """
    blanked = ", blanked" if (r.get("blank") or "False").lower() == "true" else ""
    if r.get("alpha") not in (None, "") and float(r["alpha"]) == 0.0:
        return "uniform" + blanked
    return f"PER, {r['weight_norm']} weights{blanked}"


def _curve(data: Path, name: str, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Episode returns against agent steps, smoothed by a trailing mean over ``window`` games."""
    arr = np.loadtxt(data / f"{name}.csv", delimiter=",", skiprows=1, ndmin=2)
    return arr[:, 0], _smooth(arr[:, 1], window)


def plot_weights(data: Path, png: Path) -> None:
    """Mean importance weight and smallest stored priority against agent steps, every run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted(_read_runs(data), key=lambda r: r["run_name"])
    fig, (ax_w, ax_p) = plt.subplots(1, 2, figsize=(10, 3.6))
    for r in runs:
        arr = np.genfromtxt(data / f"{r['run_name']}_train.csv", delimiter=",", names=True)
        label = f"{r['game']} seed {r['seed']} ({r['extractor']}, {r['weight_norm']} weights)"
        steps = arr["step"] / 1000
        ax_w.plot(steps, _smooth(arr["trainis_weight_mean"], 10), label=label, lw=1.2)
        ax_p.plot(steps, arr["trainpriority_min"], label=label, lw=1.2)
    ax_w.set_title("mean importance weight per batch (trailing mean of 10 logs)")
    ax_w.set_ylabel("mean IS weight")
    ax_w.set_ylim(0, 1.05)
    ax_p.set_title("smallest stored priority p^alpha in the buffer")
    ax_p.set_ylabel("priority")
    ax_p.set_yscale("log")
    for ax in (ax_w, ax_p):
        ax.set_xlabel("agent steps (thousands)")
        ax.grid(alpha=0.3)
    ax_w.legend(fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` values (NaNs, from steps a key was not logged, skipped)."""
    ok = ~np.isnan(values)
    v = np.where(ok, values, 0.0)
    kernel = np.ones(window)
    counts = np.convolve(ok.astype(float), kernel)[: len(v)]
    return np.convolve(v, kernel)[: len(v)] / np.maximum(counts, 1)


def report(data: Path, png: Path | None, window: int = 20) -> str:
    """Draw the learning curves (if ``png``) and return the markdown table of final scores."""
    runs = _read_runs(data)
    games = sorted({r["game"] for r in runs})
    if png is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(games), figsize=(4.2 * len(games), 3.6), squeeze=False)
        for ax, game in zip(axes[0], games, strict=True):
            for r in sorted((r for r in runs if r["game"] == game), key=lambda r: r["run_name"]):
                steps, smooth = _curve(data, r["run_name"], window)
                label = f"{r['extractor']} seed {r['seed']}"
                replay = _replay(r)
                if replay != "PER, batch weights":  # only what differs from the default
                    label += f" ({replay.removeprefix('PER, batch weights, ')})"
                ax.plot(steps / 1000, smooth, label=label, lw=1.4)
            der, ref = der_100k_score(game), reference_scores(game)
            if der is not None:
                ax.axhline(der, color="k", ls="--", lw=1, label="DER, published (100k)")
            if ref is not None:
                ax.axhline(ref[0], color="grey", ls=":", lw=1, label="random")
            ax.set_title(game, fontsize=12)
            ax.set_xlabel("agent steps (thousands)")
            ax.set_ylabel(f"training return (mean of last {window} games)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png, dpi=110)
    lines = [
        "| game | extractor | seed | replay | final eval (mean +- std, games) | HNS "
        "| DER published | eval / DER | random |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(runs, key=lambda r: (r["game"], r["extractor"], r["seed"])):
        game, mean = r["game"], float(r["eval_return_mean"] or "nan")
        der, ref = der_100k_score(game), reference_scores(game)
        hns = human_normalized_score(game, mean) if ref is not None else float("nan")
        der_txt, ratio = ("-", "-") if der is None else (f"{der:,.1f}", f"{mean / der:.2f}")
        std = float(r["eval_return_std"] or "nan")
        lines.append(
            f"| {game} | {r['extractor']} | {r['seed']} | {_replay(r)} "
            f"| {mean:,.1f} +- {std:,.1f} ({r['eval_episodes']}) | {hns:.3f} | {der_txt} "
            f"| {ratio} | {ref[0] if ref else float('nan'):,.1f} |"
        )
    lines += [
        "",
        "Mean over seeds (prioritized replay, batch weights):",
        "",
        "| game | extractor | replay | seeds | mean final eval | DER published | mean / DER |",
        "|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str, str], list[float]] = {}
    for r in runs:
        if _replay(r).startswith("PER, batch weights") and r["eval_return_mean"]:
            key = (r["game"], r["extractor"], _replay(r))
            groups.setdefault(key, []).append(float(r["eval_return_mean"]))
    for (game, extractor, replay), scores in sorted(groups.items()):
        der, mean = der_100k_score(game), float(np.mean(scores))
        der_txt, ratio = ("-", "-") if der is None else (f"{der:,.1f}", f"{mean / der:.2f}")
        lines.append(
            f"| {game} | {extractor} | {replay} | {len(scores)} | {mean:,.1f} | {der_txt} "
            f"| {ratio} |"
        )
    return "\n".join(lines)


def noisy_evaluation(tracking_uri: str, name: str, episodes: int) -> str:
    """Evaluate a run's final agent with noise off (the protocol) and on (a diagnostic)."""
    from mlflow.tracking import MlflowClient

    from ife_platform import experiment
    from ife_platform.envs import eval_env_kwargs
    from ife_platform.evaluation import evaluate

    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    (run,) = client.search_runs(experiments, f"tags.mlflow.runName = '{name}'")[:1]
    agent = experiment.load_agent(run.info.run_id, [f"tracking.uri={tracking_uri}"])
    cfg, lines = agent.cfg, []
    for noise in (False, True):
        r = evaluate(
            agent.network,
            cfg.env.game,
            episodes=episodes,
            epsilon=cfg.agent.eval_epsilon,
            seed=cfg.seed + 54321,
            max_steps=cfg.tracking.eval_max_steps,
            env_kwargs=eval_env_kwargs(cfg),
            noise=noise,
        )
        returns = np.asarray(r.returns)
        lines.append(
            f"{name}: noise {'on ' if noise else 'off'}: {returns.mean():,.1f} +- "
            f"{returns.std():,.1f} over {len(returns)} games, mean length "
            f"{np.mean(r.lengths):,.0f} steps, {len(np.unique(returns))} distinct scores"
        )
    return "\n".join(lines)


def main() -> None:
    """Command-line entry: ``export``, ``report``, ``record-from-csv`` or ``noisy-eval``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="copy runs' curves and final scores out of MLflow")
    ex.add_argument("--tracking-uri", required=True)
    ex.add_argument("--out", type=Path, default=Path("docs/results/data"))
    ex.add_argument("names", nargs="+", help="MLflow run names")
    ex.add_argument(
        "--as", dest="stems", nargs="+", default=None, help="file names for the runs, in order"
    )
    rep = sub.add_parser("report", help="learning-curve PNG and markdown table")
    rep.add_argument("--data", type=Path, default=Path("docs/results/data"))
    rep.add_argument("--png", type=Path, default=None)
    rep.add_argument("--weights-png", type=Path, default=None)
    rep.add_argument("--window", type=int, default=20)
    rec = sub.add_parser(
        "record-from-csv", help="run records (NAME.run.json) of exported runs whose store is gone"
    )
    rec.add_argument("--data", type=Path, default=Path("docs/results/data"))
    rec.add_argument("names", nargs="+", help="run names in runs.csv")
    ev = sub.add_parser("noisy-eval", help="evaluate a run's agent with noise off and on")
    ev.add_argument("--tracking-uri", required=True)
    ev.add_argument("--episodes", type=int, default=30)
    ev.add_argument("name", help="MLflow run name")
    args = parser.parse_args()
    if args.command == "export":
        export(args.tracking_uri, args.names, args.out, args.stems)
    elif args.command == "record-from-csv":
        for path in record_from_csv(args.data, args.names):
            print(path)
    elif args.command == "noisy-eval":
        print(noisy_evaluation(args.tracking_uri, args.name, args.episodes))
    else:
        print(report(args.data, args.png, args.window))
        if args.weights_png is not None:
            plot_weights(args.data, args.weights_png)


if __name__ == "__main__":
    main()

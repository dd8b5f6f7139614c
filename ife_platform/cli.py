"""The ``ife`` command: ``train``, ``evaluate``, ``sweep``, ``report``, ``ui``, ...

Exit codes: 0 success, 2 bad input (config, checkpoint, tracking store), 128 + N for a run
stopped by signal N before its budget (checkpointed; continue with ``resume=RUN_ID``),
100 + N (at most 127) for a sweep whose N trials failed, 3 for a sweep with trials still
running in another process, 1 anything else (a non-finite loss included).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from ife_platform.config import ConfigError, compose

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


@dataclass(frozen=True)
class Help:
    """What ``ife COMMAND --help`` prints.

    Attributes:
        usage: the command line.
        summary: one line, also shown by ``ife --help``.
        text: more lines (arguments, examples).
        groups: config groups whose keys are listed (``ife_platform.config.key_docs``).
    """

    usage: str
    summary: str
    text: str = ""
    groups: tuple[str, ...] = ()


#: Config groups a training run reads (``ife train --help`` lists their keys).
TRAIN_GROUPS = ("top", "agent", "env", "model", "replay", "optim", "trainer", "train", "tracking")

HELP: dict[str, Help] = {
    "train": Help(
        "ife train [PRESET | FILE.yaml ...] [key=value ...]",
        "train an agent; logs metrics, checkpoint and mask video to MLflow",
        "Layers, later wins: schema defaults, configs/defaults.yaml, the agent preset\n"
        "(agent=NAME), group presets (env=, model=, trainer=, replay=, optim=, tracking=),\n"
        "experiment presets or YAML files, then key=value overrides. `ife presets` lists the\n"
        "presets; `ife config show ...` prints the resolved config without running.\n\n"
        "Examples:\n"
        "  ife train demo env.game=pong seed=3\n"
        "  ife train ife_der_100k env.game=breakout\n"
        "  ife train demo resume=RUN_ID",
        TRAIN_GROUPS,
    ),
    "evaluate": Help(
        "ife evaluate CHECKPOINT_or_RUN_ID [key=value ...]",
        "play evaluation games: raw scores, HNS and a mask video, logged to the run",
        "Keys: tracking.eval_episodes, tracking.eval_max_steps, tracking.video,\n"
        "tracking.video_max_steps, tracking.uri (`ife train --help` lists every key).",
        ("tracking",),
    ),
    "explain": Help(
        "ife explain CHECKPOINT_or_RUN_ID [key=value ...]",
        "measure what and where the agent attends: metrics, video, table, plots",
        "Writes to the agent's MLflow run; docs/interpretability.md defines every number.",
        ("explain",),
    ),
    "compare": Help(
        "ife compare CHECKPOINT_or_RUN_ID CHECKPOINT_or_RUN_ID ... [key=value ...]",
        "several agents of one game on the same frames, with intervals over seeds",
        "At least two agents; overrides last.",
        ("explain",),
    ),
    "continual": Help(
        "ife continual SEQUENCE [key=value ...]",
        "train a game sequence with a transfer mode (one parent run, a child run per task)",
        "SEQUENCE: demo3 | cora | sequence.games=[...]; resume=PARENT_RUN_ID continues one.\n"
        "Training keys as for `ife train` (`ife train --help`). docs/continual.md.",
        ("sequence",),
    ),
    "continual-report": Help(
        "ife continual-report PARENT_RUN_ID [PARENT_RUN_ID ...] [tracking.uri=URI]",
        "rebuild the continual report of sequence runs from MLflow, intervals over seeds",
    ),
    "sweep": Help(
        "ife sweep BASE [PRESET ...] sweep.grid.KEY=[v1,v2] ... [key=value ...]",
        "one experiment over a grid of keys: a parent run, a child run per trial",
        "resume=SWEEP_RUN_ID skips finished trials and continues the others. Exit code\n"
        "100 + the number of failed trials. docs/sweep.md.\n\n"
        "Example:\n"
        "  ife sweep demo sweep.grid.env.game=[pong,boxing] sweep.grid.seed=[0,1,2]",
        ("sweep",),
    ),
    "report": Help(
        "ife report SWEEP_or_RUN_ID [...] [--by KEY,KEY] [--reps N] [--out DIR] [tracking.uri=URI]",
        "scores per game, IQM / median / mean with 95% bootstrap intervals, profiles",
        "--by     keys that make a row (default: agent.name,model.extractor)\n"
        "--reps   bootstrap resamples (default 2000)\n"
        "--out    folder for CSV, markdown and PNG files\n"
        "docs/report.md.",
    ),
    "ui": Help(
        "ife ui [--port PORT] [--workers N] [tracking.uri=URI]",
        "the MLflow UI of the store, on 127.0.0.1, opened on the runs of experiment 'ife'",
        "Prints the URL of the experiment's runs (model-training view). One server process by\n"
        "default (--workers: MLflow's request workers).",
    ),
    "presets": Help("ife presets", "list the shipped presets per group"),
    "config": Help(
        "ife config show [PRESET | FILE.yaml ...] [key=value ...]",
        "print the resolved config a run would use (as YAML), without running",
        "Only the keys the chosen agent reads; `ife train FILE.yaml` takes the output back.",
    ),
    "bench": Help(
        "ife bench [--quick] [--sections env,learner,replay,explain,actors,sharing,precision] "
        "[--json FILE]",
        "platform vs bare ale-py / bare PyTorch throughput, side by side",
        "docs/benchmarks.md describes the sections and their other options.",
    ),
}

_FOOTER = """\
`ife COMMAND --help` describes a command and lists the config keys it takes.
Exit codes: 0 done, 2 bad input, 1 failed, 128+N stopped by signal N (resumable).
"""


def usage() -> str:
    """``ife --help``: every command with its one-line summary."""
    lines = ["usage: ife COMMAND [ARGS ...]", "", "commands:"]
    width = max(len(name) for name in HELP)
    lines += [f"  {name:<{width}}  {h.summary}" for name, h in HELP.items()]
    return "\n".join([*lines, "", _FOOTER])


def _value_text(value: object) -> str:
    """A default as YAML writes it (``null``, ``true``, ``[a, b]``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, int):
        return f"{value:_}" if abs(value) >= 10_000 else str(value)
    return str(value)


def format_keys(groups: Sequence[str], width: int | None = None) -> str:
    """The config keys of ``groups``: key, type, default, then the schema's doc line."""
    import shutil
    import textwrap

    from ife_platform.config import key_docs

    width = width or max(80, min(shutil.get_terminal_size().columns, 120))
    docs = key_docs()
    out = ["config keys (key=value; type, schema default; presets may change defaults):"]
    for name in groups:
        group = docs[name]
        title = group.title.replace("``", "`")
        out += ["", f"{title} ({name}.*):" if name != "top" else f"{title}:"]
        for k in group.keys:
            head = f"  {k.key}: {k.type} = {_value_text(k.default)}"
            if k.domain:
                head += f"  [{k.domain}]"
            if k.family:
                head += f"  ({k.family.replace('_', '-')} agents only)"
            out.append(head)
            out += textwrap.wrap(k.doc, width, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(out)


def command_help(command: str) -> str:
    """``ife COMMAND --help``: usage, summary, details and the config keys it takes."""
    h = HELP[command]
    parts = [f"usage: {h.usage}", "", h.summary[0].upper() + h.summary[1:] + "."]
    if h.text:
        parts += ["", h.text]
    if h.groups:
        parts += ["", format_keys(h.groups)]
    return "\n".join(parts) + "\n"


def cmd_train(args: list[str]) -> int:
    """``ife train``: compose the config, check the store, train, evaluate, log."""
    from ife_platform import experiment

    result = experiment.train(compose(args))
    if result.trainer.global_rank == 0:
        print(result.summary())
    return 0


def cmd_evaluate(args: list[str]) -> int:
    """``ife evaluate CHECKPOINT [key=value ...]``: raw scores, HNS and a mask video."""
    if not args or "=" in args[0]:
        raise ConfigError("usage: ife evaluate CHECKPOINT_or_RUN_ID [key=value ...]")
    from ife_platform import experiment

    agent = experiment.load_agent(args[0], args[1:])
    run = experiment.evaluate(agent)
    result = run.result
    print(f"{agent.cfg.env.game}: {len(result.returns)} games")
    for i, (ret, length) in enumerate(zip(result.returns, result.lengths, strict=True)):
        print(f"  game {i}: raw score {ret:.1f} in {length} steps")
    print(f"  {result.cap_note()}")
    hns = f"  HNS {result.hns:.3f}" if result.hns is not None else "  (no HNS reference)"
    print(f"  mean {result.mean_return:.1f}{hns}")
    if result.video_path is not None:
        print(f"  mask video: {result.video_path}")
    print(f"logged to MLflow run {run.run_id} in {run.tracking_uri}")
    _print_url(run.tracking_uri, run.run_id)
    return 0


def _print_url(uri: str, run_id: str, folder: object = None) -> None:
    """The end of a command: the mp4s it wrote (in ``folder``) and the run's page in the UI."""
    from pathlib import Path

    from ife_platform.tracking import run_page

    if folder is not None:
        for video in sorted(Path(str(folder)).glob("*.mp4")):
            print(f"video: {video}")
    print(f"open in the UI (ife ui): {run_page(uri, run_id)}")


def cmd_explain(args: list[str]) -> int:
    """``ife explain CHECKPOINT_or_RUN_ID [key=value ...]``: measure what the agent attends."""
    if not args or "=" in args[0]:
        raise ConfigError("usage: ife explain CHECKPOINT_or_RUN_ID [key=value ...]")
    from ife_platform import experiment
    from ife_platform.interpret.explain import format_summary

    run = experiment.explain(experiment.load_agent(args[0], args[1:]))
    print(format_summary(run.explanation.summary, run.explanation.notes))
    print(f"files: {run.folder}\nlogged to MLflow run {run.run_id} in {run.tracking_uri}")
    _print_url(run.tracking_uri, run.run_id, run.folder)
    return 0


def cmd_compare(args: list[str]) -> int:
    """``ife compare REF REF ... [key=value ...]``: agents on the same frames, with intervals."""
    refs = [a for a in args if "=" not in a]
    overrides = [a for a in args if "=" in a]
    if len(refs) < 2 or args.index(refs[-1]) > len(refs) - 1:
        raise ConfigError(
            "usage: ife compare CHECKPOINT_or_RUN_ID CHECKPOINT_or_RUN_ID ... [key=value ...] "
            "(at least two agents, overrides last)"
        )
    from ife_platform import experiment
    from ife_platform.interpret.compare import format_table

    run = experiment.compare(refs, overrides, progress=print)
    print(f"{run.info['game']}: {run.info['frames']} shared frames from {run.info['frames_from']}")
    print(format_table(run.rows))
    for line in run.info["notes"]:
        print(f"note: {line}")
    print(f"files: {run.folder}\nlogged to MLflow run {run.run_id} in {run.tracking_uri}")
    _print_url(run.tracking_uri, run.run_id, run.folder)
    return 0


def cmd_continual(args: list[str]) -> int:
    """``ife continual SEQUENCE [key=value ...]``: train a game sequence, report transfer."""
    from ife_platform.sequences import SequenceRunner, continual_words

    cfg = compose(continual_words(args))

    runner = SequenceRunner(cfg)  # validates the sequence (mode, heads, devices) up front
    runner.run(resume=cfg.resume)
    return 0


def cmd_continual_report(args: list[str]) -> int:
    """``ife continual-report PARENT_RUN [PARENT_RUN ...]``: rebuild the report from MLflow."""
    runs = [a for a in args if "=" not in a]
    if not runs:
        raise ConfigError(
            "usage: ife continual-report PARENT_RUN_ID [PARENT_RUN_ID ...] [key=value]"
        )
    from ife_platform.sequences import format_report, report_runs

    out = report_runs(runs, compose([a for a in args if "=" in a]))
    for run, report in zip(runs, out.reports, strict=True):
        print(f"== sequence run {run}")
        print(format_report(report))
    if out.summary is not None:
        print(f"== over {len(runs)} runs (mean [95% bootstrap interval over seeds])")
        for key, v in out.summary.items():
            print(f"{key:<26} {v['mean']:.4f} [{v['lo']:.4f}, {v['hi']:.4f}] (n={v['n']})")
    print(f"files: {out.folder}")
    return 0


def cmd_sweep(args: list[str]) -> int:
    """``ife sweep BASE [PRESET ...] sweep.grid.KEY=[v1,v2] ... [key=value ...]``."""
    if not args:
        raise ConfigError(
            "usage: ife sweep BASE [PRESET | FILE.yaml ...] sweep.grid.KEY=[v1,v2] ... "
            "[key=value ...]  (or: ife sweep resume=SWEEP_RUN_ID)"
        )
    from ife_platform.sweep import run_sweep

    result = run_sweep(args)
    print(f"sweep run {result.run_id} in {result.tracking_uri}")
    _print_url(result.tracking_uri, result.run_id)
    if result.stopped_by is not None:
        print(f"stopped; continue it with: ife sweep resume={result.run_id}", file=sys.stderr)
    elif result.incomplete and not result.failed:
        print(
            f"{result.incomplete} trial(s) still run in another process; when they end, "
            f"resume with: ife sweep resume={result.run_id}",
            file=sys.stderr,
        )
    elif result.failed:
        print(
            f"{result.failed} trial(s) failed (logs attached to their runs); rerun them with: "
            f"ife sweep resume={result.run_id}",
            file=sys.stderr,
        )
    return result.exit_code


def cmd_report(args: list[str]) -> int:
    """``ife report SWEEP_or_RUN_ID ... [--by KEY,KEY] [--reps N] [--out DIR] [key=value]``."""
    parser = argparse.ArgumentParser(prog="ife report", add_help=False)
    from ife_platform.report import DEFAULT_BY

    parser.add_argument("--by", default=",".join(DEFAULT_BY))
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--out", default=None)
    opts, rest = parser.parse_known_args(args)
    refs = [a for a in rest if "=" not in a]
    if not refs or any(a.startswith("-") for a in refs):
        raise ConfigError(
            "usage: ife report SWEEP_or_RUN_ID [SWEEP_or_RUN_ID ...] [--by KEY,KEY] "
            "[--reps N] [--out DIR] [tracking.uri=URI]"
        )
    if opts.reps < 1:
        raise ConfigError(f"--reps must be >= 1, got {opts.reps}")
    cfg = compose([a for a in rest if "=" in a])
    from ife_platform.report import report

    result = report(
        refs,
        tracking_uri=cfg.tracking.uri,
        output_dir=cfg.tracking.output_dir,
        by=[k.strip() for k in opts.by.split(",") if k.strip()],
        reps=opts.reps,
        out=opts.out,
    )
    print(result.markdown)
    print(f"files: {result.folder}")
    return 0


def cmd_ui(args: list[str]) -> int:
    """``ife ui``: the MLflow UI for the local store, bound to 127.0.0.1."""
    from ife_platform.tracking import open_tracking_store

    parser = argparse.ArgumentParser(prog="ife ui")
    parser.add_argument("--port", type=int, default=5000)
    # one user on the loopback: one server process starts in a fraction of MLflow's 4's time
    parser.add_argument("--workers", type=int, default=1)
    opts, rest = parser.parse_known_args(args)
    if opts.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {opts.workers}")
    uri = None
    for word in rest:
        if word.startswith("tracking.uri="):
            uri = word.split("=", 1)[1]
        else:
            raise ConfigError(f"ife ui takes --port, --workers and tracking.uri=URI, not '{word}'")
    uri = open_tracking_store(uri)  # checked (never another application's database)
    url = _experiment_url(uri, opts.port)
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(opts.port),
        "--workers",
        str(opts.workers),
    ]
    print(f"MLflow UI for {uri} at http://127.0.0.1:{opts.port}\nruns: {url}", flush=True)
    os.execv(sys.executable, cmd)
    return 0  # pragma: no cover


def _experiment_url(uri: str, port: int) -> str:
    """The runs table of the platform's experiment in ``ife ui`` (model-training view)."""
    import mlflow

    from ife_platform.tracking import ensure_experiment, run_url

    name = compose([]).tracking.experiment
    return run_url(uri, ensure_experiment(mlflow.MlflowClient(uri), name), port=port)


def cmd_config(args: list[str]) -> int:
    """``ife config show [PRESET ...] [key=value ...]``: the resolved config, without running.

    Prints the keys the chosen agent reads (other families' keys are left out), with every
    preset, file and override applied and validated, as YAML that ``ife train FILE.yaml``
    takes back.
    """
    if not args or args[0] != "show":
        raise ConfigError("usage: ife config show [PRESET | FILE.yaml ...] [key=value ...]")
    from omegaconf import OmegaConf

    from ife_platform.config import agent_spec, family_view, to_container

    cfg = compose(args[1:])
    family = agent_spec(cfg.agent.name).family
    tree = {"presets": {"agent": cfg.agent.name}, **family_view(to_container(cfg), family)}
    print(f"# agent={cfg.agent.name} ({family} family); keys of other families left out")
    print(OmegaConf.to_yaml(OmegaConf.create(tree)), end="")
    return 0


def cmd_presets(args: list[str]) -> int:
    """``ife presets``: list the shipped presets per group."""
    from ife_platform.config import GROUPS, available_presets

    for group in (*GROUPS, "experiment", "sweep"):
        print(f"{group}: {', '.join(available_presets(group))}")
    return 0


def cmd_bench(args: list[str]) -> int:
    """``ife bench``: platform vs framework-free throughput (see docs/benchmarks.md)."""
    from ife_platform import bench

    return bench.main(args)


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "ui": cmd_ui,
    "presets": cmd_presets,
    "config": cmd_config,
    "bench": cmd_bench,
    "explain": cmd_explain,
    "compare": cmd_compare,
    "continual": cmd_continual,
    "continual-report": cmd_continual_report,
    "sweep": cmd_sweep,
    "report": cmd_report,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ife`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else EXIT_BAD_INPUT
    if argv[0] == "help":  # ife help [COMMAND]
        argv = [*argv[1:2], "--help"] if len(argv) > 1 else ["--help"]
        if argv[0] == "--help":
            print(usage())
            return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        from ife_platform.config import choices_msg

        print(f"error: {choices_msg('command', command, list(COMMANDS))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if "--help" in rest or "-h" in rest:
        print(command_help(command), end="")
        return 0
    from ife_platform.checkpoint import CheckpointError
    from ife_platform.runs import NonFiniteError, RunInterrupted
    from ife_platform.tracking import TrackingConfigError, TrackingUnreachableError

    try:
        return COMMANDS[command](rest)
    except (ConfigError, CheckpointError, TrackingConfigError, TrackingUnreachableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RunInterrupted as err:
        print(f"stopped: {err}", file=sys.stderr)
        return err.exit_code
    except NonFiniteError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())

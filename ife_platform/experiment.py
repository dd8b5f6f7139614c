"""Build and run experiments from a validated config: the one assembler of the platform.

``ife train`` and ``ife evaluate``, continual sequences (:mod:`ife_platform.sequences`) and the
benchmark all assemble runs here; the CLI only parses words, calls these functions and prints.
From Python (docs/api.md)::

    from ife_platform import experiment
    from ife_platform.config import compose

    result = experiment.train(compose(["demo", "env.game=pong"]))
    agent = experiment.load_agent(result.run_id)
    scores = experiment.evaluate(agent, episodes=5).result

What varies by agent (the Lightning task, the network) comes from the agent registry
(:mod:`ife_platform.registry`); nothing here branches on an agent's name.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ife_platform.agents import LoadedAgent, load_agent, log_run
from ife_platform.config import ConfigError, agent_spec, family_view, to_container, to_yaml
from ife_platform.evaluation import EvalResult
from ife_platform.tracking import run_page

__all__ = [
    "CompareRun",
    "EvaluationRun",
    "ExplainRun",
    "LoadedAgent",
    "RunResult",
    "compare",
    "evaluate",
    "explain",
    "load_agent",
    "resolve_resume",
    "run_params",
    "total_epochs",
    "train",
    "trainer_kwargs",
]


@dataclass
class RunResult:
    """What :func:`train` leaves behind.

    Attributes:
        run_id: the MLflow run (the resumed one for ``resume=``).
        tracking_uri: the store it is in.
        checkpoint_dir: where ``last.ckpt`` is (also logged as an artifact).
        evaluation: the final evaluation (None on ranks other than 0).
        task: the trained LightningModule (its networks, counters and replay).
        trainer: the Lightning Trainer.
    """

    run_id: str
    tracking_uri: str
    checkpoint_dir: Path
    evaluation: EvalResult | None
    task: Any
    trainer: Any

    def summary(self) -> str:
        """Two or three lines for a terminal: evaluation, run and checkpoint folder."""
        lines = []
        if self.evaluation is not None:
            r = self.evaluation
            hns = f", HNS {r.hns:.3f}" if r.hns is not None else ""
            lines.append(
                f"evaluation: {len(r.returns)} games, mean raw score {r.mean_return:.1f}{hns}"
                f" ({r.cap_note()})"
            )
        lines.append(f"MLflow run {self.run_id} in {self.tracking_uri}")
        lines.append(f"checkpoints: {self.checkpoint_dir}")
        if self.evaluation is not None and self.evaluation.video_path is not None:
            lines.append(f"mask video: {self.evaluation.video_path}")
        lines.append(f"open in the UI (ife ui): {run_page(self.tracking_uri, self.run_id)}")
        return "\n".join(lines)


def process_rank() -> int:
    """Global rank of this process as set by Lightning's launcher (0 outside DDP)."""
    for var in ("RANK", "GLOBAL_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    node = int(os.environ.get("NODE_RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return local if node == 0 else -1


def total_epochs(cfg: DictConfig) -> int:
    """Lightning epochs for the budget (an epoch = ``trainer.steps_per_epoch`` agent steps)."""
    return math.ceil(cfg.train.total_steps / cfg.trainer.steps_per_epoch)


def resolve_resume(cfg: DictConfig, uri: str) -> tuple[str | None, str | None]:
    """(checkpoint path, run id) for ``resume=``: a checkpoint file or an MLflow run id.

    Raises:
        CheckpointError: no such file or run, or a corrupt checkpoint.
        ConfigError: the checkpoint was trained on another game, extractor or agent.
    """
    from ife_platform.checkpoint import load_checkpoint, open_run_checkpoint

    if not cfg.resume:
        return None, None
    path = Path(cfg.resume)
    if path.suffix == ".ckpt" or path.exists():
        ckpt_path, ckpt = path, load_checkpoint(path)
    else:
        ckpt_path, ckpt = open_run_checkpoint(cfg.resume, uri, cfg.tracking.output_dir)
    saved = ckpt["ife"]["config"]
    for group, key in (("env", "game"), ("model", "extractor"), ("agent", "name")):
        was, now = saved[group][key], cfg[group][key]
        if was != now:
            raise ConfigError(
                f"resume: the checkpoint was trained with {group}.{key}={was}, "
                f"but this config says {now}"
            )
    return str(ckpt_path), ckpt["ife"].get("run_id")


def resolve_accelerator(accelerator: str) -> str:
    """``trainer.accelerator`` with ``auto`` resolved: ``gpu`` with CUDA, else ``cpu``."""
    import torch

    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return accelerator


def check_compile(cfg: DictConfig) -> None:
    """Refuse ``trainer.compile=true`` where ``torch.compile`` cannot run, before any work.

    Raises:
        ConfigError: no C++ compiler (CPU) or no Triton (GPU); see
            :func:`ife_platform.compiled.compile_unavailable`.
    """
    from ife_platform.compiled import compile_unavailable

    if not cfg.trainer.compile:
        return
    reason = compile_unavailable(resolve_accelerator(cfg.trainer.accelerator))
    if reason is not None:
        raise ConfigError(f"trainer.compile=true: {reason}")


def trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """The Lightning Trainer's device arguments, with ``auto`` resolved for this machine.

    ``trainer.precision`` goes through :func:`~ife_platform.precision.resolve_precision`: a
    CPU runs ``bf16-mixed`` only with bfloat16 units and never ``16-mixed`` (fp32 instead).
    DDP on CPU uses gloo.
    """
    from ife_platform.precision import resolve_precision

    t = cfg.trainer
    accelerator = resolve_accelerator(t.accelerator)
    precision = resolve_precision(str(t.precision), accelerator)
    strategy = t.strategy
    if strategy == "ddp" and accelerator == "cpu":
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(process_group_backend="gloo")
    return {
        "accelerator": accelerator,
        "devices": t.devices,
        "num_nodes": t.num_nodes,
        "strategy": strategy,
        "precision": precision,
    }


def run_params(cfg: DictConfig, uri: str, *, in_sequence: bool = False) -> dict[str, Any]:
    """The config as a run's MLflow params: only what the run uses, with resolved values.

    Keys of other agent families are left out (:func:`~ife_platform.config.family_view`),
    so are ``explain.*`` (read by ``ife explain``, logged there) and ``sequence.*`` outside a
    continual sequence. The tracking store, accelerator, devices and precision are the
    values the run actually got (``auto`` resolved). The full resolved config stays in the
    run's ``config.yaml`` artifact.
    """
    tree = family_view(to_container(cfg), agent_spec(cfg.agent.name).family)
    tree.pop("explain", None)
    tree.pop("sweep", None)  # (a sweep's trial gets its axis values as ordinary keys)
    if not in_sequence:
        tree.pop("sequence", None)
    tree["tracking"]["uri"] = uri
    device = trainer_kwargs(cfg)
    tree["trainer"].update(
        accelerator=device["accelerator"],
        devices=device["devices"],
        precision=device["precision"],
    )
    return tree


#: Tags that mark a sweep's trial run (``ife_platform.sweep``): they name one run per trial.
SWEEP_TAG_PREFIX = "ife.sweep."


def _open_run(
    cfg: DictConfig,
    uri: str,
    resumed_run: str | None,
    ckpt_path: str | None,
    parent_run_id: str | None,
    run_tags: dict[str, str] | None,
) -> tuple[str, str | None]:
    """Rank 0: create (or reopen) the MLflow run and log the config.

    Returns the run id and, for a resumed run, the status it had before (restored if the
    resume fails before training starts).
    """
    import mlflow

    from ife_platform.checkpoint import CheckpointError
    from ife_platform.runs import PROCESS_TAG, ProcessId, current_process, is_alive
    from ife_platform.tracking import (
        ensure_experiment,
        log_config,
        log_environment,
        retry_if_locked,
    )

    client = mlflow.MlflowClient(uri)
    previous = None
    if resumed_run:
        run_id = resumed_run
        run = client.get_run(run_id)
        previous = run.info.status
        owner = ProcessId.parse(run.data.tags.get(PROCESS_TAG, ""))
        if previous == "RUNNING" and owner is not None and is_alive(owner):
            raise CheckpointError(
                f"resume: run {run_id} is being trained right now by process {owner.pid} on "
                "this machine; stop it first (SIGTERM checkpoints it)"
            )
        retry_if_locked(lambda: client.update_run(run_id, status="RUNNING"))
    else:
        exp_id = ensure_experiment(client, cfg.tracking.experiment)
        own = dict(cfg.tracking.tags)
        if parent_run_id:  # a sequence's task run: the sweep's trial is the sequence run
            own = {k: v for k, v in own.items() if not k.startswith(SWEEP_TAG_PREFIX)}
        tags = {**own, **(run_tags or {})}
        parent = parent_run_id or cfg.tracking.parent_run
        if parent:
            tags["mlflow.parentRunId"] = parent
        run = retry_if_locked(
            lambda: client.create_run(exp_id, run_name=cfg.tracking.run_name, tags=tags)
        )
        run_id = run.info.run_id
    retry_if_locked(lambda: client.set_tag(run_id, PROCESS_TAG, current_process().tag()))
    out_dir = Path(cfg.tracking.output_dir).resolve() / run_id
    if resumed_run:  # params are immutable in MLflow: keep the resumed config as a file
        client.log_text(run_id, to_yaml(cfg), f"config_resume_{Path(str(ckpt_path)).stem}.yaml")
    else:
        params = run_params(cfg, uri, in_sequence=parent_run_id is not None)
        log_config(to_yaml(cfg), params, run_id=run_id, client=client)
    log_environment(run_id=run_id, client=client)
    retry_if_locked(
        lambda: client.set_tag(run_id, "ife.checkpoint_dir", str(out_dir / "checkpoints"))
    )
    return run_id, previous


def _close_run(
    uri: str,
    run_id: str,
    error: BaseException | None,
    progressed: bool,
    previous: str | None,
    stopped: bool,
) -> None:
    """Rank 0: the run's final status, honest about how it ended.

    FINISHED when training ran to its budget; KILLED when a signal stopped it (it
    checkpointed and can be resumed); the status it had before when a resume failed before
    training started (a finished run stays FINISHED); FAILED otherwise.
    """
    import mlflow

    from ife_platform.runs import NonFiniteError

    client = mlflow.MlflowClient(uri)
    if error is None:
        client.set_terminated(run_id, status="FINISHED")
        return
    if stopped:
        client.set_tag(run_id, "ife.end", f"stopped by a signal ({type(error).__name__})")
        client.set_terminated(run_id, status="KILLED")
        return
    message = f"{type(error).__name__}: {error}"[:4000]
    if previous is not None and not progressed:
        client.set_tag(run_id, "ife.failed_resume", message)
        client.set_terminated(run_id, status=previous)
        return
    if isinstance(error, NonFiniteError):
        client.set_tag(run_id, "ife.nonfinite", ",".join(error.terms))
    client.set_tag(run_id, "ife.end", message)
    client.set_terminated(run_id, status="FAILED")


def _is_sigterm(error: BaseException) -> bool:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    return isinstance(error, SIGTERMException)


def train(
    cfg: DictConfig,
    callbacks: Sequence[Any] = (),
    *,
    parent_run_id: str | None = None,
    run_tags: dict[str, str] | None = None,
    setup: Callable[[Any], None] | None = None,
) -> RunResult:
    """Train the agent a validated config describes, evaluate it, log everything to MLflow.

    Everything that can be checked cheaply (config, tracking store, resume checkpoint) is
    checked before any env or network is built. The Lightning task is the registry's
    (``agent_spec(cfg.agent.name).task_class()``). Checkpoints, stops and run statuses:
    :mod:`ife_platform.runs`, :class:`~ife_platform.callbacks.checkpoint.RunCheckpoints`.

    Args:
        cfg: the validated config (:func:`ife_platform.config.compose`).
        callbacks: more (observe-only) Lightning callbacks.
        parent_run_id: create the run nested under this MLflow run (continual sequences;
            without it, ``tracking.parent_run`` nests it, as ``ife sweep`` does).
        run_tags: tags of a new run (with ``tracking.tags``).
        setup: called with the task after it is built and before fitting (continual
            sequences load the previous task's weights and apply the transfer mode here).

    Raises:
        ConfigError, CheckpointError, TrackingUnreachableError: before any work starts.
        RunInterrupted: a signal (SIGTERM, SIGUSR1, SIGINT) stopped the run; it checkpointed.
        NonFiniteError: a non-finite update with ``train.nan_policy=stop``.
    """
    from ife_platform.runs import RunInterrupted, SignalStop, SignalWatch
    from ife_platform.tracking import open_tracking_store, resolve_tracking_uri, retry_if_locked

    rank = process_rank()
    # rank 0 (or a single process) opens the store: checks it and creates an SQLite schema
    uri = (
        open_tracking_store(cfg.tracking.uri)
        if rank <= 0
        else resolve_tracking_uri(cfg.tracking.uri)
    )
    ckpt_path, resumed_run = resolve_resume(cfg, uri)
    check_compile(cfg)
    Task = agent_spec(cfg.agent.name).task_class()

    import mlflow

    from ife_platform.runs import reap_dead_runs

    # Rank 0 owns the MLflow run; the ranks Lightning launches find its id in the environment.
    run_id = os.environ.get("IFE_RUN_ID") if rank != 0 else None
    previous, opened = None, run_id is None
    if run_id is None:
        retry_if_locked(lambda: reap_dead_runs(mlflow.MlflowClient(uri)))
        run_id, previous = _open_run(cfg, uri, resumed_run, ckpt_path, parent_run_id, run_tags)
        os.environ["IFE_RUN_ID"] = run_id
    watch = SignalWatch()
    parts: dict[str, Any] = {}
    try:
        with watch.installed():
            result = _fit(cfg, uri, run_id, ckpt_path, resumed_run, callbacks, setup, Task, parts)
    except BaseException as err:
        trainer, checkpoints = parts.get("trainer"), parts.get("checkpoints")
        signum = err.signum if isinstance(err, SignalStop) else watch.signum
        # A stop by a signal: SIGTERM/SIGUSR1 (Lightning's SIGTERMException), Ctrl-C (Lightning
        # turns KeyboardInterrupt into sys.exit(1) after its callbacks), or a signal outside fit.
        stopped = signum is not None and (
            isinstance(err, SignalStop | KeyboardInterrupt | SystemExit) or _is_sigterm(err)
        )
        if trainer.global_rank == 0 if trainer is not None else opened:
            progressed = checkpoints is not None and checkpoints.progressed(parts.get("task"))
            error: BaseException = err
            retry_if_locked(lambda: _close_run(uri, run_id, error, progressed, previous, stopped))
        if stopped:
            assert signum is not None
            raise RunInterrupted(run_id, signum) from err
        raise
    if result.trainer.global_rank == 0:
        retry_if_locked(lambda: _close_run(uri, run_id, None, True, previous, False))
    return result


def _fit(
    cfg: DictConfig,
    uri: str,
    run_id: str,
    ckpt_path: str | None,
    resumed_run: str | None,
    callbacks: Sequence[Any],
    setup: Callable[[Any], None] | None,
    Task: Any,
    parts: dict[str, Any],
) -> RunResult:
    """Build the logger, callbacks, trainer and task, and fit (``parts`` gets them as built)."""
    import lightning as L
    import mlflow

    from ife_platform.callbacks.checkpoint import AtomicCheckpointIO, RunCheckpoints
    from ife_platform.callbacks.evaluation import (
        DDPWeightCheck,
        FinalEvaluation,
        PeriodicEvaluation,
        evaluation_points,
        video_points,
    )
    from ife_platform.callbacks.resumed_logger import ResumedMLFlowLogger
    from ife_platform.envs import eval_env_kwargs
    from ife_platform.runs import logged_through

    out_dir = Path(cfg.tracking.output_dir).resolve() / run_id
    # A resumed run replays the steps between its checkpoint and where it died: those were
    # logged already, and are not logged twice.
    logged = logged_through(mlflow.MlflowClient(uri), run_id) if resumed_run else {}
    logger = ResumedMLFlowLogger(
        logged,
        experiment_name=cfg.tracking.experiment,
        tracking_uri=uri,
        run_id=run_id,
        log_model=False,
    )
    final = FinalEvaluation(
        episodes=cfg.tracking.eval_episodes,
        epsilon=cfg.agent.eval_epsilon,
        max_steps=cfg.tracking.eval_max_steps,
        video=cfg.tracking.video,
        video_max_steps=cfg.tracking.video_max_steps,
        out_dir=out_dir,
        env_kwargs=eval_env_kwargs(cfg),
        seed=cfg.seed + 12345,
        mask_scale=cfg.tracking.mask_scale,
        video_upscale=cfg.tracking.video_upscale,
        progress=cfg.trainer.progress_bar,
    )
    t = cfg.tracking
    points = evaluation_points(t.eval_every, cfg.train.total_steps, t.eval_points)
    periodic = PeriodicEvaluation(
        final, points, t.eval_every_episodes, video_points(points, t.eval_videos)
    )
    checkpoints = RunCheckpoints(
        out_dir / "checkpoints",
        every_steps=cfg.trainer.checkpoint_every,
        keep=cfg.trainer.keep_checkpoints,
    )
    parts["checkpoints"] = checkpoints
    # The periodic evaluation runs before the checkpoint of the same batch end, so a checkpoint
    # holds whether that evaluation ended or a stop abandoned it (resumed runs replay it).
    all_callbacks = [periodic, checkpoints, DDPWeightCheck(), final, *callbacks]
    if agent_spec(cfg.agent.name).family == "rainbow":
        # (actor-critic tasks size their own: one thread per actor, the rest to the learner)
        from ife_platform.callbacks.threads import ThreadShare
        from ife_platform.threads import MachineShare

        all_callbacks.append(ThreadShare(MachineShare(cfg.trainer.threads)))
    if cfg.trainer.progress_bar:  # agent steps against the budget (not Lightning's batches)
        from ife_platform.callbacks.progress import StepProgress

        name = f" ({cfg.tracking.run_name})" if cfg.tracking.run_name else ""
        all_callbacks.append(StepProgress(f"train {cfg.env.game}{name}"))
    trainer = L.Trainer(
        max_epochs=total_epochs(cfg),
        logger=logger,
        callbacks=all_callbacks,
        log_every_n_steps=1,
        enable_progress_bar=False,  # StepProgress instead
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        default_root_dir=str(out_dir),
        plugins=[AtomicCheckpointIO()],
        **trainer_kwargs(cfg),
    )
    parts["trainer"] = trainer
    task = Task(cfg)
    task.run_id = run_id
    task.checkpoint_dir = out_dir / "checkpoints"
    parts["task"] = task
    if setup is not None:
        setup(task)
    trainer.fit(task, ckpt_path=ckpt_path, weights_only=True)
    return RunResult(
        run_id=run_id,
        tracking_uri=uri,
        checkpoint_dir=out_dir / "checkpoints",
        evaluation=final.result if trainer.global_rank == 0 else None,
        task=task,
        trainer=trainer,
    )


@dataclass
class EvaluationRun:
    """What :func:`evaluate` measured and where it logged it.

    Attributes:
        result: raw scores, lengths, HNS, mask entropy and the video path.
        run_id: the MLflow run the metrics went to (None with ``log=False``).
        tracking_uri: the store.
    """

    result: EvalResult
    run_id: str | None
    tracking_uri: str


def evaluate(
    agent: LoadedAgent | str,
    overrides: Sequence[str] = (),
    *,
    episodes: int | None = None,
    video: bool | None = None,
    log: bool = True,
) -> EvaluationRun:
    """Play whole evaluation games with a trained agent (noise off, ``agent.eval_epsilon``).

    Args:
        agent: a loaded agent, or a checkpoint path or training run id to load.
        overrides: ``key=value`` strings over the checkpoint's config (when loading).
        episodes: games to play (default ``tracking.eval_episodes``).
        video: record the first game as a mask video (default ``tracking.video``).
        log: log the scores (and video) to the agent's training run, or to a new
            ``evaluate`` run when the checkpoint has none in the store.

    Raises:
        CheckpointError, ConfigError, TrackingUnreachableError: before any game is played.
    """
    from ife_platform.envs import eval_env_kwargs
    from ife_platform.evaluation import evaluate as play_games
    from ife_platform.tracking import open_tracking_store, resolve_tracking_uri

    if isinstance(agent, str):
        agent = load_agent(agent, overrides)
    cfg = agent.cfg
    uri = open_tracking_store(cfg.tracking.uri) if log else resolve_tracking_uri(cfg.tracking.uri)
    record = cfg.tracking.video if video is None else video
    out_dir = Path(cfg.tracking.output_dir).resolve() / (agent.run_id or "evaluate")
    games = cfg.tracking.eval_episodes if episodes is None else episodes
    shown = _game_progress(f"evaluate {cfg.env.game}", games, cfg, cfg.tracking.eval_max_steps)
    result = play_games(
        agent.network,
        cfg.env.game,
        episodes=games,
        epsilon=cfg.agent.eval_epsilon,
        seed=cfg.seed + 54321,
        max_steps=cfg.tracking.eval_max_steps,
        video_path=out_dir / "videos" / "evaluate_mask.mp4" if record else None,
        video_max_steps=cfg.tracking.video_max_steps,
        env_kwargs=eval_env_kwargs(cfg),
        video_scale=cfg.tracking.mask_scale,
        video_upscale=cfg.tracking.video_upscale,
        progress=shown,
    )
    shown.close()
    if not log:
        return EvaluationRun(result, None, uri)
    import mlflow

    run_id = log_run(uri, agent, cfg, "evaluate")
    client = mlflow.MlflowClient(uri)
    for key, value in result.metrics("evaluate/").items():
        client.log_metric(run_id, key, value, step=agent.env_steps)
    if result.video_path is not None:
        client.log_artifact(run_id, str(result.video_path), "videos")
    return EvaluationRun(result, run_id, uri)


def _game_progress(desc: str, episodes: int, cfg: DictConfig, max_steps: int | None) -> Any:
    """A progress display of evaluation games (agent steps up to each game's cap)."""
    from ife_platform.envs import cap_steps
    from ife_platform.progress import GameProgress

    cap = cap_steps(cfg.env.max_episode_frames, cfg.env.frame_skip)
    return GameProgress(desc, episodes, min(cap, max_steps) if max_steps else cap)


def _numeric(summary: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a summary (what MLflow metrics can hold)."""
    return {
        k: float(v)
        for k, v in summary.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


@dataclass
class ExplainRun:
    """What :func:`explain` measured and where it wrote it.

    Attributes:
        explanation: every metric (``summary``), the per-frame rows, curves and maps.
        run_id: the MLflow run the outputs went to (the agent's training run if it exists).
        folder: the local folder of the video, tables, plots and ``summary.json``.
        tracking_uri: the store.
    """

    explanation: Any
    run_id: str
    folder: Path
    tracking_uri: str


def explain(agent: LoadedAgent | str, overrides: Sequence[str] = ()) -> ExplainRun:
    """``ife explain``: play evaluation games and measure what the agent attends.

    Mask-object alignment, leakage, faithfulness, the sanity check and (when asked or without
    attention) saliency (``docs/interpretability.md``), written to a folder and logged to the
    agent's run as artifacts (``explain/<stamp>``, counts and timings in its ``summary.json``)
    and ``explain/*`` metrics (the measurements).

    Raises:
        CheckpointError, ConfigError, TrackingUnreachableError: before any game is played.
    """
    import time

    import mlflow

    from ife_platform.interpret import explain as E
    from ife_platform.tracking import open_tracking_store

    if isinstance(agent, str):
        agent = load_agent(agent, overrides)
    cfg, x = agent.cfg, agent.cfg.explain
    uri = open_tracking_store(cfg.tracking.uri)
    shown = _game_progress(f"explain {cfg.env.game}", x.episodes, cfg, x.max_steps)
    rec, note = E.record_agent(agent, video=x.video, progress=shown)
    shown.close()
    print(f"explain {cfg.env.game}: analysing {len(rec):,} frames", file=sys.stderr, flush=True)
    explanation = E.analyse(agent.network, rec, x, seed=cfg.seed, objects_note=note)
    run_id = log_run(uri, agent, cfg, "explain")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = Path(cfg.tracking.output_dir).resolve() / run_id / f"explain-{stamp}"
    paths = E.write_outputs(rec, explanation, x, folder, run=run_id[:12])
    client = mlflow.MlflowClient(uri)
    for path in paths:
        client.log_artifact(run_id, str(path), f"explain/{stamp}")
    # measurements only: frame counts, timings and other counts stay in summary.json
    for key, value in E.metric_values(explanation.summary).items():
        client.log_metric(run_id, f"explain/{key}", value, step=agent.env_steps)
    return ExplainRun(explanation, run_id, folder, uri)


def _frame_stack(agent: LoadedAgent) -> int:
    """Stacked frames the agent's extractor reads."""
    extractor: Any = getattr(agent.network, "extractor")  # noqa: B009 (nn.Module attribute)
    return int(extractor.in_channels)


@dataclass
class CompareRun:
    """What :func:`compare` measured: one row per method (seeds pooled, with intervals)."""

    rows: list[dict[str, Any]]
    info: dict[str, Any]
    run_id: str
    folder: Path
    tracking_uri: str


def compare(
    refs: Sequence[str],
    overrides: Sequence[str] = (),
    *,
    progress: Callable[[str], None] | None = None,
) -> CompareRun:
    """``ife compare``: several agents measured on the same recorded frames.

    The first agent plays the games; every agent is then read on those frames (with its
    own recorded state when recurrent), and methods are grouped over seeds with 95 %
    bootstrap intervals. A new ``compare-<game>`` run holds the table and plots.

    Args:
        refs: checkpoint paths or training run ids (two or more, one game and action set).
        overrides: ``key=value`` strings applied to every agent's config.
        progress: called with a line per measured agent.

    Raises:
        ConfigError: fewer than two agents, different games or action sets, or a first agent
            with a shallower frame stack than another.
    """
    import re

    import mlflow

    from ife_platform.interpret import compare as C
    from ife_platform.interpret import explain as E
    from ife_platform.tracking import ensure_experiment, open_tracking_store

    if len(refs) < 2:
        raise ConfigError("ife compare needs at least two agents")
    agents = [load_agent(ref, [*overrides, "explain.video=false"]) for ref in refs]
    first = agents[0]
    cfg = first.cfg
    stack = _frame_stack(first)
    for agent in agents[1:]:
        if agent.cfg.env.game != cfg.env.game or agent.network.num_actions != (
            first.network.num_actions
        ):
            raise ConfigError(
                f"ife compare needs agents of one game and action set: {first.label} plays "
                f"{cfg.env.game}, {agent.label} plays {agent.cfg.env.game}"
            )
        if _frame_stack(agent) > stack:
            raise ConfigError(
                f"{agent.label} reads {_frame_stack(agent)} stacked frames but "
                f"{first.label}, whose games are recorded, gives {stack}: list an agent with "
                "the deepest frame stack first"
            )
    uri = open_tracking_store(cfg.tracking.uri)
    rec, note = E.record_agent(first, video=False)
    per_agent = []
    for agent in agents:
        own = E.rerecord(agent.network, rec)
        exp = E.analyse(agent.network, own, agent.cfg.explain, seed=cfg.seed, objects_note=note)
        per_agent.append((agent.label, C.method_summaries(agent.label, agent.method, exp)))
        if progress is not None:
            progress(f"measured {agent.label}")
    rows = [m.row() for m in C.group_methods(per_agent)]
    info = {
        "game": cfg.env.game,
        "frames": len(rec),
        "frames_from": first.label,
        "agents": [a.label for a in agents],
        "checkpoints": [str(a.checkpoint) for a in agents],
        "interval": "95% percentile bootstrap of the mean over seeds (n/a with one seed)",
        "notes": [note] if note else [],
    }
    client = mlflow.MlflowClient(uri)
    exp_id = ensure_experiment(client, cfg.tracking.experiment)
    run_id = client.create_run(
        exp_id,
        run_name=f"compare-{cfg.env.game}",
        tags={"ife.compare.agents": ",".join(a.run_id or str(a.checkpoint) for a in agents)},
    ).info.run_id
    folder = Path(cfg.tracking.output_dir).resolve() / run_id / "compare"
    for path in C.write_report(rows, info, folder):
        client.log_artifact(run_id, str(path), "compare")
    for row in rows:
        method = re.sub(r"[^0-9A-Za-z_]+", "_", row["method"]).strip("_")
        for key, value in _numeric(row).items():
            if key != "seeds":  # a count: it stays in compare.json / compare.csv
                client.log_metric(run_id, f"compare/{method}/{key}", value)
    client.set_terminated(run_id)
    return CompareRun(rows, info, run_id, folder, uri)

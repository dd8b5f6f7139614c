"""Continual-learning game sequences: train one network on games in turn, measure transfer.

The runner is agent-agnostic: everything agent-specific sits behind :class:`ContinualAgent`
(build the network, train one task, evaluate). :class:`RegistryContinual` implements it for
every registered agent from its registry entry (network builder, Lightning task, whether it
has a replay buffer and a target network); a test or a new agent may pass its own.

One sequence run, in order:

1. row 0 of R: every game evaluated with the freshly built network;
2. for each task k (game g_k): a child MLflow run trains on g_k for ``steps_per_task`` agent
   steps, starting from the previous task's weights with the transfer mode applied
   (:func:`~ife_platform.continual.transfer.apply_task_switch`: groups reset / frozen), a
   fresh optimiser over the trainable parameters and the target network synced to the online
   one; the replay buffer is kept or reset (``sequence.replay``). Every ``eval_every`` steps
   all games are evaluated (learning curves, forward transfer); at the end, row k + 1 of R and
   the mask-object alignment on every game with object boxes; a snapshot of the network;
3. optionally (``sequence.reference``) every game trained alone from scratch with the same
   budget, the reference of forward transfer;
4. the report (metrics.md): R raw and normalised, average performance, forgetting (CW and
   CORA's isolated form), forward transfer (CW, needs the reference) and zero-shot transfer
   (CORA), alignment per task; JSON + heatmaps logged to the parent run.

``progress.json`` (local and logged to the parent run after every task) holds everything the
report needs, so ``resume=PARENT_RUN_ID`` skips finished tasks and ``ife continual-report``
rebuilds the report from logged data alone.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ife_platform.callbacks.continual import SequenceEvaluation
from ife_platform.config import ConfigError, agent_spec, choices_msg
from ife_platform.continual import metrics as CM
from ife_platform.continual import transfer as T
from ife_platform.envs import eval_env_kwargs
from ife_platform.evaluation import EvalResult, evaluate_parallel
from ife_platform.registry import agent_names, get_agent
from ife_platform.seeding import TORCH_SEED_BITS, fold_seed

PROGRESS = "progress.json"


# -- the agent interface ----------------------------------------------------------------------


@dataclass
class TaskOutcome:
    """What training one task leaves behind."""

    network: nn.Module
    run_id: str
    replay: Any = None


class ContinualAgent(Protocol):
    """What the sequence runner needs from an agent (Rainbow here; A3C-LSTM later)."""

    def build_network(self, cfg: DictConfig, num_actions: int) -> nn.Module:
        """The agent's network, initialised from ``cfg.seed``."""

    def train_task(
        self,
        cfg: DictConfig,
        *,
        prepare: Callable[[nn.Module, nn.Module | None], None],
        replay: Any,
        callbacks: list[Any],
        parent_run_id: str,
        tags: dict[str, str],
    ) -> TaskOutcome:
        """Train on ``cfg.env.game`` for ``cfg.train.total_steps``.

        ``prepare(online, target)`` is called on the freshly built networks before training
        (load weights, swap heads, apply the transfer mode, sync the target).
        """

    def evaluate(
        self,
        network: nn.Module,
        game: str,
        cfg: DictConfig,
        should_stop: Callable[[], bool] | None = None,
    ) -> EvalResult:
        """Raw scores of ``cfg.sequence.eval_episodes`` games played in parallel envs.

        ``should_stop`` (asked before every step) abandons it with ``EvaluationStopped``.
        """


class RegistryContinual:
    """:class:`ContinualAgent` for any registered agent (:mod:`ife_platform.registry`).

    Training goes through :func:`ife_platform.experiment.train` with a ``setup`` hook.
    Off-policy agents (Rainbow) also carry a target network and a replay buffer across the
    switch; on-policy ones (A3C-LSTM, S3TA) have neither. Transfer groups come from the
    network's layout (:func:`~ife_platform.continual.transfer.network_layout`). Evaluation
    is the shared parallel evaluation with the network's acting policy.
    """

    def build_network(self, cfg: DictConfig, num_actions: int) -> nn.Module:  # noqa: D102
        # as the tasks do: task 0 starts from this network
        torch.manual_seed(fold_seed(cfg.seed, TORCH_SEED_BITS))
        return agent_spec(cfg.agent.name).build_network(cfg, num_actions)

    def train_task(  # noqa: D102
        self,
        cfg: DictConfig,
        *,
        prepare: Callable[[nn.Module, nn.Module | None], None],
        replay: Any,
        callbacks: list[Any],
        parent_run_id: str,
        tags: dict[str, str],
    ) -> TaskOutcome:
        from ife_platform.experiment import train

        result = train(
            cfg,
            callbacks,
            parent_run_id=parent_run_id,
            run_tags=tags,
            setup=lambda task: self.setup_task(task, prepare, replay),
        )
        task = result.task
        return TaskOutcome(task.online, result.run_id, getattr(task, "replay", None))

    @staticmethod
    def setup_task(
        task: Any, prepare: Callable[[nn.Module, nn.Module | None], None], replay: Any
    ) -> None:
        """Before fitting: the previous task's weights, the transfer mode, a kept buffer.

        On-policy tasks have no target network (``target`` None) and no replay.
        """
        prepare(task.online, getattr(task, "target", None))
        if replay is not None:
            task.replay = replay

    def evaluate(
        self,
        network: nn.Module,
        game: str,
        cfg: DictConfig,
        should_stop: Callable[[], bool] | None = None,
    ) -> EvalResult:
        """``sequence.eval_episodes`` games in parallel, capped at ``sequence.eval_max_steps``.

        The step cap comes on top of the protocol's episode cap (``env.max_episode_frames``);
        the result marks the games either cap ended (:func:`eval_cap`, the report's note).
        ``should_stop`` abandons it (``EvaluationStopped``; a training task's stop signal).
        """
        q = cfg.sequence
        return evaluate_parallel(
            network,
            game,
            episodes=q.eval_episodes,
            max_steps=q.eval_max_steps,
            epsilon=cfg.agent.eval_epsilon,
            seed=cfg.seed + 777,
            env_kwargs=eval_env_kwargs(cfg),
            should_stop=should_stop,
        )


# -- config ------------------------------------------------------------------------------------


def preflight(cfg: DictConfig) -> tuple[T.TransferSpec, int]:
    """Check a sequence config before any work; returns (transfer spec, actions per head).

    Raises:
        ConfigError: no games, an agent without sequence support, a bad transfer mode, a
            shared head over games with different action sets, or more than one device.
    """
    from ife_platform.envs import atari_spec

    q = cfg.sequence
    if len(q.games) == 0:
        raise ConfigError(
            "no games: choose a sequence preset (ife continual demo3 | cora) or set "
            "sequence.games=[pong,boxing]"
        )
    agent = agent_spec(cfg.agent.name)
    if not agent.continual:
        able = [n for n in agent_names() if get_agent(n).continual]
        raise ConfigError("agent: " + choices_msg("sequence agent", cfg.agent.name, able))
    try:
        spec = T.parse_mode(q.mode, cfg.model.extractor)
    except (ValueError, ConfigError) as err:
        raise ConfigError(f"sequence.mode: {err}") from err
    actions = {g: atari_spec(g, cfg.env.full_action_space).num_actions for g in q.games}
    if q.head == "shared" and len(set(actions.values())) > 1:
        raise ConfigError(
            "sequence.head=shared needs one action set for every game; these differ "
            f"({actions}): set env.full_action_space=true (18 actions) or sequence.head=per_game"
        )
    if q.head == "per_game" and len(set(actions.values())) > 1:
        raise ConfigError(
            "sequence.head=per_game uses one head size; set env.full_action_space=true "
            f"(the minimal action sets differ: {actions})"
        )
    if not agent.off_policy and (q.head != "shared" or q.replay != "reset"):
        raise ConfigError(
            f"agent={cfg.agent.name} sequences use sequence.head=shared and sequence.replay=reset "
            f"(got head={q.head}, replay={q.replay}): per-game heads are Q heads, and an "
            "on-policy agent has no replay buffer"
        )
    if cfg.trainer.devices != 1 or cfg.trainer.num_nodes != 1:
        raise ConfigError(
            "continual sequences run on one device for now (trainer.devices=1): each task "
            "creates its own child run, which DDP's re-launched ranks cannot follow"
        )
    return spec, next(iter(actions.values()))


def task_config(cfg: DictConfig, game: str, k: int | None) -> DictConfig:
    """The single-task config of task ``k`` (None: the from-scratch reference of ``game``)."""
    name = f"{k}-{game}" if k is not None else f"reference-{game}"
    out = OmegaConf.merge(
        cfg,
        {
            "env": {"game": game},
            "train": {"total_steps": int(cfg.sequence.steps_per_task)},
            # the runner evaluates every game every sequence.eval_every steps itself
            "tracking": {"run_name": name, "eval_every": 0},
            "resume": None,
        },
    )
    OmegaConf.set_readonly(out, True)
    return out


# -- the runner ------------------------------------------------------------------------------


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)  # a crash never leaves a half-written progress file


class SequenceRunner:
    """Runs (or resumes) one sequence; see the module docstring.

    Args:
        cfg: validated config with ``sequence.games`` set.
        agent: the agent implementation (default: the registry entry's ``sequence_agent``,
            else :class:`RegistryContinual`).
    """

    def __init__(self, cfg: DictConfig, agent: ContinualAgent | None = None) -> None:
        self.cfg = cfg
        self.spec, self.num_actions = preflight(cfg)
        self.agent = agent or agent_spec(cfg.agent.name).continual_adapter() or RegistryContinual()
        self.games = list(cfg.sequence.games)
        self.progress: dict[str, Any] = {}
        self.heads: nn.ModuleDict | None = None
        self.state: dict[str, torch.Tensor] | None = None
        self.replay: Any = None

    # -- evaluation ----------------------------------------------------------------------------
    def _with_head(self, network: nn.Module, game: str) -> nn.Module:
        net = copy.deepcopy(network)
        if self.heads is not None:  # a copy: evaluation must not flip the live head's mode
            T.swap_head(net, copy.deepcopy(self.heads), game)
        return net

    def evaluate_all(
        self, network: nn.Module, should_stop: Callable[[], bool] | None = None
    ) -> dict[str, EvalResult]:
        """Every game of the sequence (each in its own parallel vector env).

        ``should_stop`` abandons it (``EvaluationStopped``; the task's stop signal).
        """
        return {
            g: self.agent.evaluate(self._with_head(network, g), g, self.cfg, should_stop)
            for g in dict.fromkeys(self.games)
        }

    def alignment_row(self, network: nn.Module) -> list[float | None]:
        """Mean mass-in-box lift of the mask per game (None: no boxes or no attention)."""
        from ife_platform.envs import AtariEvalEnv
        from ife_platform.interpret import explain as E
        from ife_platform.interpret import metrics as M

        steps = int(self.cfg.sequence.alignment_steps)
        extractor = getattr(network, "extractor", None)
        if steps == 0 or extractor is None or not extractor.has_attention:
            return [None for _ in self.games]
        windows = extractor.cell_input_windows().numpy()
        row: list[float | None] = []
        for game in self.games:
            objects, _ = E.resolve_objects(game, self.cfg.explain.objects)
            if objects is None:
                row.append(None)
                continue
            env = AtariEvalEnv(game, seed=self.cfg.seed + 99, **eval_env_kwargs(self.cfg))
            net = self._with_head(network, game)
            rec = E.record(
                net, env, episodes=1, max_steps=steps, epsilon=0.0, seed=1, objects=objects
            )
            lifts = [
                M.alignment_metrics(
                    m / m.sum(), windows, boxes, relevant=list(self.cfg.explain.relevant)
                )["lift"]
                for m, boxes in zip(rec.masks, rec.boxes or [], strict=True)
            ]
            finite = [v for v in lifts if np.isfinite(v)]
            row.append(float(np.mean(finite)) if finite else None)
        return row

    def _record_eval(self, step: int, results: dict[str, EvalResult], seconds: float) -> None:
        curves = self.progress["curves"]
        curves["steps"].append(step)
        for g, r in results.items():
            curves["returns"].setdefault(g, []).append(r.mean_return)
        self._count_truncated(results.values())
        self.progress["eval_seconds"] += seconds

    def _count_truncated(self, results: Any) -> None:
        """Add evaluation games, and those a cap ended, to the progress record's counts."""
        cap = self.progress.setdefault("eval_cap", eval_cap(self.cfg))
        for r in results:
            cap["games"] += len(r.returns)
            cap["truncated"] += r.num_truncated

    # -- task switching -----------------------------------------------------------------------
    def _prepare(self, k: int, game: str) -> Callable[[nn.Module, nn.Module | None], None]:
        def prepare(online: nn.Module, target: nn.Module | None) -> None:
            if self.state is not None:
                online.load_state_dict(self.state)
            if self.heads is not None:
                T.swap_head(online, self.heads, game, target=target)
            report = T.apply_task_switch(online, self.spec, k, self.cfg.seed, target=target)
            keep = ("mode", "reset_groups", "frozen_groups", "num_trainable", "num_frozen")
            self.progress.setdefault("switch_reports", {})[str(k)] = {
                key: (sorted(report[key]) if isinstance(report[key], list | set) else report[key])
                for key in keep
                if key in report
            }

        return prepare

    # -- main loop --------------------------------------------------------------------------
    def run(self, resume: str | None = None) -> dict[str, Any]:
        """Run the sequence (resuming ``resume``, a parent run id); returns the report."""
        import mlflow

        from ife_platform.config import to_yaml
        from ife_platform.experiment import run_params
        from ife_platform.runs import PROCESS_TAG, RunInterrupted, current_process
        from ife_platform.tracking import (
            ensure_experiment,
            log_config,
            log_environment,
            open_tracking_store,
        )

        cfg, q = self.cfg, self.cfg.sequence
        uri = open_tracking_store(cfg.tracking.uri)
        client = mlflow.MlflowClient(uri)
        t_start = time.perf_counter()
        if resume:
            parent = resume
            self.progress = load_progress(client, parent, cfg.tracking.output_dir)
            if self.progress["games"] != self.games or self.progress["mode"] != q.mode:
                raise ConfigError(
                    f"resume={parent}: that sequence ran games {self.progress['games']} with "
                    f"mode {self.progress['mode']}, this config says {self.games} / {q.mode}"
                )
            client.update_run(parent, status="RUNNING")
            client.set_tag(parent, PROCESS_TAG, current_process().tag())
            self.progress["wall_before"] = self.progress.get("wall_seconds", 0.0)
        else:
            exp_id = ensure_experiment(client, cfg.tracking.experiment)
            parent = client.create_run(
                exp_id,
                run_name=f"sequence-{q.name}-{q.mode}",
                tags={
                    **cfg.tracking.tags,
                    "ife.kind": "sequence",
                    "ife.sequence": q.name,
                    # a sequence killed with -9 is found and set to KILLED by the next run
                    PROCESS_TAG: current_process().tag(),
                    # nested under a sweep (tracking.parent_run), as a sweep's trial
                    **(
                        {"mlflow.parentRunId": cfg.tracking.parent_run}
                        if cfg.tracking.parent_run
                        else {}
                    ),
                },
            ).info.run_id
            params = run_params(cfg, uri, in_sequence=True)
            log_config(to_yaml(cfg), params, run_id=parent, client=client)
            log_environment(run_id=parent, client=client)
            self.progress = {
                "parent_run_id": parent,
                "games": self.games,
                "mode": q.mode,
                "head": q.head,
                "steps_per_task": int(q.steps_per_task),
                "normalise": q.normalise,
                "raw_R": [],
                "alignment": [],
                "completed": [],
                "curves": {"steps": [], "returns": {}},
                "reference": {},
                "eval_cap": eval_cap(cfg),
                "eval_seconds": 0.0,
                "wall_seconds": 0.0,
            }
            client.set_tag(parent, "ife.eval_cap", cap_text(self.progress["eval_cap"]))
        out = Path(cfg.tracking.output_dir).resolve() / parent
        out.mkdir(parents=True, exist_ok=True)
        print(f"sequence {q.name}: {self.games}, mode {q.mode}, parent run {parent}")

        network = self.agent.build_network(task_config(cfg, self.games[0], 0), self.num_actions)
        if q.head == "per_game":
            self.heads = T.make_heads(network, self.games, seed=cfg.seed)
        done = len(self.progress["completed"])
        if done:
            snap = torch.load(self.progress["completed"][-1]["snapshot"], weights_only=True)
            self.state = snap["online"]
            if self.heads is not None:
                self.heads.load_state_dict(snap["heads"])
            print(f"resuming after task {done - 1} ({self.games[done - 1]})")
        elif not self.progress["raw_R"]:  # row 0, before any training (a stop in task 0 has it)
            self._finish_row(network, client, parent, out, step=0, t_start=t_start)

        try:
            self._train_tasks(done, parent, out, client, t_start)
            if q.reference:
                self._references(client, parent, out, t_start)
        except BaseException as err:
            stopped = isinstance(err, RunInterrupted | KeyboardInterrupt)
            client.set_terminated(parent, status="KILLED" if stopped else "FAILED")
            print(f"sequence stopped; continue it with resume={parent}")
            raise
        report = build_report(self.progress)
        write_report(report, self.progress, out / "report", client, parent)
        client.set_terminated(parent)
        print(format_report(report))
        print(f"parent run {parent} in {uri}; files in {out}")
        from ife_platform.tracking import run_page

        print(f"open in the UI (ife ui): {run_page(uri, parent)}")
        return report

    def _train_tasks(self, done: int, parent: str, out: Path, client: Any, t_start: float) -> None:
        cfg, q = self.cfg, self.cfg.sequence
        S = int(q.steps_per_task)
        for k in range(done, len(self.games)):
            game = self.games[k]
            callback = SequenceEvaluation(
                q.eval_every, S, k * S, self.evaluate_all, self._record_eval
            )
            outcome = self.agent.train_task(
                task_config(cfg, game, k),
                prepare=self._prepare(k, game),
                replay=self.replay if q.replay == "keep" else None,
                callbacks=[callback],
                parent_run_id=parent,
                tags={"ife.kind": "sequence_task", "ife.task_index": str(k)},
            )
            self.replay = outcome.replay
            self.state = {k_: v.detach().clone() for k_, v in outcome.network.state_dict().items()}
            snapshot = out / "snapshots" / f"task{k}_{game}.pt"
            snapshot.parent.mkdir(parents=True, exist_ok=True)
            torch.save(
                {
                    "online": self.state,
                    "heads": None if self.heads is None else self.heads.state_dict(),
                    "task": k,
                    "game": game,
                    "group_digests": T.group_digests(outcome.network),
                },
                snapshot,
            )
            client.log_artifact(parent, str(snapshot), "snapshots")
            self.progress["completed"].append(
                {
                    "task": k,
                    "game": game,
                    "run_id": outcome.run_id,
                    "snapshot": str(snapshot),
                    "group_digests": T.group_digests(outcome.network),
                }
            )
            self._finish_row(
                outcome.network, client, parent, out, step=(k + 1) * S, t_start=t_start
            )

    def _finish_row(
        self, network: nn.Module, client: Any, parent: str, out: Path, *, step: int, t_start: float
    ) -> None:
        t0 = time.perf_counter()
        results = self.evaluate_all(network)
        self.progress["eval_seconds"] += time.perf_counter() - t0
        self.progress["raw_R"].append([results[g].mean_return for g in self.games])
        self.progress["alignment"].append(self.alignment_row(network))
        self._record_eval(step, results, 0.0)
        for g, r in results.items():
            client.log_metric(parent, f"eval/{g}/return_mean", r.mean_return, step=step)
            client.log_metric(parent, f"eval/{g}/truncated", r.num_truncated, step=step)
        self._update_wall(t_start)
        _write_json(out / PROGRESS, self.progress)
        client.log_artifact(parent, str(out / PROGRESS))

    def _update_wall(self, t_start: float) -> None:
        before = self.progress.get("wall_before", 0.0)
        self.progress["wall_seconds"] = before + time.perf_counter() - t_start

    def _reference_hooks(
        self, game: str, curve: dict[str, list]
    ) -> tuple[Callable[..., None], Callable[..., dict[str, EvalResult]]]:
        def record(step: int, results: dict[str, EvalResult], seconds: float) -> None:
            curve["steps"].append(step)
            curve["returns"].append(results[game].mean_return)
            self._count_truncated(results.values())
            self.progress["eval_seconds"] += seconds

        def evaluate_one(
            network: nn.Module, should_stop: Callable[[], bool] | None = None
        ) -> dict[str, EvalResult]:
            return {game: self.agent.evaluate(network, game, self.cfg, should_stop)}

        return record, evaluate_one

    def _references(self, client: Any, parent: str, out: Path, t_start: float) -> None:
        """Every game alone from scratch (same budget and evaluation): forward-transfer ref."""
        q = self.cfg.sequence
        for game in dict.fromkeys(self.games):
            if game in self.progress["reference"]:
                continue
            curve: dict[str, list] = {"steps": [], "returns": []}
            record, evaluate_one = self._reference_hooks(game, curve)
            cfg_ref = task_config(self.cfg, game, None)
            callback = SequenceEvaluation(
                q.eval_every, int(q.steps_per_task), 0, evaluate_one, record
            )
            outcome = self.agent.train_task(
                cfg_ref,
                prepare=lambda online, target: None,
                replay=None,
                callbacks=[callback],
                parent_run_id=parent,
                tags={"ife.kind": "sequence_reference", "ife.game": game},
            )
            final = self.agent.evaluate(outcome.network, game, self.cfg)
            record(int(q.steps_per_task), {game: final}, 0.0)
            self.progress["reference"][game] = {"run_id": outcome.run_id, **curve}
            self._update_wall(t_start)
            _write_json(out / PROGRESS, self.progress)
            client.log_artifact(parent, str(out / PROGRESS))


# -- report ----------------------------------------------------------------------------------


def eval_cap(cfg: DictConfig) -> dict[str, Any]:
    """The cap of a sequence's evaluation games, with counters of games played and cut.

    ``short`` says the step cap (``sequence.eval_max_steps``) ends games before the
    protocol's episode cap (``env.max_episode_frames``): long games are then scored on their
    first part only, and the report says so.
    """
    steps, fs = int(cfg.sequence.eval_max_steps), int(cfg.env.frame_skip)
    frames = int(cfg.env.max_episode_frames)
    return {
        "max_steps": steps,
        "frame_skip": fs,
        "max_episode_frames": frames,
        "cap_frames": min(steps * fs, frames),
        "short": steps * fs < frames,
        "games": 0,
        "truncated": 0,
    }


def cap_text(cap: dict[str, Any]) -> str:
    """One line on a sequence's evaluation cap (:func:`eval_cap`)."""
    text = f"evaluation games capped at {cap['cap_frames']:,} emulator frames"
    if cap["short"]:
        text += (
            f" ({cap['max_steps']:,} agent steps, sequence.eval_max_steps), shorter than the "
            f"{cap['max_episode_frames']:,}-frame episode cap of the protocol"
        )
    return text


def load_progress(client: Any, parent: str, output_dir: str) -> dict[str, Any]:
    """``progress.json`` of a sequence: the local copy, else the parent run's artifact.

    Raises:
        ConfigError: the run does not exist or is not a sequence.
    """
    local = Path(output_dir).resolve() / parent / PROGRESS
    if local.is_file():
        return json.loads(local.read_text())
    import tempfile

    from mlflow.exceptions import MlflowException

    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(parent, PROGRESS, tmp)
            return json.loads(Path(path).read_text())
    except (MlflowException, OSError) as err:
        raise ConfigError(f"{parent} is not a sequence run with a {PROGRESS} ({err})") from err


def build_report(progress: dict[str, Any]) -> dict[str, Any]:
    """Every continual metric of one sequence run (metrics.md), from its progress record."""
    games = progress["games"]
    K, S = len(games), int(progress["steps_per_task"])
    raw = np.full((K + 1, K), np.nan)
    for i, row in enumerate(progress["raw_R"]):
        raw[i] = row
    refs = progress.get("reference", {})
    extra = [r["returns"] for r in refs.values()]
    ref_best = None
    if extra:
        ref_best = np.full((1, K), np.nan)
        for j, g in enumerate(games):
            if g in refs:
                ref_best[0, j] = np.nanmax(np.abs(refs[g]["returns"]))
    R = CM.normalise_scores(raw, games, method=progress["normalise"], best_abs=ref_best)
    method = progress["normalise"]
    if method == "auto":
        from ife_platform.scores import has_reference

        method = "hns" if all(has_reference(g) for g in games) else "best_abs"
    cw = CM.forgetting_cw(R)
    cora = CM.forgetting_cora(R)
    report: dict[str, Any] = {
        "games": games,
        "mode": progress["mode"],
        "head": progress["head"],
        "normalisation": method,
        "tasks_completed": len(progress["completed"]),
        "raw_R": raw.tolist(),
        "R": R.tolist(),
        "average_performance": CM.average_performance(R),
        "forgetting_cw": cw.tolist(),
        "forgetting_cw_mean": CM.forgetting_cw_mean(R),
        "forgetting_cora": cora["matrix"].tolist(),
        "forgetting_cora_mean": cora["mean"],
        "zero_shot_transfer": CM.zero_shot_transfer_cora(R).tolist(),
        "zero_shot_transfer_mean": CM.zero_shot_transfer_cora_mean(R),
        "alignment_lift": progress.get("alignment", []),
        "eval_seconds": progress.get("eval_seconds", 0.0),
        "wall_seconds": progress.get("wall_seconds", 0.0),
    }
    if report["wall_seconds"]:
        report["eval_share"] = report["eval_seconds"] / report["wall_seconds"]
    notes: list[str] = []
    cap = progress.get("eval_cap")  # absent in sequences run before it was recorded
    report["eval_cap"] = cap
    if cap is None:
        notes.append("the evaluation cap of this sequence was not recorded")
    elif cap["short"] or cap["truncated"]:
        notes.append(
            f"{cap_text(cap)}: {cap['truncated']} of {cap['games']} evaluation games were "
            "cut short by it and scored on their first part only"
        )
    # Forward transfer (CW): mean normalised score of game j during its own training window,
    # against the same for the from-scratch reference run.
    steps = np.asarray(progress["curves"]["steps"], dtype=np.float64)
    aucs, aucs_ref = np.full(K, np.nan), np.full(K, np.nan)
    for j, g in enumerate(games):
        scores = np.asarray(progress["curves"]["returns"].get(g, []), dtype=np.float64)
        if scores.size == steps.size and scores.size:
            norm = _normalise_column(scores, g, j, raw, games, progress["normalise"], ref_best)
            aucs[j] = CM.training_auc(steps, norm, start=j * S, end=(j + 1) * S)
        if g in refs:
            r = np.asarray(refs[g]["returns"], dtype=np.float64)
            norm = _normalise_column(r, g, j, raw, games, progress["normalise"], ref_best)
            aucs_ref[j] = CM.training_auc(np.asarray(refs[g]["steps"]), norm, start=0, end=S)
    report["auc"] = aucs.tolist()
    report["auc_reference"] = aucs_ref.tolist()
    if np.isfinite(aucs_ref).any():
        ft = CM.forward_transfer_cw(aucs, aucs_ref)
        report["forward_transfer"] = ft.tolist()
        report["forward_transfer_mean"] = float(np.nanmean(ft)) if np.isfinite(ft).any() else None
    else:
        report["forward_transfer_mean"] = None
        notes.append(
            "no scratch reference runs (sequence.reference=true): no forward "
            "transfer (CW); zero-shot transfer (CORA) needs none"
        )
    if notes:
        report["notes"] = notes
    return report


def _normalise_column(
    scores: np.ndarray,
    game: str,
    j: int,
    raw: np.ndarray,
    games: list[str],
    method: str,
    ref_best: np.ndarray | None,
) -> np.ndarray:
    """Normalise one game's curve on the same scale as column ``j`` of R."""
    K = len(games)
    table = np.full((scores.size, K), np.nan)
    table[:, j] = scores
    extra = raw if ref_best is None else np.vstack([raw, ref_best])
    return CM.normalise_scores(table, games, method=method, best_abs=extra)[:, j]


HEADLINE = (
    "average_performance",
    "forgetting_cw_mean",
    "forgetting_cora_mean",
    "forward_transfer_mean",
    "zero_shot_transfer_mean",
)


def format_report(report: dict[str, Any]) -> str:
    """A short text report: R, the headline metrics, the evaluation cap and the notes."""
    games = report["games"]
    lines = [f"R ({report['normalisation']}; row i = after task i, row 0 = before training):"]
    lines.append("  " + " " * 18 + "".join(f"{g[:10]:>11}" for g in games))
    for i, row in enumerate(report["R"]):
        label = "before" if i == 0 else f"after {games[i - 1]}"
        cells = "".join("        n/a" if not np.isfinite(v) else f"{v:11.3f}" for v in row)
        lines.append(f"  {label[:18]:<18}{cells}")
    for key in HEADLINE:
        v = report.get(key)
        text = "n/a" if v is None or not np.isfinite(v) else f"{v:.4f}"
        lines.append(f"{key:<26} {text}")
    if "eval_share" in report:
        lines.append(f"{'evaluation share of wall':<26} {100 * report['eval_share']:.1f} %")
    cap = report.get("eval_cap")
    if cap is not None:
        lines.append(f"{'evaluation cap':<26} {cap_text(cap)}")
    lines += [f"note: {n}" for n in report.get("notes", [])]
    return "\n".join(lines)


def write_report(
    report: dict[str, Any],
    progress: dict[str, Any],
    folder: Path,
    client: Any | None = None,
    run_id: str | None = None,
) -> list[Path]:
    """``metrics.json``, R heatmaps (raw-normalised and alignment); logged when a run is given."""
    folder.mkdir(parents=True, exist_ok=True)
    games = report["games"]
    paths = [folder / "metrics.json", folder / "R.png"]
    paths[0].write_text(json.dumps(_finite(report), indent=1))
    run = f", run {run_id[:12]}" if run_id else ""
    CM.plot_matrix(
        np.asarray(report["R"], dtype=np.float64),
        games,
        paths[1],
        title=f"R ({report['normalisation']}), mode {report['mode']}{run}",
        colorbar_label=f"score ({report['normalisation']}-normalised)",
    )
    align = progress.get("alignment") or []
    if align and any(v is not None for row in align for v in row):
        A = np.array([[np.nan if v is None else v for v in row] for row in align], dtype=float)
        if A.shape[0] < len(games) + 1:
            A = np.vstack([A, np.full((len(games) + 1 - A.shape[0], len(games)), np.nan)])
        paths.append(folder / "alignment_lift.png")
        finite = A[np.isfinite(A)]
        top = max(2.0, float(finite.max())) if finite.size else 2.0
        CM.plot_matrix(
            A,
            games,
            paths[-1],
            title=f"mask-object lift, mode {report['mode']}{run}",
            colorbar_label="lift of the mask (1 = chance)",
            limits=(0.0, top),  # 0 to at least twice chance: chance sits mid-scale or lower
        )
    if client is not None and run_id is not None:
        for p in paths:
            client.log_artifact(run_id, str(p), "report")
        for key in HEADLINE + ("eval_share",):
            v = report.get(key)
            if v is not None and np.isfinite(v):
                client.log_metric(run_id, f"continual/{key}", float(v))
    return paths


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


@dataclass
class SequenceReports:
    """What :func:`report_runs` rebuilt.

    Attributes:
        reports: one report per parent run (:func:`build_report`), in the order given.
        summary: over several runs of one sequence, each metric's mean and 95 % bootstrap
            interval over seeds (None for one run).
        folder: where the files went (the run's ``report`` folder, or a new
            ``continual-report-<stamp>`` folder for several runs).
    """

    reports: list[dict[str, Any]]
    summary: dict[str, Any] | None
    folder: Path


def continual_words(words: list[str]) -> list[str]:
    """The config words of ``ife continual SEQUENCE [key=value ...]``, ready for ``compose``.

    A first word naming a sequence preset selects it (``demo3`` -> ``sequence=demo3``), and
    sequences use the full 18-action set by default (one head serves every game).
    """
    from ife_platform.config import available_presets

    words = list(words)
    if words and "=" not in words[0] and words[0] in available_presets("sequence"):
        words[0] = f"sequence={words[0]}"
    return ["env.full_action_space=true", *words]


def report_runs(runs: list[str], cfg: DictConfig) -> SequenceReports:
    """``ife continual-report``: rebuild sequence reports from logged data alone.

    One run: its report is written again and logged to the parent run. Several runs (seeds of
    one sequence): the metrics are summarised over them with bootstrap intervals.

    Raises:
        ConfigError: a run that is not a sequence run, or runs of different sequences.
        TrackingUnreachableError: the store does not answer.
    """
    import mlflow

    from ife_platform.tracking import open_tracking_store

    uri = open_tracking_store(cfg.tracking.uri)
    client = mlflow.MlflowClient(uri)
    progresses = [load_progress(client, r, cfg.tracking.output_dir) for r in runs]
    reports = [build_report(p) for p in progresses]
    out = Path(cfg.tracking.output_dir).resolve()
    if len(runs) == 1:
        folder = out / runs[0] / "report"
        write_report(reports[0], progresses[0], folder, client, runs[0])
        return SequenceReports(reports, None, folder)
    games = {tuple(r["games"]) for r in reports}
    if len(games) > 1:
        raise ConfigError(f"these runs are different sequences: {sorted(games)}")
    summary = CM.summarise_over_seeds(
        [np.asarray(r["R"], dtype=float) for r in reports],
        aucs=[r["auc"] for r in reports],
        aucs_ref=[r["auc_reference"] for r in reports],
    )
    folder = out / f"continual-report-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(
        json.dumps({"runs": runs, **summary}, indent=1, default=float)
    )
    return SequenceReports(reports, summary, folder)

"""``ife explain``: record evaluation episodes of a trained agent and measure its attention.

The pipeline, one function each:

1. :func:`record` plays games with :func:`ife_platform.evaluation.play` and keeps, per agent
   step, the observation, the action, the Q-values, the attention mask (attention extractors)
   and the object boxes of the frame (:mod:`~ife_platform.interpret.objects`), plus the raw
   RGB frames of the first ``video_max_steps`` steps.
2. :func:`analyse` computes the metrics of ``shared/reference/metrics.md``:

   * mask-object alignment per frame (pointing game, mass-in-box, lift, pixel AUROC,
     per-category recall; :func:`~ife_platform.interpret.metrics.alignment_metrics`);
   * spatial leakage of the attention logits (:func:`~.perturb.spatial_leakage`);
   * faithfulness: deletion / insertion curves of the greedy action's Q-value in the order of
     the importance map against random orders, and the parameter-randomisation sanity check;
   * Greydanus perturbation saliency (:func:`~.perturb.perturbation_saliency`) when asked,
     and always for agents without attention, whose importance map it then is.

3. :func:`write_outputs` writes the mp4 (raw | mask overlay [| saliency]), the per-frame
   table, ``summary.json``, ``curves.json``, ``maps.npz`` (every recorded mask, the saliency
   maps, Q-values and actions) and PNG plots; ``cmd_explain`` logs them to MLflow.

Importance map: the attention mask for attention extractors, the policy saliency otherwise.

Recurrent agents (A3C-LSTM, S3TA): the recording keeps the state that entered every step, and
every perturbation of frame ``t`` is read with that state (:mod:`~ife_platform.interpret.probe`):
only the frame changes, the agent's memory of the game stays as it was. Their "policy" output
is the centred policy logits, and the faithfulness score is ``pi(a* | s)``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from ife_platform.envs import AtariEvalEnv
from ife_platform.evaluation import StepView, play
from ife_platform.interpret import metrics as M
from ife_platform.interpret import perturb as P
from ife_platform.interpret.objects import ObjectBox, ObjectSource
from ife_platform.interpret.probe import (
    AgentProbe,
    replay,
    stack_states,
    state_free_attention,
)
from ife_platform.policies import is_recurrent
from ife_platform.seeding import TORCH_SEED_BITS, fold_seed

#: Summary keys shown in the printed table and compared by ``ife compare`` (in this order).
HEADLINE = (
    "pointing",
    "chance_pointing",
    "mass_in_box",
    "chance_mass",
    "lift",
    "auroc",
    "leakage",
    "deletion_gain",
    "insertion_gain",
    "sanity_spearman",
)


def pixel_windows(size: int = 84) -> np.ndarray:
    """``[size, size, 4]`` windows of 1x1 "cells": alignment metrics of a pixel-level map."""
    idx = np.arange(size)
    y = np.stack([idx, idx + 1], -1)[:, None, :].repeat(size, 1)
    x = np.stack([idx, idx + 1], -1)[None, :, :].repeat(size, 0)
    return np.concatenate([y, x], -1).astype(np.int64)


@dataclass
class Recording:
    """Everything :func:`record` kept of the evaluation games (T agent steps in total).

    Attributes:
        game: ale-py game id.
        obs: uint8 ``[T, stack, 84, 84]``.
        actions: int64 ``[T]``.
        q: float32 ``[T, A]``: Q-values, or policy logits of a recurrent actor-critic.
        masks: float32 ``[T, rows, cols]`` or None (no attention).
        heads: float32 ``[T, heads, rows, cols]`` per-head masks (S3TA) or None.
        states: a recurrent agent's state as it entered every step (each part ``[T, ...]``)
            or None. Memory: 4 KiB per step for A3C-LSTM, 124 KiB for S3TA (its ConvLSTM).
        boxes: per step the object boxes, or None (no ground truth).
        episode: ``[T]`` game index; ``t``: ``[T]`` step within the game.
        starts: ``[T]`` bool, the step starts a sequence for the agent (a game's first step,
            or a new life's under ``env.life_loss_terminal``), or None: game starts only.
        frames: raw RGB frames of the first ``len(frames)`` steps.
        returns: raw score per game; ``lengths``: steps per game.
        seconds: wall time of play, recording included.
    """

    game: str
    obs: np.ndarray
    actions: np.ndarray
    q: np.ndarray
    masks: np.ndarray | None
    boxes: list[list[ObjectBox]] | None
    episode: np.ndarray
    t: np.ndarray
    frames: list[np.ndarray]
    returns: list[float]
    lengths: list[int]
    seconds: float
    heads: np.ndarray | None = None
    states: tuple[torch.Tensor, ...] | None = None
    starts: np.ndarray | None = None
    captions: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    @property
    def first(self) -> np.ndarray:
        """Whether each step ``[T]`` starts a sequence: a recurrent agent's state is zeroed.

        A game's first step, and with ``env.life_loss_terminal`` a new life's (as the agent
        played it, :attr:`~ife_platform.evaluation.StepView.first`).
        """
        if self.starts is not None:
            return np.asarray(self.starts, dtype=bool)
        return np.asarray(self.t) == 0


class _Recorder:
    """The :func:`play` observer of :func:`record`."""

    def __init__(self, objects: ObjectSource | None, max_frames: int) -> None:
        self.objects = objects
        self.max_frames = max_frames
        self.obs: list[np.ndarray] = []
        self.q: list[torch.Tensor] = []
        self.masks: list[torch.Tensor] = []
        self.actions: list[int] = []
        self.episode: list[int] = []
        self.t: list[int] = []
        self.starts: list[bool] = []
        self.frames: list[np.ndarray] = []
        self.captions: list[str] = []
        self.boxes: list[list[ObjectBox]] = []
        self.heads: list[torch.Tensor] = []
        self.states: list[tuple[torch.Tensor, ...]] = []

    def __call__(self, step: StepView) -> None:
        self.obs.append(step.obs.copy())
        self.q.append(step.q)
        if step.mask is not None:
            self.masks.append(step.mask)
        if step.heads is not None:
            self.heads.append(step.heads)
        if step.state is not None:
            self.states.append(step.state)
        self.actions.append(step.action)
        self.episode.append(step.episode)
        self.t.append(step.t)
        self.starts.append(step.first)
        if len(self.frames) < self.max_frames:
            self.frames.append(step.frame.copy())
            self.captions.append(step.caption())
        if self.objects is not None:
            self.boxes.append(self.objects.boxes(step.env.ale, step.frame))


def record(
    network: torch.nn.Module,
    env: AtariEvalEnv,
    *,
    episodes: int,
    max_steps: int,
    epsilon: float,
    seed: int,
    objects: ObjectSource | None = None,
    video_max_steps: int = 1000,
    progress: Callable[[StepView], None] | None = None,
) -> Recording:
    """Play ``episodes`` games and keep what the analysis needs (see :class:`Recording`).

    ``progress`` is also called at every step (a progress display; it only observes).
    """
    rec = _Recorder(objects, video_max_steps)

    def observe(step: StepView) -> None:
        rec(step)
        if progress is not None:
            progress(step)

    t0 = time.perf_counter()
    result = play(
        network,
        env,
        episodes=episodes,
        epsilon=epsilon,
        seed=seed,
        max_steps=max_steps,
        observer=observe,
    )
    seconds = time.perf_counter() - t0
    return Recording(
        game=env.game,
        obs=np.stack(rec.obs),
        actions=np.asarray(rec.actions, dtype=np.int64),
        q=torch.stack(rec.q).numpy(),
        masks=torch.stack(rec.masks).numpy() if rec.masks else None,
        boxes=rec.boxes if objects is not None else None,
        episode=np.asarray(rec.episode),
        t=np.asarray(rec.t),
        frames=rec.frames,
        returns=list(result.returns),
        lengths=list(result.lengths),
        seconds=seconds,
        heads=torch.stack(rec.heads).numpy() if rec.heads else None,
        states=stack_states(rec.states) if rec.states else None,
        starts=np.asarray(rec.starts, dtype=bool),
        captions=rec.captions,
    )


@dataclass
class Explanation:
    """Result of :func:`analyse`.

    Attributes:
        rows: per-frame table (one dict per agent step, same keys in every row).
        summary: flat metrics (means over frames and the frame-sample measurements).
        notes: human-readable lines about what could not be measured and why.
        curves: mean deletion / insertion curves (importance order and random order).
        saliency: ``{frame index: [84, 84] policy saliency}`` for the frames it was computed on.
        leakage_map: ``[rows, cols]`` leakage per cell, or None.
        windows: ``[rows, cols, 4]`` cell input windows, or None.
        cell_rects: ``[rows, cols, 4]`` cell screen rectangles, or None.
    """

    rows: list[dict[str, float]]
    summary: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    saliency: dict[int, np.ndarray] = field(default_factory=dict)
    leakage_map: np.ndarray | None = None
    windows: np.ndarray | None = None
    cell_rects: np.ndarray | None = None


def sample_frames(total: int, count: int) -> np.ndarray:
    """``min(count, total)`` evenly spaced frame indices (first and last included)."""
    if total <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(np.int64))


def _nanmean(values: list[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(arr)
    return float(arr[ok].mean()) if ok.any() else float("nan")


def _mean_rows(rows: list[dict[str, float]], prefix: str = "") -> dict[str, float]:
    keys = [k for k in rows[0] if k.startswith(prefix)] if rows else []
    out = {}
    for key in keys:
        vals = [r[key] for r in rows if key in r]
        out[key] = _nanmean(vals)
        out[f"{key}_frames"] = float(np.isfinite(np.asarray(vals, dtype=np.float64)).sum())
    return out


@dataclass
class AnalysisPlan:
    """What every step of :func:`analyse` reads: the agent's probe and the frames to analyse.

    Attributes:
        probe: reads the network as a function of a frame (and its recorded state).
        attention: whether the extractor has a mask (else saliency is the importance map).
        windows: ``[rows, cols, 4]`` input window of each mask cell (None without attention).
        rects: ``[rows, cols, 4]`` screen rectangle of each cell (None without attention).
        frames: indices of the frames for faithfulness, saliency and the sanity check.
        saliency: whether to compute perturbation saliency.
        notes: what the report must say (missing boxes, flat saliency, ...).
    """

    probe: AgentProbe
    attention: bool
    windows: np.ndarray | None
    rects: np.ndarray | None
    frames: np.ndarray
    saliency: bool
    notes: list[str]


def analyse(
    network: torch.nn.Module,
    rec: Recording,
    x: DictConfig,
    *,
    seed: int = 0,
    objects_note: str | None = None,
) -> Explanation:
    """All interpretability metrics of a recording (see the module docstring), in six steps.

    1. :func:`plan_analysis`: the probe, the cell geometry and the frames to analyse;
    2. :func:`saliency_step`: perturbation saliency (Greydanus et al. 2018) when asked for, or
       when there is no mask;
    3. :func:`frame_rows`: the per-frame table (mask statistics, alignment with object boxes);
    4. :func:`leakage_step`: spatial leakage of the mask;
    5. :func:`faithfulness_step`: deletion / insertion against random orders;
    6. :func:`sanity_step`: the parameter-randomisation sanity check (Adebayo et al. 2018).

    Args:
        network: the network that played the recording (a Q-network or a recurrent
            actor-critic; a recurrent one needs ``rec.states``).
        rec: the recording.
        x: the ``explain`` config group.
        seed: seeds random deletion orders and the randomised network.
        objects_note: why there are no object boxes (printed and stored in the summary).
    """
    plan = plan_analysis(network, rec, x, objects_note)
    summary: dict[str, Any] = {
        "game": rec.game,
        "extractor": type(network.extractor).__name__,
        "attention": plan.attention,
        "recurrent": plan.probe.recurrent,
        "scores": "policy_logits" if plan.probe.recurrent else "q",
        "faithfulness_score": plan.probe.score_name,
        "frames": len(rec),
        "episodes": len(rec.returns),
        "return_mean": float(np.mean(rec.returns)),
        "play_seconds": rec.seconds,
    }
    saliency = saliency_step(plan, rec, x, summary)
    rows = frame_rows(plan, rec, x, saliency)
    summary.update(_mean_rows([{k: v for k, v in r.items() if not _is_index(k)} for r in rows]))
    leakage_map = leakage_step(plan, rec, x, summary)
    curves = faithfulness_step(plan, rec, x, saliency, summary, seed=seed)
    sanity_step(network, plan, rec, x, summary, seed=seed)
    summary["notes"] = plan.notes
    return Explanation(
        rows=rows,
        summary=summary,
        notes=plan.notes,
        curves=curves,
        saliency=saliency,
        leakage_map=leakage_map,
        windows=plan.windows,
        cell_rects=plan.rects,
    )


def plan_analysis(
    network: torch.nn.Module, rec: Recording, x: DictConfig, objects_note: str | None = None
) -> AnalysisPlan:
    """Step 1: the probe, the cell geometry, the analysis frames and the first notes."""
    extractor = network.extractor
    attention = bool(extractor.has_attention)
    notes = [objects_note] if objects_note else []
    if not attention:
        notes.append(
            f"{extractor.__class__.__name__} has no attention mask: perturbation "
            "saliency (Greydanus et al. 2018) is the importance map; leakage does not apply."
        )
    return AnalysisPlan(
        probe=AgentProbe(network, rec.states),
        attention=attention,
        windows=extractor.cell_input_windows().numpy() if attention else None,
        rects=extractor.cell_screen_rects().numpy() if attention else None,
        frames=sample_frames(len(rec), x.analysis_frames),
        saliency=bool(x.saliency) or not attention,
        notes=notes,
    )


def saliency_step(
    plan: AnalysisPlan, rec: Recording, x: DictConfig, summary: dict[str, Any]
) -> dict[int, np.ndarray]:
    """Step 2: pixel saliency ``[84, 84]`` (a distribution) per frame index.

    The analysis frames, plus every video frame when the video is on. Empty when saliency
    is not asked for and the extractor has a mask.
    """
    if not plan.saliency:
        return {}
    sal_idx = np.union1d(plan.frames, np.arange(len(rec.frames))) if x.video else plan.frames
    t0 = time.perf_counter()
    maps = _saliency(plan.probe, sal_idx, rec.obs, x)
    seconds = time.perf_counter() - t0
    pix = _as_distribution(P.upsample_saliency(maps, (84, 84), x.saliency_stride).cpu())
    flat = int((pix.reshape(len(pix), -1).std(-1) == 0).sum())
    if flat:
        plan.notes.append(
            f"saliency is zero on {flat} of {len(pix)} frames (outputs unchanged "
            "by every perturbation): those maps count as uniform"
        )
    summary["saliency_frames_per_s"] = len(sal_idx) / max(seconds, 1e-9)
    return {int(i): pix[k] for k, i in enumerate(sal_idx)}


def frame_rows(
    plan: AnalysisPlan, rec: Recording, x: DictConfig, saliency: dict[int, np.ndarray]
) -> list[dict[str, float]]:
    """Step 3: one row per recorded frame (``metrics.md``, "Mask-object alignment").

    Q (or policy) statistics, the mask's entropy, peak and argmax cell, per-head masks, and
    the alignment of the mask (and saliency) with the frame's object boxes.
    """
    categories = sorted({b.category for boxes in (rec.boxes or []) for b in boxes})
    pix_windows = pixel_windows()
    kw = dict(relevant=list(x.relevant), tolerance_cells=x.tolerance_cells)
    rows: list[dict[str, float]] = []
    for i in range(len(rec)):
        q = rec.q[i]
        row: dict[str, float] = {
            "episode": float(rec.episode[i]),
            "t": float(rec.t[i]),
            "action": float(rec.actions[i]),
            "q_max": float(q.max()),
            "q_gap": float(np.sort(q)[-1] - np.sort(q)[-2]) if q.size > 1 else 0.0,
        }
        if rec.masks is not None:
            m = rec.masks[i].astype(np.float64)
            r, c = np.unravel_index(int(m.argmax()), m.shape)
            row.update(
                mask_entropy=_entropy(m),
                mask_max=float(m.max()),
                argmax_row=float(r),
                argmax_col=float(c),
            )
        if rec.heads is not None:
            for h, hm in enumerate(rec.heads[i].astype(np.float64)):
                row[f"head{h}/mask_entropy"] = _entropy(hm)
        if rec.boxes is not None:
            boxes = rec.boxes[i]
            if rec.masks is not None:
                m = rec.masks[i]
                row.update(M.alignment_metrics(m / m.sum(), plan.windows, boxes, categories, **kw))
            if rec.heads is not None:
                for h, hm in enumerate(rec.heads[i]):
                    al = M.alignment_metrics(hm / hm.sum(), plan.windows, boxes, categories, **kw)
                    row.update({f"head{h}/{k}": al[k] for k in HEAD_METRICS})
            if i in saliency:
                sal = M.alignment_metrics(
                    saliency[i], pix_windows, boxes, categories, relevant=list(x.relevant)
                )
                row.update({f"saliency/{k}": v for k, v in sal.items() if k != "n_boxes"})
            elif plan.saliency:
                row.update({f"saliency/{k}": float("nan") for k in _alignment_keys(categories)})
        rows.append(row)
    if rec.boxes is None:
        plan.notes.append(
            "no object ground truth: alignment metrics (pointing, mass, lift, AUROC) "
            "are missing; leakage, faithfulness and the sanity check do not need boxes."
        )
    elif not categories:
        plan.notes.append(
            "the object source found no objects in any frame: alignment is undefined."
        )
    return _same_keys(rows)


def leakage_step(
    plan: AnalysisPlan, rec: Recording, x: DictConfig, summary: dict[str, Any]
) -> np.ndarray | None:
    """Step 4: spatial leakage (``metrics.md``) on ``leakage_frames`` frames; the cell map."""
    if not plan.attention:
        return None
    leak_idx = sample_frames(len(rec), x.leakage_frames)
    t0 = time.perf_counter()
    leak = _leakage(plan.probe, leak_idx, rec.obs)
    summary.update(
        leakage=leak.mean,
        leakage_max=leak.max,
        leakage_outside_receptive=float(leak.outside_receptive.sum()),
        leakage_frames=float(len(leak_idx)),
        leakage_seconds=time.perf_counter() - t0,
    )
    return leak.leakage.numpy()


def faithfulness_step(
    plan: AnalysisPlan,
    rec: Recording,
    x: DictConfig,
    saliency: dict[int, np.ndarray],
    summary: dict[str, Any],
    *,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Step 5: deletion / insertion curves of the importance map against random orders.

    The importance map is the mask, or the policy saliency without attention. Returns the
    mean curves (``deletion``, ``insertion``, ``random_deletion``, ``random_insertion``).
    """
    idx = plan.frames
    windows = torch.from_numpy(plan.windows) if plan.windows is not None else None
    kw = dict(steps=x.deletion_steps, baseline=x.deletion_baseline, windows=windows)

    def importance(frames: np.ndarray) -> torch.Tensor:
        if plan.attention:
            return torch.from_numpy(rec.masks[frames])
        return torch.from_numpy(np.stack([saliency[int(i)] for i in frames]))

    def curve(mode: str, random_order: bool = False, generator: Any = None) -> torch.Tensor:
        return plan.probe.map(
            idx,
            rec.obs,
            lambda r, obs, frames: P.deletion_insertion(
                r.score,
                obs,
                importance(frames).to(obs.device),
                mode=mode,
                random_order=random_order,
                generator=generator,
                **kw,
            ),
        )

    curves = {"deletion": curve("deletion"), "insertion": curve("insertion")}
    gen = torch.Generator().manual_seed(fold_seed(seed, TORCH_SEED_BITS))
    for mode in ("deletion", "insertion"):
        curves[f"random_{mode}"] = torch.stack(
            [curve(mode, True, gen) for _ in range(x.random_orders)]
        ).mean(0)
    mean_curves = {k: v.float().mean(0).cpu().numpy() for k, v in curves.items()}
    summary.update(
        M.deletion_insertion_summary(
            mean_curves["deletion"],
            mean_curves["insertion"],
            mean_curves["random_deletion"],
            mean_curves["random_insertion"],
        )
    )
    summary["faithfulness_frames"] = float(len(idx))
    return mean_curves


def sanity_step(
    network: torch.nn.Module,
    plan: AnalysisPlan,
    rec: Recording,
    x: DictConfig,
    summary: dict[str, Any],
    *,
    seed: int = 0,
) -> None:
    """Step 6: the maps of a randomly re-initialised copy against the trained ones.

    A recurrent copy plays the recorded game from its start with its own state; a Q-network
    copy reads the sampled frames only.
    """
    idx = plan.frames
    randomised = P.randomised_copy(network, seed=seed + 1)
    if plan.probe.recurrent:
        upto = int(idx.max()) + 1
        played = replay(
            randomised, rec.obs[:upto], rec.first[:upto], keep_states=not plan.attention
        )
        random_masks = played.masks[idx] if plan.attention else None
    else:
        played = replay(randomised, rec.obs[idx], rec.first[idx])
        random_masks = played.masks
    if plan.attention:
        random_maps, trained_maps = random_masks, rec.masks[idx]
    else:
        random_probe = AgentProbe(randomised, played.states)
        random_maps = _as_distribution(_saliency(random_probe, idx, rec.obs, x).cpu())
        trained_maps = _as_distribution(_saliency(plan.probe, idx, rec.obs, x).cpu())
    sanity = M.randomisation_sanity(trained_maps, random_maps)
    summary.update({f"sanity_{k}": v for k, v in sanity.items()})


#: Per-head alignment metrics of multi-head agents (S3TA), in the per-frame table.
HEAD_METRICS = ("pointing", "mass_in_box", "lift", "auroc")


def _entropy(m: np.ndarray) -> float:
    return float(-(m * np.log(m + 1e-12)).sum())


def _saliency(probe: AgentProbe, idx: np.ndarray, obs: np.ndarray, x: DictConfig) -> torch.Tensor:
    """Grid-resolution policy saliency ``[len(idx), gh, gw]`` of the frames ``idx``."""
    return probe.map(
        idx,
        obs,
        lambda r, o, _: P.perturbation_saliency(
            r.outputs, o, sigma=x.saliency_sigma, stride=x.saliency_stride
        )["policy"],
    )


def _leakage(probe: AgentProbe, idx: np.ndarray, obs: np.ndarray) -> P.LeakageResult:
    """Spatial leakage over the frames ``idx``.

    A mask computed from the observation alone (every attention extractor, also inside an
    A3C-LSTM) is measured on the extractor with all frames at once; S3TA's mask depends on the
    recorded state, so its frames are measured one by one and pooled.
    """
    if state_free_attention(probe.network):
        return P.spatial_leakage(probe.network, torch.from_numpy(obs[idx]).to(probe.device))
    parts = []
    for frames, readout in probe.groups(idx):
        parts.append(
            P.spatial_leakage(readout.attention, torch.from_numpy(obs[frames]).to(probe.device))
        )
    return P.merge_leakage(parts)


def _as_distribution(maps: torch.Tensor) -> np.ndarray:
    """Saliency maps ``[B, H, W]`` -> distributions (sum 1); an all-zero map -> uniform."""
    out = P.normalise_saliency(maps.double(), "sum").numpy()
    zero = out.reshape(len(out), -1).sum(-1) == 0
    out[zero] = 1.0 / out[0].size
    return out


def resolve_objects(game: str, backend: str) -> tuple[ObjectSource | None, str | None]:
    """The object source for ``explain.objects``, or (None, why there is none).

    Raises:
        ConfigError: ``backend="ocatari"`` asked for explicitly but OCAtari is not installed.
    """
    from ife_platform.config import ConfigError
    from ife_platform.interpret.objects import (
        ObjectBackendUnavailableError,
        UnsupportedGameError,
        object_source,
    )

    if backend == "none":
        return None, "object ground truth is off (explain.objects=none)"
    try:
        return object_source(game, backend), None
    except UnsupportedGameError as err:
        return None, f"{err} Alignment metrics need object boxes and are left out."
    except ObjectBackendUnavailableError as err:
        raise ConfigError(f"explain.objects={backend}: {err}") from err


def record_agent(
    agent: Any, *, video: bool, progress: Callable[[StepView], None] | None = None
) -> tuple[Recording, str | None]:
    """Play ``agent.cfg.explain`` games with a loaded agent (``ife explain`` / ``ife compare``).

    Resolves the object source first (an explicit but missing backend fails here, before any
    game is played). Returns the recording and the note on missing object boxes, if any.
    """
    from ife_platform.envs import eval_env_kwargs

    cfg, x = agent.cfg, agent.cfg.explain
    objects, note = resolve_objects(cfg.env.game, x.objects)
    env = AtariEvalEnv(cfg.env.game, seed=cfg.seed + 54321, **eval_env_kwargs(cfg))
    rec = record(
        agent.network,
        env,
        episodes=x.episodes,
        max_steps=x.max_steps,
        epsilon=cfg.agent.eval_epsilon,
        seed=cfg.seed + 54321,
        objects=objects,
        video_max_steps=x.video_max_steps if video else 0,
        progress=progress,
    )
    return rec, note


def rerecord(network: torch.nn.Module, rec: Recording, batch_size: int = 64) -> Recording:
    """Another agent's scores, greedy actions and masks on the frames of ``rec``.

    ``ife compare`` measures every agent on the same observations: the frames come from one
    agent's games, and each agent is run on them (its own actions are not played). A recurrent
    agent steps through them in order with its own state, reset at every game's first frame
    (:func:`~ife_platform.interpret.probe.replay`), and its states are kept for the analysis.
    When the network reads fewer stacked frames than were recorded (A3C's single frame against
    Rainbow's stack of 4), it gets the newest ones.

    Raises:
        ValueError: the network reads more stacked frames than were recorded.
    """
    obs = observations_for(network, rec.obs)
    played = replay(
        network, obs, rec.first, batch_size=batch_size, keep_states=is_recurrent(network)
    )
    return Recording(
        game=rec.game,
        obs=obs,
        actions=played.scores.argmax(-1).astype(np.int64),
        q=played.scores,
        masks=played.masks,
        boxes=rec.boxes,
        episode=rec.episode,
        t=rec.t,
        frames=rec.frames,
        returns=rec.returns,
        lengths=rec.lengths,
        seconds=rec.seconds,
        heads=played.heads,
        states=played.states,
        starts=rec.starts,
    )


def observations_for(network: torch.nn.Module, obs: np.ndarray) -> np.ndarray:
    """Recorded ``[T, C, H, W]`` observations as ``network`` reads them (its newest channels).

    Raises:
        ValueError: the network needs more stacked frames than ``obs`` has.
    """
    need, have = int(network.extractor.in_channels), int(obs.shape[1])
    if need > have:
        raise ValueError(
            f"this agent reads {need} stacked frames but the shared frames have {have}: "
            "list an agent with the deepest frame stack first (its games are recorded)"
        )
    return obs if need == have else np.ascontiguousarray(obs[:, have - need :])


def is_count(key: str) -> bool:
    """A summary key that counts or times something (frames, games, boxes, seconds, rates).

    Counts stay in ``summary.json``; they are not MLflow metrics, whose charts would show a
    single point of bookkeeping (:func:`metric_values`).
    """
    name = key.rsplit("/", 1)[-1]
    return (
        name in ("frames", "episodes", "n_boxes", "leakage_outside_receptive")
        or name.endswith(("_frames", "_seconds", "_per_s"))
        or name.startswith("n_")
    )


def metric_values(summary: dict[str, Any]) -> dict[str, float]:
    """The summary's finite measurements, counts left out (:func:`is_count`): MLflow metrics."""
    return {
        k: float(v)
        for k, v in summary.items()
        if isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(v)
        and not is_count(k)
    }


def _alignment_keys(categories: list[str]) -> list[str]:
    empty = M.alignment_metrics(np.full((1, 1), 1.0), np.array([[[0, 84, 0, 84]]]), [], categories)
    return [k for k in empty if k != "n_boxes"]


def _is_index(key: str) -> bool:
    return key in ("episode", "t", "action", "argmax_row", "argmax_col")


def _same_keys(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    return [{k: row.get(k, float("nan")) for k in keys} for row in rows]


# -- outputs --------------------------------------------------------------------------------------


def render_video(rec: Recording, exp: Explanation, x: DictConfig) -> list[np.ndarray]:
    """Frames of the explanation video: raw | mask overlay [| saliency], upscaled, legend below.

    The mask is drawn on ``x.mask_scale`` (default: relative to uniform attention, a fixed
    scale; :func:`~ife_platform.video.mask_intensity`); the saliency panel is min-max per
    frame and the legend says so. Upscaling is ``x.video_upscale`` (nearest).
    """
    from ife_platform.video import (
        MaskVideoRecorder,
        compose_frame,
        grid_cell_rects,
        overlay_mask,
    )

    pix_rects = grid_cell_rects(84, 84)
    legend = MaskVideoRecorder(scale=x.mask_scale)  # its legend lines only
    out = []
    for i, frame in enumerate(rec.frames):
        panels = [frame]
        mask = None
        if rec.masks is not None:
            mask = rec.masks[i]
            panels.append(
                overlay_mask(frame, mask, exp.cell_rects, grid=x.grid, scale=x.mask_scale)
            )
        caption = rec.captions[i] if i < len(rec.captions) else f"step {int(rec.t[i])}"
        lines = legend.legend_lines(mask, caption)
        if i in exp.saliency:
            panels.append(
                overlay_mask(frame, exp.saliency[i], pix_rects, color="heat", scale="minmax")
            )
            lines.append("saliency panel: per-frame min-max (black-red-yellow-white)")
        out.append(
            compose_frame(
                panels,
                lines,
                factor=x.video_upscale,
                scale=None if mask is None else x.mask_scale,
                cells=1 if mask is None else int(mask.size),
            )
        )
    return out


def write_table(rows: list[dict[str, float]], path: Path, fmt: str = "csv") -> Path:
    """The per-frame table as CSV (or Parquet, which needs pandas + pyarrow)."""
    if fmt == "parquet":
        import pandas as pd

        path = path.with_suffix(".parquet")
        pd.DataFrame(rows).to_parquet(path)
        return path
    import csv

    path = path.with_suffix(".csv")
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    return path


def json_safe(value: Any) -> Any:
    """``value`` with NaN / inf replaced by None, recursively (strict JSON has neither)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


#: x-axis label and fixed range of each metric's distribution plot (None: from the data).
_METRIC_AXES: dict[str, tuple[str, tuple[float, float] | None]] = {
    "mass_in_box": ("mask mass inside object boxes (fraction, 0-1)", (0.0, 1.0)),
    "lift": ("lift: mass in boxes / box area share (1 = chance)", None),
    "auroc": ("AUROC of cells inside vs outside boxes (0.5 = chance)", (0.0, 1.0)),
    "mask_entropy": ("mask entropy (nats)", None),
}


def _plain_axis(axis: Any) -> None:
    """No offset or scientific notation on a metric axis ("1e-5+5.278" is unreadable)."""
    from matplotlib.ticker import ScalarFormatter

    fmt = ScalarFormatter(useOffset=False)
    fmt.set_scientific(False)
    axis.set_major_formatter(fmt)


def _curve_limits(values: np.ndarray) -> tuple[float, float]:
    """A y-range for score curves that does not magnify noise.

    The span is at least a quarter of the largest magnitude (and 1e-3), centred on the data:
    Q values that move by 0.001 around 0.27 show as flat, not as a cliff.
    """
    finite = values[np.isfinite(values)]
    if not finite.size:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    span = max(hi - lo, 0.25 * max(abs(lo), abs(hi)), 1e-3) * 1.1
    centre = (lo + hi) / 2
    return centre - span / 2, centre + span / 2


def write_plots(
    exp: Explanation, rows: list[dict[str, float]], folder: Path, run: str | None = None
) -> list[Path]:
    """PNG plots: metric distributions over frames, deletion / insertion curves, leakage map.

    Every plot's title names the game, the extractor and ``run`` (e.g. the MLflow run id);
    axes are labelled with units, reference lines are in a legend, metric axes carry no
    offset notation, fractions keep their fixed 0-1 range, and the leakage map's colour bar
    is the fixed 0-1 fraction (an all-zero map shows as zero, not as noise scaled to 1e-9).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    game, extractor = exp.summary.get("game", "?"), exp.summary.get("extractor", "?")
    who = f"{game}, {extractor}" + (f", run {run}" if run else "")
    paths = []
    keys = [
        k
        for k in (
            "mass_in_box",
            "lift",
            "auroc",
            "mask_entropy",
            "saliency/mass_in_box",
            "saliency/lift",
            "saliency/auroc",
        )
        if rows and k in rows[0]
    ]
    if keys:
        fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.4), squeeze=False)
        for ax, key in zip(axes[0], keys, strict=True):
            vals = np.asarray([r[key] for r in rows], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            name = key.split("/")[-1]
            label, fixed = _METRIC_AXES.get(name, (name, None))
            if name == "mask_entropy" and exp.cell_rects is not None:
                cells = int(np.prod(exp.cell_rects.shape[:2]))
                fixed = (0.0, float(np.log(cells)) * 1.02)  # 0 (one cell) .. ln L (uniform)
                ax.axvline(np.log(cells), color="grey", ls=":", lw=1, label=f"uniform: ln {cells}")
            colour = "tab:red" if "saliency" not in key else "tab:orange"
            ax.hist(vals, bins=20, range=fixed if vals.size else None, color=colour)
            chance = {"lift": 1.0, "auroc": 0.5}.get(name)
            if chance is not None:
                ax.axvline(chance, color="k", ls="--", lw=1, label=f"chance ({chance:g})")
            if fixed is not None:
                ax.set_xlim(*fixed)
            _plain_axis(ax.xaxis)
            source = "saliency" if key.startswith("saliency/") else "mask"
            ax.set_title(f"{name} of the {source} ({vals.size} frames)", fontsize=10)
            ax.set_xlabel(label, fontsize=9)
            ax.set_ylabel("frames", fontsize=9)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        fig.suptitle(f"Per-frame metrics: {who}", fontsize=11)
        fig.tight_layout()
        paths.append(folder / "metric_distributions.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    if exp.curves:
        score_label = {"q": "Q of the greedy action", "policy_prob": "pi(greedy action | s)"}[
            exp.summary.get("faithfulness_score", "q")
        ]
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        limits = _curve_limits(np.concatenate([np.ravel(v) for v in exp.curves.values()]))
        for ax, mode in zip(axes, ("deletion", "insertion"), strict=True):
            f = np.linspace(0, 1, exp.curves[mode].size)
            ax.plot(f, exp.curves[mode], label="importance order")
            ax.plot(f, exp.curves[f"random_{mode}"], ls="--", label="random order")
            ax.set_xlabel(f"fraction of pixels {'removed' if mode == 'deletion' else 'shown'}")
            ax.set_ylabel(f"{score_label} (mean over frames)")
            ax.set_xlim(0, 1)
            ax.set_ylim(*limits)
            _plain_axis(ax.yaxis)
            ax.set_title(mode, fontsize=10)
            ax.legend(fontsize=8)
        fig.suptitle(f"Deletion / insertion: {who}", fontsize=11)
        fig.tight_layout()
        paths.append(folder / "deletion_insertion.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    if exp.leakage_map is not None:
        leak = np.asarray(exp.leakage_map, dtype=np.float64)
        fig, ax = plt.subplots(figsize=(5.2, 4.8))
        im = ax.imshow(leak, vmin=0.0, vmax=1.0, cmap="magma")
        bar = fig.colorbar(im, ax=ax)
        bar.set_label("leakage (fraction of the logit change, 0-1)")
        ax.set_xlabel("mask cell column")
        ax.set_ylabel("mask cell row")
        mean, top = float(np.nanmean(leak)), float(np.nanmax(leak))
        ax.set_title(f"Leakage per cell\n{who}\nmean {mean:.3g}, max {top:.3g}", fontsize=9)
        fig.tight_layout()
        paths.append(folder / "leakage.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def write_outputs(
    rec: Recording, exp: Explanation, x: DictConfig, folder: Path, run: str | None = None
) -> list[Path]:
    """Write video, table, summary and plots into ``folder``; returns the written files.

    ``run`` (the MLflow run id, or a label) goes into the plots' titles.
    """
    from ife_platform.video import write_mp4

    folder.mkdir(parents=True, exist_ok=True)
    paths = [write_table(exp.rows, folder / "frames", x.table)]
    summary_path = folder / "summary.json"
    summary_path.write_text(json.dumps(json_safe(exp.summary), indent=2, sort_keys=True))
    paths.append(summary_path)
    curves_path = folder / "curves.json"
    curves_path.write_text(json.dumps({k: v.tolist() for k, v in exp.curves.items()}))
    paths.append(curves_path)
    arrays: dict[str, np.ndarray] = {"actions": rec.actions, "q": rec.q}
    if rec.masks is not None:
        arrays["masks"] = rec.masks
        arrays["cell_screen_rects"] = exp.cell_rects
    if rec.heads is not None:
        arrays["head_masks"] = rec.heads
    if exp.saliency:
        arrays["saliency_frames"] = np.asarray(sorted(exp.saliency))
        arrays["saliency"] = np.stack([exp.saliency[i] for i in sorted(exp.saliency)])
    paths.append(folder / "maps.npz")
    np.savez_compressed(paths[-1], **arrays)
    paths += write_plots(exp, exp.rows, folder, run)
    if x.video and rec.frames:
        paths.append(write_mp4(folder / "explain.mp4", render_video(rec, exp, x)))
    return paths


def format_summary(summary: dict[str, Any], notes: list[str]) -> str:
    """The short table ``ife explain`` prints."""
    lines = [
        f"{summary['game']}: {summary['extractor']}, {summary['frames']} frames, "
        f"{summary['episodes']} games, mean raw score {summary['return_mean']:.1f}"
    ]
    for key in HEADLINE:
        for name in (key, f"saliency/{key}"):
            if name in summary:
                value = summary[name]
                text = "n/a" if value is None or not np.isfinite(value) else f"{value:.4g}"
                lines.append(f"  {name:<28} {text}")
    lines += [f"  note: {n}" for n in notes]
    return "\n".join(lines)

"""Precision parity: the learner in bf16 (or another layout) against the fp32 reference.

Issue 13 allows a reduced precision as a default only where it learns like fp32. This section
holds everything but the precision fixed and lets the numbers diverge only through rounding:

- a **fixed replay snapshot**: n-step transitions of a real game played by a random policy
  (the DER profile's n, gamma, sign-clipped rewards and life-loss terminals);
- the **same batches**: one sequence of uniformly drawn indices, shared by every variant (with
  prioritized sampling the batches would follow each variant's own priorities and the
  comparison would mix sampling with rounding), importance weights 1;
- the **same start**: identical initial weights and noise draws (global seed before building
  and before updating);
- the **task's own update**: :meth:`RainbowTask.loss`, the platform's Adam, gradient-norm
  clipping and target syncs; ``bf16-mixed`` wraps the loss in ``torch.autocast`` as
  Lightning does around ``training_step``.

Each variant runs ``updates`` updates and records the loss, the mean Q of the taken actions
and the new priorities (the per-sample TD errors) of every update. Two more fp32 runs frame the
comparison: one in the other memory layout (NCHW instead of channels-last, or the reverse),
and the floor, whose initial weights differ from the reference's by about one rounding
(relative 2^-24): how far two fp32 runs that only round differently drift apart over the
same updates, since training amplifies any difference.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ife_platform.bench.common import variant_overrides
from ife_platform.bench.learner import BareStream, learner_config

#: Windows of this many updates are compared (means over the window).
WINDOW = 100

#: The floor run's relative perturbation of the initial weights: about one fp32 rounding.
FLOOR_PERTURBATION = 2.0**-24


def collect_snapshot(cfg: Any, steps: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """N-step transitions of ``steps`` random-policy agent steps of ``cfg.env.game``.

    Returns:
        ``obs`` / ``next_obs`` uint8 ``[M, stack, 84, 84]``, ``action`` int64, ``reward`` and
        ``discount`` float32, ``[M]`` each.
    """
    import numpy as np

    stream = BareStream(cfg, seed=seed)
    rng = np.random.default_rng(seed)
    out: list[tuple] = []
    try:
        for _ in range(steps):
            out.extend(stream.step(int(rng.integers(stream.num_actions))))
    finally:
        stream.close()
    if not out:
        raise ValueError(f"{steps} steps gave no n-step transition; collect more")
    o, act, g, disc, nxt = zip(*out, strict=True)
    return {
        "obs": torch.from_numpy(np.stack(o)),
        "action": torch.tensor(act, dtype=torch.int64),
        "reward": torch.tensor(g, dtype=torch.float32),
        "discount": torch.tensor(disc, dtype=torch.float32),
        "next_obs": torch.from_numpy(np.stack(nxt)),
    }


def run_updates(
    cfg: Any,
    snapshot: dict[str, torch.Tensor],
    indices: torch.Tensor,
    *,
    precision: str = "32-true",
    channels_last: bool | None = None,
    perturb: float = 0.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Run ``len(indices)`` updates of the task's learner on fixed batches of a snapshot.

    Args:
        cfg: a Rainbow-family config (``learner_config``).
        snapshot: from :func:`collect_snapshot`.
        indices: ``[updates, batch]`` int64 rows into the snapshot, one row per update.
        precision: ``32-true`` or ``bf16-mixed`` (autocast around the loss, as Lightning).
        channels_last: force the extractor's memory layout; None keeps its own choice.
        perturb: multiply every initial weight by ``1 + perturb * N(0, 1)`` (a fixed draw),
            e.g. 2^-24 for a rounding-sized change of the start.
        seed: global torch seed before building the networks and before the updates.

    Returns:
        ``loss`` [U], ``q_mean`` [U], ``priority`` [U, B] (float32 tensors) and ``ms_per_update``.
    """
    from tensordict import TensorDict

    from ife_platform.optim import make_adam
    from ife_platform.precision import autocast, autocast_dtype
    from ife_platform.tasks.rainbow import RainbowTask

    torch.manual_seed(seed)
    task = RainbowTask(cfg)
    for net in (task.online, task.target):
        ext = net.extractor
        if channels_last is not None:
            ext.channels_last = channels_last
    if perturb:
        gen = torch.Generator().manual_seed(seed + 2)
        with torch.no_grad():
            for p in task.online.parameters():
                p.mul_(1 + perturb * torch.randn(p.shape, generator=gen))
        task.target.load_state_dict(task.online.state_dict())
    task.online.train()
    task.target.train()
    opt = make_adam(task.online.parameters(), cfg.optim)
    dtype = autocast_dtype(precision)
    clip = task.k.grad_clip
    period = task.k.target_update_period
    n_updates, batch = indices.shape
    loss, q_mean = torch.empty(n_updates), torch.empty(n_updates)
    priority = torch.empty(n_updates, batch)
    ones = torch.ones(batch)
    torch.manual_seed(seed + 1)
    start = time.perf_counter()
    for u in range(n_updates):
        idx = indices[u]
        b = TensorDict({k: v.index_select(0, idx) for k, v in snapshot.items()}, batch_size=[batch])
        b.set("priority_weight", ones)
        with autocast("cpu", dtype):
            terms = task.loss(b)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(task.online.parameters(), clip)
        opt.step()
        if (u + 1) % period == 0:
            task.target.load_state_dict(task.online.state_dict())
        loss[u] = terms["loss"].detach().float()
        q_mean[u] = terms["q_mean"].float()
        priority[u] = terms["td_error"].float()
    seconds = time.perf_counter() - start
    return {
        "loss": loss,
        "q_mean": q_mean,
        "priority": priority,
        "ms_per_update": 1000.0 * seconds / n_updates,
    }


def compare_runs(run: dict[str, Any], ref: dict[str, Any], window: int = WINDOW) -> dict[str, Any]:
    """How far ``run`` is from ``ref`` over the same updates, window by window.

    For each window of ``window`` updates (the last may be shorter):

    - ``loss_rel``: |mean loss - mean reference loss| / mean reference loss;
    - ``q_abs``: |mean Q - mean reference Q| (Q in clipped-reward units);
    - ``priority_rel``: |mean priority - mean reference priority| / mean reference priority;
    - ``priority_l1``: mean over the window's updates of sum_j |p_j - p_ref_j| / sum_j p_ref_j,
      the per-transition deviation (the priorities a replay would store).

    Returns:
        The four lists (one value per window) and their maxima, ``max_<name>``.
    """
    n = len(ref["loss"])
    out: dict[str, Any] = {
        "window": window,
        "loss_rel": [],
        "q_abs": [],
        "priority_rel": [],
        "priority_l1": [],
    }
    for s in range(0, n, window):
        sl = slice(s, min(s + window, n))
        ref_loss, ref_p = ref["loss"][sl].mean(), ref["priority"][sl]
        out["loss_rel"].append(float((run["loss"][sl].mean() - ref_loss).abs() / ref_loss))
        out["q_abs"].append(float((run["q_mean"][sl].mean() - ref["q_mean"][sl].mean()).abs()))
        out["priority_rel"].append(
            float((run["priority"][sl].mean() - ref_p.mean()).abs() / ref_p.mean())
        )
        l1 = (run["priority"][sl] - ref_p).abs().sum(-1) / ref_p.sum(-1)
        out["priority_l1"].append(float(l1.mean()))
    for key in ("loss_rel", "q_abs", "priority_rel", "priority_l1"):
        out[f"max_{key}"] = max(out[key])
    return out


def bench_precision(
    extractor: str = "ife",
    *,
    game: str = "ms_pacman",
    steps: int = 3000,
    updates: int = 1000,
    seed: int = 0,
    window: int = WINDOW,
    variants: tuple[str, ...] = ("bf16-mixed",),
) -> dict[str, Any]:
    """fp32 reference, fp32 in the other memory layout, the fp32 floor and ``variants``.

    A variant is ``PRECISION[+compile]`` (``32-true+compile``: fp32 with the no-gradient
    forwards compiled).

    Every run starts from the same weights and trains on the same ``updates`` batches of one
    snapshot of ``steps`` random-policy agent steps; see the module docstring.
    """
    for variant in variants:
        variant_overrides(variant)  # an unknown flag fails here, before any work
    cfg = learner_config(extractor, game=game, learning_starts=0, updates=updates)
    snapshot = collect_snapshot(cfg, steps, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    n = snapshot["action"].shape[0]
    indices = torch.randint(n, (updates, int(cfg.agent.batch_size)), generator=gen)
    ref = run_updates(cfg, snapshot, indices, seed=seed)
    from ife_platform.extractors import EXTRACTORS

    layout = EXTRACTORS[extractor].channels_last
    layout_run = run_updates(cfg, snapshot, indices, seed=seed, channels_last=not layout)
    floor = run_updates(cfg, snapshot, indices, seed=seed, perturb=FLOOR_PERTURBATION)
    result: dict[str, Any] = {
        "extractor": extractor,
        "game": game,
        "snapshot_transitions": n,
        "updates": updates,
        "batch_size": int(cfg.agent.batch_size),
        "reference": {
            "precision": "32-true",
            "channels_last": layout,
            "ms_per_update": ref["ms_per_update"],
            "loss_first_last": [
                float(ref["loss"][:window].mean()),
                float(ref["loss"][-window:].mean()),
            ],
            "q_first_last": [
                float(ref["q_mean"][:window].mean()),
                float(ref["q_mean"][-window:].mean()),
            ],
        },
        "runs": [
            {
                "precision": "32-true",
                "channels_last": not layout,
                "role": "fp32, the other memory layout",
                "ms_per_update": layout_run["ms_per_update"],
                **compare_runs(layout_run, ref, window),
            },
            {
                "precision": "32-true",
                "channels_last": layout,
                "role": "floor: fp32, start perturbed by 2^-24",
                "ms_per_update": floor["ms_per_update"],
                **compare_runs(floor, ref, window),
            },
        ],
    }
    for variant in variants:
        precision, *flags = variant.split("+")
        # the task reads trainer.compile; precision is the autocast around the loss
        own = learner_config(
            extractor,
            game=game,
            learning_starts=0,
            updates=updates,
            extra=variant_overrides(variant),
        )
        run = run_updates(own, snapshot, indices, seed=seed, precision=precision)
        result["runs"].append(
            {
                "precision": precision,
                "compile": "compile" in flags,
                "channels_last": layout,
                "role": f"candidate: {variant}",
                "ms_per_update": run["ms_per_update"],
                **compare_runs(run, ref, window),
            }
        )
    return result

"""Section 4: interpretability, the mask-recording overhead and saliency throughput."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from ife_platform.bench.common import interleave, median


def bench_explain(
    game: str = "pong",
    extractor: str = "ife",
    *,
    steps: int = 300,
    rounds: int = 3,
    saliency_frames: int = 8,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluation steps/s without and with ``ife explain``'s recording, and saliency frames/s.

    All variants play the same game from the same seed with the same (randomly initialised)
    network for ``steps`` agent steps, interleaved. "recording" is the ``explain`` observer
    (observation, Q-values, mask, action and the raw frame of every step); "+ objects" adds
    the builtin object boxes of every frame. The target is overhead <= 10 % for recording.
    """
    import torch

    from ife_platform.config import compose
    from ife_platform.envs import AtariEvalEnv, atari_spec
    from ife_platform.evaluation import play
    from ife_platform.interpret.explain import _Recorder
    from ife_platform.interpret.objects import object_source
    from ife_platform.interpret.perturb import saliency_benchmark
    from ife_platform.tasks.rainbow import build_network

    cfg = compose([f"env.game={game}", f"model.extractor={extractor}"])
    torch.manual_seed(seed)
    network = build_network(cfg, atari_spec(game).num_actions).eval()
    env = AtariEvalEnv(game, seed=seed)

    def rate(observer_factory: Callable[[], Any] | None) -> Callable[[], float]:
        def sample() -> float:
            observer = observer_factory() if observer_factory else None
            t0 = time.perf_counter()
            result = play(
                network,
                env,
                episodes=1,
                epsilon=0.0,
                seed=seed,
                max_steps=steps,
                observer=observer,
            )
            return sum(result.lengths) / (time.perf_counter() - t0)

        return sample

    samplers = {
        "evaluation loop": rate(None),
        "+ explain recording": rate(lambda: _Recorder(None, steps)),
        "+ recording and object boxes": rate(lambda: _Recorder(object_source(game), steps)),
    }
    for sample in samplers.values():
        sample()  # warm-up
    results = interleave(samplers, rounds)
    base = median(results["evaluation loop"])
    out: dict[str, Any] = {
        "game": game,
        "extractor": extractor,
        "steps": steps,
        "rounds": rounds,
        "variants": {
            name: {
                "steps_per_s": median(v),
                "overhead": base / median(v) - 1.0,
                "samples": v,
            }
            for name, v in results.items()
        },
        "saliency": {},
    }
    for name in (extractor, "nature_cnn"):
        out["saliency"][name] = saliency_benchmark(name, frames=saliency_frames)
    return out


#: ``ife explain`` analysis cost per agent kind: (label, config overrides).
EXPLAIN_AGENTS: dict[str, list[str]] = {
    "rainbow_der ife": ["agent=rainbow_der", "model.extractor=ife"],
    "a3c_lstm ife": ["agent=a3c_lstm", "model.extractor=ife"],
    "s3ta": ["agent=s3ta"],
}


def bench_explain_agents(
    game: str = "pong",
    *,
    steps: int = 200,
    agents: Sequence[str] = tuple(EXPLAIN_AGENTS),
    seed: int = 0,
) -> dict[str, Any]:
    """Seconds of ``ife explain``'s analysis for Rainbow and recurrent agents, same settings.

    Each (untrained) agent plays one game of ``steps`` agent steps with object boxes, then
    :func:`~ife_platform.interpret.explain.analyse` runs with the default ``explain`` settings
    except the video (32 analysis frames for faithfulness and the sanity check, 4 leakage
    frames). Recurrent agents read every perturbation with the recorded state, one frame at a
    time (``interpret/probe.py``); Q-networks batch frames together.
    """
    import torch

    from ife_platform.config import agent_spec, compose
    from ife_platform.envs import AtariEvalEnv, eval_env_kwargs
    from ife_platform.interpret import explain as E
    from ife_platform.interpret.objects import object_source

    out: dict[str, Any] = {"game": game, "steps": steps, "agents": {}}
    for label in agents:
        cfg = compose([*EXPLAIN_AGENTS[label], f"env.game={game}", "explain.video=false"])
        env = AtariEvalEnv(game, seed=seed, **eval_env_kwargs(cfg))
        torch.manual_seed(seed)
        network = agent_spec(cfg.agent.name).build_network(cfg, env.num_actions).eval()
        t0 = time.perf_counter()
        rec = E.record(
            network,
            env,
            episodes=1,
            max_steps=steps,
            epsilon=0.0,
            seed=seed,
            objects=object_source(game),
            video_max_steps=0,
        )
        t1 = time.perf_counter()
        exp = E.analyse(network, rec, cfg.explain, seed=seed)
        t2 = time.perf_counter()
        out["agents"][label] = {
            "frames": len(rec),
            "record_s": t1 - t0,
            "analyse_s": t2 - t1,
            "leakage_s": exp.summary.get("leakage_seconds"),
            "analysis_frames": int(cfg.explain.analysis_frames),
            "state_bytes_per_step": sum(
                s[0].numel() * s.element_size() for s in (rec.states or ())
            ),
        }
    return out

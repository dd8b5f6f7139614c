"""Evaluation episodes: raw full-game scores, HNS, and the attention mask over the raw screen."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ife_platform.envs import AtariEvalEnv
from ife_platform.rainbow.agent import QNetwork
from ife_platform.scores import has_reference, human_normalized_score
from ife_platform.video import MaskVideoRecorder


@dataclass
class EvalResult:
    """Scores of evaluation episodes (raw = unclipped, all lives)."""

    game: str
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    video_path: Path | None = None
    mask_entropy: float | None = None

    @property
    def mean_return(self) -> float:
        """Mean raw score."""
        return float(np.mean(self.returns)) if self.returns else float("nan")

    @property
    def hns(self) -> float | None:
        """Human-normalised mean score, or None for games without reference scores."""
        if not has_reference(self.game) or not self.returns:
            return None
        return human_normalized_score(self.game, self.mean_return)

    def metrics(self, prefix: str = "eval/") -> dict[str, float]:
        """Flat metrics for MLflow."""
        out = {
            f"{prefix}return_mean": self.mean_return,
            f"{prefix}return_std": float(np.std(self.returns)) if self.returns else float("nan"),
            f"{prefix}length_mean": float(np.mean(self.lengths)) if self.lengths else float("nan"),
            f"{prefix}episodes": float(len(self.returns)),
        }
        if self.hns is not None:
            out[f"{prefix}hns"] = self.hns
        if self.mask_entropy is not None:
            out[f"{prefix}mask_entropy"] = self.mask_entropy
        return out


@torch.no_grad()
def evaluate(
    network: QNetwork,
    game: str,
    *,
    episodes: int = 1,
    epsilon: float = 0.0,
    seed: int = 0,
    max_steps: int = 27_000,
    video_path: str | Path | None = None,
    video_max_steps: int = 1000,
    env_kwargs: dict | None = None,
) -> EvalResult:
    """Play whole games with a network and optionally record the first one as a mask video.

    The network is put in eval mode (noisy layers use their mean weights) and restored after.
    Actions are greedy on Q with probability ``1 - epsilon``.

    Args:
        network: the Q-network (any extractor).
        game: ale-py game id.
        episodes: number of games.
        epsilon: evaluation epsilon.
        seed: seeds the emulator, the no-op starts and epsilon.
        max_steps: agent-step cap per game.
        video_path: where to write the mp4 of the first game (mask over the raw 210x160 frame,
            nearest upsampling so cells stay visible). None writes no video. Extractors without
            an attention mask get the raw frames only.
        video_max_steps: agent steps recorded at most.
        env_kwargs: protocol settings for :class:`AtariEvalEnv` (sticky actions, action set...).
    """
    was_training = network.training
    network.eval()
    device = network.support.device
    env = AtariEvalEnv(game, seed=seed, **(env_kwargs or {}))
    if env.num_actions != network.num_actions:
        raise ValueError(
            f"the network has {network.num_actions} actions but {game} has {env.num_actions} "
            "with this action set (check env.full_action_space)"
        )
    rng = np.random.default_rng(seed)
    result = EvalResult(game)
    extractor = network.extractor
    rects = extractor.cell_screen_rects().cpu().numpy() if extractor.has_attention else None
    recorder = MaskVideoRecorder(rects, max_frames=video_max_steps) if video_path else None
    entropies: list[float] = []
    try:
        for episode in range(episodes):
            obs, frame = env.reset()
            total, steps = 0.0, 0
            while steps < max_steps:
                x = torch.from_numpy(obs).unsqueeze(0).to(device)
                q = network.q_values(x)
                mask = network.attention_mask
                if mask is not None:
                    m = mask[0].float()
                    entropies.append(float(-(m * (m + 1e-12).log()).sum()))
                if recorder is not None and episode == 0:
                    if mask is not None:
                        recorder.add(frame, mask[0].float().cpu().numpy())
                    elif len(recorder) < video_max_steps:
                        recorder.add(frame, np.zeros((1, 1), np.float32), _FULL_SCREEN)
                action = int(q.argmax(-1).item())
                if epsilon > 0 and rng.random() < epsilon:
                    action = int(rng.integers(env.num_actions))
                obs, reward, over, truncated, frame = env.step(action)
                total += reward
                steps += 1
                if over or truncated:
                    break
            result.returns.append(total)
            result.lengths.append(steps)
    finally:
        network.train(was_training)
    if recorder is not None and len(recorder):
        result.video_path = recorder.write(video_path)
    if entropies:
        result.mask_entropy = float(np.mean(entropies))
    return result


_FULL_SCREEN = np.array([[[0.0, 210.0, 0.0, 160.0]]])

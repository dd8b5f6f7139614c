"""Evaluation episodes: raw full-game scores, HNS, and the attention mask over the raw screen."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ife_platform.a3c.model import zero_rows
from ife_platform.envs import AtariEvalEnv
from ife_platform.extractors.base import mask_entropy
from ife_platform.policies import is_recurrent
from ife_platform.rainbow.heads import NoisyLinear
from ife_platform.scores import has_reference, human_normalized_score
from ife_platform.seeding import TORCH_SEED_BITS, ale_env_seeds, fold_seed
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


@dataclass
class StepView:
    """What an observer of :func:`play` sees at each agent step, before the action is applied.

    Attributes:
        episode: game index.
        t: agent step within the game.
        obs: uint8 ``[stack, 84, 84]`` observation the network acted on.
        frame: uint8 ``[210, 160, 3]`` raw RGB screen of that observation's last frame.
        q: ``[A]`` per-action scores (float32, CPU): Q-values of a Q-network, policy logits
            of a recurrent actor-critic.
        mask: ``[rows, cols]`` attention mask of this forward (CPU), or None.
        action: the action taken.
        env: the live :class:`AtariEvalEnv` (e.g. ``env.ale`` for RAM-based object boxes).
        heads: ``[heads, rows, cols]`` per-head masks of a multi-head agent (S3TA), or None.
        state: a recurrent agent's state as it entered this step (rows ``[1, ...]``, already
            zeroed at a game's first step), or None: with it, the step can be replayed on a
            perturbed observation (``ife explain``).
    """

    episode: int
    t: int
    obs: np.ndarray
    frame: np.ndarray
    q: torch.Tensor
    mask: torch.Tensor | None
    action: int
    env: AtariEvalEnv
    heads: torch.Tensor | None = None
    state: tuple[torch.Tensor, ...] | None = None


class ActingPolicy:
    """Greedy acting for evaluation, the same for value-based and recurrent agents.

    ``scores(obs, first)`` returns per-action scores for a batch: Q-values of a
    :class:`~ife_platform.rainbow.agent.QNetwork`, or policy logits of a recurrent
    actor-critic, whose LSTM state this object carries and resets where ``first`` marks the
    first observation of a game. The greedy action is the argmax of the scores.

    ``input_state`` is the state the last :meth:`scores` call fed the network, with the rows of
    new games already zeroed: ``network.step(obs, input_state, no resets)`` repeats that step.
    """

    def __init__(self, network: torch.nn.Module) -> None:
        self.network = network
        self.recurrent = is_recurrent(network)
        self.num_actions = int(network.num_actions)
        self.extractor = network.extractor
        self._state: tuple | None = None
        self.input_state: tuple[torch.Tensor, ...] | None = None
        param = next(network.parameters())
        self.device = param.device

    def reset(self, batch: int) -> None:
        """Forget the recurrent state (a new set of ``batch`` games)."""
        self._state = self.network.initial_state(batch, self.device) if self.recurrent else None

    def scores(self, obs: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """``[B, A]`` scores for uint8 ``obs [B, C, H, W]``; ``first [B]`` bool."""
        if not self.recurrent:
            return self.network.q_values(obs)
        if self._state is None or self._state[0].shape[0] != obs.shape[0]:
            self.reset(obs.shape[0])
        first = first.to(self.device)
        self.input_state = zero_rows(self._state, first)
        logits, _, self._state = self.network.step(obs, self.input_state, first)
        return logits

    @property
    def head_masks(self) -> torch.Tensor | None:
        """Per-head masks of the last forward (``[B, heads, rows, cols]``) or None."""
        return getattr(self.network, "attention_masks", None)

    @property
    def attention_mask(self) -> torch.Tensor | None:
        """The mask of the last forward (``[B, rows, cols]``) or None."""
        return self.network.attention_mask


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` torch threads (restored after).

    Evaluation forwards are batches of 1-8 frames: on a shared 2-core machine one thread is
    several times faster than two, whose OpenMP workers spin against the emulator threads
    (docs/benchmarks.md).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def play(
    network: torch.nn.Module,
    env: AtariEvalEnv,
    *,
    episodes: int,
    epsilon: float,
    seed: int,
    max_steps: int,
    observer: Callable[[StepView], None] | None = None,
    noise: bool = False,
) -> EvalResult:
    """Play whole games with a network (eval mode, greedy with probability ``1 - epsilon``).

    The one evaluation loop of the platform: :func:`evaluate` and ``ife explain`` differ only
    in their observer. The network's train/eval flag is restored afterwards.

    Args:
        network: a Q-network or a recurrent actor-critic (any extractor).
        env: an :class:`AtariEvalEnv` with the network's action set.
        episodes: number of games.
        epsilon: evaluation epsilon.
        seed: seeds epsilon's generator.
        max_steps: agent-step cap per game.
        observer: called at every step with a :class:`StepView`.
        noise: keep the noisy layers sampling, with fresh noise every step (as the DER actor
            explores in training). A diagnostic: the DER references (Kaixhin/Rainbow,
            Dopamine) evaluate with noise off, the default.

    Returns:
        Raw scores and lengths of the games.
    """
    policy = ActingPolicy(network)
    if env.num_actions != policy.num_actions:
        raise ValueError(
            f"the network has {policy.num_actions} actions but {env.game} has "
            f"{env.num_actions} with this action set (check env.full_action_space)"
        )
    was_training = network.training
    network.eval()
    noisy = [m for m in network.modules() if isinstance(m, NoisyLinear)] if noise else []
    for m in noisy:
        m.train()  # the layers sample their noise in train mode only
    device = policy.device
    gen_seed = fold_seed(seed, TORCH_SEED_BITS)
    noise_gen = torch.Generator(device=device).manual_seed(gen_seed) if noisy else None
    rng = np.random.default_rng(seed)
    result = EvalResult(env.game)
    with torch_threads(1):
        try:
            for episode in range(episodes):
                obs, frame = env.reset()
                policy.reset(1)
                total, steps = 0.0, 0
                while steps < max_steps:
                    x = torch.from_numpy(obs).unsqueeze(0).to(device)
                    for m in noisy:
                        m.reset_noise(noise_gen)
                    q = policy.scores(x, torch.tensor([steps == 0]))[0]
                    action = int(q.argmax().item())
                    if epsilon > 0 and rng.random() < epsilon:
                        action = int(rng.integers(env.num_actions))
                    if observer is not None:
                        mask, heads = policy.attention_mask, policy.head_masks
                        state = policy.input_state if policy.recurrent else None
                        view = StepView(
                            episode,
                            steps,
                            obs,
                            frame,
                            q.float().cpu(),
                            None if mask is None else mask[0].float().cpu(),
                            action,
                            env,
                            heads=None if heads is None else heads[0].float().cpu(),
                            state=None if state is None else tuple(s.cpu() for s in state),
                        )
                        observer(view)
                    obs, reward, over, truncated, frame = env.step(action)
                    total += reward
                    steps += 1
                    if over or truncated:
                        break
                result.returns.append(total)
                result.lengths.append(steps)
        finally:
            network.train(was_training)
    return result


def evaluate(
    network: torch.nn.Module,
    game: str,
    *,
    episodes: int = 1,
    epsilon: float = 0.0,
    seed: int = 0,
    max_steps: int = 27_000,
    video_path: str | Path | None = None,
    video_max_steps: int = 1000,
    env_kwargs: dict | None = None,
    noise: bool = False,
) -> EvalResult:
    """Play whole games with a network and optionally record the first one as a mask video.

    The network is put in eval mode (noisy layers use their mean weights) and restored after.
    Actions are greedy on Q with probability ``1 - epsilon``.

    Args:
        network: a Q-network or a recurrent actor-critic (any extractor).
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
        noise: evaluate with the noisy layers sampling (a diagnostic; see :func:`play`).
    """
    env = AtariEvalEnv(game, seed=seed, **(env_kwargs or {}))
    extractor = network.extractor
    rects = extractor.cell_screen_rects().cpu().numpy() if extractor.has_attention else None
    recorder = MaskVideoRecorder(rects, max_frames=video_max_steps) if video_path else None
    entropies: list[float] = []

    def observe(step: StepView) -> None:
        if step.mask is not None:
            entropies.append(float(mask_entropy(step.mask[None])))
        if recorder is not None and step.episode == 0:
            if step.mask is not None:
                recorder.add(step.frame, step.mask.numpy())
            elif len(recorder) < video_max_steps:
                recorder.add(step.frame, np.zeros((1, 1), np.float32), _FULL_SCREEN)

    result = play(
        network,
        env,
        episodes=episodes,
        epsilon=epsilon,
        seed=seed,
        max_steps=max_steps,
        observer=observe,
        noise=noise,
    )
    if recorder is not None and len(recorder):
        result.video_path = recorder.write(video_path)
    if entropies:
        result.mask_entropy = float(np.mean(entropies))
    return result


@torch.no_grad()
def evaluate_parallel(
    network: torch.nn.Module,
    game: str,
    *,
    episodes: int,
    max_steps: int,
    epsilon: float = 0.0,
    seed: int = 0,
    env_kwargs: dict | None = None,
    act: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> EvalResult:
    """Play ``episodes`` whole games at once in one ale-py vector env (batched forwards).

    Each env's first game counts; envs that finish early keep stepping (autoreset) but are
    no longer scored. A game still running after ``max_steps`` agent steps is scored with what
    it has (its length then equals ``max_steps``). Scores are raw (unclipped, all lives).

    Args:
        network: the Q-network (put in eval mode here, flag restored).
        game: ale-py game id.
        episodes: games, one per env.
        max_steps: agent-step cap per game.
        epsilon: evaluation epsilon.
        seed: seeds the emulators and epsilon.
        env_kwargs: protocol settings (same keys as :class:`AtariEvalEnv`).
        act: optional ``obs -> actions`` override (default: greedy on ``q_values``).
    """
    from ife_platform.envs import make_vector_env

    vec = make_vector_env(game, episodes, **(env_kwargs or {}))
    policy = ActingPolicy(network)
    if int(vec.single_action_space.n) != policy.num_actions:
        vec.close()
        raise ValueError(
            f"the network has {policy.num_actions} actions but {game} has "
            f"{int(vec.single_action_space.n)} with this action set (check full_action_space)"
        )
    was_training = network.training
    network.eval()
    device = policy.device
    rng = np.random.default_rng(seed)
    returns = np.zeros(episodes, dtype=np.float64)
    lengths = np.zeros(episodes, dtype=np.int64)
    running = np.ones(episodes, dtype=bool)
    with torch_threads(1):
        try:
            obs, _ = vec.reset(seed=ale_env_seeds(seed, episodes))
            policy.reset(episodes)
            first = torch.ones(episodes, dtype=torch.bool)
            for _ in range(max_steps):
                x = torch.from_numpy(np.asarray(obs)).to(device)
                action = (act(x) if act else policy.scores(x, first).argmax(-1)).cpu().numpy()
                if epsilon > 0:
                    explore = rng.random(episodes) < epsilon
                    action = np.where(
                        explore, rng.integers(0, policy.num_actions, episodes), action
                    )
                obs, reward, terminated, truncated, _ = vec.step(action.astype(np.int64))
                returns[running] += reward[running]
                lengths[running] += 1
                running &= ~(terminated | truncated)
                first = torch.from_numpy(terminated | truncated)  # autoreset: a new game
                if not running.any():
                    break
        finally:
            vec.close()
            network.train(was_training)
    return EvalResult(game, returns.tolist(), lengths.tolist())


_FULL_SCREEN = np.array([[[0.0, 210.0, 0.0, 160.0]]])

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
from ife_platform.seeding import TORCH_SEED_BITS, fold_seed
from ife_platform.video import MaskVideoRecorder


@dataclass
class EvalResult:
    """Scores of evaluation episodes (raw = unclipped, all lives) and the cap they ran under.

    Attributes:
        game: ale-py game id.
        returns: raw score per game.
        lengths: agent steps per game.
        truncated: per game, whether a cap ended it (the episode cap
            ``max_episode_frames`` or the step cap ``max_steps``) rather than a game over.
        max_episode_frames: the episode cap in emulator frames (None: not recorded).
        max_steps: the step cap per game on top of it (None: none).
        frame_skip: emulator frames per agent step.
        video_path: the mask video of the first game, if one was written.
        mask_entropy: mean mask entropy over the played steps (attention extractors).
    """

    game: str
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    max_episode_frames: int | None = None
    max_steps: int | None = None
    frame_skip: int = 4
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

    @property
    def num_truncated(self) -> int:
        """Games a cap ended before their game over."""
        return int(sum(self.truncated))

    @property
    def cap_frames(self) -> int | None:
        """The cap a game ran under, in emulator frames of agent steps (None: not recorded).

        The smaller of ``max_episode_frames`` and ``max_steps * frame_skip``.
        """
        caps = [c for c in (self.max_episode_frames, self._step_cap_frames) if c is not None]
        return min(caps) if caps else None

    @property
    def _step_cap_frames(self) -> int | None:
        return None if self.max_steps is None else self.max_steps * self.frame_skip

    @property
    def short_cap(self) -> bool:
        """The step cap is shorter than the episode cap: long games are cut short."""
        step = self._step_cap_frames
        return step is not None and (
            self.max_episode_frames is None or step < self.max_episode_frames
        )

    def cap_note(self) -> str:
        """One line on the cap: what it was and how many games it ended."""
        cap = self.cap_frames
        text = "no cap recorded" if cap is None else f"capped at {cap:,} emulator frames"
        if cap is not None and self.short_cap:
            text += (
                f" ({self.max_steps:,} agent steps, shorter than the "
                f"{self.max_episode_frames or 0:,}-frame episode cap)"
            )
        return f"{text}; {self.num_truncated} of {len(self.returns)} games ended by the cap"

    def metrics(self, prefix: str = "eval/") -> dict[str, float]:
        """Flat metrics for MLflow (``truncated``: games ended by the cap; ``cap_frames``)."""
        out = {
            f"{prefix}return_mean": self.mean_return,
            f"{prefix}return_std": float(np.std(self.returns)) if self.returns else float("nan"),
            f"{prefix}length_mean": float(np.mean(self.lengths)) if self.lengths else float("nan"),
            f"{prefix}episodes": float(len(self.returns)),
            f"{prefix}truncated": float(self.num_truncated),
        }
        if self.cap_frames is not None:
            out[f"{prefix}cap_frames"] = float(self.cap_frames)
        if self.hns is not None:
            out[f"{prefix}hns"] = self.hns
        if self.mask_entropy is not None:
            out[f"{prefix}mask_entropy"] = self.mask_entropy
        return out


class EvaluationStopped(Exception):
    """An evaluation was abandoned because its ``should_stop`` said so (a stop signal came).

    Its partial games are not returned: an evaluation is whole or it is not logged.
    """


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
        first: this step starts a sequence for the agent (a game's first step, or a new
            life's under ``life_loss_terminal``): a recurrent state was zeroed before it.
        value: the state value V(s) of an actor-critic's forward, or None (a Q-network).
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
    first: bool = False
    value: float | None = None

    def caption(self) -> str:
        """The video legend's line: game, step, action played and its Q (or V of the state)."""
        name = getattr(self.env.actions[self.action], "name", str(self.action))
        if self.value is not None:
            score = f"V(s) {self.value:.3f}"
        else:
            score = f"Q(s,a) {float(self.q[self.action]):.3f}"
        return f"game {self.episode}  step {self.t}  action {name}  {score}"


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
        self.value: torch.Tensor | None = None  # [B] V(s) of the last recurrent forward
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
        logits, self.value, self._state = self.network.step(obs, self.input_state, first)
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
    max_steps: int | None = None,
    observer: Callable[[StepView], None] | None = None,
    noise: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> EvalResult:
    """Play whole games with a network (eval mode, greedy with probability ``1 - epsilon``).

    The one evaluation loop of the platform: :func:`evaluate` and ``ife explain`` differ only
    in their observer. The network's train/eval flag is restored afterwards.

    The protocol is the env's (docs/design.md, "Evaluation protocol"): its no-op starts, its
    episode cap (``env.max_episode_frames``), FIRE after a lost life where it forces it, and a
    recurrent state zeroed at every game start and, where the env says a life starts a new
    sequence (``life_loss_terminal``), after every lost life.

    Args:
        network: a Q-network or a recurrent actor-critic (any extractor).
        env: an :class:`AtariEvalEnv` with the network's action set.
        episodes: number of games.
        epsilon: evaluation epsilon.
        seed: seeds epsilon's generator.
        max_steps: a step cap per game on top of the env's episode cap (None: the env's cap
            alone). Games it or the env's cap ends are marked ``truncated``.
        observer: called at every step with a :class:`StepView`.
        noise: keep the noisy layers sampling, with fresh noise every step (as the DER actor
            explores in training). A diagnostic: the DER references (Kaixhin/Rainbow,
            Dopamine) evaluate with noise off, the default.
        should_stop: asked before every step; when it answers True the evaluation is
            abandoned with :class:`EvaluationStopped` (a training run's stop signal: one game
            can last 27,000 agent steps, longer than a scheduler's grace period).

    Returns:
        Raw scores, lengths and truncation flags of the games, with the caps.

    Raises:
        EvaluationStopped: ``should_stop`` answered True.
    """
    policy = ActingPolicy(network)
    if env.num_actions != policy.num_actions:
        raise ValueError(
            f"the network has {policy.num_actions} actions but {env.game} has "
            f"{env.num_actions} with this action set (check env.full_action_space)"
        )
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")
    was_training = network.training
    network.eval()
    noisy = [m for m in network.modules() if isinstance(m, NoisyLinear)] if noise else []
    for m in noisy:
        m.train()  # the layers sample their noise in train mode only
    device = policy.device
    gen_seed = fold_seed(seed, TORCH_SEED_BITS)
    noise_gen = torch.Generator(device=device).manual_seed(gen_seed) if noisy else None
    rng = np.random.default_rng(seed)
    result = EvalResult(
        env.game,
        max_episode_frames=env.max_episode_frames,
        max_steps=max_steps,
        frame_skip=env.frame_skip,
    )
    with torch_threads(1):
        try:
            for episode in range(episodes):
                obs, frame = env.reset()
                policy.reset(1)
                total, steps, over = 0.0, 0, False
                while max_steps is None or steps < max_steps:
                    if should_stop is not None and should_stop():
                        raise EvaluationStopped(f"stopped in game {episode + 1} of {episodes}")
                    x = torch.from_numpy(obs).unsqueeze(0).to(device)
                    for m in noisy:
                        m.reset_noise(noise_gen)
                    first = steps == 0 or env.starts_life
                    q = policy.scores(x, torch.tensor([first]))[0]
                    action = int(q.argmax().item())
                    if epsilon > 0 and rng.random() < epsilon:
                        action = int(rng.integers(env.num_actions))
                    if env.forced_action is not None:
                        action = env.forced_action  # FIRE after a lost life: what is played
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
                            first=first,
                            value=(
                                float(policy.value[0])
                                if policy.recurrent and policy.value is not None
                                else None
                            ),
                        )
                        observer(view)
                    obs, reward, over, truncated, frame = env.step(action)
                    total += reward
                    steps += 1
                    if over or truncated:
                        break
                result.returns.append(total)
                result.lengths.append(steps)
                result.truncated.append(not over)
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
    max_steps: int | None = None,
    video_path: str | Path | None = None,
    video_max_steps: int = 1000,
    env_kwargs: dict | None = None,
    noise: bool = False,
    video_scale: str = "uniform",
    video_upscale: int = 3,
    progress: Callable[[StepView], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
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
        max_steps: a step cap per game on top of the episode cap (None: the protocol's
            ``max_episode_frames`` of ``env_kwargs`` alone).
        video_path: where to write the mp4 of the first game: raw frame | mask overlay, upscaled
            by ``video_upscale`` (nearest, so cells stay visible), over a legend with the step,
            the action, Q(s,a) (or V(s)), the mask's max over uniform and entropy, and the
            colour bar (:class:`~ife_platform.video.MaskVideoRecorder`). None writes no video.
            Extractors without an attention mask get the raw frames and the caption only.
        video_max_steps: agent steps recorded at most.
        env_kwargs: protocol settings for :class:`AtariEvalEnv` (sticky actions, action set...).
        noise: evaluate with the noisy layers sampling (a diagnostic; see :func:`play`).
        video_scale: the overlay's colour scale, ``"uniform"`` (mask / uniform, fixed) or
            ``"minmax"`` (per frame; :func:`~ife_platform.video.mask_intensity`).
        video_upscale: integer upscaling factor of the video frames.
        progress: also called at every step (a progress display; it only observes).
        should_stop: asked before every step; True abandons the evaluation (see :func:`play`;
            no video is written).

    Raises:
        EvaluationStopped: ``should_stop`` answered True.
    """
    env = AtariEvalEnv(game, seed=seed, **(env_kwargs or {}))
    extractor = network.extractor
    rects = extractor.cell_screen_rects().cpu().numpy() if extractor.has_attention else None
    recorder = (
        MaskVideoRecorder(
            rects,
            with_raw=True,
            max_frames=video_max_steps,
            scale=video_scale,
            upscale=video_upscale,
        )
        if video_path
        else None
    )
    entropies: list[float] = []

    def observe(step: StepView) -> None:
        if progress is not None:
            progress(step)
        if step.mask is not None:
            entropies.append(float(mask_entropy(step.mask[None])))
        if recorder is not None and step.episode == 0:
            mask = None if step.mask is None else step.mask.numpy()
            recorder.add(step.frame, mask, caption=step.caption())

    result = play(
        network,
        env,
        episodes=episodes,
        epsilon=epsilon,
        seed=seed,
        max_steps=max_steps,
        observer=observe,
        noise=noise,
        should_stop=should_stop,
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
    max_steps: int | None = None,
    epsilon: float = 0.0,
    seed: int = 0,
    env_kwargs: dict | None = None,
    act: Callable[[torch.Tensor], torch.Tensor] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> EvalResult:
    """Play ``episodes`` whole games at once in one vector env (batched forwards).

    The env is :class:`~ife_platform.envs.AtariVecEnv`, the training env, so the protocol is
    training's (no-op starts, episode cap, FIRE after a lost life where the protocol presses
    it); a recurrent state is zeroed at every game start and, with ``life_loss_terminal`` in
    ``env_kwargs``, after every lost life. Each env's first game counts; envs that finish
    early keep stepping (autoreset) but are no longer scored. A game still running after
    ``max_steps`` agent steps is scored with what it has (its length then equals
    ``max_steps``) and marked ``truncated``, as is a game the episode cap ended. Scores are raw
    (unclipped, all lives).

    Args:
        network: the Q-network or recurrent actor-critic (put in eval mode here, flag
            restored).
        game: ale-py game id.
        episodes: games, one per env.
        max_steps: a step cap per game on top of the episode cap (None: that cap alone).
        epsilon: evaluation epsilon.
        seed: seeds the emulators and epsilon.
        env_kwargs: protocol settings (the keys of :class:`AtariEvalEnv`,
            :func:`~ife_platform.envs.eval_env_kwargs`).
        act: optional ``obs -> actions`` override (default: greedy on the network's scores).
        should_stop: asked before every vector step; True abandons the evaluation (see
            :func:`play`).

    Raises:
        EvaluationStopped: ``should_stop`` answered True.
    """
    from ife_platform.envs import AtariVecEnv

    kwargs = dict(env_kwargs or {})
    life_resets = bool(kwargs.pop("life_loss_terminal", False))
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")
    env = AtariVecEnv(game, episodes, seed=seed, **kwargs)
    policy = ActingPolicy(network)
    if env.num_actions != policy.num_actions:
        env.close()
        raise ValueError(
            f"the network has {policy.num_actions} actions but {game} has "
            f"{env.num_actions} with this action set (check full_action_space)"
        )
    was_training = network.training
    network.eval()
    device = policy.device
    rng = np.random.default_rng(seed)
    returns = np.zeros(episodes, dtype=np.float64)
    lengths = np.zeros(episodes, dtype=np.int64)
    truncated = np.zeros(episodes, dtype=bool)
    running = np.ones(episodes, dtype=bool)
    with torch_threads(1):
        try:
            td = env.reset()
            policy.reset(episodes)
            steps = 0
            while running.any():
                if should_stop is not None and should_stop():
                    raise EvaluationStopped(f"stopped at step {steps} of {episodes} games")
                if max_steps is not None and steps >= max_steps:
                    truncated |= running  # cut by the step cap
                    break
                obs = td["pixels"]
                first = td["is_init"].squeeze(-1)
                if life_resets:
                    first = first | td["life_lost"].squeeze(-1)
                x = obs.to(device)
                action = (act(x) if act else policy.scores(x, first).argmax(-1)).cpu().numpy()
                if epsilon > 0:
                    explore = rng.random(episodes) < epsilon
                    action = np.where(
                        explore, rng.integers(0, policy.num_actions, episodes), action
                    )
                td["action"] = torch.from_numpy(action.astype(np.int64))
                td, root = env.step_and_maybe_reset(td)
                nxt = td["next"]
                reward = nxt["reward"].squeeze(-1).numpy()
                over = nxt["terminated"].squeeze(-1).numpy()
                cut = nxt["truncated"].squeeze(-1).numpy()
                returns[running] += reward[running]
                lengths[running] += 1
                truncated |= running & cut & ~over
                running &= ~(over | cut)
                td = root
                steps += 1
        finally:
            env.close()
            network.train(was_training)
    return EvalResult(
        game,
        returns.tolist(),
        lengths.tolist(),
        truncated.tolist(),
        max_episode_frames=int(kwargs.get("max_episode_frames", 108_000)),
        max_steps=max_steps,
        frame_skip=int(kwargs.get("frame_skip", 4)),
    )

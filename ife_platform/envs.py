"""Atari environments: ale-py's native vector env wrapped for TorchRL, and an evaluation env.

Training uses :class:`AtariVecEnv`, a TorchRL :class:`~torchrl.envs.EnvBase` over
``ale_py.vector_env.AtariVectorEnv`` (C++ emulators, 84x84 gray, max over the last two frames,
4-frame stack, no-op starts; all preprocessing native). Its ``next`` data carries:

- ``pixels`` uint8 ``[N, 4, 84, 84]``: the true next observation. For envs that ended an episode
  this step it is the *final* observation (ale-py's ``final_obs``), so truncated episodes can
  bootstrap; the reset observation is what the following ``reset`` returns;
- ``reward``: the raw, unclipped game reward (learning clips it, scores never do);
- ``terminated`` / ``truncated`` / ``done``: the *game* ended (all lives) / hit the frame cap;
- ``life_lost``: a life was lost and the game goes on (terminal for learning only, Atari-100k).
  In the root data of the following step it marks the first observation of the new life; with
  ``fire_on_life_loss`` that step's action is replaced by FIRE (and written back as ``action``);
- ``is_init``: ``pixels`` is the first observation of a game (after a reset or ale-py's
  same-step autoreset): recurrent agents reset their memory there;
- ``episode_return`` / ``episode_length``: running raw score and agent steps of the current game
  (read them where ``done`` is set for the finished game's score).

:class:`AtariEvalEnv` plays one game with Python-side preprocessing that reproduces the vector
env's observation bit-exactly (ALE grayscale, max-pool of the last two frames, ``cv2.INTER_AREA``
resize; checked in the tests) and also returns the raw 210x160 RGB frame of every step.

The start and end of a game follow one definition in both (docs/design.md, "Evaluation
protocol"; checked in the tests):

- **no-op start**: after a reset, ``k ~ U{0, ..., noop_max - 1}`` raw emulator frames of NOOP;
  with ``fire_reset`` in games with FIRE, ``max(k - 1, 0)`` NOOP frames and then one FIRE frame
  (ale-py 0.12's ``PreprocessedAtariEnv::reset``): at most ``noop_max - 1`` frames, never a
  frame-skipped agent step;
- **episode cap**: a game is truncated after the agent step at which its agent steps reach
  ``max_episode_frames`` emulator frames (``ceil(max_episode_frames / frame_skip)`` steps:
  27,000 for 108k frames); the no-op start frames do not count, as in ale-py's vector env;
- **life loss**: with ``fire_on_life_loss``, the agent step after a lost life presses FIRE in
  games with FIRE in their action set, whatever the agent chose (the reference A3C-LSTM's
  fire-reset wrapper over its episodic-life wrapper, shared/reference/agent-profiles.md).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from ife_platform.seeding import ALE_SEED_BITS, ale_env_seeds, fold_seed

SCREEN_HW = (210, 160)
OBS_SIZE = 84


@dataclass(frozen=True)
class AtariSpec:
    """What an agent needs to know about a game, read once from the emulator."""

    game: str
    num_actions: int
    action_meanings: tuple[str, ...]


def _check_protocol(noop_max: int, frame_skip: int, max_episode_frames: int) -> None:
    """Refuse protocol values ale-py would misread (a negative no-op count, a zero cap)."""
    from ife_platform.config import ConfigError

    if noop_max < 0:
        raise ConfigError(f"env.noop_max must be >= 0, got {noop_max}")
    if frame_skip < 1:
        raise ConfigError(f"env.frame_skip must be >= 1, got {frame_skip}")
    if max_episode_frames < 1:
        raise ConfigError(f"env.max_episode_frames must be >= 1, got {max_episode_frames}")


def cap_steps(max_episode_frames: int, frame_skip: int) -> int:
    """Agent steps after which a game is truncated: ``ceil(max_episode_frames / frame_skip)``.

    ale-py's vector env truncates at the first agent step whose frame count (agent steps times
    ``frame_skip``, no-op start frames not counted) reaches ``max_episode_frames``; 27,000
    agent steps for the 108k-frame protocol cap.
    """
    return -(-int(max_episode_frames) // int(frame_skip))


def fire_index(game: str, full_action_space: bool = False) -> int | None:
    """Index of FIRE in the game's action set (None: the game has no FIRE action).

    "Games that need FIRE" are the ones with FIRE in their action set, as ale-py's
    ``use_fire_reset`` and the reference fire-reset wrapper decide; with the full 18-action
    set every game has it.
    """
    meanings = atari_spec(game, full_action_space).action_meanings
    return meanings.index("FIRE") if "FIRE" in meanings else None


def _check_game(game: str) -> None:
    from ale_py import roms

    if game not in roms.get_all_rom_ids():
        from ife_platform.config import ConfigError, choices_msg

        raise ConfigError("env.game: " + choices_msg("game", game, roms.get_all_rom_ids()))


def atari_spec(game: str, full_action_space: bool = False) -> AtariSpec:
    """Number of actions and their names for a game (minimal or full action set)."""
    import ale_py

    _check_game(game)
    ale = ale_py.ALEInterface()
    ale.setLoggerMode(ale_py.LoggerMode.Error)
    ale.loadROM(ale_py.roms.get_rom_path(game))
    actions = ale.getLegalActionSet() if full_action_space else ale.getMinimalActionSet()
    return AtariSpec(game, len(actions), tuple(a.name for a in actions))


def make_vector_env(
    game: str,
    num_envs: int,
    *,
    sticky_actions: float = 0.0,
    full_action_space: bool = False,
    noop_max: int = 30,
    frame_skip: int = 4,
    frame_stack: int = 4,
    max_episode_frames: int = 108_000,
    fire_reset: bool = False,
    num_threads: int = 0,
) -> Any:
    """ale-py's native ``AtariVectorEnv`` with the platform's preprocessing.

    84x84 gray, max over the last two frames, frame stack, whole games (no episodic life),
    unclipped rewards, SameStep autoreset. Used by :class:`AtariVecEnv` (training and
    :func:`ife_platform.evaluation.evaluate_parallel`). ``noop_max`` and
    ``max_episode_frames`` follow the module docstring's definitions (ale-py counts both in
    raw emulator frames).
    """
    from ale_py.vector_env import AtariVectorEnv

    _check_game(game)
    _check_protocol(noop_max, frame_skip, max_episode_frames)
    return AtariVectorEnv(
        game,
        num_envs,
        num_threads=num_threads,
        max_num_frames_per_episode=max_episode_frames,
        repeat_action_probability=sticky_actions,
        full_action_space=full_action_space,
        autoreset_mode="SameStep",
        img_height=OBS_SIZE,
        img_width=OBS_SIZE,
        grayscale=True,
        stack_num=frame_stack,
        frameskip=frame_skip,
        maxpool=True,
        noop_max=noop_max,
        episodic_life=False,
        life_loss_info=False,
        reward_clipping=False,
        use_fire_reset=fire_reset,
    )


class AtariVecEnv(EnvBase):
    """TorchRL env over ale-py's native vector env (same-step autoreset, raw rewards).

    Args:
        game: ale-py ROM id (``pong``, ``ms_pacman``).
        num_envs: emulators stepped together; the TorchRL batch size.
        seed: env ``i`` is seeded with ``seed + i`` at the first reset, folded into ale-py's
            31-bit range (:func:`~ife_platform.seeding.ale_env_seeds`): any seed ``>= 0`` works.
        sticky_actions: repeat-action probability (0 or 0.25 in the usual protocols).
        full_action_space: 18 actions instead of the minimal set.
        noop_max: no-op start of ``U{0, ..., noop_max - 1}`` raw emulator frames after each
            reset (module docstring).
        frame_skip: emulator frames per agent step.
        frame_stack: stacked frames per observation.
        max_episode_frames: emulator-frame cap per episode (truncation; module docstring).
        fire_reset: press FIRE (one raw frame) after resets in games that need it.
        fire_on_life_loss: press FIRE as the agent step after every lost life in games that
            need it; the replaced action is written back into the input's ``action``.
        num_threads: ale-py worker threads (0 = automatic).
    """

    batch_locked = True

    def __init__(
        self,
        game: str,
        num_envs: int = 1,
        *,
        seed: int = 0,
        sticky_actions: float = 0.0,
        full_action_space: bool = False,
        noop_max: int = 30,
        frame_skip: int = 4,
        frame_stack: int = 4,
        max_episode_frames: int = 108_000,
        fire_reset: bool = False,
        fire_on_life_loss: bool = False,
        num_threads: int = 0,
    ) -> None:
        _check_game(game)
        super().__init__(batch_size=torch.Size([num_envs]), device="cpu")
        self.game = game
        self.num_envs = num_envs
        self._vec = make_vector_env(
            game,
            num_envs,
            sticky_actions=sticky_actions,
            full_action_space=full_action_space,
            noop_max=noop_max,
            frame_skip=frame_skip,
            frame_stack=frame_stack,
            max_episode_frames=max_episode_frames,
            fire_reset=fire_reset,
            num_threads=num_threads,
        )
        self.num_actions = int(self._vec.single_action_space.n)
        #: FIRE's index where it replaces the action after a lost life (None: never).
        self.fire_action = fire_index(game, full_action_space) if fire_on_life_loss else None
        self._fire_pending = np.zeros(num_envs, dtype=bool)
        obs_shape = (num_envs, frame_stack, OBS_SIZE, OBS_SIZE)
        self.observation_spec = Composite(
            pixels=Bounded(0, 255, obs_shape, dtype=torch.uint8),
            life_lost=Categorical(2, (num_envs, 1), dtype=torch.bool),
            is_init=Categorical(2, (num_envs, 1), dtype=torch.bool),
            episode_return=Unbounded((num_envs, 1), dtype=torch.float32),
            episode_length=Unbounded((num_envs, 1), dtype=torch.int64),
            shape=(num_envs,),
        )
        self.action_spec = Categorical(self.num_actions, (num_envs,), dtype=torch.int64)
        self.reward_spec = Unbounded((num_envs, 1), dtype=torch.float32)
        self._seed = seed
        self._started = False
        self._obs = np.zeros(obs_shape, dtype=np.uint8)
        self._lives = np.zeros(num_envs, dtype=np.int64)
        self._return = np.zeros(num_envs, dtype=np.float32)
        self._length = np.zeros(num_envs, dtype=np.int64)

    def _set_seed(self, seed: int | None) -> int | None:
        self._seed = 0 if seed is None else int(seed)
        self._started = False
        return seed

    def _td(self, source: dict[str, torch.Tensor]) -> TensorDict:
        # Every value is a CPU tensor of the right shape, built here: skip TensorDict's checks.
        return TensorDict._new_unsafe(source, batch_size=self.batch_size, device=self.device)

    def _counters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of the running (return, length) counters as ``[N, 1]`` tensors."""
        n1 = (self.num_envs, 1)
        return (
            torch.from_numpy(self._return.reshape(n1).copy()),
            torch.from_numpy(self._length.reshape(n1).copy()),
        )

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        mask = None if tensordict is None else tensordict.get("_reset", None)
        if not self._started or mask is None:
            # Full reset: env i gets seed + i (folded). Afterwards ale-py resets finished games
            # itself in the same step, so partial resets only hand out the cached observation.
            obs, info = self._vec.reset(seed=ale_env_seeds(self._seed, self.num_envs))
            self._obs = obs
            self._lives = info["lives"].astype(np.int64)
            self._return[:] = 0.0
            self._length[:] = 0
            self._fire_pending[:] = False
            self._started = True
        ret, length = self._counters()
        flags = torch.zeros(4, self.num_envs, 1, dtype=torch.bool)
        return self._td(
            {
                "pixels": torch.from_numpy(self._obs.copy()),
                "is_init": torch.ones(self.num_envs, 1, dtype=torch.bool),
                "life_lost": flags[0],
                "episode_return": ret,
                "episode_length": length,
                "done": flags[1],
                "terminated": flags[2],
                "truncated": flags[3],
            }
        )

    def _advance(self, tensordict: TensorDictBase) -> tuple[TensorDict, TensorDict]:
        """One vector step: the ``next`` data and the data after the same-step autoreset.

        Returns ``(next, root)``. ``root`` is what ``step_mdp`` followed by ``maybe_reset``
        produce (observation of the reset game where one ended, counters restarted, done
        flags cleared); values are shared with ``next`` where they are equal, as there.
        ale-py returns freshly allocated arrays every step, so the tensors handed out here
        are never written to afterwards.
        """
        action = tensordict.get("action").numpy()
        if self._fire_pending.any():
            # The step after a lost life presses FIRE (module docstring); the data says so. In
            # place: collectors keep the action in a preallocated buffer this tensor views.
            action = np.where(self._fire_pending, self.fire_action, action)
            tensordict.get("action").copy_(torch.from_numpy(action))
        obs, reward, terminated, truncated, info = self._vec.step(action)
        n1 = (self.num_envs, 1)
        flags = np.empty((4, *n1), dtype=bool)  # done, terminated, truncated, life_lost
        done = np.logical_or(terminated, truncated, out=flags[0, :, 0])
        flags[1, :, 0] = terminated
        flags[2, :, 0] = truncated
        lives = info["lives"].astype(np.int64)
        np.less(lives, self._lives, out=flags[3, :, 0])
        self._lives[:] = lives  # (in place: nn.Module.__setattr__ costs ~15 us a call)
        self._return += reward
        self._length += 1
        ret, length = self._counters()
        t_flags = torch.from_numpy(flags)
        any_done = bool(done.any())
        next_obs = obs
        if any_done:
            flags[3, :, 0] &= ~done
            next_obs = np.where(done[:, None, None, None], info["final_obs"], obs)
        if self.fire_action is not None:
            self._fire_pending[:] = flags[3, :, 0]
        life_lost = t_flags[3]
        nxt = self._td(
            {
                "pixels": torch.from_numpy(next_obs),
                "is_init": torch.zeros(n1, dtype=torch.bool),
                "reward": torch.from_numpy(reward.astype(np.float32).reshape(n1)),
                "done": t_flags[0],
                "terminated": t_flags[1],
                "truncated": t_flags[2],
                "life_lost": life_lost,
                "episode_return": ret,
                "episode_length": length,
            }
        )
        # Finished games were already reset by ale-py; counters restart for them.
        object.__setattr__(self, "_obs", obs)  # a plain array: skip nn.Module.__setattr__
        if any_done:
            self._return[done] = 0.0
            self._length[done] = 0
            ret, length = self._counters()
            cleared = torch.zeros(3, *n1, dtype=torch.bool)
            root_done, root_term, root_trunc = cleared[0], cleared[1], cleared[2]
        else:
            root_done, root_term, root_trunc = t_flags[0], t_flags[1], t_flags[2]
        root = self._td(
            {
                "pixels": torch.from_numpy(obs),
                # the first observation of a new game (recurrent agents reset their state)
                "is_init": t_flags[0].clone() if any_done else torch.zeros(n1, dtype=torch.bool),
                "life_lost": life_lost,
                "episode_return": ret,
                "episode_length": length,
                "done": root_done,
                "terminated": root_term,
                "truncated": root_trunc,
            }
        )
        return nxt, root

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        return self._advance(tensordict)[0]

    #: Use the single-pass ``step_and_maybe_reset`` below (False: TorchRL's generic one).
    fast_step_and_reset = True

    def _step_and_maybe_reset(
        self, tensordict: TensorDictBase
    ) -> tuple[TensorDictBase, TensorDictBase]:
        """``step`` + ``step_mdp`` + ``maybe_reset`` in one pass (what collectors call).

        ale-py already reset finished games in the same step, so the generic version's
        ``step_mdp`` + partial ``reset`` only move cached observations around. This builds
        both tensordicts directly and yields bit-identical collector batches (checked against
        the generic path in ``tests/test_bench.py``) at about a third of the env-side cost
        per step (``docs/benchmarks.md``). ``fast_step_and_reset = False`` restores TorchRL's.
        """
        if not self.fast_step_and_reset or self._post_step_mdp_hooks is not None:
            return super()._step_and_maybe_reset(tensordict)
        if tensordict.device is not None and tensordict.device != self.device:
            tensordict = tensordict.to(self.device)
        nxt, root = self._advance(tensordict)
        tensordict.set("next", nxt)
        return tensordict, root

    def close(self, *, raise_if_closed: bool = True) -> None:  # noqa: D102
        try:
            self._vec.close()
        finally:
            super().close(raise_if_closed=raise_if_closed)


def train_max_episode_frames(env: Any) -> int:
    """The episode cap of training games: ``env.train_max_episode_frames``, else the protocol's.

    Evaluation always uses ``env.max_episode_frames`` (every agent under one cap); an agent
    profile may cap its training games shorter (A3C-LSTM: 10,000 agent steps).

    Args:
        env: a config's ``env`` group (a DictConfig or a plain dict).
    """
    get = env.get if isinstance(env, dict) else (lambda k, d=None: getattr(env, k, d))
    train = get("train_max_episode_frames", None)
    return int(get("max_episode_frames") if train is None else train)


def eval_env_kwargs(cfg: Any) -> dict[str, Any]:
    """The evaluation protocol of a config (its ``env`` group), as :class:`AtariEvalEnv` takes it.

    The episode cap is ``env.max_episode_frames`` for every agent, never the training cap.
    """
    e = cfg.env
    return {
        "sticky_actions": e.sticky_actions,
        "full_action_space": e.full_action_space,
        "noop_max": e.noop_max,
        "frame_skip": e.frame_skip,
        "frame_stack": e.frame_stack,
        "max_episode_frames": e.max_episode_frames,
        "fire_reset": e.fire_reset,
        "fire_on_life_loss": e.fire_on_life_loss,
        "life_loss_terminal": e.life_loss_terminal,
    }


class AtariEvalEnv:
    """One game for evaluation and videos: observations like :class:`AtariVecEnv`, plus RGB.

    The preprocessing (frame skip with max over the last two gray frames, INTER_AREA resize of
    the whole 210x160 screen to 84x84, frame stack) reproduces ale-py's native vector env, so
    an agent sees the same pixels here as in training; the no-op start, the episode cap and
    FIRE after a lost life follow the module docstring's definitions, as there. Episodes are
    whole games (all lives).

    Args:
        game: ale-py ROM id.
        seed: seeds the emulator and the no-op starts (folded into ALE's range).
        sticky_actions: repeat-action probability.
        full_action_space: 18 actions instead of the minimal set.
        noop_max: no-op start of ``U{0, ..., noop_max - 1}`` raw frames after each reset.
        frame_skip: emulator frames per agent step.
        frame_stack: stacked frames per observation.
        max_episode_frames: emulator-frame cap of a game (agent-step frames).
        fire_reset: press FIRE (one raw frame, ending the no-op start) after resets in
            games with FIRE.
        fire_on_life_loss: the agent step after a lost life presses FIRE in games with FIRE
            (:attr:`forced_action` says so before the step).
        life_loss_terminal: a lost life starts a new sequence for the agent
            (:attr:`starts_life`): recurrent agents zero their state there, as they were
            trained. Scores stay whole games.
    """

    def __init__(
        self,
        game: str,
        *,
        seed: int = 0,
        sticky_actions: float = 0.0,
        full_action_space: bool = False,
        noop_max: int = 30,
        frame_skip: int = 4,
        frame_stack: int = 4,
        max_episode_frames: int = 108_000,
        fire_reset: bool = False,
        fire_on_life_loss: bool = False,
        life_loss_terminal: bool = False,
    ) -> None:
        import ale_py

        _check_game(game)
        _check_protocol(noop_max, frame_skip, max_episode_frames)
        self.game = game
        self.ale = ale_py.ALEInterface()
        self.ale.setLoggerMode(ale_py.LoggerMode.Error)
        self.ale.setInt("random_seed", fold_seed(seed, ALE_SEED_BITS))
        self.ale.setFloat("repeat_action_probability", float(sticky_actions))
        # No ALE-side cap: ALE would count the no-op start frames too; the cap is counted in
        # agent steps below, as ale-py's vector env counts it.
        self.ale.loadROM(ale_py.roms.get_rom_path(game))
        self.actions = (
            self.ale.getLegalActionSet() if full_action_space else self.ale.getMinimalActionSet()
        )
        self.num_actions = len(self.actions)
        self.frame_skip = frame_skip
        self.noop_max = noop_max
        self.max_episode_frames = int(max_episode_frames)
        self.max_steps = cap_steps(max_episode_frames, frame_skip)
        names = [a.name for a in self.actions]
        self._fire = names.index("FIRE") if "FIRE" in names else None
        self.fire_reset = fire_reset and self._fire is not None
        self.fire_on_life_loss = fire_on_life_loss and self._fire is not None
        self.life_loss_terminal = life_loss_terminal
        self._rng = np.random.default_rng(seed)
        self._stack: deque[np.ndarray] = deque(maxlen=frame_stack)
        self._gray = np.empty((2, *SCREEN_HW), dtype=np.uint8)
        self._steps = 0
        self._lives = 0
        #: The last step lost a life and the game goes on.
        self.life_lost = False

    @property
    def forced_action(self) -> int | None:
        """The action index the next step takes whatever it is given (FIRE), or None."""
        return self._fire if self.fire_on_life_loss and self.life_lost else None

    @property
    def starts_life(self) -> bool:
        """The current observation starts a new life that the agent treats as a new sequence."""
        return self.life_loss_terminal and self.life_lost

    @property
    def noop_start_frames(self) -> int:
        """Emulator frames the last reset spent before the first observation (no-ops, FIRE)."""
        return int(self.ale.getEpisodeFrameNumber())

    def _observe(self) -> np.ndarray:
        import cv2

        frame = np.maximum(self._gray[0], self._gray[1])
        return cv2.resize(frame, (OBS_SIZE, OBS_SIZE), interpolation=cv2.INTER_AREA)

    def _act(self, action) -> float:
        reward = 0.0
        for k in range(self.frame_skip):
            reward += self.ale.act(action)
            if k >= self.frame_skip - 2:
                self.ale.getScreenGrayscale(self._gray[k - self.frame_skip + 2])
            if self.ale.game_over():
                break
        return reward

    def reset(self) -> tuple[np.ndarray, np.ndarray]:
        """Start a new game. Returns (obs uint8 [stack, 84, 84], RGB frame [210, 160, 3]).

        The no-op start is ale-py's (module docstring): ``k ~ U{0, ..., noop_max - 1}`` raw
        NOOP frames (with ``fire_reset``: ``max(k - 1, 0)`` of them, then one FIRE frame); the
        first observation is the screen after them.
        """
        import ale_py

        self.ale.reset_game()
        k = int(self._rng.integers(0, self.noop_max)) if self.noop_max > 0 else 0
        for _ in range(max(k - int(self.fire_reset), 0)):
            self.ale.act(ale_py.Action.NOOP)
            if self.ale.game_over():
                self.ale.reset_game()
        if self.fire_reset:
            self.ale.act(self.actions[self._fire])
        self.ale.getScreenGrayscale(self._gray[0])
        self._gray[1] = self._gray[0]
        self._steps = 0
        self._lives = self.ale.lives()
        self.life_lost = False
        # Like ale-py's vector env: the stack starts as zeros with the first frame last.
        for _ in range(self._stack.maxlen or 1):
            self._stack.append(np.zeros((OBS_SIZE, OBS_SIZE), dtype=np.uint8))
        self._stack.append(self._observe())
        return np.stack(self._stack), self.ale.getScreenRGB()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, np.ndarray]:
        """One agent step. Returns (obs, raw reward, game over, truncated, RGB frame).

        ``truncated``: the game reached the episode cap at this step (``game over`` may be set
        too, as in ale-py). After a lost life with ``fire_on_life_loss`` the step presses FIRE
        instead of ``action`` (:attr:`forced_action`).
        """
        forced = self.forced_action
        reward = self._act(self.actions[int(action) if forced is None else forced])
        self._stack.append(self._observe())
        self._steps += 1
        over = self.ale.game_over()
        lives = self.ale.lives()
        self.life_lost = lives < self._lives and not over
        self._lives = lives
        truncated = self._steps >= self.max_steps
        return np.stack(self._stack), reward, over, truncated, self.ale.getScreenRGB()

"""Typed configuration: omegaconf structured schemas, YAML presets and ``key=value`` overrides.

Composition order (later wins):

1. the schema defaults below;
2. ``configs/defaults.yaml``;
3. the agent preset ``configs/agent/<agent>.yaml`` (``agent=rainbow_der`` selects it; the agent
   name may come from any later layer);
4. group presets named on the command line (``env=revisiting``, ``model=ife``, ...);
5. experiment presets (``configs/experiment/<name>.yaml``) or YAML files, in the order given;
6. ``key=value`` overrides.

Everything is validated before anything is built: unknown keys, wrong types, unknown games,
extractors or agents raise :class:`ConfigError`, whose message names the bad key, the valid
choices and the closest match. The CLI turns it into exit code 2.
"""

from __future__ import annotations

import difflib
import importlib.resources
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

GROUPS = ("agent", "env", "model", "replay", "optim", "trainer", "tracking", "sequence")


class ConfigError(ValueError):
    """A configuration that cannot be run. The message says which key and what is valid."""


# --------------------------------------------------------------------------------------------
# Schemas (one per concern). Comments are the documentation of every key.
# --------------------------------------------------------------------------------------------


@dataclass
class EnvConfig:
    """Atari environment (ale-py native vector env)."""

    game: str = "pong"  # ale-py ROM id in snake_case: pong, ms_pacman, space_invaders, ...
    protocol: str = "atari100k"  # name of the env preset that set the protocol keys below
    num_envs: int = 1  # parallel emulators per rank (the Fast-Rainbow profile uses 64)
    sticky_actions: float = 0.0  # repeat_action_probability: 0 (Atari-100k) or 0.25 (Machado)
    full_action_space: bool = False  # 18 actions instead of the game's minimal set
    noop_max: int = 30  # up to this many no-ops after every reset
    frame_skip: int = 4  # emulator frames per agent step (max over the last 2)
    frame_stack: int = 4  # stacked 84x84 gray frames
    max_episode_frames: int = 108_000  # 27k agent steps
    life_loss_terminal: bool = True  # life loss ends the n-step window for learning only
    reward_clip: bool = True  # sign-clip rewards for learning (scores stay raw)
    fire_reset: bool = False  # press FIRE after reset (not part of the Atari-100k protocol)
    num_threads: int = 0  # ale-py worker threads (0 = one per env up to the core count)


@dataclass
class ModelConfig:
    """Q-network: extractor + head."""

    extractor: str = "ife"  # ife | cnn_attention | impala | der_cnn | nature_cnn | a3c_cnn | s3ta
    width: int = 2  # channel multiplier for ife / impala
    hue_window: int = 6  # HUE cell window in input pixels; must divide the 84x84 input
    spectral_norm: bool = True  # spectral norm on residual convs (ife AFE, impala)
    hidden: int = 256  # hidden units of each dueling stream
    dueling: bool = True
    noisy: bool = True  # factorised noisy linear layers in the head (DER)
    noisy_sigma0: float = 0.1
    distributional: bool = True  # C51 head (DER); off in Fast Rainbow
    num_atoms: int = 51
    v_min: float = -10.0
    v_max: float = 10.0


@dataclass
class AgentConfig:
    """Rainbow learner and actor settings."""

    name: str = "rainbow_der"  # the agent preset: rainbow_der | rainbow_fast
    gamma: float = 0.99
    n_step: int = 20
    double_q: bool = True
    batch_size: int = 32
    learning_starts: int = 1600  # agent steps (all envs of a rank) before the first update
    updates_per_step: float = 1.0  # updates per agent step per rank (replay ratio)
    target_update_period: int = 2000  # updates between hard target copies
    epsilon_start: float = 0.0  # epsilon-greedy (0 with noisy nets)
    epsilon_end: float = 0.0
    epsilon_decay_steps: int = 1  # agent steps for the linear decay
    eval_epsilon: float = 0.001
    loss: str = "c51"  # c51 | huber (Rainbow); a2c (actor-critic agents)
    # Actor-critic agents (a3c_lstm, s3ta): asynchronous actor processes, n-step rollouts.
    actors: int = 2  # actor processes, each with its own envs and a copy of the policy
    rollout: int = 20  # agent steps per env per rollout (the A3C profile's 20)
    gae_lambda: float = 1.0
    entropy_coef: float = 0.01
    value_coef: float = 0.5
    lstm_hidden: int = 512  # the policy LSTM (a3c_lstm; S3TA's is 256, set in its preset)


@dataclass
class ReplayConfig:
    """Prioritized replay (TorchRL), uint8 observations."""

    capacity: int = 100_000
    alpha: float = 0.5
    beta_start: float = 0.4
    beta_end: float = 1.0  # linear from agent.learning_starts to train.total_steps
    priority_eps: float = 1e-6
    # importance weights normalised by the sampled batch's largest weight (DER references) or
    # by the smallest priority in the whole buffer (TorchRL's default); docs/design.md
    weight_norm: str = "batch"  # batch | buffer
    save_buffer: bool = False  # also checkpoint the replay buffer (see README for the disk cost)


@dataclass
class OptimConfig:
    """Adam settings."""

    lr: float = 1e-4
    eps: float = 1.5e-4
    grad_clip: float = 10.0
    fused: bool = True  # one fused Adam kernel (CPU, CUDA): same update, 5x faster step on CPU


@dataclass
class TrainerConfig:
    """Lightning trainer: devices, precision, strategy."""

    accelerator: str = "auto"  # cpu | gpu | auto
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed (GPU)
    steps_per_epoch: int = 10_000  # agent steps per Lightning epoch; checkpoints at epoch ends
    log_every_updates: int = 50
    progress_bar: bool = True


@dataclass
class TrackingConfig:
    """MLflow tracking."""

    uri: str | None = None  # default: MLFLOW_TRACKING_URI or sqlite:///./mlflow.db
    experiment: str = "ife"
    run_name: str | None = None
    video: bool = True  # mp4 of an evaluation episode with the mask at the end of training
    video_max_steps: int = 1000  # agent steps in that episode at most
    eval_episodes: int = 3  # raw-score evaluation episodes at the end of training
    eval_max_steps: int = 27_000  # agent steps per evaluation episode at most
    output_dir: str = "outputs"  # local checkpoints and videos (also logged as artifacts)


@dataclass
class ExplainConfig:
    """``ife explain`` / ``ife compare``: interpretability measurements on evaluation episodes."""

    episodes: int = 1  # evaluation games played and recorded
    max_steps: int = 2000  # agent steps per game at most
    objects: str = "auto"  # object ground truth: auto | builtin | ocatari | none
    relevant: list[str] = field(
        default_factory=lambda: ["player", "enemy", "ball", "projectile"]
    )  # object categories that make up the box set B of the alignment metrics
    tolerance_cells: int = 0  # pointing-game tolerance in mask cells (Chebyshev distance)
    analysis_frames: int = 32  # frames (evenly spaced) for faithfulness, sanity and saliency
    leakage_frames: int = 4  # of those, frames whose every cell window is perturbed (leakage)
    saliency: bool = False  # Greydanus saliency panel + metrics (always on without attention)
    saliency_stride: int = 5  # grid stride in observation pixels (Greydanus et al. 2018)
    saliency_sigma: float = 5.0  # Gaussian perturbation radius in observation pixels
    deletion_steps: int = 16  # points of the deletion / insertion curves
    deletion_baseline: str = "blur"  # what deleted pixels become: blur | zero
    random_orders: int = 3  # random orders averaged for the reference curves
    video: bool = True  # mp4: raw frame | mask overlay [| saliency]
    video_max_steps: int = 1000  # frames in the mp4 at most
    grid: bool = True  # draw the mask cell grid in the overlay
    table: str = "csv"  # per-frame table format: csv | parquet


@dataclass
class SequenceConfig:
    """``ife continual``: a sequence of games trained one after the other (issue: continual).

    Steps are agent steps per task. Every game of the sequence is evaluated before training
    and then every ``eval_every`` steps (past, current and future games).
    """

    name: str = "custom"
    games: list[str] = field(default_factory=list)  # ale-py ids, trained in this order
    steps_per_task: int = 100_000
    eval_every: int = 25_000  # agent steps between evaluations of every game
    eval_episodes: int = 3  # games per game per evaluation point (played in parallel envs)
    eval_max_steps: int = 4_500  # agent steps per evaluation game at most
    mode: str = "finetune"  # transfer mode(s), combined with '+': e.g. freeze_hue+reset_afe
    head: str = "shared"  # shared (one 18-action head) | per_game
    replay: str = "reset"  # reset | keep the buffer at task switches
    reference: bool = False  # also train every game alone from scratch (forward transfer)
    alignment_steps: int = 200  # steps per game for mask-object alignment after each task
    normalise: str = "auto"  # R normalisation: hns | best_abs | auto (hns if all have refs)


@dataclass
class TrainConfig:
    """Budget."""

    total_steps: int = 100_000  # agent steps per rank (1 agent step = frame_skip frames per env)


@dataclass
class Config:
    """The whole experiment."""

    agent: AgentConfig = field(default_factory=AgentConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    seed: int = 0
    resume: str | None = None  # MLflow run id or checkpoint path to continue from


# --------------------------------------------------------------------------------------------
# Presets on disk
# --------------------------------------------------------------------------------------------


def configs_root() -> Path:
    """Folder holding the shipped YAML (``configs/``, installed as ``ife_platform.configs``)."""
    return Path(str(importlib.resources.files("ife_platform.configs")))


def available_presets(group: str) -> list[str]:
    """Names of the YAML presets of one group (``agent``, ``env``, ..., ``experiment``)."""
    folder = configs_root() / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _closest(word: str, choices: Sequence[str]) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" Did you mean '{match[0]}'?" if match else ""


def _choices_msg(kind: str, bad: str, choices: Sequence[str]) -> str:
    return f"unknown {kind} '{bad}'.{_closest(bad, choices)} Valid: {', '.join(sorted(choices))}."


def _load_yaml(path: Path) -> DictConfig:
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # yaml errors come in several types
        raise ConfigError(f"cannot read config file {path}: {err}") from err
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return cfg


def _preset_path(group: str, name: str) -> Path:
    choices = available_presets(group)
    if name not in choices:
        raise ConfigError(f"{group}: " + _choices_msg(f"{group} preset", name, choices))
    return configs_root() / group / f"{name}.yaml"


def _all_keys(schema: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for k, v in schema.items():
        path = f"{prefix}{k}"
        keys.append(path)
        if isinstance(v, DictConfig):
            keys.extend(_all_keys(v, path + "."))
    return keys


def _merge(base: DictConfig, layer: DictConfig | dict, source: str) -> DictConfig:
    """Merge one layer into the structured config, with errors that name the key and source."""
    try:
        return OmegaConf.merge(base, layer)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        valid = _all_keys(OmegaConf.structured(Config))
        if "not in" in str(err) or "Key '" in str(err) and "not" in str(err):
            hint = _closest(str(key), valid)
            parent = str(key).rsplit(".", 1)[0] if "." in str(key) else ""
            siblings = [k for k in valid if k.rsplit(".", 1)[0] == parent and "." in k] or [
                k for k in valid if "." not in k
            ]
            raise ConfigError(
                f"unknown config key '{key}' (from {source}).{hint} "
                f"Valid keys here: {', '.join(sorted(siblings))}."
            ) from err
        raise ConfigError(
            f"bad value for '{key}' (from {source}): {str(err.msg).splitlines()[0]}"
        ) from err


def _parse_override(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    if value == "":
        return key, None
    try:  # YAML parsing: 3 -> int, 1e-4 -> float, [a,b] -> list, null -> None, pong -> str
        return key, OmegaConf.create(f"v: {value}")["v"]
    except Exception as err:
        raise ConfigError(f"cannot parse the value of override '{text}': {err}") from err


def _dotted_to_nested(key: str, value: Any) -> dict:
    nested: dict = {}
    node = nested
    parts = key.split(".")
    for part in parts[:-1]:
        node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    return nested


def compose(args: Sequence[str] = ()) -> DictConfig:
    """Build and validate the config from preset names, YAML paths and ``key=value`` overrides.

    Args:
        args: command-line words. A word with ``=`` is an override (``group=name`` for a group
            in :data:`GROUPS` selects that group's preset, except ``agent.*``-style dotted keys);
            a word ending in ``.yaml``/``.yml`` is a file; any other word is an experiment preset.

    Returns:
        A read-only, fully validated structured config.

    Raises:
        ConfigError: for anything invalid, before any expensive work.
    """
    files: list[tuple[str, DictConfig]] = []
    group_presets: dict[str, str] = {}
    overrides: list[tuple[str, Any]] = []
    for word in args:
        if "=" in word:
            key, value = _parse_override(word)
            if key in GROUPS:
                if not isinstance(value, str):
                    raise ConfigError(
                        f"'{key}=' selects a {key} preset by name; "
                        f"choices: {', '.join(available_presets(key))}"
                    )
                group_presets[key] = value
            else:
                overrides.append((key, value))
        elif word.endswith((".yaml", ".yml")) or "/" in word:
            path = Path(word)
            if not path.is_file():
                raise ConfigError(f"config file not found: {word}")
            files.append((str(path), _load_yaml(path)))
        else:
            files.append((f"preset '{word}'", _load_yaml(_preset_path("experiment", word))))

    # Experiment files choose group presets with ``presets: {agent: rainbow_fast, env: ...}``;
    # choices on the command line win over those in files.
    expanded: list[tuple[str, DictConfig]] = []
    for source, layer in files:
        layer = layer.copy()
        chosen = layer.pop("presets", None) or {}
        for group, name in chosen.items():
            if group not in GROUPS:
                raise ConfigError(
                    f"{source}: presets.{group}: " + _choices_msg("preset group", group, GROUPS)
                )
            group_presets.setdefault(group, str(name))
        expanded.append((source, layer))

    cfg = OmegaConf.structured(Config)
    cfg = _merge(cfg, _load_yaml(configs_root() / "defaults.yaml"), "configs/defaults.yaml")
    agent_name = group_presets.pop("agent", cfg.agent.name)
    cfg = _merge(cfg, _load_yaml(_preset_path("agent", agent_name)), f"agent preset {agent_name}")
    if any(key == "agent.name" for key, _ in overrides):
        raise ConfigError("select the agent with agent=NAME, not agent.name=NAME")
    for group, name in group_presets.items():
        cfg = _merge(cfg, _load_yaml(_preset_path(group, name)), f"{group} preset {name}")
    for source, layer in expanded:
        cfg = _merge(cfg, layer, source)
    for key, value in overrides:
        cfg = _merge(cfg, _dotted_to_nested(key, value), f"override {key}=")
    validate(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


# --------------------------------------------------------------------------------------------
# Semantic validation (values the type system cannot check)
# --------------------------------------------------------------------------------------------


def known_games() -> list[str]:
    """Every ROM id that the installed ale-py ships."""
    from ale_py import roms

    return sorted(roms.get_all_rom_ids())


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for values that would fail later (or silently misbehave)."""
    from ife_platform.extractors import EXTRACTORS
    from ife_platform.rainbow.replay import WEIGHT_NORMS

    games = known_games()
    if cfg.env.game not in games:
        raise ConfigError("env.game: " + _choices_msg("game", cfg.env.game, games))
    agents = available_presets("agent")
    if cfg.agent.name not in agents:
        raise ConfigError("agent: " + _choices_msg("agent", cfg.agent.name, agents))
    if cfg.agent.name in ACTOR_CRITIC_AGENTS:
        _validate_actor_critic(cfg, list(EXTRACTORS))
    elif cfg.model.extractor not in EXTRACTORS:
        raise ConfigError(
            "model.extractor: " + _choices_msg("extractor", cfg.model.extractor, list(EXTRACTORS))
        )
    elif cfg.agent.loss not in ("c51", "huber"):
        raise ConfigError(_choices_msg("agent.loss", cfg.agent.loss, ["c51", "huber"]))
    if cfg.replay.weight_norm not in WEIGHT_NORMS:
        raise ConfigError(
            "replay.weight_norm: "
            + _choices_msg("weight normalisation", cfg.replay.weight_norm, WEIGHT_NORMS)
        )
    if cfg.agent.name not in ACTOR_CRITIC_AGENTS and (
        (cfg.agent.loss == "c51") != cfg.model.distributional
    ):
        raise ConfigError(
            "agent.loss=c51 needs model.distributional=true and agent.loss=huber needs "
            f"model.distributional=false (got loss={cfg.agent.loss}, "
            f"distributional={cfg.model.distributional})"
        )
    if cfg.model.extractor == "ife" and 84 % cfg.model.hue_window != 0:
        divisors = [d for d in range(1, 85) if 84 % d == 0]
        raise ConfigError(
            f"model.hue_window={cfg.model.hue_window} does not tile the 84x84 input exactly "
            f"(84 % {cfg.model.hue_window} = {84 % cfg.model.hue_window}); "
            f"valid windows: {', '.join(map(str, divisors))}"
        )
    if cfg.trainer.strategy not in ("auto", "ddp", "ddp_spawn"):
        raise ConfigError(
            _choices_msg("trainer.strategy", cfg.trainer.strategy, ["auto", "ddp", "ddp_spawn"])
        )
    positive = {
        "env.num_envs": cfg.env.num_envs,
        "train.total_steps": cfg.train.total_steps,
        "agent.batch_size": cfg.agent.batch_size,
        "agent.n_step": cfg.agent.n_step,
        "replay.capacity": cfg.replay.capacity,
        "trainer.devices": cfg.trainer.devices,
        "trainer.steps_per_epoch": cfg.trainer.steps_per_epoch,
        "agent.target_update_period": cfg.agent.target_update_period,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key} must be positive, got {value}")
    if not 0.0 <= cfg.env.sticky_actions < 1.0:
        raise ConfigError(f"env.sticky_actions must be in [0, 1), got {cfg.env.sticky_actions}")
    if cfg.agent.updates_per_step <= 0:
        raise ConfigError(f"agent.updates_per_step must be > 0, got {cfg.agent.updates_per_step}")
    _validate_explain(cfg.explain)
    _validate_sequence(cfg.sequence, games)


#: Agents trained by the actor-critic task (tasks/a3c.py); the others are Rainbow profiles.
ACTOR_CRITIC_AGENTS = ("a3c_lstm", "s3ta")
#: Extractors the A3C-LSTM agent takes (one gray frame per step); S3TA has its own vision core.
A3C_EXTRACTORS = ("ife", "cnn_attention", "a3c_cnn")


def _validate_actor_critic(cfg: DictConfig, extractors: list[str]) -> None:
    a = cfg.agent
    if a.name == "s3ta":
        if cfg.model.extractor != "s3ta":
            raise ConfigError(
                f"agent=s3ta has its own vision core: model.extractor must be s3ta, "
                f"got {cfg.model.extractor}"
            )
    elif cfg.model.extractor not in A3C_EXTRACTORS:
        raise ConfigError(
            "model.extractor: "
            + _choices_msg("extractor for a3c_lstm", cfg.model.extractor, list(A3C_EXTRACTORS))
        )
    if a.loss != "a2c":
        raise ConfigError(f"agent={a.name} trains with agent.loss=a2c, got {a.loss}")
    if cfg.env.frame_stack != 1:
        raise ConfigError(
            f"agent={a.name} sees one frame per step (its memory is the LSTM): "
            f"env.frame_stack must be 1, got {cfg.env.frame_stack}"
        )
    for key in ("actors", "rollout", "lstm_hidden"):
        if a[key] <= 0:
            raise ConfigError(f"agent.{key} must be positive, got {a[key]}")
    if not 0.0 <= a.gae_lambda <= 1.0:
        raise ConfigError(f"agent.gae_lambda must be in [0, 1], got {a.gae_lambda}")


EXPLAIN_CHOICES = {
    "objects": ["auto", "builtin", "ocatari", "none"],
    "deletion_baseline": ["blur", "zero"],
    "table": ["csv", "parquet"],
}
OBJECT_CATEGORIES = ["player", "enemy", "ball", "projectile", "other"]


SEQUENCE_CHOICES = {
    "head": ["shared", "per_game"],
    "replay": ["keep", "reset"],
    "normalise": ["auto", "best_abs", "hns"],
}


def _validate_sequence(q: DictConfig, games: list[str]) -> None:
    for key, choices in SEQUENCE_CHOICES.items():
        if q[key] not in choices:
            raise ConfigError(f"sequence.{key}: " + _choices_msg(key, q[key], choices))
    for game in q.games:
        if game not in games:
            raise ConfigError("sequence.games: " + _choices_msg("game", game, games))
    for key in ("steps_per_task", "eval_every", "eval_episodes", "eval_max_steps"):
        if q[key] <= 0:
            raise ConfigError(f"sequence.{key} must be positive, got {q[key]}")
    if q.alignment_steps < 0:
        raise ConfigError(f"sequence.alignment_steps must be >= 0, got {q.alignment_steps}")


def _validate_explain(x: DictConfig) -> None:
    for key, choices in EXPLAIN_CHOICES.items():
        if x[key] not in choices:
            raise ConfigError(f"explain.{key}: " + _choices_msg(key, x[key], choices))
    for cat in x.relevant:
        if cat not in OBJECT_CATEGORIES:
            raise ConfigError(
                "explain.relevant: " + _choices_msg("category", cat, OBJECT_CATEGORIES)
            )
    positive = ("episodes", "max_steps", "analysis_frames", "leakage_frames", "saliency_stride")
    for key in (*positive, "random_orders"):
        if x[key] <= 0:
            raise ConfigError(f"explain.{key} must be positive, got {x[key]}")
    if x.deletion_steps < 2:
        raise ConfigError(f"explain.deletion_steps must be at least 2, got {x.deletion_steps}")
    if x.tolerance_cells < 0 or x.saliency_sigma <= 0:
        raise ConfigError("explain.tolerance_cells must be >= 0 and explain.saliency_sigma > 0")


def to_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML (what gets logged with every run)."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def to_container(cfg: DictConfig) -> dict:
    """Plain nested dict of the resolved config."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]

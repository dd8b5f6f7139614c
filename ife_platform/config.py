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
import importlib.util
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

GROUPS = ("agent", "env", "model", "replay", "optim", "trainer", "tracking", "sequence")


class ConfigError(ValueError):
    """A configuration that cannot be run. The message says which key and what is valid."""


class AgentMismatchError(ConfigError):
    """A value that is valid, but not for the chosen agent.

    A key of another agent family, or an extractor or loss the agent does not take.
    """


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
    # no-op start after every reset: U{0..noop_max-1} raw emulator frames (ale-py's count;
    # training and evaluation alike, docs/design.md "Evaluation protocol")
    noop_max: int = 30
    frame_skip: int = 4  # emulator frames per agent step (max over the last 2)
    frame_stack: int = 4  # stacked 84x84 gray frames
    # episode cap in emulator frames of agent steps (27k agent steps): every evaluation game of
    # every agent, and training games unless train_max_episode_frames is set
    max_episode_frames: int = 108_000
    # a shorter cap for training games only (null: max_episode_frames); A3C-LSTM: 40,000
    train_max_episode_frames: int | None = None
    # life loss ends the return for learning (n-step window / GAE: no bootstrap across it) and
    # resets a recurrent agent's state, in training and evaluation; scores stay whole games
    life_loss_terminal: bool = True
    reward_clip: bool = True  # sign-clip rewards for learning (scores stay raw)
    fire_reset: bool = False  # press FIRE after reset (not part of the Atari-100k protocol)
    # the agent step after a lost life presses FIRE in games with FIRE (the A3C reference)
    fire_on_life_loss: bool = False
    num_threads: int = 0  # ale-py worker threads (0 = one per env up to the core count)


@dataclass
class ModelConfig:
    """The network: extractor (every agent) + Q head (Rainbow family: ``hidden`` .. ``v_max``)."""

    extractor: str = "ife"  # ife | cnn_attention | impala | der_cnn | nature_cnn | a3c_cnn | s3ta
    width: int = 2  # channel multiplier for ife / impala
    hue_window: int = 6  # HUE cell window in input pixels; must divide the 84x84 input
    spectral_norm: bool = True  # spectral norm on residual convs (ife AFE, impala)
    hidden: int = 256  # hidden units of each dueling stream
    dueling: bool = True  # dueling value / advantage streams
    noisy: bool = True  # factorised noisy linear layers in the head (DER)
    noisy_sigma0: float = 0.1  # initial noise scale of the noisy layers
    num_atoms: int = 51  # atoms of the C51 head (agent.loss=c51); agent.loss=huber: scalar Q
    v_min: float = -10.0  # lowest C51 atom (support of the return distribution)
    v_max: float = 10.0  # highest C51 atom


@dataclass
class AgentConfig:
    """Learner and actor settings.

    ``ife_platform.registry.FAMILY_KEYS`` says which family reads which key; setting a key
    of another family is refused.
    """

    name: str = "rainbow_der"  # set by agent=NAME: rainbow_der | rainbow_fast | a3c_lstm | s3ta
    gamma: float = 0.99  # discount per agent step
    eval_epsilon: float = 0.001  # epsilon-greedy in evaluation games, noise off
    # the loss, which also chooses the Rainbow head: c51 (C51 head, DER) | huber (scalar Q
    # head, Fast Rainbow); a2c for the actor-critic agents
    loss: str = "c51"
    # Rainbow family
    batch_size: int = 32  # transitions per update
    n_step: int = 20  # multi-step return length (DER 20, Fast Rainbow 3)
    double_q: bool = True  # the online network picks the target action (double DQN)
    learning_starts: int = 1600  # agent steps (all envs of a rank) before the first update
    updates_per_step: float = 1.0  # updates per agent step per rank (replay ratio)
    target_update_period: int = 2000  # updates between hard target copies
    epsilon_start: float = 0.0  # epsilon-greedy (0 with noisy nets)
    epsilon_end: float = 0.0  # epsilon after epsilon_decay_steps
    epsilon_decay_steps: int = 1  # agent steps for the linear decay
    # Actor-critic family (a3c_lstm, s3ta): asynchronous actor processes, n-step rollouts.
    actors: int = 2  # actor processes, each with its own envs and a copy of the policy
    rollout: int = 20  # agent steps per env per rollout (the A3C profile's 20)
    gae_lambda: float = 1.0  # GAE lambda (1: plain n-step advantages, as A3C)
    entropy_coef: float = 0.01  # weight of the policy-entropy bonus
    value_coef: float = 0.5  # weight of the value loss
    lstm_hidden: int = 512  # the policy LSTM (a3c_lstm; S3TA's is 256, set in its preset)


@dataclass
class ReplayConfig:
    """Prioritized replay (TorchRL), uint8 observations."""

    capacity: int = 100_000  # transitions held per rank (about 8.9 kB each)
    alpha: float = 0.5  # priority exponent (0: uniform sampling)
    beta_start: float = 0.4  # importance-sampling exponent at the first update
    beta_end: float = 1.0  # linear from agent.learning_starts to train.total_steps
    priority_eps: float = 1e-6  # added to every priority, so none is 0
    # importance weights normalised by the sampled batch's largest weight (DER references) or
    # by the smallest priority in the whole buffer (TorchRL's default); docs/design.md
    weight_norm: str = "batch"  # batch | buffer
    # zero the frames from before a new life in sampled stacks, as Kaixhin/Rainbow's memory
    # does after a life-loss terminal (acting stacks keep them in both; docs/design.md)
    blank_before_life_start: bool = False
    save_buffer: bool = False  # also checkpoint the replay buffer (see README for the disk cost)


@dataclass
class OptimConfig:
    """Adam settings."""

    lr: float = 1e-4  # learning rate
    eps: float = 1.5e-4  # Adam's epsilon
    grad_clip: float | None = 10.0  # max global gradient norm; null: no clipping
    fused: bool = True  # one fused Adam kernel (CPU, CUDA): same update, 5x faster step on CPU


@dataclass
class TrainerConfig:
    """Lightning trainer: devices, precision, strategy."""

    accelerator: str = "auto"  # auto | cpu | gpu | cuda | mps (Lightning's names; docs/config.md)
    devices: int = 1  # devices per node (processes with trainer.strategy=ddp)
    num_nodes: int = 1  # machines of a DDP run
    strategy: str = "auto"  # auto | ddp
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed (GPU) | ... (docs/config.md)
    steps_per_epoch: int = 10_000  # agent steps per Lightning epoch; checkpoints at epoch ends
    checkpoint_every: int = 0  # also checkpoint every this many agent steps (0: epoch ends only)
    keep_checkpoints: int = 2  # step-named checkpoints kept in the run folder (newest first)
    # torch threads of a Rainbow training process; 0: its share of the usable cores (affinity,
    # cgroup quota) divided by the training processes running on this machine, re-checked
    threads: int = 0
    # torch.compile Rainbow's forwards without gradients (acting, double-Q targets); the
    # forward with gradients and the backward stay eager (ife_platform/compiled.py)
    compile: bool = False
    log_every_updates: int = 50  # updates between train/* metric logs
    progress_bar: bool = True  # agent steps, rate, ETA, latest return (plain lines off a TTY)


@dataclass
class TrackingConfig:
    """MLflow tracking."""

    uri: str | None = None  # default: MLFLOW_TRACKING_URI or sqlite:///./mlflow.db
    experiment: str = "ife"  # MLflow experiment of new runs
    run_name: str | None = None  # MLflow run name (null: MLflow picks one)
    video: bool = True  # mp4 of an evaluation episode with the mask at the end of training
    video_max_steps: int = 1000  # agent steps in that episode at most
    video_upscale: int = 3  # integer upscaling of the video frames (nearest), legend below
    # overlay colour scale: uniform (mask / uniform attention, log, fixed) | minmax (per frame)
    mask_scale: str = "uniform"
    eval_episodes: int = 3  # raw-score evaluation episodes at the end of training (0: none)
    # a step cap per evaluation game on top of env.max_episode_frames (null: that cap alone,
    # the protocol); a game it cuts short counts in eval/truncated
    eval_max_steps: int | None = None
    # agent steps between evaluations during training (eval/* as curves; 0: none), widened to
    # train.total_steps / eval_points on long runs so a run has at most eval_points of them
    eval_every: int = 25_000
    eval_points: int = 10  # evaluations in a run at most, the final one included
    eval_every_episodes: int = 2  # games per evaluation during training
    eval_videos: int = 4  # evaluations during training that write a mask video (evenly spread)
    output_dir: str = "outputs"  # local checkpoints and videos (also logged as artifacts)
    parent_run: str | None = None  # create the run nested under this MLflow run (ife sweep)
    tags: dict[str, str] = field(default_factory=dict)  # more tags of a new run


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
    video_upscale: int = 3  # integer upscaling of the mp4's frames (nearest), legend below
    # overlay colour scale: uniform (mask / uniform attention, log, fixed) | minmax (per frame)
    mask_scale: str = "uniform"
    grid: bool = True  # draw the mask cell grid in the overlay
    table: str = "csv"  # per-frame table format: csv | parquet


@dataclass
class SequenceConfig:
    """``ife continual``: a sequence of games trained one after the other (issue: continual).

    Steps are agent steps per task. Every game of the sequence is evaluated before training
    and then every ``eval_every`` steps (past, current and future games).
    """

    name: str = "custom"  # the sequence's name (set by the demo3 / cora presets)
    games: list[str] = field(default_factory=list)  # ale-py ids, trained in this order
    steps_per_task: int = 100_000  # agent steps of training per game
    eval_every: int = 25_000  # agent steps between evaluations of every game
    eval_episodes: int = 3  # games per game per evaluation point (played in parallel envs)
    # agent steps per evaluation game at most: 4,500 steps (18k frames) cut long games short of
    # the 108k-frame protocol cap; the report says so and counts the games it cut
    eval_max_steps: int = 4_500
    mode: str = "finetune"  # transfer mode(s), combined with '+': e.g. freeze_hue+reset_afe
    head: str = "shared"  # shared (one 18-action head) | per_game
    replay: str = "reset"  # reset | keep the buffer at task switches
    reference: bool = False  # also train every game alone from scratch (forward transfer)
    alignment_steps: int = 200  # steps per game for mask-object alignment after each task
    normalise: str = "auto"  # R normalisation: hns | best_abs | auto (hns if all have refs)


@dataclass
class SweepConfig:
    """``ife sweep``: one base experiment expanded over axes into trials (docs/sweep.md).

    ``sweep.grid.KEY=[v1, v2]`` adds an axis: any config key (``env.game``, ``seed``,
    ``model.extractor``, ``sequence.mode``) or a preset group (``agent``, ``env``, ...); the
    trials are the Cartesian product, in the order the axes were given.
    """

    name: str = "sweep"  # the parent run's name (trial runs: NAME/axis values)
    grid: dict[str, Any] = field(default_factory=dict)  # KEY: [values]; nested by the dots
    command: str = "train"  # what each trial runs: train | continual
    backend: str = "local"  # local (a process pool on this machine) | ray (a Ray cluster)
    workers: int = 0  # trials at once (0: local, the machine's cores // 2; ray, unbounded)
    cpus_per_trial: int = 0  # fixed threads (local) / Ray CPUs per trial (0: a share; Ray: 2)
    gpus_per_trial: float = 0.0  # GPUs per trial (ray: a Ray resource; local: a device slot)
    address: str | None = None  # ray: null starts a local instance; auto | HOST:PORT | ray://..
    explain: bool = False  # run ife explain on each finished trial's final checkpoint
    # grid points left out: each entry maps axis keys to values, and a trial that matches every
    # key of an entry is not run (e.g. one already run outside the sweep)
    exclude: list[Any] = field(default_factory=list)


@dataclass
class TrainConfig:
    """Budget."""

    total_steps: int = 100_000  # agent steps per rank (1 agent step = frame_skip frames per env)
    # a non-finite loss, gradient or priority: stop (run FAILED, exit non-zero, the last finite
    # state kept as a checkpoint) | skip_batch (drop that update, count it, go on)
    nan_policy: str = "stop"


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
    sweep: SweepConfig = field(default_factory=SweepConfig)
    seed: int = 0  # any int >= 0; each library gets it in its range (ife_platform.seeding)
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


def choices_msg(kind: str, bad: str, choices: Sequence[str]) -> str:
    """``unknown KIND 'BAD'. Did you mean 'X'? Valid: ...`` for every unknown-name error."""
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
        raise ConfigError(f"{group}: " + choices_msg(f"{group} preset", name, choices))
    return configs_root() / group / f"{name}.yaml"


def _all_keys(schema: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for k, v in schema.items():
        path = f"{prefix}{k!s}"
        keys.append(path)
        if isinstance(v, DictConfig):
            keys.extend(_all_keys(v, path + "."))
    return keys


#: Keys that existed once, with what replaced them (old YAML files get this, not "unknown").
REMOVED_KEYS = {
    "model.distributional": "agent.loss chooses the head: c51 (C51 head) or huber (scalar Q)",
}


def _merge(base: DictConfig, layer: DictConfig | dict, source: str) -> DictConfig:
    """Merge one layer into the structured config, with errors that name the key and source."""
    for key in _leaf_keys(layer):
        if key in REMOVED_KEYS:
            raise ConfigError(f"'{key}' (from {source}) was removed: {REMOVED_KEYS[key]}")
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


def _leaf_keys(layer: DictConfig | dict, prefix: str = "") -> list[str]:
    """Dotted keys of the leaves a layer sets (``{"agent": {"n_step": 3}}`` -> agent.n_step)."""
    keys = []
    for k, v in layer.items():
        path = f"{prefix}{k!s}"
        if isinstance(v, DictConfig | dict) and len(v) > 0:
            keys.extend(_leaf_keys(v, path + "."))
        else:
            keys.append(path)
    return keys


def _family_layer(layer: DictConfig, family: str, source: str) -> DictConfig:
    """A layer with its ``family:`` sections resolved for the run's agent family.

    Presets that serve every agent put family-specific keys under ``family: {rainbow: {...}}``
    (for example a sequence preset's replay size); only the run's family's section applies.
    """
    from ife_platform.registry import FAMILY_KEYS

    if "family" not in layer:
        return layer
    layer = layer.copy()
    sections = layer.pop("family")
    for name in sections:
        if name not in FAMILY_KEYS:
            raise ConfigError(
                f"{source}: family.{name}: "
                + choices_msg("agent family", str(name), list(FAMILY_KEYS))
            )
    own = sections.get(family)
    return OmegaConf.merge(layer, own) if own else layer  # type: ignore[return-value]


def check_family_keys(keys: Sequence[str], agent: str, source: str) -> None:
    """Refuse keys that only another agent family reads.

    Raises:
        ConfigError: naming the key, the family that reads it and its agents.
    """
    from ife_platform.registry import agents_of, get_agent, key_family

    family = get_agent(agent).family
    for key in keys:
        owner = key_family(key)
        if owner is not None and owner != family:
            raise AgentMismatchError(
                f"'{key}' (from {source}) is a key of the {owner} family "
                f"({', '.join(agents_of(owner))}); agent={agent} is {family} and does not "
                "read it"
            )


def family_view(tree: dict, family: str) -> dict:
    """A plain config tree without the keys of other families (for logging and old configs)."""
    from ife_platform.registry import key_family

    def keep(node: dict, prefix: str) -> dict:
        out = {}
        for k, v in node.items():
            path = f"{prefix}{k}"
            owner = key_family(path)
            if owner is not None and owner != family or path in REMOVED_KEYS:
                continue
            out[k] = keep(v, path + ".") if isinstance(v, dict) else v
        return out

    return keep(tree, "")


def _parse_override(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    if value == "":
        return key, None
    try:  # YAML parsing: 3 -> int, 1e-4 -> float, [a,b] -> list, null -> None, pong -> str
        parsed = OmegaConf.create(f"v: {value}")
        assert isinstance(parsed, DictConfig)
        return key, parsed["v"]
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


def _looks_like_key(word: str) -> bool:
    """A word meant as ``key=value`` that lost its ``=``: dotted, or a key of the schema."""
    return "." in word or word in _all_keys(OmegaConf.structured(Config))


def compose(args: Sequence[str] = ()) -> DictConfig:
    """Build and validate the config from preset names, YAML paths and ``key=value`` overrides.

    Args:
        args: command-line words. A word with ``=`` is an override (``group=name`` for a group
            in :data:`GROUPS` selects that group's preset, except ``agent.*``-style dotted keys);
            a word ending in ``.yaml``/``.yml`` is a file; any other word is an experiment preset
            (a word that looks like a config key, ``env.game``, is refused as an override
            without ``=``).

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
        elif word not in available_presets("experiment") and _looks_like_key(word):
            raise ConfigError(f"override '{word}' has no '=': write {word}=VALUE")
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
                    f"{source}: presets.{group}: " + choices_msg("preset group", group, GROUPS)
                )
            group_presets.setdefault(group, str(name))
        expanded.append((source, layer))

    cfg = OmegaConf.structured(Config)
    cfg = _merge(cfg, _load_yaml(configs_root() / "defaults.yaml"), "configs/defaults.yaml")
    if any(key == "agent.name" for key, _ in overrides):
        raise ConfigError("select the agent with agent=NAME, not agent.name=NAME")
    agent_name = group_presets.pop("agent", cfg.agent.name)
    spec = agent_spec(agent_name)
    preset = spec.preset_path() or _preset_path("agent", agent_name)
    cfg = _merge(cfg, _load_yaml(preset), f"agent preset {agent_name}")
    cfg.agent.name = agent_name
    layers = [(f"{g} preset {n}", _load_yaml(_preset_path(g, n))) for g, n in group_presets.items()]
    for source, layer in [*layers, *expanded]:
        layer = _family_layer(layer, spec.family, source)
        if layer.get("agent", {}).get("name", agent_name) != agent_name:
            raise ConfigError(
                f"{source} sets agent.name={layer.agent.name} but the agent is {agent_name}: "
                "select the agent with agent=NAME (or presets: {agent: NAME} in a file)"
            )
        check_family_keys(_leaf_keys(layer), agent_name, source)
        cfg = _merge(cfg, layer, source)
    for key, value in overrides:
        check_family_keys([key], agent_name, f"override {key}=")
        cfg = _merge(cfg, _dotted_to_nested(key, value), f"override {key}=")
    validate(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


# --------------------------------------------------------------------------------------------
# Value domains: one table, one message format ("KEY must be DOMAIN, got VALUE")
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Domain:
    """The values one config key may take.

    Attributes:
        text: completes "KEY must be ...": ``>= 1``, ``in (0, 1]``, ``one of a, b``.
        check: True for an allowed value.
        choices: the allowed values of a name domain (for the closest-match hint).
    """

    text: str
    check: Callable[[Any], bool]
    choices: tuple[str, ...] = ()


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def at_least(low: float) -> Domain:
    """``>= low`` (a finite number)."""
    return Domain(f">= {low:g}", lambda v: _number(v) and v >= low)


def above(low: float) -> Domain:
    """``> low`` (a finite number)."""
    return Domain(f"> {low:g}", lambda v: _number(v) and v > low)


def interval(low: float, high: float, *, open_low: bool = False, open_high: bool = False) -> Domain:
    """``in [low, high]``; ``open_low`` / ``open_high`` exclude an end: ``in (0, 1]``."""
    text = f"in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"

    def check(v: Any) -> bool:
        if not _number(v):
            return False
        return (v > low if open_low else v >= low) and (v < high if open_high else v <= high)

    return Domain(text, check)


def one_of(*choices: str) -> Domain:
    """One of the given names."""
    return Domain(f"one of {', '.join(choices)}", lambda v: v in choices, tuple(choices))


def or_null(domain: Domain) -> Domain:
    """``domain``, or null (None)."""
    return Domain(f"{domain.text} or null", lambda v: v is None or domain.check(v))


#: ``trainer.accelerator``: the names Lightning's Trainer takes (its ``AcceleratorRegistry``
#: plus ``auto`` and ``gpu``; ``tests/test_config.py`` checks this against the installed
#: Lightning), kept here so that validating does not import Lightning.
LIGHTNING_ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps", "tpu")

#: ``trainer.precision``: what Lightning's Trainer takes (``lightning.fabric.connector``'s
#: ``_PRECISION_INPUT``, as strings).
LIGHTNING_PRECISIONS = (
    "16-mixed",
    "16-true",
    "32-true",
    "64-true",
    "bf16-mixed",
    "bf16-true",
    "transformer-engine",
    "transformer-engine-float16",
    "16",
    "32",
    "64",
    "bf16",
)

#: Values that Lightning names but that need a package this install may lack.
NEEDS_PACKAGE = {
    ("trainer.accelerator", "tpu"): ("torch_xla", "torch-xla"),
    ("trainer.precision", "transformer-engine"): ("transformer_engine", "transformer-engine"),
    ("trainer.precision", "transformer-engine-float16"): (
        "transformer_engine",
        "transformer-engine",
    ),
}

PROBABILITY = interval(0, 1)

#: Every numeric or enumerated key's allowed values. Keys of one agent family
#: (``ife_platform.registry.FAMILY_KEYS``) are only checked for that family's agents.
#: docs/config.md lists this table (a test keeps the two in step).
DOMAINS: dict[str, Domain] = {
    "seed": at_least(0),
    "env.num_envs": at_least(1),
    "env.sticky_actions": interval(0, 1, open_high=True),
    "env.noop_max": at_least(0),
    "env.frame_skip": at_least(1),
    "env.frame_stack": at_least(1),
    "env.max_episode_frames": at_least(1),
    "env.train_max_episode_frames": or_null(at_least(1)),
    "env.num_threads": at_least(0),
    "model.width": at_least(1),
    "model.hue_window": at_least(1),
    "model.hidden": at_least(1),
    "model.noisy_sigma0": at_least(0),
    "model.num_atoms": at_least(2),
    "agent.gamma": interval(0, 1, open_low=True),
    "agent.eval_epsilon": PROBABILITY,
    "agent.batch_size": at_least(1),
    "agent.n_step": at_least(1),
    "agent.learning_starts": at_least(0),
    "agent.updates_per_step": above(0),
    "agent.target_update_period": at_least(1),
    "agent.epsilon_start": PROBABILITY,
    "agent.epsilon_end": PROBABILITY,
    "agent.epsilon_decay_steps": at_least(1),
    "agent.actors": at_least(1),
    "agent.rollout": at_least(1),
    "agent.gae_lambda": PROBABILITY,
    "agent.entropy_coef": at_least(0),
    "agent.value_coef": at_least(0),
    "agent.lstm_hidden": at_least(1),
    "replay.capacity": at_least(1),
    "replay.alpha": at_least(0),
    "replay.beta_start": PROBABILITY,
    "replay.beta_end": PROBABILITY,
    "replay.priority_eps": above(0),
    "optim.lr": above(0),
    "optim.eps": above(0),
    "optim.grad_clip": or_null(above(0)),
    "trainer.accelerator": one_of(*LIGHTNING_ACCELERATORS),
    "trainer.devices": at_least(1),
    "trainer.num_nodes": at_least(1),
    "trainer.strategy": one_of("auto", "ddp", "ddp_spawn"),
    "trainer.precision": one_of(*LIGHTNING_PRECISIONS),
    "trainer.steps_per_epoch": at_least(1),
    "trainer.checkpoint_every": at_least(0),
    "trainer.keep_checkpoints": at_least(1),
    "trainer.threads": at_least(0),
    "trainer.log_every_updates": at_least(1),
    "tracking.video_max_steps": at_least(1),
    "tracking.eval_episodes": at_least(0),
    "tracking.eval_max_steps": or_null(at_least(1)),
    "tracking.video_upscale": at_least(1),
    "tracking.mask_scale": one_of("uniform", "minmax"),
    "tracking.eval_every": at_least(0),
    "tracking.eval_points": at_least(1),
    "tracking.eval_every_episodes": at_least(1),
    "tracking.eval_videos": at_least(0),
    "train.total_steps": at_least(1),
    "train.nan_policy": one_of("stop", "skip_batch"),
    "explain.episodes": at_least(1),
    "explain.max_steps": at_least(1),
    "explain.tolerance_cells": at_least(0),
    "explain.analysis_frames": at_least(1),
    "explain.leakage_frames": at_least(1),
    "explain.saliency_stride": at_least(1),
    "explain.saliency_sigma": above(0),
    "explain.deletion_steps": at_least(2),
    "explain.random_orders": at_least(1),
    "explain.video_upscale": at_least(1),
    "explain.mask_scale": one_of("uniform", "minmax"),
    "sequence.steps_per_task": at_least(1),
    "sequence.eval_every": at_least(1),
    "sequence.eval_episodes": at_least(1),
    "sequence.eval_max_steps": at_least(1),
    "sequence.alignment_steps": at_least(0),
    "sweep.command": one_of("train", "continual"),
    "sweep.backend": one_of("local", "ray"),
    "sweep.workers": at_least(0),
    "sweep.cpus_per_trial": at_least(0),
    "sweep.gpus_per_trial": at_least(0),
}


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _missing_package(key: str, value: Any) -> str | None:
    """The pip package that ``key=value`` needs and this install lacks (None: nothing lacks)."""
    module, package = NEEDS_PACKAGE.get((key, value), (None, None))
    if module is None or importlib.util.find_spec(module) is not None:
        return None
    return package


def check_domains(cfg: DictConfig, family: str) -> None:
    """Check every key of :data:`DOMAINS` that the run's agent family reads.

    Raises:
        ConfigError: ``KEY must be DOMAIN, got VALUE`` for the first value out of its domain
            (a name domain lists only the names usable with the installed packages).
    """
    from ife_platform.registry import key_family

    for key, domain in DOMAINS.items():
        owner = key_family(key)
        if owner is not None and owner != family:
            continue
        value = OmegaConf.select(cfg, key)
        missing = _missing_package(key, value)
        if domain.check(value) and missing is None:
            continue
        text, note = domain.text, ""
        if domain.choices:
            usable = [c for c in domain.choices if _missing_package(key, c) is None]
            text = f"one of {', '.join(usable)}"
            hint = _closest(str(value), usable)
            note = f".{hint}" if hint else ""
        if missing is not None:
            note = f" ({value} needs the Python package {missing}, which is not installed)"
        raise ConfigError(f"{key} must be {text}, got {_shown(value)}{note}")


# --------------------------------------------------------------------------------------------
# Host memory
# --------------------------------------------------------------------------------------------

#: Refuse a replay that needs more than this share of the available host memory.
MEMORY_HEADROOM = 0.9


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def available_memory_bytes() -> int | None:
    """Host memory a new process can still use, in bytes (None: unknown on this system).

    ``MemAvailable`` of ``/proc/meminfo``, or the room left under this process's cgroup limit
    (v2 ``memory.max`` - ``memory.current``, v1 ``memory.limit_in_bytes`` -
    ``memory.usage_in_bytes``) when that is smaller. Tests replace this function to check the
    refusal deterministically.
    """
    candidates = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        limit = _read_int(limit_file)
        if limit is not None and limit < 1 << 60:  # cgroup v1 writes ~2^63 for "no limit"
            candidates.append(max(limit - (_read_int(usage_file) or 0), 0))
    return min(candidates) if candidates else None


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f}" if n < 10e9 else f"{n / 1e9:.0f}"


def _check_replay_memory(cfg: DictConfig) -> None:
    """Refuse a replay (all ranks of this host) that cannot fit in the available memory."""
    from ife_platform.rainbow.replay import estimate_replay_bytes

    available = available_memory_bytes()
    if available is None:
        return
    need = estimate_replay_bytes(cfg)
    if need <= MEMORY_HEADROOM * available:
        return
    ranks = int(cfg.trainer.devices)
    capacity = int(cfg.replay.capacity)
    per_slot = round(need / (ranks * capacity))

    def fits(c: int) -> bool:  # (the same estimate as `need`, at capacity c)
        return estimate_replay_bytes(cfg, c) <= MEMORY_HEADROOM * available

    lo, hi = 0, capacity  # the largest capacity that fits (bytes grow with the capacity)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    raise ConfigError(
        f"replay.capacity={capacity} needs about {_gb(need)} GB of host memory for "
        f"the replay ({per_slot} bytes per transition x {capacity} transitions x "
        f"{ranks} rank(s) on this host, trainer.devices={ranks}), this machine has "
        f"{_gb(available)} GB available; lower replay.capacity (must be <= {lo} here)"
    )


# --------------------------------------------------------------------------------------------
# Semantic validation (values the type system cannot check)
# --------------------------------------------------------------------------------------------


def agent_spec(name: str) -> Any:
    """The registry entry of agent ``name`` (:class:`~ife_platform.registry.AgentSpec`).

    Raises:
        ConfigError: no such agent, with the registered names.
    """
    from ife_platform.registry import UnknownAgentError, agent_names, get_agent

    try:
        return get_agent(name)
    except UnknownAgentError:
        raise ConfigError("agent: " + choices_msg("agent", name, agent_names())) from None


def known_games() -> list[str]:
    """Every ROM id that the installed ale-py ships."""
    from ale_py import roms

    return sorted(roms.get_all_rom_ids())


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for values that would fail later (or silently misbehave).

    Names (game, agent, extractor, loss), the value domains of :data:`DOMAINS` for the
    agent's family, cross-key constraints, the replay's host memory (Rainbow family) and the
    tracking store's database driver; nothing is built and nothing is written.
    """
    from ife_platform.extractors import EXTRACTORS
    from ife_platform.tracking import missing_store_driver

    games = known_games()
    if cfg.env.game not in games:
        raise ConfigError("env.game: " + choices_msg("game", cfg.env.game, games))
    spec = agent_spec(cfg.agent.name)
    extractors = list(spec.extractors or EXTRACTORS)
    if cfg.model.extractor not in extractors:
        raise AgentMismatchError(
            f"model.extractor (agent={spec.name}): "
            + choices_msg("extractor", cfg.model.extractor, extractors)
        )
    if cfg.agent.loss not in spec.losses:
        raise AgentMismatchError(
            f"agent.loss (agent={spec.name}): " + choices_msg("loss", cfg.agent.loss, spec.losses)
        )
    if spec.frame_stack is not None and cfg.env.frame_stack != spec.frame_stack:
        raise AgentMismatchError(
            f"agent={spec.name} needs env.frame_stack={spec.frame_stack}, got "
            f"{cfg.env.frame_stack} (an actor-critic's memory is its LSTM)"
        )
    check_domains(cfg, spec.family)
    _FAMILY_CHECKS[spec.family](cfg)
    if cfg.model.extractor == "ife" and 84 % cfg.model.hue_window != 0:
        divisors = [d for d in range(1, 85) if 84 % d == 0]
        raise ConfigError(
            f"model.hue_window={cfg.model.hue_window} does not tile the 84x84 input exactly "
            f"(84 % {cfg.model.hue_window} = {84 % cfg.model.hue_window}); "
            f"valid windows: {', '.join(map(str, divisors))}"
        )
    problem = missing_store_driver(cfg.tracking.uri)
    if problem is not None:
        raise ConfigError(f"tracking.uri: {problem}")
    _validate_explain(cfg.explain)
    _validate_sequence(cfg.sequence, games)


def _validate_rainbow(cfg: DictConfig) -> None:
    from ife_platform.rainbow.replay import WEIGHT_NORMS

    if cfg.replay.weight_norm not in WEIGHT_NORMS:
        raise ConfigError(
            "replay.weight_norm: "
            + choices_msg("weight normalisation", cfg.replay.weight_norm, WEIGHT_NORMS)
        )
    if cfg.agent.batch_size > cfg.replay.capacity:
        raise ConfigError(
            f"agent.batch_size must be in [1, replay.capacity={cfg.replay.capacity}] (a batch "
            f"is drawn from the replay), got {cfg.agent.batch_size}"
        )
    if cfg.model.v_min >= cfg.model.v_max:
        raise ConfigError(
            f"model.v_min must be < model.v_max={cfg.model.v_max} (the C51 support), got "
            f"{cfg.model.v_min}"
        )
    _check_replay_memory(cfg)


def _validate_actor_critic(cfg: DictConfig) -> None:
    """Nothing beyond :data:`DOMAINS` yet (actors, rollout, LSTM size, GAE lambda)."""


#: Cross-key checks per agent family (``ife_platform.registry.FAMILY_KEYS``).
_FAMILY_CHECKS = {"rainbow": _validate_rainbow, "actor_critic": _validate_actor_critic}


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
            raise ConfigError(f"sequence.{key}: " + choices_msg(key, q[key], choices))
    for game in q.games:
        if game not in games:
            raise ConfigError("sequence.games: " + choices_msg("game", game, games))


def _validate_explain(x: DictConfig) -> None:
    for key, choices in EXPLAIN_CHOICES.items():
        if x[key] not in choices:
            raise ConfigError(f"explain.{key}: " + choices_msg(key, x[key], choices))
    for cat in x.relevant:
        if cat not in OBJECT_CATEGORIES:
            raise ConfigError(
                "explain.relevant: " + choices_msg("category", cat, OBJECT_CATEGORIES)
            )


def to_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML (what gets logged with every run)."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def to_container(cfg: DictConfig) -> dict:
    """Plain nested dict of the resolved config."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Key documentation (``ife train --help``): read from the schemas above, comments included
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyDoc:
    """One config key as ``ife COMMAND --help`` lists it.

    Attributes:
        key: the dotted key (``env.game``).
        type: the annotation as written in the schema (``int``, ``float | None``).
        default: the schema default (presets may change it; ``ife config show`` shows those).
        doc: the key's comment in the schema, on one line ("" when it has none).
        domain: the allowed values (:data:`DOMAINS`), "" when not checked.
        family: the agent family that alone reads the key (None: every agent).
    """

    key: str
    type: str
    default: Any
    doc: str
    domain: str = ""
    family: str | None = None


def _field_comments(cls: type) -> dict[str, tuple[str, str]]:
    """``{field: (annotation, comment)}`` of a schema class, from its source.

    A field's comment is the ``#`` comment at the end of its line(s), else the block of
    comment lines right above it (a blank line or code ends the block).
    """
    import ast
    import inspect

    source = inspect.getsource(cls)
    lines = source.splitlines()
    tree = ast.parse(source)
    out: dict[str, tuple[str, str]] = {}
    for node in tree.body[0].body:  # type: ignore[attr-defined]
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        comment = ""
        end = node.end_lineno or node.lineno
        for line in lines[node.lineno - 1 : end]:
            if "#" in line:  # no schema default holds a '#'
                comment = line.split("#", 1)[1].strip()
        if not comment:
            above: list[str] = []
            i = node.lineno - 2
            while i >= 0 and lines[i].strip().startswith("#"):
                above.insert(0, lines[i].strip().lstrip("#").strip())
                i -= 1
            comment = " ".join(above)
        out[node.target.id] = (ast.unparse(node.annotation), comment)
    return out


@dataclass(frozen=True)
class KeyGroup:
    """A schema section as ``--help`` lists it: ``env``, its title and its keys."""

    name: str
    title: str
    keys: list[KeyDoc]


def key_docs() -> dict[str, KeyGroup]:
    """Every config key with its type, schema default, doc comment and domain, by group.

    Groups are the schema sections in :class:`Config`'s order (``agent``, ``env``, ...), then
    ``top`` for the top-level keys (``seed``, ``resume``); a group's title is the first line
    of its schema's docstring. Reads the source of this module (no torch, no Lightning).
    """
    import dataclasses

    from ife_platform.registry import key_family

    def default_of(f: dataclasses.Field) -> Any:
        if f.default is not dataclasses.MISSING:
            return f.default
        return f.default_factory()  # type: ignore[operator]

    def row(key: str, annotation: str, default: Any, doc: str) -> KeyDoc:
        domain = DOMAINS.get(key)
        text = domain.text if domain else ""
        return KeyDoc(key, annotation, default, doc, text, key_family(key))

    groups: dict[str, KeyGroup] = {}
    top: list[KeyDoc] = []
    top_notes = _field_comments(Config)
    for f in dataclasses.fields(Config):
        value = default_of(f)
        if dataclasses.is_dataclass(value):
            notes = _field_comments(type(value))
            title = (type(value).__doc__ or f.name).strip().splitlines()[0].rstrip(".")
            keys = []
            for sub in dataclasses.fields(value):
                annotation, doc = notes[sub.name]
                keys.append(row(f"{f.name}.{sub.name}", annotation, default_of(sub), doc))
            groups[f.name] = KeyGroup(f.name, title, keys)
        else:
            annotation, doc = top_notes[f.name]
            top.append(row(f.name, annotation, value, doc))
    groups["top"] = KeyGroup("top", "Top-level keys", top)
    return groups

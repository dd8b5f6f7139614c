"""Value domains (issue 12 item 7): bad values are refused by ``compose`` before anything is
built, with the key and its allowed range; the replay's host memory is checked up front."""

from __future__ import annotations

import re
import subprocess
import time
import typing
from pathlib import Path

import pytest
from conftest import ife_command, subprocess_env

from ife_platform import config
from ife_platform.config import DOMAINS, ConfigError, at_least, compose
from ife_platform.rainbow.replay import replay_bytes, replay_bytes_per_transition

GB = 10**9

BAD = [
    (
        ["agent.batch_size=20000", "replay.capacity=1000"],
        "agent.batch_size",
        "[1, replay.capacity=1000]",
    ),
    (["trainer.accelerator=tpu"], "trainer.accelerator", "one of auto, cpu, cuda, gpu, mps"),
    (["trainer.precision=64-bad"], "trainer.precision", "one of 16-mixed"),
    (["env.frame_stack=0"], "env.frame_stack", ">= 1"),
    (["optim.lr=-1"], "optim.lr", "> 0"),
    (["optim.eps=0"], "optim.eps", "> 0"),
    (["replay.alpha=-1"], "replay.alpha", ">= 0"),
    (["tracking.uri=postgresql://u:p@db.example/mlflow"], "tracking.uri", "psycopg2"),
    (["tracking.uri=mysql+pymysql://u:p@db.example/mlflow"], "tracking.uri", "PyMySQL"),
    (["tracking.uri=mysql://u:p@db.example/mlflow"], "tracking.uri", "mysqlclient"),
    (["agent.gamma=5"], "agent.gamma", "in (0, 1], got 5.0"),
    (["agent.gamma=0"], "agent.gamma", "in (0, 1]"),
    (["agent.learning_starts=-10"], "agent.learning_starts", ">= 0, got -10"),
    (["optim.grad_clip=-1"], "optim.grad_clip", "> 0 or null"),
    (["optim.grad_clip=0"], "optim.grad_clip", "> 0 or null"),
    (["model.num_atoms=1"], "model.num_atoms", ">= 2"),
    (["replay.beta_start=-0.1"], "replay.beta_start", "in [0, 1]"),
    (["replay.beta_end=1.5"], "replay.beta_end", "in [0, 1]"),
    (["replay.priority_eps=0"], "replay.priority_eps", "> 0"),
    (["model.noisy_sigma0=-0.1"], "model.noisy_sigma0", ">= 0"),
    (["model.v_min=10", "model.v_max=-10"], "model.v_min", "< model.v_max=-10.0"),
    (["model.v_min=5", "model.v_max=5"], "model.v_min", "< model.v_max=5.0"),
    (["agent.eval_epsilon=1.5"], "agent.eval_epsilon", "in [0, 1]"),
    (["agent.epsilon_start=2"], "agent.epsilon_start", "in [0, 1]"),
    (["agent.epsilon_end=-1"], "agent.epsilon_end", "in [0, 1]"),
    (["agent.epsilon_decay_steps=0"], "agent.epsilon_decay_steps", ">= 1"),
    (["agent.n_step=0"], "agent.n_step", ">= 1"),
    (["agent.updates_per_step=0"], "agent.updates_per_step", "> 0"),
    (["env.noop_max=-1"], "env.noop_max", ">= 0"),
    (["env.frame_skip=0"], "env.frame_skip", ">= 1"),
    (["env.max_episode_frames=0"], "env.max_episode_frames", ">= 1"),
    (["env.sticky_actions=1"], "env.sticky_actions", "in [0, 1)"),
    (["seed=-1"], "seed", ">= 0"),
    (["trainer.num_nodes=0"], "trainer.num_nodes", ">= 1"),
    (["trainer.devices=0"], "trainer.devices", ">= 1"),
    (["trainer.log_every_updates=0"], "trainer.log_every_updates", ">= 1"),
    (["trainer.checkpoint_every=-1"], "trainer.checkpoint_every", ">= 0"),
    (["trainer.keep_checkpoints=0"], "trainer.keep_checkpoints", ">= 1"),
    (["train.nan_policy=ignore"], "train.nan_policy", "one of stop, skip_batch"),
    (["train.total_steps=0"], "train.total_steps", ">= 1"),
    (["tracking.eval_episodes=-1"], "tracking.eval_episodes", ">= 0"),
    (["tracking.eval_max_steps=0"], "tracking.eval_max_steps", ">= 1"),
    (["model.hue_window=0"], "model.hue_window", ">= 1"),
    (["optim.lr=.inf"], "optim.lr", "> 0, got inf"),
    (["optim.lr=.nan"], "optim.lr", "> 0, got nan"),
    (["agent=a3c_lstm", "agent.gae_lambda=1.5"], "agent.gae_lambda", "in [0, 1]"),
    (["agent=a3c_lstm", "agent.rollout=0"], "agent.rollout", ">= 1"),
    (["agent=a3c_lstm", "agent.entropy_coef=-0.01"], "agent.entropy_coef", ">= 0"),
    (["explain.deletion_steps=1"], "explain.deletion_steps", ">= 2"),
    (["sequence.alignment_steps=-1"], "sequence.alignment_steps", ">= 0"),
]


@pytest.mark.parametrize(("args", "key", "allowed"), BAD, ids=[" ".join(a) for a, _, _ in BAD])
def test_bad_value_is_refused_naming_key_and_range(args, key, allowed) -> None:
    with pytest.raises(ConfigError) as err:
        compose(args)
    assert key in str(err.value) and allowed in str(err.value), str(err.value)


def test_message_format_is_uniform() -> None:
    with pytest.raises(ConfigError, match=re.escape("agent.gamma must be in (0, 1], got 5.0")):
        compose(["agent.gamma=5"])
    with pytest.raises(ConfigError, match=r"trainer.precision must be one of .*got '64-bad'"):
        compose(["trainer.precision=64-bad"])


def test_null_grad_clip_and_edges_are_accepted() -> None:
    cfg = compose(
        [
            "optim.grad_clip=null",
            "agent.gamma=1",
            "agent.learning_starts=0",
            "replay.alpha=0",
            "model.num_atoms=2",
            "agent.batch_size=64",
            "replay.capacity=64",
            "trainer.precision=bf16-mixed",
            "trainer.accelerator=cpu",
            "tracking.eval_episodes=0",  # 0: no final evaluation
        ]
    )
    assert cfg.optim.grad_clip is None and cfg.agent.batch_size == cfg.replay.capacity


def test_override_without_equals_is_named_as_such() -> None:
    for word in ("env.game", "seed", "agent.n_step"):
        with pytest.raises(ConfigError, match=re.escape(f"override '{word}' has no '='")):
            compose([word])
    with pytest.raises(ConfigError, match="unknown experiment preset 'no_such_preset'"):
        compose(["no_such_preset"])  # a plain word is still taken for a preset name


def test_family_keys_are_only_checked_for_their_family(monkeypatch) -> None:
    """An actor-critic run never reads Rainbow keys, so their values cannot refuse it."""
    monkeypatch.setitem(DOMAINS, "agent.batch_size", at_least(10**9))  # the default is out
    monkeypatch.setitem(DOMAINS, "agent.rollout", at_least(10**9))
    with pytest.raises(ConfigError, match="agent.batch_size must be >= 1e"):
        compose([])
    with pytest.raises(ConfigError, match="agent.rollout must be >= 1e"):
        compose(["agent=a3c_lstm"])
    monkeypatch.setattr(config, "available_memory_bytes", lambda: 10**6)  # 1 MB free
    monkeypatch.setitem(DOMAINS, "agent.rollout", at_least(1))
    assert compose(["agent=a3c_lstm"]).agent.name == "a3c_lstm"  # no replay, no Rainbow check


def test_replay_memory_refused_with_the_numbers(monkeypatch) -> None:
    monkeypatch.setattr(config, "available_memory_bytes", lambda: 22 * GB)
    with pytest.raises(ConfigError) as err:
        compose(["replay.capacity=20000000"])
    msg = str(err.value)
    assert "replay.capacity=20000000 needs about 178 GB" in msg, msg
    assert "this machine has 22 GB available" in msg and "lower replay.capacity" in msg
    most = int(re.search(r"must be <= (\d+) here", msg).group(1))
    cfg = compose([f"replay.capacity={most}"])  # the largest that fits is accepted
    assert cfg.replay.blank_before_life_start  # the default DER profile counts its life ids
    shape = (4, cfg.env.num_envs, cfg.agent.n_step, cfg.replay.blank_before_life_start)
    assert replay_bytes(most, *shape) <= 0.9 * 22 * GB < replay_bytes(most + 1, *shape)
    with pytest.raises(ConfigError):
        compose([f"replay.capacity={most + 1}"])
    # every rank on the host has its own buffer
    with pytest.raises(ConfigError, match="2 rank"):
        compose([f"replay.capacity={most}", "trainer.devices=2", "trainer.strategy=ddp"])
    # frames are stored once: the stack depth no longer multiplies the bytes
    assert replay_bytes_per_transition(1) == replay_bytes_per_transition(4)


def test_fast_profile_replay_fits_a_24_gb_host(monkeypatch) -> None:
    """Issue 13: with each frame stored once the Fast preset's 2^20 replay needs about 9.3 GB
    (59 GB with two stacks per transition), so a host with 22 GB free takes it."""
    monkeypatch.setattr(config, "available_memory_bytes", lambda: 22 * GB)
    cfg = compose(["agent=rainbow_fast"])
    assert cfg.replay.capacity == 2**20
    monkeypatch.setattr(config, "available_memory_bytes", lambda: 8 * GB)
    with pytest.raises(ConfigError, match=r"replay.capacity=1048576 needs about 9.3 GB"):
        compose(["agent=rainbow_fast"])


def test_replay_memory_refused_on_this_machine() -> None:
    available = config.available_memory_bytes()
    assert available is not None and available > 0  # /proc/meminfo on Linux
    need = 20_000_000 * replay_bytes_per_transition(4)
    if need <= 0.9 * available:
        pytest.skip(f"this machine has {available / GB:.0f} GB free: 20M transitions fit")
    with pytest.raises(ConfigError, match=r"replay.capacity=20000000 needs about 178 GB"):
        compose(["replay.capacity=20000000"])


def test_lightning_names_match_the_installed_lightning() -> None:
    """The static lists (validation does not import Lightning) are Lightning's own."""
    from lightning.fabric.connector import _PRECISION_INPUT
    from lightning.pytorch.accelerators import AcceleratorRegistry

    accelerators = set(AcceleratorRegistry.available_accelerators()) | {"auto", "gpu"}
    assert accelerators == set(config.LIGHTNING_ACCELERATORS)

    def literals(tp) -> set[str]:
        args = typing.get_args(tp)
        if typing.get_origin(tp) is typing.Literal:
            return {str(a) for a in args}
        return set().union(*(literals(a) for a in args))

    assert literals(_PRECISION_INPUT) == set(config.LIGHTNING_PRECISIONS)


def test_docs_list_every_domain() -> None:
    text = (Path(__file__).parent.parent / "docs" / "config.md").read_text()
    for key, domain in DOMAINS.items():
        row = f"| `{key}` | {domain.text} |"
        assert row in text, f"docs/config.md lacks the row {row}"


def test_cli_refuses_a_bad_value_fast_with_exit_2(tmp_path: Path) -> None:
    start = time.monotonic()
    proc = subprocess.run(
        [*ife_command(), "train", "agent.gamma=5"],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "agent.gamma must be in (0, 1], got 5.0" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no outputs
    assert time.monotonic() - start < 60

"""Config composition and validation: presets load, bad input exits 2 with a useful message."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ReadonlyConfigError

from ife_platform.cli import main
from ife_platform.config import GROUPS, ConfigError, available_presets, compose


def test_defaults_are_the_der_profile() -> None:
    cfg = compose([])
    assert cfg.agent.name == "rainbow_der"
    assert (cfg.agent.n_step, cfg.agent.batch_size, cfg.agent.learning_starts) == (20, 32, 1600)
    assert cfg.model.distributional and cfg.model.noisy and cfg.agent.loss == "c51"
    assert cfg.replay.capacity == 100_000 and cfg.train.total_steps == 100_000


def test_fast_profile_values() -> None:
    cfg = compose(["agent=rainbow_fast"])
    assert cfg.agent.name == "rainbow_fast"
    assert cfg.env.num_envs == 64 and cfg.agent.batch_size == 512 and cfg.agent.n_step == 3
    assert not cfg.model.distributional and not cfg.model.noisy and cfg.agent.loss == "huber"
    assert cfg.optim.eps == pytest.approx(0.005 / 512)
    # one update per vector step of 64 envs; target sync every 32,000 agent steps
    assert cfg.agent.updates_per_step * cfg.env.num_envs == pytest.approx(1.0)
    assert cfg.agent.target_update_period / cfg.agent.updates_per_step == 32_000


def test_layer_order_overrides_win() -> None:
    cfg = compose(["demo", "env.game=pong", "agent.n_step=5", "env=revisiting"])
    assert cfg.env.game == "pong"  # override beats the preset file
    assert cfg.agent.n_step == 5
    assert cfg.env.sticky_actions == 0.25 and cfg.env.full_action_space  # group preset applied
    assert cfg.train.total_steps == 2000  # from the demo preset


def test_every_shipped_preset_composes() -> None:
    for group in GROUPS:
        for name in available_presets(group):
            compose([f"{group}={name}"])
    for name in available_presets("experiment"):
        compose([name])
    assert set(available_presets("agent")) == {"rainbow_der", "rainbow_fast", "a3c_lstm", "s3ta"}


def test_yaml_file_and_readonly(tmp_path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("presets: {agent: rainbow_fast}\nenv:\n  game: ms_pacman\nseed: 7\n")
    cfg = compose([str(path)])
    assert (cfg.agent.name, cfg.env.game, cfg.seed) == ("rainbow_fast", "ms_pacman", 7)
    with pytest.raises(ReadonlyConfigError):
        cfg.seed = 3  # resolved configs are read-only


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["env.gmae=pong"], ["env.gmae", "Did you mean 'env.game'"]),
        (["env.game=pongg"], ["unknown game 'pongg'", "Did you mean 'pong'"]),
        (["model.extractor=ifee"], ["unknown extractor 'ifee'", "'ife'", "cnn_attention"]),
        (["agent=rainbow_dr"], ["rainbow_der", "rainbow_fast"]),
        (["train.total_steps=lots"], ["train.total_steps", "lots"]),
        (["model.hue_window=5"], ["hue_window=5", "does not tile", "6"]),
        (["seedd=1"], ["seedd", "Did you mean 'seed'"]),
        (["no_such_preset"], ["no_such_preset", "demo"]),
        (["agent.loss=huber"], ["distributional"]),
        (["trainer.strategy=deepspeed"], ["trainer.strategy", "ddp"]),
        (["missing.yaml"], ["not found"]),
    ],
)
def test_bad_config_exits_2_with_message(args, expected, capsys, workdir) -> None:
    code = main(["train", *args])
    err = capsys.readouterr().err
    assert code == 2
    for fragment in expected:
        assert fragment in err, (fragment, err)
    assert not (workdir / "mlflow.db").exists()  # failed before anything was created


def test_group_selector_must_be_a_name() -> None:
    with pytest.raises(ConfigError, match="preset"):
        compose(["agent=3"])


def test_resolved_yaml_round_trips() -> None:
    cfg = compose(["demo"])
    again = OmegaConf.create(OmegaConf.to_yaml(cfg))
    assert again.env.game == "breakout" and again.model.hue_window == 6


def test_unknown_command_exits_2(capsys) -> None:
    assert main(["trian"]) == 2
    assert "Did you mean 'train'" in capsys.readouterr().err

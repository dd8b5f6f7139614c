"""Config composition and validation: presets load, bad input exits 2 with a useful message."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ReadonlyConfigError

from ife_platform.cli import main
from ife_platform.config import GROUPS, ConfigError, available_presets, compose, family_view
from ife_platform.registry import agent_names


def test_defaults_are_the_der_profile() -> None:
    cfg = compose([])
    assert cfg.agent.name == "rainbow_der"
    assert (cfg.agent.n_step, cfg.agent.batch_size, cfg.agent.learning_starts) == (20, 32, 1600)
    assert cfg.model.noisy and cfg.agent.loss == "c51"
    assert cfg.replay.capacity == 100_000 and cfg.train.total_steps == 100_000


def test_fast_profile_values(roomy_host) -> None:  # its replay needs 9.3 GB
    cfg = compose(["agent=rainbow_fast"])
    assert cfg.agent.name == "rainbow_fast"
    assert cfg.env.num_envs == 64 and cfg.agent.batch_size == 512 and cfg.agent.n_step == 3
    assert not cfg.model.noisy and cfg.agent.loss == "huber"
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


def test_every_shipped_preset_composes(roomy_host) -> None:
    """Every preset composes alone, and with every agent it applies to; with the others the
    refusal names the family or the extractor (not a traceback). On a host with room for the
    Fast-Rainbow preset's 9.3 GB replay (test_config_domains checks the refusal on a small one)."""
    for name in available_presets("experiment"):
        compose([name])
    assert set(available_presets("agent")) == set(agent_names())
    for group in GROUPS:
        for name in available_presets(group):
            fits = 0
            for agent in agent_names():
                try:
                    compose([f"agent={agent}", f"{group}={name}"])
                    fits += 1
                except ConfigError as err:
                    assert "family" in str(err) or "model.extractor (agent=" in str(err), err
            assert fits > 0, f"{group}={name} fits no agent"


def test_yaml_file_and_readonly(tmp_path, roomy_host) -> None:
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
        (["env.game"], ["override 'env.game' has no '='", "env.game=VALUE"]),
        (["agent.gamma=5"], ["agent.gamma must be in (0, 1], got 5.0"]),
        (["agent.loss=a2c"], ["agent.loss (agent=rainbow_der)", "'a2c'", "c51, huber"]),
        (["model.distributional=true"], ["was removed", "agent.loss"]),
        (
            ["agent=a3c_lstm", "agent.n_step=5"],
            ["'agent.n_step'", "rainbow family (rainbow_der, rainbow_fast)", "agent=a3c_lstm"],
        ),
        (["agent=s3ta", "model.noisy=false"], ["'model.noisy'", "rainbow family"]),
        (["agent=a3c_lstm", "replay=small"], ["'replay.capacity'", "replay preset small"]),
        (["agent.lstm_hidden=64"], ["actor_critic family (a3c_lstm, s3ta)", "rainbow_der"]),
        (["agent=s3ta", "model.extractor=ife"], ["model.extractor (agent=s3ta)", "Valid: s3ta"]),
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


def test_family_sections_apply_to_their_family_only(tmp_path) -> None:
    """A preset's ``family: {rainbow: ...}`` section sets Rainbow keys for Rainbow agents and
    is skipped for actor-critic ones (demo3 serves both)."""
    path = tmp_path / "both.yaml"
    path.write_text(
        "train: {total_steps: 500}\n"
        "family:\n  rainbow: {agent: {n_step: 7}, replay: {capacity: 999}}\n"
        "  actor_critic: {agent: {rollout: 9}}\n"
    )
    rainbow = compose([str(path)])
    assert (rainbow.agent.n_step, rainbow.replay.capacity, rainbow.agent.rollout) == (7, 999, 20)
    a3c = compose(["agent=a3c_lstm", str(path)])
    assert (a3c.agent.rollout, a3c.agent.n_step, a3c.train.total_steps) == (9, 20, 500)
    path.write_text("family:\n  rainbw: {agent: {n_step: 7}}\n")
    with pytest.raises(ConfigError, match="Did you mean 'rainbow'"):
        compose([str(path)])


def test_a_file_cannot_switch_the_agent_behind_the_preset(tmp_path) -> None:
    path = tmp_path / "sneaky.yaml"
    path.write_text("agent: {name: a3c_lstm}\n")
    with pytest.raises(ConfigError, match="select the agent with agent=NAME"):
        compose([str(path)])


def test_family_view_drops_other_families_and_removed_keys() -> None:
    tree = {
        "agent": {"name": "a3c_lstm", "n_step": 3, "rollout": 20, "gamma": 0.99},
        "model": {"extractor": "ife", "noisy": True, "distributional": True},
        "replay": {"capacity": 10},
        "seed": 1,
    }
    assert family_view(tree, "actor_critic") == {
        "agent": {"name": "a3c_lstm", "rollout": 20, "gamma": 0.99},
        "model": {"extractor": "ife"},
        "seed": 1,
    }
    rainbow = family_view(tree, "rainbow")
    assert rainbow["replay"] == {"capacity": 10} and "rollout" not in rainbow["agent"]
    assert rainbow["model"] == {"extractor": "ife", "noisy": True}


def test_config_show_prints_the_agents_keys_and_round_trips(capsys, tmp_path) -> None:
    assert main(["config", "show", "agent=a3c_lstm", "env.game=breakout", "seed=3"]) == 0
    text = capsys.readouterr().out
    assert "rollout: 20" in text and "game: breakout" in text
    assert "  n_step:" not in text and "\nreplay:" not in text  # Rainbow keys left out
    path = tmp_path / "shown.yaml"
    path.write_text(text)
    again = compose([str(path)])  # what it prints runs as it was shown
    assert again == compose(["agent=a3c_lstm", "env.game=breakout", "seed=3"])
    assert main(["config", "show", "agent=a3c_lstm", "agent.n_step=5"]) == 2
    assert "rainbow family" in capsys.readouterr().err
    assert main(["config"]) == 2

"""``ife --help`` and ``ife COMMAND --help``: fast, no torch, the config keys from the schema."""

from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from ife_platform import cli
from ife_platform.config import Config, _all_keys, key_docs

HEAVY = ("torch", "lightning", "mlflow", "torchrl", "ale_py")


def _help_run(*words: str) -> subprocess.CompletedProcess:
    """``python -X importtime -m ife_platform.cli WORDS``: output and the modules it imported."""
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ife_platform.cli", *words],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _imported(stderr: str) -> set[str]:
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if "|" in line}


def test_every_command_has_help() -> None:
    assert set(cli.HELP) == set(cli.COMMANDS)
    text = cli.usage()
    for name, h in cli.HELP.items():
        assert f"  {name} " in text and h.summary in text
    assert "ife config show" in cli.HELP["config"].usage


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_command_help_without_torch(command: str) -> None:
    proc = _help_run(command, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"usage: {cli.HELP[command].usage}\n")
    heavy = {m for m in _imported(proc.stderr) if m.split(".")[0] in HEAVY}
    assert not heavy, f"ife {command} --help imported {sorted(heavy)[:5]}"


def test_top_level_help_and_help_word() -> None:
    proc = _help_run("--help")
    assert proc.returncode == 0 and "commands:" in proc.stdout
    assert not {m for m in _imported(proc.stderr) if m.split(".")[0] in HEAVY}
    assert cli.main(["help", "explain"]) == 0
    assert cli.main(["explain", "-h"]) == 0
    assert cli.main([]) == 2  # no command: usage, bad input


def test_train_help_lists_every_training_key_with_type_default_and_doc() -> None:
    text = cli.command_help("train")
    docs = key_docs()
    for group in cli.TRAIN_GROUPS:
        for k in docs[group].keys:
            assert f"  {k.key}: {k.type} = " in text, k.key
            assert k.doc.split()[0] in text
    assert "  env.game: str = pong\n" in text
    assert "  train.total_steps: int = 100_000  [>= 1]\n" in text
    assert "  agent.n_step: int = 20  [>= 1]  (rainbow agents only)\n" in text
    assert "explain.episodes" not in text  # explain keys are ife explain's
    assert "explain.episodes: int = 1  [>= 1]" in cli.command_help("explain")


def test_key_docs_cover_the_schema_and_read_its_comments() -> None:
    docs = key_docs()
    listed = [k.key for g in docs.values() for k in g.keys]
    schema = OmegaConf.structured(Config)
    sections = {k for k in schema if OmegaConf.is_dict(schema[k])}
    leaves = [k for k in _all_keys(schema) if k not in sections]
    assert sorted(listed) == sorted(leaves)
    by_key = {k.key: k for g in docs.values() for k in g.keys}
    assert all(k.doc for k in by_key.values()), [k for k, d in by_key.items() if not d.doc]
    # a comment at the end of the line
    game = by_key["env.game"]
    assert (game.type, game.default) == ("str", "pong")
    assert game.doc.startswith("ale-py ROM id in snake_case")
    # a block of comment lines above the field, joined on one line
    assert by_key["env.noop_max"].doc.startswith("no-op start after every reset")
    assert "Evaluation protocol" in by_key["env.noop_max"].doc
    # a field over several lines, the comment at its end
    relevant = by_key["explain.relevant"]
    assert relevant.type == "list[str]" and relevant.default[0] == "player"
    assert relevant.doc.startswith("object categories")
    # domains and families come from the validation tables
    assert by_key["optim.grad_clip"].type == "float | None"
    assert by_key["optim.grad_clip"].domain == "> 0 or null"
    assert by_key["agent.actors"].family == "actor_critic" and by_key["seed"].family is None
    assert docs["env"].title.startswith("Atari environment")

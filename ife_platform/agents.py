"""Trained agents from checkpoints or MLflow runs, for evaluation and interpretability commands.

``ife evaluate``, ``ife explain`` and ``ife compare`` all start the same way: resolve a
checkpoint path or run id, rebuild the network from the config saved in the checkpoint (plus
the user's overrides), load the online weights, and find the MLflow run to log into.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from ife_platform.checkpoint import CheckpointError, find_run_checkpoint, load_checkpoint
from ife_platform.config import AgentMismatchError, agent_spec, compose, family_view


@dataclass
class LoadedAgent:
    """A trained network with the config it was trained with (and the user's overrides).

    Attributes:
        cfg: checkpoint config, then overrides (validated).
        network: the online network in eval mode, on the GPU when there is one; a
            :class:`~ife_platform.policies.QPolicy` or a
            :class:`~ife_platform.policies.RecurrentPolicy`.
        state: the checkpoint's ``ife`` section (counters, run id, ...).
        checkpoint: where the weights came from.
        run_id: the training run of the checkpoint, when it exists in the store (else None).
    """

    cfg: DictConfig
    network: nn.Module
    state: dict[str, Any]
    checkpoint: Path
    run_id: str | None

    @property
    def method(self) -> str:
        """What ``ife compare`` groups seeds by.

        The extractor of a Rainbow agent (``ife``), the agent and extractor of an actor-critic
        (``a3c_lstm-ife``; ``s3ta``).
        """
        agent, extractor = self.cfg.agent.name, self.cfg.model.extractor
        if agent_spec(agent).family == "rainbow":
            return extractor
        return agent if extractor == agent else f"{agent}-{extractor}"

    @property
    def label(self) -> str:
        """Short name for tables: method, seed and run (or file) id."""
        ident = (self.run_id or self.checkpoint.stem)[:8]
        return f"{self.method}/seed{self.cfg.seed}/{ident}"

    @property
    def env_steps(self) -> int:
        """Agent steps the checkpoint was trained for."""
        return int(self.state["counters"]["env_steps"])


def resolve_checkpoint(ref: str, uri: str, output_dir: str | Path) -> Path:
    """A checkpoint path from ``ref``: a ``.ckpt`` file, or an MLflow run id of a training run.

    Raises:
        CheckpointError: neither a file nor a run with a checkpoint.
    """
    path = Path(ref)
    if path.suffix == ".ckpt" or path.exists() or "/" in ref:
        if not path.is_file():
            raise CheckpointError(f"checkpoint not found: {path}")
        return path
    return find_run_checkpoint(ref, uri, output_dir)


#: ``tracking`` keys never taken from a checkpoint's stored config.
UNTRUSTED_TRACKING_KEYS = ("uri", "output_dir", "experiment", "run_name")


def load_agent(ref: str, overrides: Sequence[str] = (), *, uri: str | None = None) -> LoadedAgent:
    """Load a trained agent from a checkpoint file or a training run id.

    Args:
        ref: ``path/to/last.ckpt`` or an MLflow run id.
        overrides: ``key=value`` strings applied over the checkpoint's config (e.g.
            ``explain.episodes=3``). Keys that change the network (extractor, width...) are
            applied too and then fail to load the weights with a clear error.
        uri: tracking store to look run ids up in (default: the one the overrides resolve to).

    Raises:
        CheckpointError: missing, corrupt or foreign checkpoint, or weights that do not fit.
        ConfigError: bad overrides.
    """
    import torch

    from ife_platform.tracking import resolve_tracking_uri

    # Bad overrides fail before anything is loaded. Those that only the checkpoint's agent
    # accepts (its family's keys) are validated again below, against that agent.
    try:
        base = compose(list(overrides))
    except AgentMismatchError:
        base = compose([o for o in overrides if o.startswith("tracking.")])
    uri = uri or resolve_tracking_uri(base.tracking.uri)
    path = resolve_checkpoint(ref, uri, base.tracking.output_dir)
    ckpt = load_checkpoint(path)
    state = ckpt["ife"]
    spec = agent_spec(state["config"]["agent"]["name"])
    # Checkpoints written before the per-family config hold every key of every family.
    tree = family_view(state["config"], spec.family)
    # Where to log and write comes from this invocation (its overrides and environment),
    # never from the checkpoint: a checkpoint from elsewhere must not choose the store (and
    # receive its credentials) or the folders written to.
    tree.pop("resume", None)
    for key in UNTRUSTED_TRACKING_KEYS:
        tree.get("tracking", {}).pop(key, None)
    saved = OmegaConf.create(tree)
    with tempfile.TemporaryDirectory() as tmp:
        saved_file = Path(tmp) / "checkpoint_config.yaml"
        OmegaConf.save(saved, saved_file)
        cfg = compose([f"agent={spec.name}", str(saved_file), *overrides])
    network, prefix = spec.build_network(cfg, state["num_actions"]), spec.weights_prefix
    online = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    try:
        network.load_state_dict(online)
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: the weights do not fit the network this config builds "
            f"({cfg.model.extractor}); do not override model.* keys ({err})"
        ) from err
    network.eval()
    network.to("cuda" if torch.cuda.is_available() else "cpu")
    return LoadedAgent(cfg, network, dict(state), path, state.get("run_id"))


def log_run(uri: str, agent: LoadedAgent | None, cfg: DictConfig, run_name: str) -> str:
    """The MLflow run to log into: the agent's training run when it is in this store.

    Otherwise a new run named ``run_name`` in ``cfg.tracking.experiment``, tagged with the
    checkpoint it describes (``ife.source_checkpoint``, ``ife.source_run``).
    """
    import mlflow

    from ife_platform.tracking import ensure_experiment

    client = mlflow.MlflowClient(uri)
    if agent is not None and agent.run_id is not None:
        try:
            client.get_run(agent.run_id)
            return agent.run_id
        except mlflow.exceptions.MlflowException:
            pass
    exp_id = ensure_experiment(client, cfg.tracking.experiment)
    tags = {}
    if agent is not None:
        tags["ife.source_checkpoint"] = str(agent.checkpoint.resolve())
        if agent.run_id:
            tags["ife.source_run"] = agent.run_id
    run_id = client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id
    client.set_terminated(run_id)
    return run_id

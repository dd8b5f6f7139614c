"""Checkpoints: safe loading (``weights_only=True``) with clear errors, and run-id lookup."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch


def rng_state() -> dict[str, Any]:
    """Torch, numpy and Python RNG states as tensors and lists (``weights_only`` loadable)."""
    import random

    import numpy as np

    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": list(random.getstate()[1]),
    }


def restore_rng(rng: dict[str, Any]) -> None:
    """Restore the global RNG states saved by :func:`rng_state`."""
    import random

    import numpy as np

    torch.set_rng_state(rng["torch"])
    np.random.set_state(
        ("MT19937", rng["numpy_keys"].numpy().astype(np.uint32), rng["numpy_pos"], 0, 0.0)
    )
    random.setstate((3, tuple(rng["python"]), None))


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or not from this platform."""


#: MLflow run ids: 32 lowercase hex digits. Checked before an id becomes part of a path.
RUN_ID_PATTERN = re.compile(r"[0-9a-f]{32}")


def check_run_id(run_id: str, source: str) -> str:
    """``run_id`` if it is an MLflow run id.

    Raises:
        CheckpointError: anything else (``../..``, slashes, ...), naming where it came from.
    """
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
        raise CheckpointError(f"{source}: {run_id!r} is not an MLflow run id (32 hex digits)")
    return run_id


def _interpolations(tree: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose string value holds an omegaconf interpolation (``${...}``)."""
    if isinstance(tree, dict):
        return [k for key, v in tree.items() for k in _interpolations(v, f"{prefix}{key}.")]
    if isinstance(tree, list):
        return [k for i, v in enumerate(tree) for k in _interpolations(v, f"{prefix}{i}.")]
    return [prefix.rstrip(".")] if isinstance(tree, str) and "${" in tree else []


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a Lightning checkpoint written by :class:`~ife_platform.tasks.rainbow.RainbowTask`.

    Loads with ``weights_only=True`` (no arbitrary code from pickles).

    Raises:
        CheckpointError: the file is missing, corrupt, or lacks the platform's ``ife`` section.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, random bytes, disallowed globals...
        raise CheckpointError(
            f"cannot read checkpoint {p}: the file is corrupt or not a torch checkpoint ({err})"
        ) from err
    if not isinstance(ckpt, dict) or "ife" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{p} is not an IFE-platform checkpoint (no 'ife' section)")
    # The stored config is data: the platform saves it resolved, so an interpolation
    # (${oc.env:...}) can only come from an edited file, and is never evaluated.
    bad = _interpolations(ckpt["ife"].get("config", {}))
    if bad:
        raise CheckpointError(
            f"{p}: its stored config holds interpolations at {', '.join(bad)}; a checkpoint's "
            "config is data and is never interpolated (refused)"
        )
    if ckpt["ife"].get("run_id") is not None:
        check_run_id(ckpt["ife"]["run_id"], f"{p} (its stored run id)")
    return ckpt


def find_run_checkpoint(run_id: str, tracking_uri: str, output_dir: str | Path) -> Path:
    """The latest checkpoint of an MLflow run: local ``last.ckpt`` first, else the artifact.

    Raises:
        CheckpointError: not a run id, or the run does not exist or has no checkpoint.
        TrackingUnreachableError: the store cannot be used (``open_tracking_store``).
    """
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
        raise CheckpointError(
            f"'{run_id}' is neither a checkpoint file nor a run id (MLflow ids are 32 hex digits)"
        )
    local = Path(output_dir) / run_id / "checkpoints" / "last.ckpt"
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from ife_platform.tracking import open_tracking_store

    client = MlflowClient(open_tracking_store(tracking_uri))  # checked, never another app's db
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        if local.is_file():
            return local
        raise CheckpointError(
            f"'{run_id}' is neither a checkpoint file nor a run in {tracking_uri}"
        ) from err
    tagged = run.data.tags.get("ife.checkpoint_dir")
    for candidate in (Path(tagged) / "last.ckpt" if tagged else None, local):
        if candidate is not None and candidate.is_file():
            return candidate
    names = [a.path for a in client.list_artifacts(run_id, "checkpoints")]
    if "checkpoints/last.ckpt" in names:
        dst = Path(output_dir) / run_id / "downloaded"
        dst.mkdir(parents=True, exist_ok=True)
        return Path(client.download_artifacts(run_id, "checkpoints/last.ckpt", str(dst)))
    raise CheckpointError(f"run {run_id} has no checkpoint (looked in {local} and its artifacts)")

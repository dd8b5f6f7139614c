"""Checkpoints: atomic writes, safe loading (``weights_only=True``) with clear errors, lookup.

A run's checkpoint folder (``<output_dir>/<run id>/checkpoints``) holds step-named files
``step-<agent steps>.ckpt`` (the newest ``trainer.keep_checkpoints`` of them), ``last.ckpt`` (a
hard link to the newest, or a copy where links are not possible) and, with
``replay.save_buffer``, the replay snapshot of the newest checkpoint per rank. Every file is
written atomically: a temporary file in the same folder, fsync, ``os.replace``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

#: ``step-000012345.ckpt``: the agent step (of rank 0) the checkpoint was taken at.
STEP_FILE = re.compile(r"step-(\d+)\.ckpt")


def step_file_name(env_steps: int) -> str:
    """The name of the checkpoint taken at ``env_steps`` agent steps."""
    return f"step-{env_steps:09d}.ckpt"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Write to a temporary file beside ``path``; on success fsync it and ``os.replace`` it.

    The temporary file is in the target folder (never ``TMPDIR``), so the rename is atomic on
    one filesystem: a reader, or a process killed at any moment, sees the old file or the new
    one, never a truncated one. On an error the temporary file is removed and ``path`` is
    left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be fsynced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` that never leaves a partial file under ``path`` (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def atomic_link(src: Path, dst: Path) -> None:
    """Make ``dst`` the same file as ``src`` (hard link, else a copy), atomically."""
    with atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:  # filesystems without hard links
            shutil.copyfile(src, tmp)


def local_checkpoints(folder: str | Path) -> list[Path]:
    """Step-named checkpoints in a run's checkpoint folder, newest (most agent steps) first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_FILE.fullmatch(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def rng_state() -> dict[str, Any]:
    """Torch, numpy and Python RNG states as tensors and lists (``weights_only`` loadable)."""
    import random

    import numpy as np

    np_state: tuple[Any, ...] = np.random.get_state()  # type: ignore[assignment]
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
    """The newest valid checkpoint of an MLflow run (see :func:`open_run_checkpoint`)."""
    return open_run_checkpoint(run_id, tracking_uri, output_dir)[0]


def open_run_checkpoint(
    run_id: str, tracking_uri: str, output_dir: str | Path
) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint of an MLflow run that loads, and its contents.

    Candidates, newest first: the step-named checkpoints in the run's local folder
    (``<output_dir>/<run id>/checkpoints``, or the folder the run's ``ife.checkpoint_dir`` tag
    names when it is the same run's), then ``last.ckpt``, then the copy logged to the run's
    artifacts. A candidate that is truncated or corrupt is skipped with a warning.

    Raises:
        CheckpointError: not a run id, no such run, or no candidate loads.
        TrackingUnreachableError: the store cannot be used (``open_tracking_store``).
    """
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
        raise CheckpointError(
            f"'{run_id}' is neither a checkpoint file nor a run id (MLflow ids are 32 hex digits)"
        )
    local = Path(output_dir) / run_id / "checkpoints"
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from ife_platform.tracking import open_tracking_store

    client = MlflowClient(open_tracking_store(tracking_uri))  # checked, never another app's db
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        run = None
        if not local.is_dir():
            raise CheckpointError(
                f"'{run_id}' is neither a checkpoint file nor a run in {tracking_uri}"
            ) from err
    folders = [local]
    tagged = run.data.tags.get("ife.checkpoint_dir") if run is not None else None
    if tagged and Path(tagged).parent.name == run_id and Path(tagged) != local:
        folders.insert(0, Path(tagged))  # the run's own folder under another output_dir
    candidates = [p for f in folders for p in (*local_checkpoints(f), f / "last.ckpt")]
    problems = []
    for path in candidates:
        if not path.is_file():
            continue
        try:
            return path, load_checkpoint(path)
        except CheckpointError as err:
            log.warning("skipping checkpoint %s: %s", path, err)
            problems.append(str(err))
    if run is not None:
        names = [a.path for a in client.list_artifacts(run_id, "checkpoints")]
        if "checkpoints/last.ckpt" in names:
            dst = Path(output_dir) / run_id / "downloaded"
            dst.mkdir(parents=True, exist_ok=True)
            path = Path(client.download_artifacts(run_id, "checkpoints/last.ckpt", str(dst)))
            try:
                return path, load_checkpoint(path)
            except CheckpointError as err:
                problems.append(f"artifact copy: {err}")
    detail = "; ".join(problems) if problems else f"looked in {local} and its artifacts"
    raise CheckpointError(f"run {run_id} has no valid checkpoint ({detail})")

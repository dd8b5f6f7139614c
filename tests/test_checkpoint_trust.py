"""A checkpoint from elsewhere is data (issue 12, item 4): its stored config is never
interpolated, and it never chooses the tracking store, the output folders or a path-like run id.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
import torch

from ife_platform.agents import load_agent
from ife_platform.checkpoint import CheckpointError, load_checkpoint
from ife_platform.cli import main
from ife_platform.config import compose, to_container
from ife_platform.registry import get_agent

RUN_ID = "0123456789abcdef0123456789abcdef"


def _crafted(path: Path, **tracking: str) -> Path:
    """A loadable checkpoint (real weights of a DER-CNN agent) with a doctored stored config."""
    cfg = compose(["model.extractor=der_cnn", "env.game=pong"])
    net = get_agent("rainbow_der").build_network(cfg, 6)
    config = to_container(cfg)
    config["tracking"].update(tracking)
    state = {
        "config": config,
        "run_id": RUN_ID,
        "num_actions": 6,
        "counters": {"env_steps": 100},
    }
    torch.save(
        {"state_dict": {f"online.{k}": v for k, v in net.state_dict().items()}, "ife": state}, path
    )
    return path


class Listener:
    """A local TCP server that records whether anything connected."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def test_stored_interpolations_are_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SECRET_X", "hunter2")
    path = _crafted(tmp_path / "x.ckpt", run_name="${oc.env:SECRET_X}")
    with pytest.raises(CheckpointError, match="tracking.run_name") as err:
        load_checkpoint(path)
    assert "hunter2" not in str(err.value)


def test_a_path_like_run_id_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.ckpt"
    _crafted(path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["ife"]["run_id"] = "../../../../tmp"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="not an MLflow run id"):
        load_checkpoint(path)


def test_the_store_and_folders_come_from_the_caller(tmp_path: Path, workdir: Path, capsys) -> None:
    listener = Listener()
    try:
        evil = tmp_path / "evil"
        path = _crafted(
            tmp_path / "x.ckpt",
            uri=f"http://127.0.0.1:{listener.port}/steal",
            output_dir=str(evil),
            experiment="elsewhere",
        )
        agent = load_agent(str(path))
        assert agent.cfg.tracking.uri is None  # the caller's default, not the checkpoint's
        assert agent.cfg.tracking.output_dir == "outputs"
        assert agent.cfg.tracking.experiment == "ife"
        ours = f"sqlite:///{workdir / 'mlflow.db'}"
        args = ["evaluate", str(path), f"tracking.uri={ours}", "tracking.eval_episodes=1"]
        args += ["tracking.eval_max_steps=30", "tracking.video=false"]
        assert main(args) == 0, capsys.readouterr().err
    finally:
        listener.close()
    assert listener.connections == 0  # nothing was sent to the checkpoint's store
    assert not evil.exists()  # nor written to its folder
    assert (workdir / "mlflow.db").is_file()

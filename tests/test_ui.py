"""`ife ui` serves the MLflow UI for the local store on the loopback interface."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import start_ife_ui

from ife_platform.cli import main


@pytest.mark.slow
def test_ui_serves_local_store_on_loopback(tmp_path: Path) -> None:
    proc, port = start_ife_ui(tmp_path, f"sqlite:///{tmp_path / 'm.db'}")
    try:
        deadline, status = time.monotonic() + 90, None
        while time.monotonic() < deadline and status is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    status = r.status
            except OSError:
                assert proc.poll() is None, proc.stdout.read()[-2000:]
                time.sleep(0.5)
        assert status == 200
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=5", timeout=5
        ) as r:
            assert b"Default" in r.read()  # the UI talks to the sqlite store we named
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_ui_rejects_unknown_arguments(capsys) -> None:
    assert main(["ui", "--port", "5001", "bogus"]) == 2
    assert "bogus" in capsys.readouterr().err

"""The GPU check script (issue 13, item 5) runs on a CPU at small sizes, so it stays working."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from conftest import subprocess_env

from ife_platform.bench.device import ddp_smoke

ROOT = Path(__file__).resolve().parents[1]


def _positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


def test_gpu_check_script_runs_small_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--small", "--json", str(out)],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["batch_size"] == 32 and res["num_envs"] == 4
    assert _positive(res["bare_updates_per_s"]["fp32"]) and _positive(
        res["bare_updates_per_s"]["bf16"]
    )
    assert _positive(res["platform_updates_per_s"]) and _positive(res["replay_sample_ms"])
    assert _positive(res["replay_sample_ms_ring_on_device"])  # here the device is the CPU
    raw = res["env"]["raw ale-py vector env"]
    assert raw["ratio"] == 1.0 and _positive(raw["steps_per_s"])
    assert res["ddp"] is None  # one CPU "device": no DDP run
    for label in ("bare updates/s, batch 32, bf16", "platform updates/s", "DDP smoke run"):
        assert label in proc.stdout


def test_ddp_smoke_run_of_the_check_on_two_cpu_processes() -> None:
    """The check's DDP run is the GPU one with another accelerator: run it here on gloo."""
    res = ddp_smoke(2, "cpu")
    assert res["returncode"] == 0, res["stderr_tail"]
    assert res["weights_identical"] == "true"

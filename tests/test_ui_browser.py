"""``ife ui`` in a real browser: headless Chromium over the DevTools protocol.

A finished run (a real tiny training run on Breakout) is opened where ``ife ui`` says, and the
page must show: the run in the runs table, a rendered metric chart, and the mask video playing
(``readyState >= 2``, ``duration > 0``, time advancing). Screenshots go to the test's folder
and, when ``IFE_TEST_ARTIFACTS`` names a folder, there too.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from cdp import Browser, find_chromium
from conftest import TINY, run_ife, start_ife_ui

RUN_NAME = "ife-der-demo"  # the demo preset's run name

VIDEO_STATE = """(async () => {
  const v = document.querySelector('video');
  if (!v) return null;
  v.muted = true;
  for (let i = 0; i < 100 && v.readyState < 2; i++) await new Promise(r => setTimeout(r, 100));
  const before = v.currentTime;
  try { await v.play(); } catch (e) { return {error: String(e), readyState: v.readyState}; }
  await new Promise(r => setTimeout(r, 700));
  return {readyState: v.readyState, duration: v.duration, before: before,
          after: v.currentTime, width: v.videoWidth, height: v.videoHeight,
          src: v.currentSrc};
})()"""


def _keep(shot: Path) -> None:
    """Copy a screenshot to ``$IFE_TEST_ARTIFACTS`` (CI keeps that folder)."""
    folder = os.environ.get("IFE_TEST_ARTIFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(folder) / shot.name)


@pytest.mark.slow
def test_ui_shows_the_run_its_chart_and_plays_its_mask_video(tmp_path: Path) -> None:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("Chromium is not installed (.ci/run installs it: apt-get install chromium)")
    store = tmp_path / "store" / "mlflow.db"
    uri = f"sqlite:///{store}"
    run_ife(
        tmp_path,
        ["train", "demo", *TINY, f"tracking.uri={uri}", f"tracking.output_dir={tmp_path / 'out'}"],
    )
    ui, port = start_ife_ui(tmp_path, uri)
    browser = None
    try:
        first = ui.stdout.readline() + ui.stdout.readline()
        runs_url = first.split("runs: ", 1)[1].strip()
        assert runs_url.startswith(f"http://127.0.0.1:{port}/#/experiments/")
        assert runs_url.endswith("/runs?workflowType=machine_learning")
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert ui.poll() is None and time.monotonic() < deadline, "ife ui did not start"
                time.sleep(0.5)
        from mlflow import MlflowClient

        (run,) = MlflowClient(uri).search_runs([runs_url.split("/experiments/")[1].split("/")[0]])
        run_id = run.info.run_id

        browser = Browser(chromium)
        # 1. the runs table of the experiment lists the run (not the GenAI "Traces" page)
        browser.open(runs_url)
        browser.wait_for(f"document.body.innerText.includes({RUN_NAME!r})", timeout=60)
        assert not browser.evaluate("document.body.innerText.includes('Evaluation runs')")
        _keep(browser.screenshot(tmp_path / "ui_runs.png"))
        # 2. the run's metric charts render (plotly draws SVG)
        base = runs_url.split("/runs?")[0]
        browser.open(f"{base}/runs/{run_id}/model-metrics?workflowType=machine_learning")
        browser.wait_for(
            "document.querySelectorAll('.js-plotly-plot .main-svg, .js-plotly-plot canvas')"
            ".length > 0",
            timeout=60,
        )
        assert browser.wait_for("document.body.innerText.includes('eval/cap_frames')", timeout=30)
        time.sleep(1.0)  # let the charts finish drawing for the screenshot
        _keep(browser.screenshot(tmp_path / "ui_metrics.png"))
        # 3. the mask video's artifact preview loads and plays
        browser.open(
            f"{base}/runs/{run_id}/artifacts/videos/eval_mask.mp4?workflowType=machine_learning"
        )
        browser.wait_for("document.querySelector('video') !== null", timeout=60)
        state = browser.evaluate(VIDEO_STATE)
        _keep(browser.screenshot(tmp_path / "ui_video.png"))
        assert state and "error" not in state, state
        assert state["readyState"] >= 2 and state["duration"] > 0, state
        assert state["after"] > state["before"], state  # it plays
        # raw screen | overlay, upscaled 3x (tracking.video_upscale), legend strip below
        assert state["width"] == 3 * 2 * 160 and state["height"] > 3 * 210, state
    finally:
        if browser is not None:
            browser.close()
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)

"""``ife explain`` / ``ife compare`` for recurrent agents (A3C-LSTM, S3TA).

Unit tests: the recorded state replays every step exactly, perturbations are read with it,
leakage pools over frames and heads as defined. End to end: real short-trained checkpoints
(2 actor processes), a real MLflow store, real mp4s.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, TINY_ACTOR_CRITIC, run_ife, tracking_args
from ife_platform.tasks.a3c import build_model
from mlflow.tracking import MlflowClient
from torch import Tensor, nn

from ife_platform.cli import main
from ife_platform.config import compose
from ife_platform.envs import AtariEvalEnv, eval_env_kwargs
from ife_platform.evaluation import torch_threads
from ife_platform.extractors import build_extractor
from ife_platform.interpret import explain as E
from ife_platform.interpret import perturb as P
from ife_platform.interpret.objects import object_source
from ife_platform.interpret.probe import FrozenState
from ife_platform.video import read_mp4

AGENTS = {
    "a3c_lstm": ["agent=a3c_lstm", "model.width=1"],
    "s3ta": ["agent=s3ta"],
    "a3c_cnn": ["agent=a3c_lstm", "model.extractor=a3c_cnn"],
}
FAST_EXPLAIN = [
    "explain.max_steps=40",
    "explain.video_max_steps=12",
    "explain.analysis_frames=4",
    "explain.leakage_frames=2",
    "explain.deletion_steps=4",
    "explain.random_orders=1",
]


def _recorded(agent: str, episodes: int = 2, steps: int = 12) -> tuple[nn.Module, E.Recording]:
    torch.manual_seed(0)
    cfg = compose([*AGENTS[agent], "env.game=pong"])
    env = AtariEvalEnv("pong", seed=3, **eval_env_kwargs(cfg))
    network = build_model(cfg, env.num_actions).eval()
    head = network.policy if agent == "s3ta" else network.actor
    nn.init.normal_(head.weight, std=0.5)  # logits of order 1, not A3C's near-uniform 1e-6
    rec = E.record(
        network,
        env,
        episodes=episodes,
        max_steps=steps,
        epsilon=0.0,
        seed=3,
        objects=object_source("pong", "builtin"),
        video_max_steps=4,
    )
    return network, rec


@pytest.mark.parametrize("agent", ["a3c_lstm", "s3ta"])
def test_recorded_state_replays_every_step_exactly(agent: str) -> None:
    network, rec = _recorded(agent)
    assert rec.states is not None and len(rec) == 24
    assert rec.first.tolist() == [True] + [False] * 11 + [True] + [False] * 11
    for part in rec.states:  # a game's first step enters with the zero state
        assert part.shape[0] == 24 and not part[rec.first].any()
    if agent == "s3ta":
        assert rec.heads.shape == (24, 4, 11, 11)
        assert np.allclose(rec.heads.mean(1), rec.masks, atol=1e-6)
    for i in (0, 5, 17):
        state = tuple(s[i : i + 1] for s in rec.states)
        frozen = FrozenState(network, state)
        obs = torch.from_numpy(rec.obs[i : i + 1])
        with torch_threads(1):  # the thread count of play(): same rounding
            logits, _ = frozen(obs)
        assert torch.equal(logits[0], torch.from_numpy(rec.q[i]))  # the step, bit for bit
        copies, _ = frozen(obs.expand(3, -1, -1, -1))  # perturbation batches: same read-out
        assert torch.allclose(copies, logits.expand(3, -1), rtol=1e-4, atol=1e-5)
    # the state carries the game: later frames read with a zero state give other outputs
    zero = FrozenState(network, network.initial_state(1))
    forgot = zero(torch.from_numpy(rec.obs[17:18]))[0][0]
    assert (forgot - torch.from_numpy(rec.q[17])).abs().max() > 1e-3
    # replaying the recorded frames with the agent's own state reproduces the recording
    again = E.rerecord(network, rec)
    assert np.array_equal(again.q, rec.q) and np.array_equal(again.masks, rec.masks)
    assert all(torch.equal(a, b) for a, b in zip(again.states, rec.states, strict=True))


def test_recurrent_agent_without_attention_gets_saliency_with_its_state() -> None:
    network, rec = _recorded("a3c_cnn", episodes=1, steps=10)
    assert rec.masks is None and rec.states is not None
    x = compose(
        ["explain.analysis_frames=2", "explain.deletion_steps=2", "explain.random_orders=1"]
    )
    exp = E.analyse(network, rec, x.explain, seed=0)
    s = exp.summary
    assert s["attention"] is False and s["recurrent"] is True and "leakage" not in s
    assert s["faithfulness_score"] == "policy_prob" and s["faithfulness_frames"] == 2
    # the saliency of the analysed frames and of the 4 video frames, as distributions
    assert sorted(exp.saliency) == [0, 1, 2, 3, 9]
    assert all(abs(m.sum() - 1) < 1e-6 for m in exp.saliency.values())
    assert s["saliency/pointing_frames"] == 5 and -1 <= s["sanity_spearman"] <= 1
    # the saliency is that of the step as played: read with the recorded state, it differs
    # from the saliency of the same frame read from a game start
    from ife_platform.interpret.probe import AgentProbe

    start = AgentProbe(network, tuple(torch.zeros_like(t) for t in rec.states))
    probe = AgentProbe(network, rec.states)
    with_state = E._saliency(probe, np.array([9]), rec.obs, x.explain)
    from_start = E._saliency(start, np.array([9]), rec.obs, x.explain)
    assert not torch.allclose(with_state, from_start)


class _TwoHeads(nn.Module):
    """A 1 x 2 "image", one cell per pixel, two heads with hand-picked logits.

    head 0 = [x0, x0 + x1], head 1 = [2 x1, 0].
    """

    cell_grid = (1, 2)

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.attention_logits: Tensor | None = None

    def cell_input_windows(self) -> Tensor:
        return torch.tensor([[[0, 1, 0, 1], [0, 1, 1, 2]]])

    def forward(self, obs: Tensor) -> Tensor:
        x0, x1 = obs[:, 0, 0, 0], obs[:, 0, 0, 1]
        head0 = torch.stack([x0, x0 + x1], -1)
        head1 = torch.stack([2 * x1, torch.zeros_like(x1)], -1)
        self.attention_logits = torch.stack([head0, head1], 1).view(-1, 2, 1, 2)
        return self.attention_logits


def test_leakage_sums_changes_over_heads_by_hand() -> None:
    # Cell 0 changed by d: head 0 moves both cells by d, head 1 nothing -> 1 of 2 outside.
    # Cell 1 changed by d: head 0 moves cell 1 by d, head 1 moves cell 0 by 2d -> 2 of 3.
    obs = torch.tensor([[[[0.25, 0.5]]]])
    leak = P.spatial_leakage(_TwoHeads(), obs, value=1.0)
    assert torch.allclose(leak.leakage, torch.tensor([[0.5, 2 / 3]], dtype=torch.float64))
    assert torch.allclose(leak.total, torch.tensor([[2 * 0.75, 3 * 0.5]], dtype=torch.float64))


def test_merged_leakage_pools_like_one_call() -> None:
    torch.manual_seed(1)
    extractor = build_extractor("cnn_attention", in_channels=1, input_size=84)
    obs = torch.randint(0, 256, (3, 1, 84, 84), dtype=torch.uint8)
    cells = [(0, 0), (4, 5), (9, 9)]
    whole = P.spatial_leakage(extractor, obs, cells=cells)
    merged = P.merge_leakage(
        [P.spatial_leakage(extractor, obs[i : i + 1], cells=cells) for i in range(3)]
    )
    assert torch.equal(merged.total, whole.total) and torch.equal(merged.outside, whole.outside)
    assert torch.allclose(merged.delta_sum, whole.delta_sum)
    assert torch.allclose(merged.leakage, whole.leakage, equal_nan=True)
    assert merged.mean == pytest.approx(whole.mean) and 0 < merged.mean < 1


def test_s3ta_leakage_with_the_recorded_state_stays_in_the_receptive_field() -> None:
    network, rec = _recorded("s3ta", episodes=1, steps=6)
    frozen = FrozenState(network, tuple(s[5:6] for s in rec.states))
    leak = P.spatial_leakage(frozen, torch.from_numpy(rec.obs[5:6]))
    # overlapping 36-pixel windows: neighbours see the change (leakage) ...
    assert 0.3 < leak.mean <= 1.0
    # ... but no cell outside the one-step receptive field moves, whatever the memory holds
    assert float(leak.outside_receptive.sum()) == 0.0


# -- end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str, list[str]]]:
    """Short-trained Rainbow IFE, A3C-LSTM (IFE) and S3TA checkpoints on Pong, one store."""
    root = tmp_path_factory.mktemp("recurrent")
    track = tracking_args(root)
    out: dict[str, tuple[Path, str, list[str]]] = {}
    assert (
        main(["train", *TINY, *track, "env.game=pong", "model.width=1", "tracking.video=false"])
        == 0
    )
    for name in ("a3c_lstm", "s3ta"):  # (a3c_cnn is only recorded in the unit tests above)
        run_ife(
            root,
            [
                "train",
                *AGENTS[name],
                "env.game=pong",
                *TINY_ACTOR_CRITIC,
                *track,
                "train.total_steps=480",
                "tracking.video=false",
            ],
        )
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    for run in client.search_runs([client.get_experiment_by_name("ife").experiment_id]):
        ckpt = root / "out" / run.info.run_id / "checkpoints" / "last.ckpt"
        out[_agent_of(ckpt)] = (ckpt, run.info.run_id, track)
    assert set(out) == {"rainbow_der", "a3c_lstm", "s3ta"}, set(out)
    return out


def _agent_of(ckpt: Path) -> str:
    from ife_platform.checkpoint import load_checkpoint

    return load_checkpoint(ckpt)["ife"]["config"]["agent"]["name"]


def _explain_folder(client: MlflowClient, run_id: str, dst: Path) -> Path:
    (item,) = client.list_artifacts(run_id, "explain")
    return Path(client.download_artifacts(run_id, item.path, str(dst)))


@pytest.mark.slow
def test_explain_a3c_lstm_ife(trained, tmp_path: Path, capsys) -> None:
    ckpt, run_id, track = trained["a3c_lstm"]
    assert main(["explain", run_id, *track, *FAST_EXPLAIN]) == 0
    assert "leakage" in capsys.readouterr().out
    client = MlflowClient(track[0].split("=", 1)[1])
    folder = _explain_folder(client, run_id, tmp_path)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["recurrent"] is True and summary["faithfulness_score"] == "policy_prob"
    assert summary["leakage"] == 0.0  # HUE inside an A3C-LSTM: still exactly 0
    assert summary["frames"] == 40 and summary["pointing_frames"] > 0
    assert isinstance(summary["sanity_differs"], bool)
    maps = np.load(folder / "maps.npz")
    assert maps["masks"].shape == (40, 14, 14)
    video = read_mp4(folder / "explain.mp4")  # raw | mask, upscaled 3x, legend below
    assert video.shape[0] == 12 and video.shape[2:] == (3 * 2 * 160, 3)
    assert client.get_run(run_id).data.metrics["explain/leakage"] == 0.0


@pytest.mark.slow
def test_explain_s3ta_measures_every_head(trained, tmp_path: Path) -> None:
    ckpt, run_id, track = trained["s3ta"]
    assert main(["explain", str(ckpt), *track, *FAST_EXPLAIN, "explain.saliency=true"]) == 0
    client = MlflowClient(track[0].split("=", 1)[1])
    folder = _explain_folder(client, run_id, tmp_path)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["extractor"] == "S3TAVision" and summary["recurrent"] is True
    assert 0.0 < summary["leakage"] <= 1.0 and summary["leakage_outside_receptive"] == 0.0
    for h in range(4):
        assert summary[f"head{h}/pointing_frames"] > 0 and f"head{h}/lift" in summary
    assert summary["saliency/pointing_frames"] > 0
    maps = np.load(folder / "maps.npz")
    assert maps["head_masks"].shape == (40, 4, 11, 11) and maps["masks"].shape == (40, 11, 11)
    assert np.allclose(maps["head_masks"].sum((2, 3)), 1.0, atol=1e-5)
    video = read_mp4(folder / "explain.mp4")  # + saliency
    assert video.shape[0] == 12 and video.shape[2:] == (3 * 3 * 160, 3)


@pytest.mark.slow
def test_compare_rainbow_a3c_and_s3ta_on_the_same_frames(trained, tmp_path: Path, capsys) -> None:
    rainbow, a3c, s3ta = (trained[k][0] for k in ("rainbow_der", "a3c_lstm", "s3ta"))
    track = trained["s3ta"][2]
    assert main(["compare", str(rainbow), str(a3c), str(s3ta), *track, *FAST_EXPLAIN]) == 0
    out = capsys.readouterr().out
    assert "40 shared frames" in out
    for method in ("ife (mask)", "a3c_lstm-ife (mask)", "s3ta (mask)"):
        assert method in out, out
    # Rainbow reads 4 stacked frames: recorded single frames cannot feed it
    assert main(["compare", str(a3c), str(rainbow), *track, *FAST_EXPLAIN]) == 2
    assert "deepest frame stack" in capsys.readouterr().err

"""IFE inside your own TorchRL code: a minimal DQN on an Atari game, then its mask.

Nothing of the platform's training stack is used here (no Lightning, no config, no MLflow):
only the TorchRL env over ale-py's vector env (``ife_platform.envs.AtariVecEnv``, uint8
frames under ``"pixels"``) and an extractor (``ife_platform.extractors.build_extractor``),
put together with TorchRL's own actor, collector, replay buffer and DQN loss.

    python examples/torchrl_dqn.py --game pong --frames 20000

The defaults run in about a minute on a 2-core CPU; a useful agent needs far more frames.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from tensordict.nn import TensorDictSequential
from torch import nn
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, ReplayBuffer
from torchrl.modules import EGreedyModule, QValueActor
from torchrl.objectives import DQNLoss, HardUpdate

from ife_platform.envs import AtariVecEnv
from ife_platform.extractors import build_extractor


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train, then return the last loss, the mask of the last forward and its cell geometry."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", default="pong")
    parser.add_argument("--frames", type=int, default=2048, help="agent steps over all envs")
    parser.add_argument("--envs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--width", type=int, default=1, help="IFE channel multiplier")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    env = AtariVecEnv(args.game, num_envs=args.envs, seed=0)
    ife = build_extractor("ife", in_channels=4, width=args.width)
    q_net = nn.Sequential(
        ife, nn.Linear(ife.features_dim, 256), nn.ReLU(), nn.Linear(256, env.num_actions)
    )
    action_spec = env.action_spec_unbatched  # one env's actions (the env spec is batched)
    actor = QValueActor(q_net, in_keys=["pixels"], spec=action_spec)
    explore = EGreedyModule(
        action_spec, eps_init=1.0, eps_end=0.05, annealing_num_steps=args.frames
    )
    collector = Collector(
        env,
        TensorDictSequential(actor, explore),
        frames_per_batch=16 * args.envs,
        total_frames=args.frames,
    )
    replay = ReplayBuffer(storage=LazyTensorStorage(50_000), batch_size=args.batch)
    loss_fn = DQNLoss(actor, action_space=action_spec, delay_value=True)
    loss_fn.make_value_estimator(gamma=0.99)
    target = HardUpdate(loss_fn, value_network_update_interval=100)
    optimiser = torch.optim.Adam(loss_fn.parameters(), lr=1e-4)

    loss = torch.tensor(float("nan"))
    for data in collector:
        replay.extend(data.reshape(-1))
        explore.step(data.numel())
        for _ in range(4):
            loss = loss_fn(replay.sample())["loss"]
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            target.step()
    collector.shutdown()

    with torch.no_grad():  # the mask of one greedy forward on the last collected frames
        actor(data[..., -1].clone())
    mask = ife.attention_mask
    top = mask[0].flatten().argmax().item()
    rects = ife.cell_screen_rects().reshape(-1, 4)
    print(f"last DQN loss {loss.item():.4f}; mask {tuple(mask.shape)}, sums {mask.sum((1, 2))}")
    print(f"env 0 attends most to cell {top}: screen rows/cols {rects[top].tolist()}")
    return {"loss": loss.item(), "mask": mask, "rects": rects}


if __name__ == "__main__":
    main()

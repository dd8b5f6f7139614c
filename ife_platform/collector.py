"""A TorchRL ``Collector`` whose batch is one step of a batched env, without the stack.

The Rainbow tasks collect one vector step per batch (act, store, learn: ``frames_per_batch``
equals the env's batch size). TorchRL's generic ``Collector.rollout`` loops over time steps,
keeps each step's tensordict and stacks them into a preallocated ``[N, T]`` buffer: with
``T = 1`` that is a copy of every key (19 here) per step and the carrier bookkeeping around it,
about half a millisecond of a 2-3 ms vector step at 8 envs (``docs/benchmarks.md``, "Env path").

:class:`VectorStepCollector` keeps everything of TorchRL's collector (the iterator, frame
counting, policy wrapping, exploration type, the same ``[N, 1]`` batch with the ``time``
dimension) and replaces only that loop, for that case: policy on the carrier,
``env.step_and_maybe_reset``, and the stepped tensordict returned as a ``[N, 1]`` view. The
values are the ones the generic path writes into its buffer, bit for bit
(``tests/test_collector.py``). Every other configuration falls back to TorchRL's rollout.

The batch is only valid until the next one is collected (as with ``return_same_td=True``,
which this collector requires): consumers copy what they keep, as the n-step accumulator does.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule
from torchrl.collectors import Collector
from torchrl.envs.utils import set_exploration_type

__all__ = ["VectorStepCollector"]


class VectorStepCollector(Collector):
    """TorchRL's ``Collector`` with a copy-free rollout when a batch is one vector step.

    Takes TorchRL ``Collector``'s arguments. The fast path runs when ``frames_per_batch``
    equals the env's batch size and the collector does nothing else per step (no random
    initial frames, no replay buffer or interruptor, no trajectory ids, no device casts, no
    reset at each iteration, no truncation marking, ``return_same_td=True``); otherwise
    :meth:`rollout` is TorchRL's.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast_path = self._fast_path_applies()
        self._direct = self._direct_policy()

    def _direct_policy(self) -> tuple[str, str, Any] | None:
        """``(in key, out key, function)`` of a plain one-in one-out ``TensorDictModule``.

        The fast path then calls the function on the carrier's tensor itself, as the module
        would (about 0.2 ms less per batch than going through the module's wrappers). Any
        other policy (several keys, hooks, a subclass with checks) is called as TorchRL does.
        """
        p = self.policy
        if (
            type(p) is TensorDictModule
            and len(p.in_keys) == 1
            and len(p.out_keys) == 1
            and isinstance(p.in_keys[0], str)
            and isinstance(p.out_keys[0], str)
            and not p._forward_hooks
            and not p._forward_pre_hooks
        ):
            return p.in_keys[0], p.out_keys[0], p.module
        return None

    def _fast_path_applies(self) -> bool:
        return bool(
            self.frames_per_batch == 1  # (TorchRL stores it per env: time steps per batch)
            and len(self.env.batch_size) == 1
            and self.return_same_td
            and not self.track_traj_ids
            and not self.reset_at_each_iter
            and self.replay_buffer is None
            and self.interruptor is None
            and self.init_random_frames in (None, 0)
            and not self._truncated_keys
            and not self._cast_to_policy_device
            and not self._cast_to_env_device
            and not self._compact_next_keys
            and not self.compiled_policy
            and not self.cudagraphed_policy
            and self.pre_collect_hook is None
        )

    @torch.no_grad()
    def rollout(self) -> TensorDictBase:
        """One vector step as an ``[N, 1]`` batch (TorchRL's rollout where not applicable)."""
        if not self.fast_path:
            return super().rollout()
        carrier = self._carrier
        with set_exploration_type(self.exploration_type):
            if self._direct is not None:
                in_key, out_key, act = self._direct
                carrier.set(out_key, act(carrier.get(in_key)))
            else:
                policy_output = self._wrapped_policy(carrier)
                if policy_output is not carrier:
                    carrier.update(policy_output, keys_to_update=self._policy_output_keys)
            stepped, self._carrier = self.env.step_and_maybe_reset(carrier)
        if self._carrier_has_no_device:
            self._carrier.clear_device_()
        out = _add_time_dim(stepped)  # (named [None, "time"], as TorchRL's rollout names it)
        if self._exclude_private_keys and not any(_is_private(k) for k in out.keys(True)):
            # TorchRL's post-processing scans every key of every batch for private ("_")
            # ones; the keys of a step are the same every step, so one scan is enough.
            self._exclude_private_keys = False
        return out


def _is_private(key: str | tuple[str, ...]) -> bool:
    return any(k.startswith("_") for k in ((key,) if isinstance(key, str) else key))


def _add_time_dim(td: TensorDictBase) -> TensorDict:
    """``td.unsqueeze(-1).refine_names(..., "time")`` for a ``[N]`` tensordict of tensors.

    About a third of their cost: the ``[N, 1]`` views and the dimension names are set
    directly (``refine_names`` alone took about 50 us per batch, a third of the collector's
    own Python time).
    """
    source = {
        key: _add_time_dim(value) if isinstance(value, TensorDictBase) else value.unsqueeze(1)
        for key, value in td.items()
    }
    size = torch.Size((td.batch_size[0], 1))
    return TensorDict._new_unsafe(source, batch_size=size, device=td.device, names=[None, "time"])

"""A3C-LSTM's network: extractor -> LSTMCell -> actor and critic heads.

``RecurrentActorCritic`` = feature extractor (any of
:data:`ife_platform.extractors.EXTRACTORS`) + ``LSTMCell(features_dim, hidden)`` + linear actor
(``hidden -> |A|`` logits) and critic (``hidden -> 1``) heads, as in the A3C-LSTM code the IFE
paper builds on (Mnih et al. 2016, arXiv 1602.01783; body and init of ``rl_a3c_pytorch``).
No linear layer between the extractor and the LSTM: the LSTM reads the features directly
(``LSTMCell(1024, 512)`` for ``a3c_cnn``; ``LSTMCell(4096, 512)`` for ``ife``).

Input: ONE 84 x 84 gray frame per step (``in_channels = 1``, no frame stack: memory is the
LSTM), the whole screen resized as for Rainbow. The reference code crops rows and uses
80 x 80, which IFE's non-overlapping windows cannot tile with the published 6 x 6 window; at
84 IFE keeps 6 x 6 windows (a 14 x 14 mask) and the mask-to-screen geometry, videos and
object-box metrics are the same as Rainbow's. A deliberate deviation.

Recurrent state convention: ``state = (h, c)``, each ``[B, hidden]``. ``first[t, b]`` marks
``obs[t, b]`` as the first observation of a new episode; the state of row ``b`` is zeroed
BEFORE that step. The state is carried across rollouts otherwise; the caller detaches it
between rollouts (truncated backpropagation through time).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ife_platform.extractors import FeatureExtractor, build_extractor

State = tuple[Tensor, Tensor]


def normalized_columns_init_(linear: nn.Linear, std: float) -> nn.Linear:
    """A3C's head init, in place: Gaussian weights, each output unit's row rescaled to norm std.

    ``W_ij ~ N(0, 1)``, then ``W_i. *= std / ||W_i.||``; zero bias (``norm_col_init`` of the
    reference code: std 0.01 for the actor, so the first policy is near uniform; 1.0 for the
    critic).

    Args:
        linear: A freshly built layer.
        std: Norm of every output unit's weight vector.

    Returns:
        The same layer.
    """
    with torch.no_grad():
        weight = torch.randn_like(linear.weight)  # [out, in]
        linear.weight.copy_(weight * std / weight.norm(dim=1, keepdim=True))
        if linear.bias is not None:
            linear.bias.zero_()
    return linear


def zero_rows(state: tuple[Tensor, ...], rows: Tensor) -> tuple[Tensor, ...]:
    """Every state tensor with the batch rows where ``rows [B]`` (bool) is set made exactly 0.

    Exact even over NaN/inf, and without a host sync (no data-dependent branch), so it can run
    at every step of a GPU unroll.
    """
    out = []
    for s in state:
        cond = rows.view(-1, *([1] * (s.dim() - 1)))
        out.append(torch.where(cond, torch.zeros((), dtype=s.dtype, device=s.device), s))
    return tuple(out)


def lstm_step(lstm: nn.LSTMCell, gates_x: Tensor, state: State) -> State:
    """One ``nn.LSTMCell`` step from precomputed input gates, with the cell's own parameters.

    ``gates_x = x W_ih^T + b_ih`` (``F.linear(x, lstm.weight_ih, lstm.bias_ih)``) has no
    recurrence, so :meth:`RecurrentActorCritic.forward` computes it for a whole rollout in one
    matrix product; only the hidden half runs in the time loop. The equations and the gate
    order (input, forget, cell, output) are ``nn.LSTMCell``'s::

        [i; f; g; o] = gates_x + h W_hh^T + b_hh
        c' = sigmoid(f) * c + sigmoid(i) * tanh(g),   h' = sigmoid(o) * tanh(c')

    Why: with a per-step ``LSTMCell`` call, the backward pass of a 20-step rollout computes and
    accumulates the 2048 x 4096 gradient of ``W_ih`` 20 times from 4-row products (IFE width 2
    features, 4 envs); in one product it is computed once (docs/benchmarks.md).

    Args:
        lstm: The cell whose parameters are used.
        gates_x: ``[B, 4 * hidden]`` input gates of this step.
        state: ``(h, c)``, each ``[B, hidden]``.

    Returns:
        The new ``(h, c)``.
    """
    h, c = state
    gates = gates_x + F.linear(h, lstm.weight_hh, lstm.bias_hh)
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


class RecurrentActorCritic(nn.Module):
    """Extractor -> LSTMCell -> (actor logits, critic value), stepped with episode resets.

    Init as in the reference A3C-LSTM code: the extractor keeps its own init, the LSTM keeps
    PyTorch's default weights with zero biases, the actor and critic use
    :func:`normalized_columns_init_` (std 0.01 and 1.0).

    Args:
        extractor: The feature extractor (``features_dim`` output features, one frame in).
        num_actions: |A|.
        hidden: LSTM hidden units (512 in A3C-LSTM).
    """

    def __init__(self, extractor: FeatureExtractor, num_actions: int, *, hidden: int = 512) -> None:
        super().__init__()
        if num_actions < 1:
            raise ValueError(f"num_actions must be >= 1, got {num_actions}")
        self.extractor = extractor
        self.lstm = nn.LSTMCell(extractor.features_dim, hidden)
        with torch.no_grad():
            self.lstm.bias_ih.zero_()
            self.lstm.bias_hh.zero_()
        self.actor = normalized_columns_init_(nn.Linear(hidden, num_actions), 0.01)
        self.critic = normalized_columns_init_(nn.Linear(hidden, 1), 1.0)
        self.num_actions = num_actions
        self.hidden = hidden

    def initial_state(self, batch: int, device: torch.device | str | None = None) -> State:
        """Zero state ``(h, c)``, each ``[batch, hidden]``, on ``device`` (default: the model's)."""
        param = next(self.parameters())
        device = param.device if device is None else device
        zeros = torch.zeros(batch, self.hidden, device=device, dtype=param.dtype)
        return zeros, zeros.clone()

    def forward(self, obs: Tensor, state: State, first: Tensor) -> tuple[Tensor, Tensor, State]:
        """Unroll over a rollout, resetting the state at episode starts.

        One batched extractor pass over all ``T * B`` frames, then the LSTM loop over ``t``.

        Args:
            obs: ``[T, B, C, H, W]`` uint8 (or float in [0, 1]) frames.
            state: ``(h, c)`` before step 0, each ``[B, hidden]``.
            first: ``[T, B]`` bool, ``obs[t, b]`` starts a new episode: row ``b`` of the state
                is zeroed before step ``t``.

        Returns:
            ``(logits [T, B, A], values [T, B], final_state)``; ``final_state`` is the state
            after step ``T - 1`` (to pass, detached, to the next rollout).
        """
        if obs.dim() != 5:
            raise ValueError(f"expected [T, B, C, H, W] observations, got {tuple(obs.shape)}")
        steps, batch = obs.shape[:2]
        if tuple(first.shape) != (steps, batch):
            raise ValueError(f"first must be [T, B] = {(steps, batch)}, got {tuple(first.shape)}")
        feats = self.extractor(obs.flatten(0, 1))  # [T * B, F]
        # The LSTM's input half for every step at once (no recurrence): see lstm_step.
        gates_x = F.linear(feats, self.lstm.weight_ih, self.lstm.bias_ih)  # [T * B, 4 * hidden]
        gates_x = gates_x.view(steps, batch, -1)  # [T, B, 4 * hidden]
        first = first.to(device=feats.device, dtype=torch.bool)
        h, c = state  # [B, hidden] each
        outputs = []
        for t in range(steps):
            h, c = zero_rows((h, c), first[t])
            h, c = lstm_step(self.lstm, gates_x[t], (h, c))  # [B, hidden] each
            outputs.append(h)
        hs = torch.stack(outputs)  # [T, B, hidden]
        logits = self.actor(hs)  # [T, B, A]
        values = self.critic(hs).squeeze(-1)  # [T, B]
        return logits, values, (h, c)

    def step(self, obs: Tensor, state: State, first: Tensor) -> tuple[Tensor, Tensor, State]:
        """One acting step: :meth:`forward` with ``T = 1``.

        Args:
            obs: ``[B, C, H, W]`` uint8 (or float in [0, 1]) frames.
            state: ``(h, c)``, each ``[B, hidden]``.
            first: ``[B]`` bool, ``obs[b]`` starts a new episode (row ``b`` zeroed first).

        Returns:
            ``(logits [B, A], value [B], new_state)``.
        """
        logits, values, new_state = self(obs.unsqueeze(0), state, first.unsqueeze(0))
        return logits[0], values[0], new_state

    @property
    def attention_mask(self) -> Tensor | None:
        """The extractor's mask of the last call, ``[N, rows, cols]``, or None without one.

        ``N = T * B`` after :meth:`forward` (time-major: row ``t * B + b``), ``B`` after
        :meth:`step`.
        """
        return getattr(self.extractor, "attention_mask", None)


def build_actor_critic(
    extractor: str,
    num_actions: int,
    *,
    extractor_kwargs: dict | None = None,
    hidden: int = 512,
) -> RecurrentActorCritic:
    """Build a :class:`RecurrentActorCritic` on one 84 x 84 gray frame per step.

    Args:
        extractor: A key of :data:`ife_platform.extractors.EXTRACTORS`.
        num_actions: |A|.
        extractor_kwargs: Further extractor arguments (e.g. ``width``, ``hue_window``);
            ``in_channels`` (1) and ``input_size`` (84) are fixed here.
        hidden: LSTM hidden units.

    Returns:
        The network.
    """
    kwargs = dict(extractor_kwargs or {})
    fixed = sorted({"in_channels", "input_size"} & set(kwargs))
    if fixed:
        raise ValueError(
            f"A3C-LSTM fixes in_channels=1 and input_size=84; do not pass {', '.join(fixed)}"
        )
    return RecurrentActorCritic(
        build_extractor(extractor, in_channels=1, input_size=84, **kwargs),
        num_actions,
        hidden=hidden,
    )

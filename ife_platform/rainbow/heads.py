"""Q-value heads for Rainbow-style agents: noisy linear layers, dueling, C51.

References:
    Fortunato et al. 2018, "Noisy Networks for Exploration" (factorised Gaussian noise, Sec. 3).
    Wang et al. 2016, "Dueling Network Architectures for Deep RL" (Eq. 9).
    Bellemare et al. 2017, "A Distributional Perspective on RL" (C51 head, Sec. 4).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["NoisyLinear", "QHead", "expected_q"]


def _scale_noise(x: Tensor) -> Tensor:
    """f(x) = sgn(x) * sqrt(|x|) (Fortunato et al. 2018, Sec. 3(b))."""
    return x.sign() * x.abs().sqrt()


class NoisyLinear(nn.Module):
    """Linear layer with factorised Gaussian parameter noise (Fortunato et al. 2018).

    y = (mu_w + sigma_w * eps_w) x + mu_b + sigma_b * eps_b, with the factorised noise
    eps_w[j, i] = f(eps_j) f(eps_i) and eps_b[j] = f(eps_j) (Sec. 3(b), eqs. 10-11).

    Initialisation (Sec. 3.2, factorised case): mu ~ U[-1/sqrt(p), 1/sqrt(p)] and
    sigma = sigma0 / sqrt(p), with p = in_features.

    The noise is used whenever ``self.training`` is True (and only then); in eval mode the layer
    is the deterministic mean path ``F.linear(x, mu_w, mu_b)``. ``reset_noise()`` draws new noise;
    nothing resamples automatically, so the caller decides when (e.g. once per update).

    Args:
        in_features: input size p.
        out_features: output size q.
        sigma0: noise scale sigma_0 (0.5 in the paper; 0.1 in DER / Rainbow on Atari).
    """

    def __init__(self, in_features: int, out_features: int, sigma0: float = 0.1) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.sigma0 = sigma0
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features))
        self.weight_sigma = nn.Parameter(torch.empty(out_features, in_features))
        self.bias_mu = nn.Parameter(torch.empty(out_features))
        self.bias_sigma = nn.Parameter(torch.empty(out_features))
        # Factorised noise vectors, already passed through f: f(eps_i) [p] and f(eps_j) [q].
        self.register_buffer("eps_in", torch.zeros(in_features))
        self.register_buffer("eps_out", torch.zeros(out_features))
        self.reset_parameters()
        self.reset_noise()

    def reset_parameters(self) -> None:
        """Initialise mu ~ U[-1/sqrt(p), 1/sqrt(p)] and sigma = sigma0 / sqrt(p)."""
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.weight_mu, -bound, bound)
        nn.init.uniform_(self.bias_mu, -bound, bound)
        nn.init.constant_(self.weight_sigma, self.sigma0 / math.sqrt(self.in_features))
        nn.init.constant_(self.bias_sigma, self.sigma0 / math.sqrt(self.in_features))

    @torch.no_grad()
    def reset_noise(self, generator: torch.Generator | None = None) -> None:
        """Resample the factorised noise: p + q standard normals, each passed through f.

        Args:
            generator: optional random generator (for reproducible noise); default is torch's
                global generator.
        """
        dev = self.eps_in.device
        eps_in = torch.randn(self.in_features, generator=generator, device=dev)
        eps_out = torch.randn(self.out_features, generator=generator, device=dev)
        self.eps_in.copy_(_scale_noise(eps_in))
        self.eps_out.copy_(_scale_noise(eps_out))

    @property
    def weight_epsilon(self) -> Tensor:
        """Current weight noise eps_w = f(eps_out) f(eps_in)^T, shape [q, p] (rank one)."""
        return torch.outer(self.eps_out, self.eps_in)

    @property
    def bias_epsilon(self) -> Tensor:
        """Current bias noise eps_b = f(eps_out), shape [q]."""
        return self.eps_out

    def forward(self, x: Tensor) -> Tensor:
        """Apply the layer: x [..., p] -> [..., q]; noisy in train mode, mean path in eval."""
        if not self.training:
            return F.linear(x, self.weight_mu, self.bias_mu)
        weight = self.weight_mu + self.weight_sigma * self.weight_epsilon  # [q, p]
        bias = self.bias_mu + self.bias_sigma * self.bias_epsilon  # [q]
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        """Summarise the layer shape and noise scale."""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"sigma0={self.sigma0}"
        )


def expected_q(out: Tensor, support: Tensor | None = None) -> Tensor:
    """Expected Q values [B, A] from a QHead output.

    Args:
        out: Q values [B, A] (returned unchanged) or log-probabilities [B, A, K].
        support: atom values z [K]; required for log-probabilities.

    Returns:
        Q [B, A]; for a distribution, Q(s, a) = sum_i z_i p_i(s, a) (Bellemare et al. 2017, Eq. 1).
    """
    if out.dim() == 2:
        return out
    if support is None:
        raise ValueError("expected_q needs the atom support for a distributional output [B, A, K]")
    return (out.exp() * support).sum(dim=-1)  # [B, A, K] -> [B, A]


class QHead(nn.Module):
    """Q head on top of a feature extractor: dueling or single stream, plain or noisy, C51 or not.

    Dueling (Wang et al. 2016, Eq. 9), applied per atom for C51:
        Q(s, a, i) = V(s, i) + A(s, a, i) - 1/|A| sum_a' A(s, a', i)
    The mean is over the ACTION dimension of the [B, A, K] layout (atoms last), so each atom keeps
    its own value; a softmax over atoms then gives p_i(s, a) (Bellemare et al. 2017).

    Args:
        features_dim: size F of the input features [B, F].
        n_actions: number of actions A.
        hidden: width of the hidden layer of each stream.
        dueling: two streams (value, advantage) if True, a single stream otherwise.
        noisy: use NoisyLinear layers (factorised noise) instead of nn.Linear.
        num_atoms: K; 1 gives a scalar Q head, K > 1 a C51 distributional head.
        sigma0: noise scale of the NoisyLinear layers (ignored when ``noisy`` is False).

    Forward returns Q values [B, A] when ``num_atoms == 1``, otherwise log-probabilities
    [B, A, K] (log_softmax over atoms).
    """

    def __init__(
        self,
        features_dim: int,
        n_actions: int,
        hidden: int = 256,
        dueling: bool = True,
        noisy: bool = False,
        num_atoms: int = 1,
        sigma0: float = 0.1,
    ) -> None:
        super().__init__()
        if num_atoms < 1:
            raise ValueError(f"num_atoms must be >= 1, got {num_atoms}")
        self.features_dim = features_dim
        self.n_actions = n_actions
        self.num_atoms = num_atoms
        self.dueling = dueling
        self.noisy = noisy
        linear: Callable[[int, int], nn.Module] = (
            partial(NoisyLinear, sigma0=sigma0) if noisy else nn.Linear
        )
        out_adv = n_actions * num_atoms
        if dueling:
            self.value = nn.Sequential(
                linear(features_dim, hidden), nn.ReLU(), linear(hidden, num_atoms)
            )
            self.advantage = nn.Sequential(
                linear(features_dim, hidden), nn.ReLU(), linear(hidden, out_adv)
            )
        else:
            self.q = nn.Sequential(linear(features_dim, hidden), nn.ReLU(), linear(hidden, out_adv))

    def forward(self, features: Tensor) -> Tensor:
        """Map features [B, F] to Q [B, A] (num_atoms == 1) or log-probs [B, A, K], in fp32."""
        b = features.shape[0]
        a, k = self.n_actions, self.num_atoms
        # The streams' last linear layers may run in bf16 under autocast; the dueling sum and
        # log_softmax run in fp32 whatever the precision. CUDA autocast already runs log_softmax
        # in fp32, CPU autocast does not (a bf16 log-probability near -10 is rounded to 1/16),
        # and C51's small atoms are where a distribution collapsing onto one atom is decided.
        # In fp32 the ``.float()`` calls are no-ops.
        if self.dueling:
            value = self.value(features).float().view(b, 1, k)  # [B, 1, K]
            adv = self.advantage(features).float().view(b, a, k)  # [B, A, K]
            out = value + adv - adv.mean(dim=1, keepdim=True)  # Wang et al. 2016, Eq. 9
        else:
            out = self.q(features).float().view(b, a, k)  # [B, A, K]
        if k == 1:
            return out.squeeze(-1)  # [B, A]
        return F.log_softmax(out, dim=-1)  # [B, A, K], log p_i(s, a)

    def q_values(self, out: Tensor, support: Tensor | None = None) -> Tensor:
        """Expected Q [B, A] from this head's output (see :func:`expected_q`)."""
        return expected_q(out, support)

    def reset_noise(self) -> None:
        """Resample the noise of every NoisyLinear layer in the head (no-op if not noisy)."""
        for module in self.modules():
            if isinstance(module, NoisyLinear):
                module.reset_noise()

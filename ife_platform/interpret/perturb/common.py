"""What every perturbation measurement shares: eval mode, input scaling, devices, cell masks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

GREYDANUS_MASK_SIGMA = 5.0
#: Greydanus et al. 2018: sigma of the Gaussian blur A(I, sigma_A) that is blended in.
GREYDANUS_BLUR_SIGMA = 3.0
#: Greydanus et al. 2018: stride of the grid of mask centres, in input pixels.
GREYDANUS_STRIDE = 5

OutputsFn = Callable[[Tensor], dict[str, Tensor]]
ScoreFn = Callable[[Tensor], Tensor]


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` (and every submodule) in eval mode, restoring each one's flag afterwards.

    Eval mode matters for the perturbation methods: in train mode a spectral-norm layer runs a
    power iteration (and changes its weight) on every forward, and noisy layers add noise, so
    two forwards of the same input would differ.

    Args:
        module: The network.

    Yields:
        The same module, in eval mode.
    """
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, flag in flags:
            m.training = flag


def to_unit_float(obs: Tensor) -> Tensor:
    """uint8 [0, 255] -> float32 in [0, 1]; a float observation is returned as float32."""
    if obs.dtype == torch.uint8:
        return obs.to(torch.float32) / 255.0
    if not obs.is_floating_point():
        raise TypeError(f"expected a uint8 or float observation, got {obs.dtype}")
    return obs.to(torch.float32)


def check_obs(obs: Tensor) -> None:
    """Raise ValueError unless ``obs`` is a batch of stacked frames ``[B, C, H, W]``."""
    if obs.dim() != 4:
        raise ValueError(f"expected a [B, C, H, W] observation, got shape {tuple(obs.shape)}")


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer); CPU for an empty module."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def sync_device(device: torch.device) -> None:
    """Wait for the device's queued kernels (CUDA), so timings measure the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def window_masks(windows: Tensor, size_hw: tuple[int, int], device: torch.device) -> Tensor:
    """Bool ``[K, H, W]`` masks of half-open windows ``[K, 4]`` = ``(y0, y1, x0, x1)``."""
    windows = windows.to(device)
    h, w = size_hw
    ys = torch.arange(h, device=device)
    xs = torch.arange(w, device=device)
    in_y = (ys >= windows[:, 0:1]) & (ys < windows[:, 1:2])  # [K, H]
    in_x = (xs >= windows[:, 2:3]) & (xs < windows[:, 3:4])  # [K, W]
    return in_y[:, :, None] & in_x[:, None, :]

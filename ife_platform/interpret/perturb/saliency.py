"""Perturbation saliency (Greydanus et al. 2018, "Visualizing and Understanding Atari Agents").

A Gaussian-blurred patch is blended into the frame at every point of a grid; the saliency of a
point is half the squared change of each named network output.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ife_platform.interpret.perturb.common import (
    GREYDANUS_BLUR_SIGMA,
    GREYDANUS_MASK_SIGMA,
    GREYDANUS_STRIDE,
    OutputsFn,
    check_obs,
    eval_mode,
    module_device,
    sync_device,
    to_unit_float,
)


def _reflect_index(n: int, pad: int, device: torch.device) -> Tensor:
    """Indices of a length-n axis padded by ``pad`` on both sides, scipy's 'reflect' mode.

    scipy's 'reflect' (numpy's 'symmetric') repeats the edge sample: ``d c b a | a b c d``.
    """
    i = torch.arange(-pad, n + pad, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def gaussian_blur(images: Tensor, sigma: float, truncate: float = 4.0) -> Tensor:
    """Separable 2-D Gaussian blur over the last two dims, as ``scipy.ndimage.gaussian_filter``.

    Kernel radius ``int(truncate * sigma + 0.5)``, normalised to sum 1, boundary mode
    'reflect' (edge sample repeated): the same numbers as scipy on a 2-D image.

    Args:
        images: ``[..., H, W]`` float tensor.
        sigma: Standard deviation in pixels (0 returns the input).
        truncate: Kernel radius in sigmas.

    Returns:
        The blurred images, same shape and dtype.
    """
    if sigma <= 0:
        return images
    radius = int(truncate * sigma + 0.5)
    h, w = images.shape[-2:]
    x = images.reshape(-1, 1, h, w)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    x = x.index_select(3, _reflect_index(w, radius, x.device))
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = x.index_select(2, _reflect_index(h, radius, x.device))
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    return x.reshape(images.shape)


def saliency_grid(size: int, stride: int = GREYDANUS_STRIDE) -> Tensor:
    """Pixel coordinates of the mask centres along one axis: ``0, stride, 2 * stride, ...``.

    Args:
        size: Axis length in pixels (84 -> 17 centres at stride 5: 0, 5, ..., 80).
        stride: Grid stride.

    Returns:
        int64 ``[ceil(size / stride)]``.
    """
    return torch.arange(0, size, stride)


def greydanus_masks(
    size_hw: tuple[int, int],
    sigma: float = GREYDANUS_MASK_SIGMA,
    stride: int = GREYDANUS_STRIDE,
    device: torch.device | str | None = None,
) -> Tensor:
    """Gaussian perturbation masks ``M(i, j)`` of Greydanus et al. 2018, one per grid point.

    ``M(y, x) = exp(-((y - i)^2 + (x - j)^2) / (2 sigma^2))``: 1 at the centre ``(i, j)``. (The
    authors' code blurs a one-pixel disc with ``gaussian_filter(sigma)`` and divides by its max,
    a near-identical bump; the analytic Gaussian is used here.)

    Args:
        size_hw: ``(H, W)`` of the observation.
        sigma: Mask standard deviation in pixels.
        stride: Spacing of the centres (see :func:`saliency_grid`).
        device: Device of the result.

    Returns:
        float32 ``[gh, gw, H, W]``.
    """
    h, w = size_hw
    cy = saliency_grid(h, stride).to(device=device, dtype=torch.float32)
    cx = saliency_grid(w, stride).to(device=device, dtype=torch.float32)
    ys = torch.arange(h, device=device, dtype=torch.float32)
    xs = torch.arange(w, device=device, dtype=torch.float32)
    gy = torch.exp(-((ys[None, :] - cy[:, None]) ** 2) / (2 * sigma**2))  # [gh, H]
    gx = torch.exp(-((xs[None, :] - cx[:, None]) ** 2) / (2 * sigma**2))  # [gw, W]
    return gy[:, None, :, None] * gx[None, :, None, :]  # [gh, gw, H, W]


@torch.no_grad()
def perturbation_saliency(
    outputs_fn: OutputsFn,
    obs: Tensor,
    sigma: float = GREYDANUS_MASK_SIGMA,
    stride: int = GREYDANUS_STRIDE,
    batch_size: int = 64,
    blur_sigma: float = GREYDANUS_BLUR_SIGMA,
) -> dict[str, Tensor]:
    """Perturbation saliency of Greydanus et al. 2018 ("Visualizing and Understanding Atari").

    For every grid point ``(i, j)`` (stride ``stride`` on the ``H x W`` observation) the
    observation is blended with its blur under a Gaussian mask centred there,

        I' = I * (1 - M(i, j)) + A(I, blur_sigma) * M(i, j),

    on all stacked frames (``M`` from :func:`greydanus_masks`, sigma 5; ``A`` =
    :func:`gaussian_blur`, sigma 3, as in the paper), and for each named output ``f``

        S_f(i, j) = 0.5 * || f(I) - f(I') ||^2

    (sum of squares over all of the output's elements, per frame). ``B * gh * gw`` perturbed
    inputs go through ``outputs_fn`` in batches of ``batch_size``.

    Args:
        outputs_fn: ``obs [N, C, H, W] float in [0, 1] -> {name: Tensor [N, ...]}``, e.g.
            :func:`rainbow_outputs`. It must be deterministic (eval mode).
        obs: ``[B, C, H, W]`` uint8 (scaled to [0, 1] here) or float in [0, 1]; all work
            happens on ``obs.device``.
        sigma: Mask sigma in pixels (5 in the paper).
        stride: Grid stride in pixels (5 in the paper).
        batch_size: Perturbed inputs per call of ``outputs_fn``.
        blur_sigma: Sigma of the blur that is blended in (3 in the paper).

    Returns:
        ``{name: float32 [B, gh, gw]}`` saliency maps at grid resolution (``gh =
        ceil(H / stride)``; grid point ``(r, c)`` is pixel ``(r * stride, c * stride)``). See
        :func:`upsample_saliency` and :func:`normalise_saliency`.
    """
    check_obs(obs)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x = to_unit_float(obs)  # [B, C, H, W]
    b_frames, _, h, w = x.shape
    blurred = gaussian_blur(x, blur_sigma)
    masks = greydanus_masks((h, w), sigma, stride, x.device)
    gh, gw = masks.shape[:2]
    masks = masks.reshape(gh * gw, h, w)
    g_total = gh * gw

    parts: dict[str, list[Tensor]] = {}
    for start in range(0, b_frames, batch_size):
        for name, t in outputs_fn(x[start : start + batch_size]).items():
            parts.setdefault(name, []).append(t.detach().reshape(t.shape[0], -1).float())
    ref = {name: torch.cat(p).to(x.device) for name, p in parts.items()}  # [B, D] each
    maps = {name: torch.zeros(b_frames * g_total, device=x.device) for name in ref}

    diff = blurred - x
    for start in range(0, b_frames * g_total, batch_size):
        idx = torch.arange(start, min(start + batch_size, b_frames * g_total), device=x.device)
        fb, g = idx // g_total, idx % g_total
        batch = x[fb] + diff[fb] * masks[g][:, None]  # [n, C, H, W]
        out = outputs_fn(batch)
        for name, t in out.items():
            d = t.detach().reshape(t.shape[0], -1).float().to(x.device) - ref[name][fb]
            maps[name][idx] = 0.5 * d.pow(2).sum(1)
    return {name: m.view(b_frames, gh, gw) for name, m in maps.items()}


def upsample_saliency(
    maps: Tensor,
    size_hw: tuple[int, int] = (84, 84),
    stride: int = GREYDANUS_STRIDE,
    mode: Literal["bilinear", "nearest"] = "bilinear",
) -> Tensor:
    """Grid-resolution saliency ``[B, gh, gw]`` -> pixel resolution ``[B, H, W]``.

    Pixel-accurate: grid point ``(r, c)`` sits at pixel ``(r * stride, c * stride)``, so pixel
    ``p`` reads grid coordinate ``p / stride``. ``"bilinear"`` interpolates between the two
    neighbouring grid points on each axis (constant beyond the last one, e.g. pixels 81..83 at
    84 / 5); ``"nearest"`` takes the nearest grid point (ties upwards). (Greydanus et al. resize
    the grid bilinearly to the frame without this alignment.)

    Args:
        maps: ``[B, gh, gw]`` maps from :func:`perturbation_saliency`.
        size_hw: Output ``(H, W)``.
        stride: The stride the maps were computed with.
        mode: ``"bilinear"`` or ``"nearest"``.

    Returns:
        ``[B, H, W]`` maps, same dtype and device.
    """
    out = maps
    for axis, size in ((1, size_hw[0]), (2, size_hw[1])):
        n = maps.shape[axis]
        coord = (torch.arange(size, device=maps.device, dtype=torch.float64) / stride).clamp(
            max=n - 1
        )
        if mode == "nearest":
            idx = torch.floor(coord + 0.5).long().clamp(max=n - 1)
            out = out.index_select(axis, idx)
        elif mode == "bilinear":
            i0 = coord.floor().long()
            i1 = (i0 + 1).clamp(max=n - 1)
            wt = (coord - i0).to(maps.dtype)
            shape = [1, 1, 1]
            shape[axis] = size
            wt = wt.view(shape)
            out = out.index_select(axis, i0) * (1 - wt) + out.index_select(axis, i1) * wt
        else:
            raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    return out


def normalise_saliency(
    maps: Tensor, mode: Literal["minmax", "max", "sum"] = "minmax", eps: float = 1e-12
) -> Tensor:
    """Normalise every map ``[..., H, W]`` on its own (over the last two dims).

    Args:
        maps: Saliency maps, e.g. ``[B, gh, gw]`` or ``[B, H, W]``.
        mode: ``"minmax"`` -> [0, 1]; ``"max"`` -> divided by the max (saliency is >= 0);
            ``"sum"`` -> sums to 1, a distribution comparable with an attention mask. A map
            that is constant (``minmax``) or all zero gives zeros.
        eps: Denominators ``<= eps`` give zeros.

    Returns:
        Normalised maps, same shape.
    """
    flat = maps.flatten(-2)
    if mode == "minmax":
        lo = flat.amin(-1, keepdim=True)
        num, den = flat - lo, flat.amax(-1, keepdim=True) - lo
    elif mode == "max":
        num, den = flat, flat.amax(-1, keepdim=True)
    elif mode == "sum":
        num, den = flat, flat.sum(-1, keepdim=True)
    else:
        raise ValueError(f"mode must be 'minmax', 'max' or 'sum', got {mode!r}")
    out = torch.where(den > eps, num / den.clamp_min(eps), torch.zeros_like(num))
    return out.view(maps.shape)


def rainbow_outputs(
    network: nn.Module,
    policy: Literal["centered", "q", "softmax"] = "centered",
    temperature: float = 1.0,
) -> OutputsFn:
    """The "policy" and "value" outputs of a Rainbow ``QNetwork`` for saliency.

    Greydanus et al. take the actor's logits (action preferences, before the softmax) as
    "policy" and the critic's V as "value". For a value-based agent we use:

    - ``"value"``: ``max_a Q(s, a)``, the greedy policy's state value, ``[N]``;
    - ``"policy"`` (default ``"centered"``): ``Q(s, a) - mean_a Q(s, a)``, ``[N, A]``: the
      action preferences with the state-value level removed (the dueling advantage; a softmax
      over them is the same as over Q), so the value change does not leak into the policy
      map. ``"q"``: the raw Q vector. ``"softmax"``: ``softmax(Q / temperature)``.

    Q is ``network.q_values(obs)`` (the expected Q of a C51 head). The returned function runs
    the network in eval mode (flags restored) and moves its input to the network's device.

    Args:
        network: A :class:`~ife_platform.rainbow.agent.QNetwork` (anything with ``q_values``).
        policy: Which "policy" output (see above).
        temperature: Softmax temperature for ``policy="softmax"``.

    Returns:
        ``obs -> {"policy": Tensor, "value": Tensor}``.
    """
    if policy not in ("centered", "q", "softmax"):
        raise ValueError(f"policy must be 'centered', 'q' or 'softmax', got {policy!r}")
    device = module_device(network)

    @torch.no_grad()
    def outputs(obs: Tensor) -> dict[str, Tensor]:
        with eval_mode(network):
            q = network.q_values(obs.to(device))  # [N, A]
        if policy == "centered":
            pol = q - q.mean(dim=-1, keepdim=True)
        elif policy == "softmax":
            pol = torch.softmax(q / temperature, dim=-1)
        else:
            pol = q
        return {"policy": pol, "value": q.amax(dim=-1)}

    return outputs


def saliency_throughput(
    outputs_fn: OutputsFn, obs: Tensor, warmup: bool = True, **kwargs: Any
) -> dict[str, float]:
    """Time :func:`perturbation_saliency` on ``obs``.

    Args:
        outputs_fn: As for :func:`perturbation_saliency`.
        obs: ``[B, C, H, W]`` frames.
        warmup: First run saliency on one frame (untimed) so lazy init is not counted.
        **kwargs: Passed to :func:`perturbation_saliency` (sigma, stride, batch_size, ...).

    Returns:
        ``frames``, ``perturbations`` (forwards per frame, the grid size), ``seconds``,
        ``frames_per_s`` and ``forwards_per_s`` (perturbed inputs per second).
    """
    if warmup:
        perturbation_saliency(outputs_fn, obs[:1], **kwargs)
    sync_device(obs.device)
    t0 = time.perf_counter()
    maps = perturbation_saliency(outputs_fn, obs, **kwargs)
    sync_device(obs.device)
    seconds = time.perf_counter() - t0
    gh, gw = next(iter(maps.values())).shape[-2:]
    frames = obs.shape[0]
    return {
        "frames": float(frames),
        "perturbations": float(gh * gw),
        "seconds": seconds,
        "frames_per_s": frames / seconds,
        "forwards_per_s": frames * (gh * gw + 1) / seconds,
    }


def saliency_benchmark(
    extractor_name: str = "ife",
    frames: int = 8,
    num_actions: int = 18,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Frames/s of Greydanus saliency (policy and value) with a real, untrained ``QNetwork``.

    Builds ``build_q_network(extractor_name, num_actions)`` (default head: dueling, no noise,
    scalar Q) on ``device``, feeds ``frames`` random uint8 ``4 x 84 x 84`` observations and
    times :func:`perturbation_saliency` (17 x 17 = 289 perturbed forwards per frame at stride 5
    plus one reference) after a one-frame warm-up.

    Args:
        extractor_name: A registered extractor name.
        frames: Frames to explain.
        num_actions: |A| of the head.
        batch_size: Perturbed inputs per forward.
        device: Where to run; CUDA if available, else CPU, by default.
        seed: Seed of the weights and the observations.

    Returns:
        The dict of :func:`saliency_throughput` plus ``extractor``, ``device``,
        ``batch_size`` and ``torch_threads``.
    """
    from ife_platform.rainbow.agent import build_q_network

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = build_q_network(extractor_name, num_actions).to(dev).eval()
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 256, (frames, 4, 84, 84), generator=gen, dtype=torch.uint8).to(dev)
    result: dict[str, Any] = saliency_throughput(
        rainbow_outputs(network), obs, batch_size=batch_size
    )
    result.update(
        extractor=extractor_name,
        device=str(dev),
        batch_size=batch_size,
        torch_threads=torch.get_num_threads(),
    )
    return result

"""Transfer modes for continual learning over a sequence of games: which weights carry over.

A continual run trains ONE :class:`~ife_platform.rainbow.agent.QNetwork` on games
``g_0, g_1, ...`` in turn. At every task switch a *transfer mode* decides, per parameter
group, whether the group keeps training (fine-tuned), is frozen, or is re-initialised.

Groups (:data:`MODULE_GROUPS`; every parameter of a ``QNetwork`` lies in exactly one):

- IFE: ``hue`` = ``extractor.hue`` (the non-overlapping convs) + ``extractor.attention`` (the
  soft spatial mask; part of HUE in the paper, arXiv 2504.10071), ``afe`` = ``extractor.afe``,
  ``head`` = ``head``.
- Every other extractor: ``extractor`` = the whole extractor, ``head`` = ``head``. (The
  CNN-attention baseline is not split: its encoder is not HUE.)
- Recurrent actor-critics (:func:`network_layout`): the extractor groups as above and
  ``head`` = the LSTM core with the policy and value layers (A3C-LSTM: ``lstm``, ``actor``,
  ``critic``). S3TA (``"s3ta"``): ``extractor`` = everything before the policy LSTM (the
  vision core ``extractor``, the query layer ``query`` and the answer processor
  ``answer_mlp``: the whole attention mechanism), ``head`` = ``lstm``, ``policy``, ``value``.

Modes (:data:`MODES`), applied from the second task on (task index >= 1):

- ``finetune``: nothing frozen, nothing reset; every group keeps training. Stands alone.
- ``freeze_hue``: HUE frozen at its task-0 weights; AFE and head train (IFE only).
- ``freeze_ife``: HUE and AFE frozen at their task-0 weights; the head trains (IFE only).
- ``freeze_extractor``: every extractor group frozen (= ``freeze_ife`` for IFE; the same
  experiment for the other extractors).
- ``reset_hue``: HUE re-initialised at every switch; AFE and head train on (IFE only).
- ``reset_afe``: AFE re-initialised at every switch; HUE and head train on (IFE only).
- ``reset_head``: the head in use re-initialised at every switch.
- ``scratch``: every group re-initialised at every switch, nothing frozen: the
  forward-transfer reference. Stands alone.

Modes combine with ``+`` (``"freeze_hue+reset_afe"``) or as a list; each group may be named by
at most one of them (a group is frozen, reset or fine-tuned: ``freeze_hue+reset_hue`` is a
contradiction, ``freeze_hue+freeze_ife`` a redundancy; both are errors), and ``finetune`` and
``scratch`` stand alone. :func:`parse_mode` validates all of it up front.

Runner protocol (one ``online`` and one ``target`` network for the whole sequence)::

    spec = parse_mode(cfg_mode, cfg.model.extractor)          # at config time
    heads = make_heads(online, games, seed=seed) if per_game else None
    for k, game in enumerate(games):
        if heads is not None:
            swap_head(online, heads, game, target=target)     # before the switch
        report = apply_task_switch(online, spec, k, seed, target=target)
        optimiser = torch.optim.Adam(trainable_parameters(online), ...)  # fresh each task
        ... train on game (online.train() is fine: see "Frozen groups") ...

- The optimiser is rebuilt at every switch over :func:`trainable_parameters`: Adam's moments of
  the previous task are wrong for re-initialised weights, a swapped-in head has new parameter
  objects, and frozen parameters then are not even in it. (Frozen parameters also have
  ``requires_grad=False`` and ``grad=None``, so a kept optimiser would skip them too.)
- ``target=`` makes :func:`apply_task_switch` freeze the same groups of the target network and
  copy the online state into it (``load_state_dict``): after a reset, the target must not
  bootstrap from the previous task's weights.
- Resuming from a checkpoint in the middle of task ``k >= 1``: load the state, then call
  :func:`freeze_groups` on online and target (``requires_grad`` and the spectral-norm setting
  below are not in a state dict). Do not call :func:`apply_task_switch` again: it would reset.

Frozen groups: ``requires_grad=False`` is not enough. A spectral-norm convolution
(``torch.nn.utils.parametrizations.spectral_norm``; IFE's AFE and IMPALA's residual convs) runs
one power iteration in every train-mode forward, updating its ``_u``/``_v`` buffers in place and
therefore its effective weight ``W / sigma(u, v)``, gradient or not. :func:`freeze_groups` sets
the power iterations of every spectral norm in a frozen group to 0, which makes its forward
identical in train and eval mode and its state (parameters and buffers) bit-identical for the
rest of the sequence, without having to keep the group in eval mode after each
``network.train()`` (Lightning toggles modes on its own). Other train-mode-dependent layers
(noisy layers, batch norm, dropout) are refused in a frozen group; no mode freezes the head,
the only place noisy layers live, and no extractor has batch norm or dropout.

Re-initialisation (:func:`reinitialise`) reproduces the build-time init: ``reset_parameters()``
of every layer (through the spectral-norm parametrization, with fresh power-iteration vectors,
via :func:`ife_platform.interpret.perturb.reset_module`), then, for the extractors whose
convolutions are built by :func:`~ife_platform.extractors.blocks.make_conv` (IFE, IMPALA,
CNN-attention), the ReLU gain on conv weights and zero conv biases; noisy layers also draw
fresh noise. Each group is seeded on its own from ``(seed, task_index, group)``, so a group's
new weights do not depend on which other groups are reset. Random numbers come from torch's
generator of the parameters' device: the same seed gives the same weights on the same device
type.

Per-game heads (``head=per_game``): :func:`make_heads` builds one head per game (the network's
current head serves the first game), :func:`swap_head` installs a game's head in the network
(so the optimiser over ``online.parameters()`` sees only the active head) and gives the target a
copy. Register the ``ModuleDict`` on the task (``self.heads = heads``) so every head is
checkpointed. ``head=shared`` keeps the one head of the network (use the full 18-action set so
that all games share one action space).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ife_platform.config import ConfigError, choices_msg
from ife_platform.extractors import EXTRACTORS
from ife_platform.extractors.blocks import relu_gain_init_
from ife_platform.interpret.perturb import reset_module, resettable
from ife_platform.rainbow.heads import NoisyLinear, QHead

__all__ = [
    "HEAD_CHOICES",
    "MODES",
    "MODULE_GROUPS",
    "TransferSpec",
    "apply_task_switch",
    "extractor_name",
    "freeze_groups",
    "group_digests",
    "group_parameter_names",
    "make_heads",
    "module_groups",
    "network_layout",
    "parameter_digest",
    "parse_head",
    "parse_mode",
    "reinitialise",
    "reset_seed",
    "swap_head",
    "trainable_parameters",
    "valid_modes",
]

#: Module paths inside a ``QNetwork`` of each parameter group, per extractor name. IFE: HUE
#: (non-overlapping convs + the attention mask), AFE and the head; every other extractor: the
#: whole extractor and the head. Every parameter lies in exactly one group.
MODULE_GROUPS: dict[str, dict[str, tuple[str, ...]]] = {
    name: (
        {
            "hue": ("extractor.hue", "extractor.attention"),
            "afe": ("extractor.afe",),
            "head": ("head",),
        }
        if name == "ife"
        else {"extractor": ("extractor",), "head": ("head",)}
    )
    for name in EXTRACTORS
}
#: S3TA is an agent, not an extractor: its attention needs the policy state (a3c/s3ta.py).
MODULE_GROUPS["s3ta"] = {
    "extractor": ("extractor", "query", "answer_mlp"),
    "head": ("lstm", "policy", "value"),
}

# Placeholders in MODES, resolved per extractor.
_EXTRACTOR_GROUPS = "<every extractor group>"
_ALL_GROUPS = "<every group>"

#: Every transfer mode: ``(groups frozen, groups reset)`` from the second task on.
MODES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "finetune": ((), ()),
    "freeze_hue": (("hue",), ()),
    "freeze_ife": (("hue", "afe"), ()),
    "freeze_extractor": ((_EXTRACTOR_GROUPS,), ()),
    "reset_hue": ((), ("hue",)),
    "reset_afe": ((), ("afe",)),
    "reset_head": ((), ("head",)),
    "scratch": ((), (_ALL_GROUPS,)),
}

#: Modes that cannot be combined with any other.
_STANDALONE = frozenset({"finetune", "scratch"})

#: ``head=`` choices: one head for all games, or one head per game.
HEAD_CHOICES = ("shared", "per_game")

#: Per extractor, the modules whose convolutions are built by ``blocks.make_conv`` (ReLU-gain
#: init, zero bias); every other conv uses PyTorch's default init (S3TA's ConvLSTM, the Nature
#: and DER CNNs). Checked against a fresh build in the tests.
_RELU_GAIN_CONVS: dict[str, tuple[str, ...]] = {
    "ife": ("extractor",),
    "impala": ("extractor",),
    "cnn_attention": ("extractor",),
    "s3ta": ("extractor.convs",),
}


# --------------------------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransferSpec:
    """A validated transfer mode (see :func:`parse_mode`).

    Attributes:
        name: Canonical name: the modes sorted and joined with ``+`` (e.g.
            ``"freeze_hue+reset_afe"``).
        extractor: The extractor name it was validated for (a key of ``EXTRACTORS``).
        freeze: Groups frozen from the end of task 0 on (they keep their task-0 weights).
        reset: Groups re-initialised at every switch to a task with index >= 1.
        modes: The individual modes, sorted.
    """

    name: str
    extractor: str
    freeze: frozenset[str]
    reset: frozenset[str]
    modes: tuple[str, ...]

    @property
    def groups(self) -> tuple[str, ...]:
        """Every group of the extractor's ``QNetwork``."""
        return tuple(MODULE_GROUPS[self.extractor])

    @property
    def trainable(self) -> frozenset[str]:
        """Groups that train on every task (all but the frozen ones)."""
        return frozenset(self.groups) - self.freeze


def _resolve(groups: tuple[str, ...], layout: Mapping[str, tuple[str, ...]]) -> set[str]:
    out: set[str] = set()
    for g in groups:
        if g == _ALL_GROUPS:
            out.update(layout)
        elif g == _EXTRACTOR_GROUPS:
            out.update(name for name in layout if name != "head")
        else:
            out.add(g)
    return out


def valid_modes(extractor: str) -> list[str]:
    """The modes that apply to an extractor (those that name only groups it has).

    Args:
        extractor: A key of ``EXTRACTORS``.

    Returns:
        Mode names, sorted.
    """
    layout = MODULE_GROUPS[extractor]
    return sorted(
        mode
        for mode, (freeze, reset) in MODES.items()
        if _resolve(freeze + reset, layout) <= set(layout)
    )


def parse_mode(mode: str | Sequence[str], extractor: str) -> TransferSpec:
    """Validate a transfer mode for an extractor.

    Args:
        mode: One mode, modes joined with ``+`` (``"freeze_hue+reset_afe"``), or a sequence of
            modes (each may itself contain ``+``). Whitespace around names is ignored.
        extractor: The extractor name of the network (``model.extractor``).

    Returns:
        The :class:`TransferSpec`.

    Raises:
        ConfigError: (a ``ValueError``) for an unknown extractor or mode (with the closest
            match and the valid choices), a mode that needs a group the extractor lacks, a
            mode given twice, ``finetune`` or ``scratch`` combined with another mode, or two
            modes acting on the same group (naming both and the group). Every message lists
            the modes valid for the extractor.
    """
    if extractor not in MODULE_GROUPS:
        raise ConfigError(choices_msg("extractor", extractor, list(MODULE_GROUPS)))
    layout = MODULE_GROUPS[extractor]
    valid = valid_modes(extractor)
    valid_msg = f"Valid modes for extractor '{extractor}': {', '.join(valid)}."
    parts = [mode] if isinstance(mode, str) else list(mode)
    names = [n.strip() for part in parts for n in str(part).split("+")]
    if not names or any(not n for n in names):
        raise ConfigError(f"empty transfer mode in {mode!r}. {valid_msg}")
    for n in names:
        if n not in MODES:
            raise ConfigError(choices_msg("transfer mode", n, list(MODES)))
    for n in names:
        missing = sorted(_resolve(MODES[n][0] + MODES[n][1], layout) - set(layout))
        if missing:
            raise ConfigError(
                f"transfer mode '{n}' acts on group(s) {', '.join(missing)}, which extractor "
                f"'{extractor}' does not have (its groups: {', '.join(layout)}). {valid_msg}"
            )
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"transfer mode '{dupes[0]}' given twice in {mode!r}. {valid_msg}")
    if len(names) > 1:
        alone = sorted(set(names) & _STANDALONE)
        if alone:
            others = [n for n in names if n != alone[0]]
            raise ConfigError(
                f"transfer mode '{alone[0]}' cannot be combined with '{others[0]}': "
                f"'{alone[0]}' stands alone (finetune = nothing frozen or reset, scratch = "
                f"everything reset). {valid_msg}"
            )
    owner: dict[str, tuple[str, str]] = {}  # group -> (mode, "freeze" | "reset")
    for n in names:
        freeze, reset = MODES[n]
        for action, groups in (("freeze", freeze), ("reset", reset)):
            for g in sorted(_resolve(groups, layout)):
                if g in owner:
                    other, other_action = owner[g]
                    kind = "contradict" if other_action != action else "overlap"
                    raise ConfigError(
                        f"transfer modes '{other}' and '{n}' {kind}: both act on group '{g}' "
                        f"({other_action} vs {action}); a group is either frozen, reset or "
                        f"fine-tuned, so name it in one mode only. {valid_msg}"
                    )
                owner[g] = (n, action)
    modes = tuple(sorted(names))
    return TransferSpec(
        name="+".join(modes),
        extractor=extractor,
        freeze=frozenset(g for g, (_, a) in owner.items() if a == "freeze"),
        reset=frozenset(g for g, (_, a) in owner.items() if a == "reset"),
        modes=modes,
    )


def parse_head(head: str) -> str:
    """Validate the ``head`` choice (``shared`` or ``per_game``).

    Raises:
        ConfigError: For anything else, with the closest match.
    """
    if head not in HEAD_CHOICES:
        raise ConfigError(choices_msg("head choice", head, HEAD_CHOICES))
    return head


# --------------------------------------------------------------------------------------------
# Groups, digests
# --------------------------------------------------------------------------------------------


def extractor_name(network: nn.Module) -> str:
    """The ``EXTRACTORS`` name of ``network.extractor`` (exact class match); ``"s3ta"`` for S3TA.

    Raises:
        TypeError: If the network has no registered extractor.
    """
    from ife_platform.a3c.s3ta import S3TAAgent

    if type(network) is S3TAAgent:
        return "s3ta"
    cls = type(getattr(network, "extractor", None))
    for name, registered in EXTRACTORS.items():
        if cls is registered:
            return name
    raise TypeError(f"{type(network).__name__}.extractor is not a registered extractor: {cls}")


def network_layout(network: nn.Module) -> dict[str, tuple[str, ...]]:
    """Module paths of each group of this network.

    :data:`MODULE_GROUPS` by extractor, with the ``head`` group adapted to the network: a
    ``QNetwork``'s Q head, or a recurrent actor-critic's LSTM core with its policy and value
    layers (``lstm``, ``actor``, ``critic``: everything after the extractor).
    """
    name = extractor_name(network)
    layout = dict(MODULE_GROUPS[name])
    if name != "s3ta" and not hasattr(network, "head") and hasattr(network, "lstm"):
        layout["head"] = ("lstm", "actor", "critic")
    return layout


def module_groups(network: nn.Module) -> dict[str, list[nn.Module]]:
    """The modules of each group of a ``QNetwork`` (see :data:`MODULE_GROUPS`).

    Args:
        network: A ``QNetwork`` (``.extractor`` and ``.head``).

    Returns:
        Group name -> its modules, in :data:`MODULE_GROUPS` order.
    """
    layout = network_layout(network)
    return {g: [network.get_submodule(p) for p in paths] for g, paths in layout.items()}


def group_parameter_names(network: nn.Module) -> dict[str, list[str]]:
    """Names (as in ``network.named_parameters()``) of the parameters of each group."""
    layout = network_layout(network)
    out: dict[str, list[str]] = {g: [] for g in layout}
    for name, _ in network.named_parameters():
        for g, paths in layout.items():
            if any(name.startswith(p + ".") for p in paths):
                out[g].append(name)
                break
    return out


def trainable_parameters(network: nn.Module) -> Iterator[nn.Parameter]:
    """The parameters with ``requires_grad`` (what the optimiser of a task should hold)."""
    return (p for p in network.parameters() if p.requires_grad)


def parameter_digest(modules: nn.Module | Iterable[nn.Module]) -> str:
    """SHA-256 (hex) of the state dicts of one or more modules: parameters and buffers.

    Bitwise: any changed bit of any tensor (including spectral-norm ``_u``/``_v`` vectors and
    noise buffers) changes it; names, dtypes and shapes are hashed too. Unlike
    ``callbacks.evaluation.parameter_digest`` (an int over parameters only, buffers left out
    on purpose for DDP) this covers buffers, which decide a spectral-norm layer's output.

    Args:
        modules: A module, or several (hashed in order).

    Returns:
        64 hex characters.
    """
    if isinstance(modules, nn.Module):
        modules = [modules]
    h = hashlib.sha256()
    for i, module in enumerate(modules):
        for name, value in module.state_dict().items():
            h.update(f"{i}:{name}:".encode())
            if isinstance(value, torch.Tensor):
                t = value.detach().cpu().contiguous().reshape(-1)
                h.update(f"{t.dtype}{tuple(value.shape)}".encode())
                h.update(t.view(torch.uint8).numpy().tobytes())
            else:
                h.update(repr(value).encode())
    return h.hexdigest()


def group_digests(network: nn.Module) -> dict[str, str]:
    """:func:`parameter_digest` of every group (for logging and tests)."""
    return {g: parameter_digest(mods) for g, mods in module_groups(network).items()}


# --------------------------------------------------------------------------------------------
# Reset and freeze
# --------------------------------------------------------------------------------------------


def reset_seed(seed: int, task_index: int, group: str) -> int:
    """The seed of one group's re-initialisation: a 63-bit hash of ``(seed, task, group)``."""
    digest = hashlib.sha256(f"{seed}/{task_index}/{group}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _cuda_indices(modules: Sequence[nn.Module]) -> list[int]:
    tensors = itertools.chain.from_iterable(
        itertools.chain(m.parameters(), m.buffers()) for m in modules
    )
    return sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})


@torch.no_grad()
def _relu_gain_init(conv: nn.Conv2d) -> None:
    """``blocks.relu_gain_init_``, also for a conv whose weight is parametrized (SN)."""
    if not parametrize.is_parametrized(conv, "weight"):
        relu_gain_init_(conv)
        return
    # The stored original, not the computed W / sigma (scaling leaves u, v valid).
    conv.parametrizations.weight.original.mul_(nn.init.calculate_gain("relu"))
    if conv.bias is not None:
        conv.bias.zero_()


def reinitialise(
    modules: Iterable[nn.Module], seed: int, *, relu_gain_convs: bool | Iterable[nn.Module]
) -> None:
    """Re-initialise modules in place as at build time, seeded; the global RNG is restored.

    Every submodule with ``reset_parameters`` is reset (spectral-norm convs through their
    parametrization, with fresh power-iteration vectors: ``perturb.reset_module``); with
    ``relu_gain_convs`` conv weights are then scaled by the ReLU gain and conv biases zeroed
    (``blocks.make_conv``'s init); noisy layers draw fresh noise. Gradients are cleared.

    Args:
        modules: The modules (e.g. one group of :func:`module_groups`).
        seed: Same seed (on the same device type), same weights.
        relu_gain_convs: Apply the ReLU-gain conv init: to every conv (True), to none (False),
            or to the convs inside the given modules (S3TA: its two vision convs only).
    """
    modules = list(modules)
    if isinstance(relu_gain_convs, bool):
        gain = {id(m) for module in modules for m in module.modules()} if relu_gain_convs else set()
    else:
        gain = {id(m) for module in relu_gain_convs for m in module.modules()}
    with torch.random.fork_rng(devices=_cuda_indices(modules)), torch.no_grad():
        torch.manual_seed(seed)
        for module in modules:
            for _, m in resettable(module, None):
                reset_module(m)
                if id(m) in gain and isinstance(m, nn.Conv2d):
                    _relu_gain_init(m)
                if isinstance(m, NoisyLinear):
                    m.reset_noise()
    for module in modules:
        for p in module.parameters():
            p.grad = None


# Layers whose train-mode forward differs from eval or changes their state, other than
# spectral norm (handled by stopping its power iteration).
_MODE_DEPENDENT = (NoisyLinear, nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)


def _freeze_module(module: nn.Module, group: str) -> None:
    for name, m in module.named_modules():
        if isinstance(m, _MODE_DEPENDENT):
            raise ValueError(
                f"cannot freeze group '{group}': {name or type(module).__name__} "
                f"({type(m).__name__}) behaves differently in train mode, so its output would "
                "still change; no transfer mode freezes such layers"
            )
    module.requires_grad_(False)
    for p in module.parameters():
        p.grad = None
    for m in module.modules():
        if not parametrize.is_parametrized(m):
            continue
        for plist in m.parametrizations.values():
            for p in plist:
                if hasattr(p, "n_power_iterations") and hasattr(p, "_u"):
                    # Spectral norm: no power iteration in train-mode forwards, so u, v and
                    # hence the effective weight W / sigma stay fixed (as in eval mode).
                    p.n_power_iterations = 0


def freeze_groups(network: nn.Module, spec: TransferSpec) -> list[str]:
    """Freeze ``spec.freeze`` in place (idempotent): no gradient, no state change in forwards.

    ``requires_grad=False`` and ``grad=None`` on the groups' parameters, and zero power
    iterations for their spectral norms (see the module docstring: a spectral-norm layer
    otherwise updates ``_u``/``_v`` and its effective weight in every train-mode forward).
    Survives ``network.train()``; not stored in a state dict (re-apply after loading one).

    Args:
        network: A ``QNetwork`` with the extractor of ``spec``.
        spec: The transfer mode.

    Returns:
        Names of the parameters frozen.

    Raises:
        ValueError: If a frozen group holds a noisy, batch-norm or dropout layer.
    """
    _check_extractor(network, spec)
    groups = module_groups(network)
    for g in sorted(spec.freeze):
        for module in groups[g]:
            _freeze_module(module, g)
    names = group_parameter_names(network)
    return [n for g in sorted(spec.freeze) for n in names[g]]


def _check_extractor(network: nn.Module, spec: TransferSpec) -> None:
    name = extractor_name(network)
    if name != spec.extractor:
        raise ValueError(
            f"transfer mode '{spec.name}' was validated for extractor '{spec.extractor}', but "
            f"the network has '{name}'"
        )


def apply_task_switch(
    network: nn.Module,
    spec: TransferSpec,
    task_index: int,
    seed: int,
    *,
    target: nn.Module | None = None,
) -> dict[str, Any]:
    """Prepare ``network`` for training task ``task_index`` (0-based) of a sequence.

    - Task 0: nothing is reset or frozen; the network is expected freshly built (for
      ``scratch`` that is the fresh init), everything trains.
    - Task k >= 1: every group of ``spec.reset`` is re-initialised (:func:`reinitialise`,
      seed :func:`reset_seed` ``(seed, k, group)``), then ``spec.freeze`` is frozen
      (:func:`freeze_groups`; idempotent, so those groups keep the weights they had at the
      end of task 0). All other groups keep their weights and train on.

    With ``target``: the target's frozen groups are frozen the same way (from task 1 on), the
    online state is copied into it (``load_state_dict``) and all its parameters are set to
    ``requires_grad=False``. With per-game heads, call :func:`swap_head` first.

    Args:
        network: The online ``QNetwork``.
        spec: From :func:`parse_mode` for this network's extractor.
        task_index: Index of the task about to be trained.
        seed: Run seed; with the same seed the reset weights are the same.
        target: The target network, synced to the online one after the switch.

    Returns:
        A report for logging: ``task_index``, ``mode``, ``extractor``, ``reset_groups``,
        ``frozen_groups``, ``reset_seeds`` (group -> seed), parameter names ``reset``,
        ``frozen`` and ``trainable`` (the last two from ``requires_grad`` after the switch),
        ``num_trainable`` / ``num_frozen`` (elements) and ``group_digests`` (group -> SHA-256
        of its state after the switch).

    Raises:
        ValueError: If ``task_index < 0`` or the network's extractor is not the spec's.
    """
    _check_extractor(network, spec)
    if task_index < 0:
        raise ValueError(f"task_index must be >= 0, got {task_index}")
    groups = module_groups(network)
    names = group_parameter_names(network)
    seeds: dict[str, int] = {}
    frozen_groups: list[str] = []
    if task_index >= 1:
        gain = [network.get_submodule(p) for p in _RELU_GAIN_CONVS.get(spec.extractor, ())]
        for g in sorted(spec.reset):
            seeds[g] = reset_seed(seed, task_index, g)
            reinitialise(groups[g], seeds[g], relu_gain_convs=gain)
        freeze_groups(network, spec)
        frozen_groups = sorted(spec.freeze)
    if target is not None:
        if task_index >= 1:
            freeze_groups(target, spec)
        target.load_state_dict(network.state_dict())
        target.requires_grad_(False)
    params = list(network.named_parameters())
    return {
        "task_index": task_index,
        "mode": spec.name,
        "extractor": spec.extractor,
        "reset_groups": sorted(seeds),
        "frozen_groups": frozen_groups,
        "reset_seeds": seeds,
        "reset": [n for g in sorted(seeds) for n in names[g]],
        "frozen": [n for n, p in params if not p.requires_grad],
        "trainable": [n for n, p in params if p.requires_grad],
        "num_trainable": sum(p.numel() for _, p in params if p.requires_grad),
        "num_frozen": sum(p.numel() for _, p in params if not p.requires_grad),
        "group_digests": group_digests(network),
    }


# --------------------------------------------------------------------------------------------
# Per-game heads
# --------------------------------------------------------------------------------------------


def _head_like(head: QHead, num_actions: int) -> QHead:
    """A freshly initialised ``QHead`` with ``head``'s configuration and ``num_actions``."""
    first = (head.value if head.dueling else head.q)[0]
    return QHead(
        head.features_dim,
        num_actions,
        hidden=first.out_features,
        dueling=head.dueling,
        noisy=head.noisy,
        num_atoms=head.num_atoms,
        sigma0=getattr(first, "sigma0", 0.1),
    )


def make_heads(
    network: nn.Module,
    games: Sequence[str],
    num_actions: int | Mapping[str, int] | None = None,
    seed: int = 0,
) -> nn.ModuleDict:
    """One Q head per game, for ``head=per_game``.

    The first game gets the network's current head itself (so task 0 is the same as with a
    shared head); every other game a freshly built head of the same configuration, seeded by
    ``(seed, game)``.

    Args:
        network: The online ``QNetwork``.
        games: The game sequence (repeats allowed; one head per distinct game).
        num_actions: Actions per head: one number for all, a game -> number mapping, or None
            for the network's ``num_actions``.
        seed: Seed of the new heads.

    Returns:
        ``ModuleDict`` game -> head. Register it on the task so all heads are checkpointed.

    Raises:
        ValueError: For no games, or a game name containing ``.`` (not a module name).
    """
    unique = list(dict.fromkeys(games))
    if not unique:
        raise ValueError("make_heads needs at least one game")
    bad = [g for g in unique if not g or "." in g]
    if bad:
        raise ValueError(f"game names must be non-empty and contain no '.': {bad}")
    current: QHead = network.head
    ref = next(current.parameters())
    heads = nn.ModuleDict()
    for i, game in enumerate(unique):
        if num_actions is None:
            n = network.num_actions
        elif isinstance(num_actions, Mapping):
            n = num_actions[game]
        else:
            n = num_actions
        if i == 0 and n == current.n_actions:
            heads[game] = current
            continue
        devices = [ref.device.index or 0] if ref.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(reset_seed(seed, -1, f"head/{game}"))
            head = _head_like(current, n).to(device=ref.device, dtype=ref.dtype)
        heads[game] = head.train(current.training)
    return heads


def swap_head(
    network: nn.Module,
    heads: nn.ModuleDict,
    game: str,
    *,
    target: nn.Module | None = None,
) -> None:
    """Install the head of ``game`` in the network (and a copy of it in the target).

    The head module itself becomes ``network.head`` (training goes to ``heads[game]``);
    ``network.num_actions`` follows it and the head takes the network's train/eval mode.
    The target gets an independent deep copy (``requires_grad=False``), which
    :func:`apply_task_switch` with ``target=`` then syncs. Rebuild the optimiser afterwards.

    Args:
        network: The online ``QNetwork``.
        heads: From :func:`make_heads`.
        game: The game of the next task.
        target: The target ``QNetwork``, if any.

    Raises:
        KeyError: For a game without a head (closest match and the choices).
        ValueError: If the head does not fit the network (features, atoms).
    """
    if game not in heads:
        raise KeyError(choices_msg("game", game, list(heads.keys())))
    head = heads[game]
    old = network.head
    if head.features_dim != old.features_dim or head.num_atoms != old.num_atoms:
        raise ValueError(
            f"head of '{game}' ({head.features_dim} features, {head.num_atoms} atoms) does not "
            f"fit the network ({old.features_dim} features, {old.num_atoms} atoms)"
        )
    network.head = head.train(network.training)
    network.num_actions = head.n_actions
    if target is not None:
        twin = copy.deepcopy(head).train(target.training)
        twin.requires_grad_(False)
        target.head = twin
        target.num_actions = head.n_actions

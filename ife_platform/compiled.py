"""``trainer.compile``: ``torch.compile`` for Rainbow's forwards that need no gradient.

A DER-profile update runs the network three times (the online net on the batch, with
gradients; the online and the target net on the n-step successors, without) and the actor
runs it once per agent step. On a 2-core CPU, compiling the whole network made the
no-gradient forwards about twice as fast in fp32 but the forward + backward slower than eager
(docs/benchmarks.md, "Tried and not adopted"), so this compiles only the forwards under
``torch.no_grad``: the double-Q target forwards and the acting forward. The forward with
gradients, the backward and the optimiser stay eager.

A compiled forward computes the same function with a different operator order (fused
kernels), so its outputs differ from eager at the level of float rounding, as a change of
memory layout does; ``ife bench --sections precision`` measures that distance over 1,000
updates. Side effects are kept: the extractor's ``attention_mask`` and, in training mode, the
spectral-norm power iteration on the convolution weights' ``u``/``v`` buffers.

Compiling needs a C++ compiler and Python's headers on a CPU (TorchInductor generates C++) and
Triton on a GPU;
:func:`compile_unavailable` says which is missing before a run starts. Each
graph compiles once per process (about 10-40 s on 2 cores; TorchInductor's on-disk cache
makes a second run's compiles faster): :func:`no_grad_forward` says which graphs a run needs.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sysconfig
import types
from collections.abc import Callable

from torch import Tensor, nn

#: ``forward(module, x) -> module(x)``: eager or compiled.
Forward = Callable[[nn.Module, Tensor], Tensor]

_CXX = ("c++", "g++", "clang++")


def _call(module: nn.Module, x: Tensor) -> Tensor:
    return module(x)


def compile_unavailable(accelerator: str) -> str | None:
    """Why ``torch.compile`` cannot run on ``accelerator`` here, or None when it can.

    Args:
        accelerator: the resolved Lightning accelerator (``cpu``, ``gpu``, ``cuda``, ...).
    """
    if accelerator in ("gpu", "cuda"):
        if importlib.util.find_spec("triton") is None:
            return "TorchInductor needs Triton on a GPU and `import triton` fails"
        return None
    if accelerator != "cpu":
        return f"trainer.compile supports cpu and gpu, not {accelerator!r}"
    names = [os.environ["CXX"]] if os.environ.get("CXX") else list(_CXX)
    if not any(shutil.which(n) for n in names):
        return (
            "TorchInductor generates C++ on a CPU and no C++ compiler was found "
            f"(looked for {', '.join(names)}); install g++ or set trainer.compile=false"
        )
    include = sysconfig.get_paths().get("include") or ""
    if not os.path.isfile(os.path.join(include, "Python.h")):
        return (
            "TorchInductor builds its C++ against Python's headers and Python.h is not in "
            f"{include or 'any include folder'}; install Python's development headers "
            "(python3-dev) or set trainer.compile=false"
        )
    return None


def no_grad_forward(compile: bool) -> Forward:
    """``forward(module, x)`` for forwards without gradients, compiled when ``compile``.

    The compiled function compiles a graph for each module it is called with (the online and
    the target net: two) and again for a new input shape, dtype, autocast state or train/eval
    mode (``dynamic=False``: the batch shapes of a run are fixed). A DER run compiles three:
    the learner's batch through both nets and the actor's ``num_envs`` through the online one.

    Args:
        compile: compile with ``torch.compile`` (default mode, TorchInductor), or return the
            plain call.
    """
    if not compile:
        return _call
    import torch

    # A code object of its own: dynamo keeps compiled graphs, and its limit of 8 recompiles,
    # per code object, and its guards pin each graph to one module. Sharing ``_call``'s code,
    # every task of a process (a continual sequence, a benchmark's rounds) would count against
    # one limit, past which dynamo runs the forward eager without a word.
    own = types.FunctionType(_call.__code__.replace(), _call.__globals__, "no_grad_forward")
    return torch.compile(own, dynamic=False)

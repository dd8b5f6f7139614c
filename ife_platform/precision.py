"""Numeric precision of a run: which ``trainer.precision`` a device really gets.

``bf16-mixed`` runs the forward passes under ``torch.autocast`` with bfloat16 (matrix products
and convolutions in bf16, reductions, softmax and the losses in fp32; parameters, gradients
and the optimiser stay fp32). On a GPU that is Lightning's standard mixed precision. On a CPU
it pays only where the cores have bfloat16 units (AVX-512 BF16 or AMX): there an IFE-Rainbow
update runs about 1.5-1.8x faster (docs/benchmarks.md); without them bf16 is emulated and
slower than fp32. So a CPU gets ``bf16-mixed`` only when :func:`cpu_bf16_supported` says the
units are there, and fp32 otherwise; fp16 (``16-mixed``) is a GPU precision and a CPU run
stays fp32.

fp32 (``32-true``) is the reference every reduced-precision default is checked against
(``ife bench --sections precision``, docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch

log = logging.getLogger(__name__)

#: The precision every run can fall back to.
REFERENCE_PRECISION = "32-true"


def cpu_bf16_supported() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX tiles), per torch."""
    cpu = getattr(torch, "cpu", None)
    checks = [
        getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    try:
        has_units = any(bool(check()) for check in checks if check is not None)
        return has_units and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without these probes
        return False


def resolve_precision(precision: str, accelerator: str, *, bf16_units: bool | None = None) -> str:
    """The precision a run on ``accelerator`` gets when its config asks for ``precision``.

    Args:
        precision: ``trainer.precision`` as configured (Lightning's names).
        accelerator: the resolved accelerator (``cpu``, ``gpu``, ...; not ``auto``).
        bf16_units: whether the CPU has bfloat16 units; detected when None.

    Returns:
        ``precision`` itself, except on a CPU: ``16-mixed`` becomes ``32-true``, and so does
        ``bf16-mixed`` when the CPU has no bfloat16 units (each with a warning).
    """
    if accelerator != "cpu" or "mixed" not in precision:
        return precision
    if precision.startswith("bf16"):
        if bf16_units is None:
            bf16_units = cpu_bf16_supported()
        if bf16_units:
            return precision
        log.warning(
            "trainer.precision=%s: this CPU has no bfloat16 units; the run is fp32", precision
        )
        return REFERENCE_PRECISION
    log.warning("trainer.precision=%s is a GPU precision; the CPU run is fp32", precision)
    return REFERENCE_PRECISION


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision: bf16 or fp16 for ``*-mixed``, else None."""
    if precision.startswith("bf16") and "mixed" in precision:
        return torch.bfloat16
    if precision.startswith("16") and "mixed" in precision:
        return torch.float16
    return None


@contextlib.contextmanager
def autocast(device: torch.device | str, dtype: torch.dtype | None) -> Iterator[None]:
    """``torch.autocast(device type, dtype)``, or nothing when ``dtype`` is None.

    For the forward passes Lightning does not wrap itself (acting in the training
    collector), so an agent acts in the precision it learns in.
    """
    if dtype is None:
        yield
        return
    with torch.autocast(torch.device(device).type, dtype=dtype):
        yield

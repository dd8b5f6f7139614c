"""Seeds in the ranges the libraries accept.

A run's ``seed`` is any non-negative integer, and the platform derives more seeds from it
(per rank, per env, per actor, ``seed + 12345`` for evaluation, TorchRL's per-worker hashes).
Each library accepts a different range:

- ale-py (``AtariVectorEnv.reset``, ``ALEInterface``'s ``random_seed``): C++ ``int``,
  ``[0, 2**31)``: :data:`ALE_SEED_BITS`;
- ``np.random.seed`` (also called in TorchRL's collector workers): ``[0, 2**32)``:
  :data:`NUMPY_SEED_BITS`;
- ``torch.manual_seed``, ``torch.Generator.manual_seed``: ``[0, 2**64)``:
  :data:`TORCH_SEED_BITS`;
- ``random.seed`` and ``np.random.default_rng``: any ``int >= 0`` (nothing to fold).

:func:`fold_seed` maps a seed into ``[0, 2**bits)``: values already inside are returned
unchanged (so every seed that worked before keeps its exact stream), values outside are
replaced by a hash of the value, so that large seeds neither crash nor collide with the small
seeds in common use (``2**31 + 5`` does not become ``5``, as a modulo would make it).
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = [
    "ALE_SEED_BITS",
    "NUMPY_SEED_BITS",
    "TORCH_SEED_BITS",
    "ale_env_seeds",
    "fold_seed",
]

ALE_SEED_BITS = 31
"""ale-py seeds are C++ ``int``: ``[0, 2**31)``."""

NUMPY_SEED_BITS = 32
"""``np.random.seed`` (the legacy global generator) accepts ``[0, 2**32)``."""

TORCH_SEED_BITS = 64
"""``torch.manual_seed`` and ``torch.Generator.manual_seed`` accept ``[0, 2**64)``."""


def fold_seed(seed: int, bits: int = ALE_SEED_BITS) -> int:
    """Map a non-negative integer into ``[0, 2**bits)``, deterministically.

    Seeds below ``2**bits`` are returned unchanged. Larger ones are hashed: the first 8 bytes
    of ``sha256(str(seed))``, read big-endian, keep their top ``bits`` bits (``bits <= 64``).

    Args:
        seed: any integer ``>= 0`` (``bool`` and integer-like values such as numpy ints too).
        bits: the width of the accepted range, 1 to 64.

    Returns:
        An integer in ``[0, 2**bits)``.

    Raises:
        ValueError: for a negative seed or ``bits`` outside 1..64.
    """
    seed = int(seed)
    if not 1 <= bits <= 64:
        raise ValueError(f"bits must be in 1..64, got {bits}")
    if seed < 0:
        raise ValueError(f"seeds must be >= 0, got {seed}")
    if seed < 2**bits:
        return seed
    digest = hashlib.sha256(str(seed).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - bits)


def ale_env_seeds(seed: int, num_envs: int) -> np.ndarray:
    """Seeds of ``num_envs`` emulators, env ``i`` getting ``seed + i`` folded into ale-py's range.

    Equal to ale-py's own ``np.arange(seed, seed + num_envs)`` whenever that is in range, so
    passing this array to ``AtariVectorEnv.reset(seed=...)`` changes nothing for small seeds.
    """
    return np.array([fold_seed(seed + i, ALE_SEED_BITS) for i in range(num_envs)], dtype=np.int64)

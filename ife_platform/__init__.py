"""IFE platform: the Interpretable Feature Extractor (Pham & Cangelosi, 2025) in deep RL agents.

Public entry points (docs/api.md): :func:`build_extractor` (``ife_platform.extractors``),
``ife_platform.config.compose`` (validated configs), ``ife_platform.experiment`` (train,
evaluate, explain, compare, load_agent), ``ife_platform.registry`` (agents),
``ife_platform.integrations.sb3`` (Stable-Baselines3) and the ``ife`` command.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["build_extractor"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import ife_platform` stays cheap (no torch import) for the CLI's config checks.
    if name == "build_extractor":
        from ife_platform.extractors import build_extractor

        return build_extractor
    raise AttributeError(f"module 'ife_platform' has no attribute {name!r}")

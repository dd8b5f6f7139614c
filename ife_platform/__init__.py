"""IFE platform: the Interpretable Feature Extractor (Pham & Cangelosi, 2025) in deep RL agents.

Public entry points: :func:`build_extractor` (``ife_platform.extractors``), the ``ife`` CLI
(``ife_platform.cli``) and the config schema (``ife_platform.config``).
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

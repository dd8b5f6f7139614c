"""IFE platform: the Interpretable Feature Extractor (Pham & Cangelosi, 2025) in deep RL agents."""

from ife_platform.extractors import build_extractor

__all__ = ["build_extractor"]
__version__ = "0.1.0"

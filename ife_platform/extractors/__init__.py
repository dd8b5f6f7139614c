"""Feature extractors: a small base class plus a plain registry dict.

``build_extractor(name, **kwargs)`` is the one entry point; ``EXTRACTORS`` maps each name to
its class. See docs/design.md ("Extractors") for the contract.
"""

from __future__ import annotations

import difflib
from typing import Any

from .a3c_cnn import A3CCNNExtractor
from .base import ATARI_SCREEN_HW, AttentionExtractor, FeatureExtractor
from .cnn_attention import CNNAttentionExtractor
from .der_cnn import DERCNNExtractor
from .ife import IFEExtractor
from .impala import ImpalaExtractor
from .nature_cnn import NatureCNNExtractor

EXTRACTORS: dict[str, type[FeatureExtractor]] = {
    "a3c_cnn": A3CCNNExtractor,
    "cnn_attention": CNNAttentionExtractor,
    "der_cnn": DERCNNExtractor,
    "ife": IFEExtractor,
    "impala": ImpalaExtractor,
    "nature_cnn": NatureCNNExtractor,
}


def build_extractor(name: str, **kwargs: Any) -> FeatureExtractor:
    """Build a registered extractor by name.

    Args:
        name: A key of ``EXTRACTORS``.
        **kwargs: Constructor arguments of that extractor (an unknown one raises TypeError).

    Returns:
        The extractor.

    Raises:
        ValueError: If ``name`` is not registered; the message gives the closest match first,
            then every valid name.
    """
    try:
        cls = EXTRACTORS[name]
    except KeyError:
        valid = sorted(EXTRACTORS)
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ";"
        raise ValueError(f"unknown extractor {name!r}{hint} valid: {', '.join(valid)}") from None
    return cls(**kwargs)


__all__ = [
    "ATARI_SCREEN_HW",
    "EXTRACTORS",
    "A3CCNNExtractor",
    "AttentionExtractor",
    "CNNAttentionExtractor",
    "DERCNNExtractor",
    "FeatureExtractor",
    "IFEExtractor",
    "ImpalaExtractor",
    "NatureCNNExtractor",
    "build_extractor",
]


#: ``model.*`` config keys that are extractor constructor arguments.
MODEL_KEYS = ("width", "hue_window", "spectral_norm")


def extractor_kwargs(model_cfg: Any) -> dict[str, Any]:
    """The keyword arguments the chosen extractor takes, from the ``model`` config group.

    Each key of :data:`MODEL_KEYS` is passed when the extractor's constructor has a
    parameter of that name (``width`` for IFE, IMPALA and the attention CNN, ``hue_window``
    for IFE, ...), so no extractor is special-cased and none silently ignores a key it has.
    """
    import inspect

    params = inspect.signature(EXTRACTORS[model_cfg.extractor].__init__).parameters
    return {key: model_cfg[key] for key in MODEL_KEYS if key in params}

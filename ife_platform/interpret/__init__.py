"""Interpretability suite: object ground truth, alignment/leakage/faithfulness metrics, saliency.

Definitions follow ``shared/reference/metrics.md``; the ``ife explain`` and ``ife compare``
commands (:mod:`ife_platform.interpret.explain`) put them together on evaluation episodes.
"""

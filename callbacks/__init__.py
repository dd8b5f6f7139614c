"""Lightning callbacks that only observe: evaluation, videos, artifacts, checks.

Installed as ``ife_platform.callbacks``.
"""

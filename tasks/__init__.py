"""Lightning modules that compose library parts into trainable tasks.

Installed as ``ife_platform.tasks``.
"""

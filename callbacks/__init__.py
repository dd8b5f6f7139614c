"""Lightning callbacks that only observe: logging, videos, evaluation, artifacts (``ife_platform.callbacks``)."""

"""Lightning modules that compose library parts into trainable tasks (installed as ``ife_platform.tasks``)."""

"""Rainbow building blocks."""

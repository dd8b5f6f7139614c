"""Adapters that put the platform's extractors into other RL libraries (optional extras)."""

"""Shared fixtures. Bundle fixtures (exported once per session) live in _bundles.py."""

from _bundles import tiny_bundle, vit_t_bundles, vit_t_model  # noqa: F401  (pytest fixtures)

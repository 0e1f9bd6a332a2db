"""Opening a bundle's two graphs with a backend: the glue between `bundle`, `backends` and `Predictor`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .backends import BACKEND_FORMATS, DEFAULT_BACKEND, open_session
from .bundle import Bundle, load_bundle
from .errors import BackendError
from .memory import release_free_memory
from .session import Session
from .spec import DECODER, ENCODER


def open_bundle(
    bundle: Bundle | str | Path, backend: str | None = None, **options: Any
) -> tuple[Bundle, Session, Session]:
    """(bundle, encoder session, decoder session); `backend` defaults to the format's usual engine."""
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    backend = backend or DEFAULT_BACKEND[bundle.format]
    if bundle.format not in BACKEND_FORMATS.get(backend, (bundle.format,)):
        raise BackendError(f"backend {backend!r} cannot run {bundle.format} bundles")
    encoder = open_session(backend, bundle.encoder.path, ENCODER, **options)
    decoder = open_session(backend, bundle.decoder.path, DECODER, **options)
    release_free_memory()  # the engines' parsing buffers, freed once the sessions hold the weights
    return bundle, encoder, decoder

"""The one interface every engine is driven through: a Session runs a graph on named numpy arrays.

Backends (`pocketsam.runtime.backends`) return Sessions over exported files; `pocketsam.export.reference` returns
Sessions over the PyTorch graphs. `Predictor`, `verify` and `bench` only ever see this protocol.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Session(Protocol):
    """A loaded graph. `run` takes every input named in the graph's spec and returns every output, by name."""

    input_names: list[str]
    output_names: list[str]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph once. Arrays are float32 with the shapes of `pocketsam.runtime.spec`."""
        ...


class RecordingSession:
    """Forwards to a Session and keeps a copy of every feed it runs on.

    Wrapped around a decoder, it lets the `Predictor` build exactly the feeds a real prompt produces (decoder
    calibration data, the benchmark's decoder-only case) instead of a second copy of the prompt encoding.
    """

    def __init__(self, inner: Session) -> None:
        self.inner = inner
        self.input_names, self.output_names = inner.input_names, inner.output_names
        self.feeds: list[dict[str, np.ndarray]] = []

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.feeds.append({k: np.array(v) for k, v in feeds.items()})
        return self.inner.run(feeds)

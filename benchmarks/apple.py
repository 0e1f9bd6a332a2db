"""The `apple` target: CoreML bundles timed under each compute unit (CPU_ONLY, CPU_AND_GPU, CPU_AND_NE, ALL) in this
process, interleaved with each other and with the PyTorch reference, through the local target's machinery.

The compute unit reaches the engine as the `coreml` backend's `compute_units` option. CoreML runs predictions only
on macOS; anywhere else this target stops with a message before opening anything.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pocketsam.runtime.backends.coreml import COMPUTE_UNITS
from pocketsam.runtime.bundle import load_bundle
from pocketsam.runtime.errors import BackendError
from pocketsam.runtime.loading import open_bundle

from .local import bench_contenders
from .schema import DEFAULT_PARTS


def check_macos(system: Callable[[], str] = platform.system) -> None:
    name = system()
    if name != "Darwin":
        raise BackendError(
            f"the apple target needs macOS: CoreML runs predictions only there (this is {name}). Run "
            "`pocketsam bench BUNDLE --target apple` on a Mac, or time other formats here with --target local"
        )


def apple_contenders(bundles: Sequence[Path], compute_units: Sequence[str] = COMPUTE_UNITS,
                     opener: Callable = open_bundle) -> list:
    """One contender per (CoreML bundle, compute unit), named `<bundle>@<unit>`."""
    from .local import bundle_contender

    unknown = [u for u in compute_units if u not in COMPUTE_UNITS]
    if unknown:
        raise BackendError(f"unknown compute unit(s) {unknown} (choose from {', '.join(COMPUTE_UNITS)})")
    contenders = []
    for path in bundles:
        bundle = load_bundle(path)
        if bundle.format != "coreml":
            raise BackendError(f"{path}: the apple target times CoreML bundles (this one is {bundle.format}); "
                               "use --target local for it")
        for unit in compute_units:
            contenders.append(bundle_contender(bundle, None, "coreml", name=f"{bundle.root.name}@{unit}",
                                               opener=opener, compute_units=unit))
    return contenders


def bench_apple(
    bundles: Sequence[Path],
    image: np.ndarray,
    parts: tuple[str, ...] = DEFAULT_PARTS,
    compute_units: Sequence[str] = COMPUTE_UNITS,
    warmup: int = 2,
    runs: int = 10,
    reference: str = "torch",
    progress: bool = True,
    opener: Callable = open_bundle,
    system: Callable[[], str] = platform.system,
    threads: int | None = None,
) -> list[dict]:
    """Rows for every CoreML bundle under every compute unit (and the reference), target "apple"."""
    check_macos(system)
    contenders = apple_contenders(bundles, compute_units, opener)
    return bench_contenders(contenders, image, parts, threads, warmup, runs, reference, progress, target="apple")

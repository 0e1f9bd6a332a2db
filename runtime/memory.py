"""Giving freed memory back to the operating system after the few large, short-lived allocations of the runtime.

glibc's malloc keeps memory a program frees for later reuse: after the encoder's ~200 MiB of activations (the
TinyViT stem's 64 MiB maps, allocated and freed during one `set_image`) and after loading a model (the parsed
protobuf is freed once the session holds the weights), the process's resident size stays at its peak although
nothing uses those pages. On a 2-4 GB board that is the difference between one Predictor and two. `malloc_trim(0)`
returns every free page to the OS in milliseconds (docs/performance.md section 8.1). Elsewhere (macOS, musl, Windows) there is no such call and this is a no-op; those allocators return large
blocks by themselves.
"""

from __future__ import annotations

import ctypes
import sys
from functools import lru_cache


@lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's `malloc_trim`, or None where the C library has none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the symbols already loaded into this process: its C library
    except (OSError, AttributeError):  # musl and other C libraries have no malloc_trim
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_memory() -> None:
    """Return the pages the process has freed to the OS (glibc `malloc_trim(0)`; a no-op elsewhere)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)

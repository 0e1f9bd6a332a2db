"""pocketsam: MobileSAM exported to ONNX, TFLite and CoreML bundles, run by a torch-free runtime with SamPredictor's
API, with every artifact's parity against the PyTorch reference measured and recorded.

Subpackages: `pocketsam.runtime` (numpy + pillow; what goes on the device), `pocketsam.export` (torch and the
converters), `pocketsam.benchmarks` (timing harness and reports). The `pocketsam` command is `pocketsam.cli`.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("pocketsam")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

"""pocketsam's error types. Every user mistake raises one of these with a one-line message; the CLI prints it on
stderr and exits with code 2, no traceback. They subclass ValueError/RuntimeError where SamPredictor code would
catch those."""

from __future__ import annotations


class PocketSamError(Exception):
    """Base of every error pocketsam raises on purpose (bad input, bad file, missing engine)."""


class InvalidImageError(PocketSamError, ValueError):
    """The image is not an HxWx3 uint8 array (or a readable image file) of at least 2x2 pixels."""


class InvalidPromptError(PocketSamError, ValueError):
    """Points, labels, box or mask input of the wrong shape, value or range."""


class BundleError(PocketSamError, ValueError):
    """A bundle folder or model file is missing, truncated, tampered with, or of another spec version."""


class MissingExtraError(PocketSamError, ImportError):
    """A command or function needs a package the install lacks (torch for export, scikit-image for sample photos);
    the message names the pip extra (or package) that brings it."""


class MissingEngineError(MissingExtraError):
    """The inference engine a backend needs is not installed; the message names the pip extra."""


class BackendError(PocketSamError, RuntimeError):
    """An engine refused a model or an option (unknown delegate, unsupported platform, I/O mismatch)."""


class CheckpointError(PocketSamError, ValueError):
    """A checkpoint file is unreadable or its tensors do not match MobileSAM vit_t's layout."""

"""`pocketsam verify --reference torch`: rebuild the exact PyTorch fp32 model a bundle came from and record fresh
references on the user's images (the probe only covers its one photo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pocketsam.runtime.bundle import Bundle, sha256_of
from pocketsam.runtime.errors import CheckpointError
from pocketsam.runtime.verify import record_reference

from .calibration import PROBE_PHOTO, sample_photo
from .model import MobileSam, build_mobile_sam
from .reference import reference_sessions


def model_for_bundle(bundle: Bundle, checkpoint: Path | None = None) -> MobileSam:
    """The model the bundle was exported from: same synthetic seed and config, or the same checkpoint file."""
    origin = bundle.manifest["checkpoint"]
    config = bundle.manifest.get("config", "vit_t")
    if origin.get("kind") == "random":
        if checkpoint is not None:
            raise CheckpointError(f"{bundle.root} was exported from {origin['description']}, not from a checkpoint")
        return build_mobile_sam(checkpoint=None, seed=int(origin["seed"]), config=config)
    if checkpoint is None:
        raise CheckpointError(
            f"{bundle.root} was exported from a checkpoint (sha256 {origin['sha256'][:12]}…): pass it with --checkpoint"
        )
    actual = sha256_of(Path(checkpoint))
    if actual != origin["sha256"]:
        raise CheckpointError(
            f"{checkpoint}: sha256 {actual[:12]}… is not the bundle's checkpoint {origin['sha256'][:12]}…"
        )
    return build_mobile_sam(checkpoint=checkpoint, config=config)


def torch_references(
    bundle: Bundle, images: list[tuple[str, np.ndarray]], checkpoint: Path | None = None
) -> list[tuple[str, dict[str, np.ndarray]]]:
    """(label, reference) for each image (default: the probe photo), recorded by the PyTorch fp32 model."""
    model = model_for_bundle(bundle, checkpoint)
    encoder, decoder = reference_sessions(model)
    images = images or [(PROBE_PHOTO, sample_photo(PROBE_PHOTO))]
    # A fixed-shape decoder (TFLite) pads prompts: the reference is padded the same way, as the export-time probe is.
    return [(label, record_reference(image, encoder, decoder, decoder_points=bundle.decoder_points))
            for label, image in images]

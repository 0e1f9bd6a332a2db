"""MobileSAM (TinyViT-5M encoder, SAM prompt encoder, two-way transformer, mask decoder) written for export.

Public API:
- `build_mobile_sam(checkpoint=None, seed=0, config="vit_t") -> MobileSam` (eval mode, fp32).
- `MobileSam`, `MODEL_BUILDERS` (config name -> builder of a default-initialized model), `CONFIGS`.
Frames and shapes are documented on each module; graphs to export are in `pocketsam.export.graphs`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from .mask_decoder import MaskDecoder
from .prompt_encoder import PositionEmbeddingRandom, PromptEncoder
from .sam import MODEL_BUILDERS, MobileSam, build_tiny, build_vit_t
from .tiny_vit import TinyViT, TinyViTConfig
from .transformer import TwoWayTransformer

CONFIGS = tuple(MODEL_BUILDERS)


class RandomWeightsWarning(UserWarning):
    """Emitted when a model is built without a checkpoint: its masks are meaningless (plumbing/benchmarks only)."""


def build_mobile_sam(
    checkpoint: str | os.PathLike[str] | None = None, seed: int = 0, config: str = "vit_t"
) -> MobileSam:
    """Build MobileSAM in eval mode (fp32).

    Args:
      checkpoint: path to a state dict (the official `mobile_sam.pt` for "vit_t"), loaded strictly after a layout
        check (`CheckpointError` on mismatch). None: deterministic synthetic weights from `seed`, with a
        `RandomWeightsWarning` "random weights, seed N".
      seed: seed of the synthetic weights (ignored with a checkpoint).
      config: "vit_t" (MobileSAM) or "tiny" (shrunk, same I/O shapes).
    """
    from ..checkpoint import load_checkpoint, load_into, synthetic_state_dict  # lazy: checkpoint imports us

    if config not in MODEL_BUILDERS:
        raise ValueError(f"unknown model config {config!r}; choose one of {', '.join(CONFIGS)}")
    model = MODEL_BUILDERS[config]()
    if checkpoint is None:
        warnings.warn(f"random weights, seed {seed}", RandomWeightsWarning, stacklevel=2)
        state = synthetic_state_dict(seed, config=config)
        source = f"random weights, seed {seed}"
    else:
        state = load_checkpoint(checkpoint, check=(config == "vit_t"))
        source = str(Path(checkpoint))
    load_into(model, state, source=source)
    return model.eval()


__all__ = [
    "CONFIGS",
    "MODEL_BUILDERS",
    "MaskDecoder",
    "MobileSam",
    "PositionEmbeddingRandom",
    "PromptEncoder",
    "RandomWeightsWarning",
    "TinyViT",
    "TinyViTConfig",
    "TwoWayTransformer",
    "build_mobile_sam",
    "build_tiny",
    "build_vit_t",
]

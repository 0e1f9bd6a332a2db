"""`MobileSam`: the three parts together, and the builders of the two configurations.

Configurations (plain dict of builder functions, `MODEL_BUILDERS`):
- "vit_t": MobileSAM exactly (TinyViT-5M encoder; 256-dim prompt encoder; 2-layer two-way transformer, MLP 2048;
  IoU head 3x256). State-dict compatible with the official `mobile_sam.pt` (439 tensors).
- "tiny": the same I/O shapes (1024x1024 in, 1x256x64x64 embeddings, Bx4x256x256 masks) with a shrunk TinyViT
  (dims 16/24/32/48, one block per stage, one head) and a shrunk decoder (1 layer, MLP 64, hidden 32), for plumbing
  tests that must run in well under a second.
The builders return modules with torch's default initialization; weights come from `build_mobile_sam`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from pocketsam.runtime import spec

from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .tiny_vit import TinyViT, TinyViTConfig
from .transformer import TwoWayTransformer


class MobileSam(nn.Module):
    """Image encoder + prompt encoder + mask decoder, with SAM's pixel normalization constants from the spec.

    `pixel_mean` / `pixel_std` are non-persistent 3x1x1 buffers (RGB, 0..255 scale), never read from checkpoints.
    Use `pocketsam.export.graphs.EncoderGraph` / `DecoderGraph` to run or export it.
    """

    mask_threshold: float = spec.MASK_THRESHOLD
    image_format: str = "RGB"

    def __init__(self, image_encoder: TinyViT, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.register_buffer("pixel_mean", torch.tensor(spec.PIXEL_MEAN, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(spec.PIXEL_STD, dtype=torch.float32).view(-1, 1, 1), False)


def _prompt_encoder() -> PromptEncoder:
    return PromptEncoder(
        embed_dim=spec.EMBED_DIM,
        image_embedding_size=(spec.EMBED_SIZE, spec.EMBED_SIZE),
        input_image_size=(spec.IMAGE_SIZE, spec.IMAGE_SIZE),
        mask_in_chans=16,
    )


def build_vit_t() -> MobileSam:
    """MobileSAM `vit_t`, default-initialized, in eval mode."""
    encoder = TinyViT(TinyViTConfig(img_size=spec.IMAGE_SIZE, neck_dim=spec.EMBED_DIM))
    decoder = MaskDecoder(
        transformer_dim=spec.EMBED_DIM,
        transformer=TwoWayTransformer(depth=2, embedding_dim=spec.EMBED_DIM, mlp_dim=2048, num_heads=8),
        num_multimask_outputs=spec.NUM_MASK_OUTPUTS - 1,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return MobileSam(encoder, _prompt_encoder(), decoder).eval()


def build_tiny() -> MobileSam:
    """A shrunk model with vit_t's I/O shapes (for fast plumbing tests), default-initialized, in eval mode."""
    encoder = TinyViT(
        TinyViTConfig(
            img_size=spec.IMAGE_SIZE,
            num_classes=10,
            embed_dims=(16, 24, 32, 48),
            depths=(1, 1, 1, 1),
            num_heads=(1, 1, 1, 2),
            window_sizes=(7, 7, 14, 7),
            mlp_ratio=2.0,
            mbconv_expand_ratio=2.0,
            neck_dim=spec.EMBED_DIM,
        )
    )
    decoder = MaskDecoder(
        transformer_dim=spec.EMBED_DIM,
        transformer=TwoWayTransformer(depth=1, embedding_dim=spec.EMBED_DIM, mlp_dim=64, num_heads=8),
        num_multimask_outputs=spec.NUM_MASK_OUTPUTS - 1,
        iou_head_depth=3,
        iou_head_hidden_dim=32,
        hypernet_hidden_dim=32,
    )
    return MobileSam(encoder, _prompt_encoder(), decoder).eval()


MODEL_BUILDERS: dict[str, Callable[[], MobileSam]] = {"vit_t": build_vit_t, "tiny": build_tiny}

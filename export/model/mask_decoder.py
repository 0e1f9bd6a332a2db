"""SAM's mask decoder: image embedding + prompt embeddings -> 4 low-res mask logits and 4 IoU predictions."""

from __future__ import annotations

import torch
from torch import nn

from .common import MLP, LayerNorm2d


class MaskDecoder(nn.Module):
    """Predicts masks with a two-way transformer and per-mask-token hypernetworks.

    Args:
      transformer_dim: channel dim of the transformer (256).
      transformer: a `TwoWayTransformer`.
      num_multimask_outputs: masks besides the single-mask output (3).
      iou_head_depth / iou_head_hidden_dim: IoU MLP (3 / 256).
      hypernet_hidden_dim: hidden width of the hypernetwork MLPs (upstream: transformer_dim).
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        hypernet_hidden_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        hidden = hypernet_hidden_dim or transformer_dim
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, hidden, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All masks for B prompt sets on one image.

        Args:
          image_embeddings: 1x256x64x64, the encoder's output (broadcast to the B prompt sets).
          image_pe: 1x256x64x64, `prompt_encoder.get_dense_pe()`.
          sparse_prompt_embeddings: BxNx256 point/box embeddings.
          dense_prompt_embeddings: Bx256x64x64 (or 1x...) mask embeddings.
        Returns:
          masks: Bx4x256x256 logits in the padded 1024 frame (index 0 single-mask, 1..3 multimask).
          iou_pred: Bx4.
        """
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)  # (1+M)x256
        output_tokens = output_tokens.unsqueeze(0).expand(sparse_prompt_embeddings.shape[0], -1, -1)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)
        # Upstream repeat_interleaves the (batch-1) image embedding to B; a broadcasting add is the same thing
        # and exports as one Add. Expand to the token batch in case the dense embedding has batch 1.
        src = (image_embeddings + dense_prompt_embeddings).expand(tokens.shape[0], -1, -1, -1)
        c, h, w = src.shape[1], src.shape[2], src.shape[3]

        hs, src = self.transformer(src, image_pe, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]

        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(-1, c, h, w))  # Bx32x256x256
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )  # Bx4x32
        uc, uh, uw = upscaled.shape[1], upscaled.shape[2], upscaled.shape[3]
        masks = (hyper_in @ upscaled.reshape(-1, uc, uh * uw)).reshape(-1, self.num_mask_tokens, uh, uw)
        iou_pred = self.iou_prediction_head(iou_token_out)
        return masks, iou_pred

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Upstream's selection: masks 1..3 if `multimask_output` else mask 0 (eager use only)."""
        masks, iou_pred = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        sl = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, sl], iou_pred[:, sl]

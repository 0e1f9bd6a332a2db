"""The TinyViT encoder rewritten for LiteRT/XNNPACK, with the model's own parameters: same function, fewer copies.

The fast encoder graph (`EncoderGraph(model, fast=True)`, exported by default for TFLite and ONNX) runs this
instead of the upstream-shaped `pocketsam.export.model.tiny_vit` modules, which stay the PyTorch reference every
bundle is verified against. Every change is a reordering of the same arithmetic (parity is tested like any conversion).

Why (measured with `pocketsam profile`, docs/performance.md §5): in the upstream-shaped graph
~20 % of the LiteRT encoder's time was layout copies (TRANSPOSE, RESHAPE, SLICE) around the products, not the
products themselves:

- Attention splits one qkv projection into heads and moves the head axis in front (three 4-D TRANSPOSEs of every
  window tensor, one more to merge the heads back, and RESHAPEs to add the 4-D bias). Here each head has its own
  three projections (row slices of the same `qkv` weight, folded to constants at export) that write tokens-last
  tensors straight into per-head BATCH_MATMULs; `q @ k^T` takes k transposed as an operand flag, the per-head
  bias is a plain broadcast add, and the heads meet in one CONCATENATION before `proj`.
- The local depthwise conv and the patch merges go tokens -> NCHW -> conv. Written as `reshape(B, H, W, C)` +
  `permute`, the converter's own NCHW<->NHWC transposes cancel against ours (upstream's `transpose(1, 2)` +
  `reshape` put a RESHAPE between them): four full-tensor TRANSPOSEs fewer per block.

Per-block LiteRT latency, 2 threads (isolated blocks, upstream-shaped -> this): stage 1 83 -> 59 ms, stage 2
35 -> 29 ms, stage 3 106 -> 85 ms; whole encoder ~15 % faster. onnxruntime gains less (5-9 %: it already fuses
the reshapes and transposes away), but gains: both export it by default, except TFLite full int8 (its
QUANTIZE/DEQUANTIZE islands triple around per-head projections); CoreML keeps the upstream-shaped graph until it
is measured on a Mac (`FormatExporter.default_encoder_graph`, `encoder_graph_by_precision`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .model.tiny_vit import Attention, BasicLayer, ConvLayer, PatchMerging, TinyViT, TinyViTBlock
from .model.tiny_vit import window_partition, window_reverse


def tokens_to_nchw(x: Tensor, r: int) -> Tensor:
    """B x (r*r) x C tokens (row-major) -> B x C x r x r, as reshape to NHWC + permute (cancels in LiteRT)."""
    return x.reshape(-1, r, r, x.shape[-1]).permute(0, 3, 1, 2)


def nchw_to_tokens(x: Tensor) -> Tensor:
    """B x C x H x W -> B x (H*W) x C tokens (row-major), as permute to NHWC + reshape."""
    _, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(-1, h * w, c)


def window_attention(attn: Attention, x: Tensor) -> Tensor:
    """`attn(x)` on Bw x N x C window tokens, one head at a time (no head-axis transposes).

    Upstream's qkv rows are laid out per head as [q (key_dim), k (key_dim), v (d)]; each head's rows are sliced
    from the shared parameter (constants after export) and the query scale is folded into its weights.
    """
    kd, d, heads = attn.key_dim, attn.d, attn.num_heads
    x = attn.norm(x)
    w = attn.qkv.weight.view(heads, 2 * kd + d, -1)
    b = attn.qkv.bias.view(heads, 2 * kd + d)
    bias = attn.attention_bias()  # heads x N x N
    outs = []
    for h in range(heads):  # unrolled at export: heads is a config constant
        q = F.linear(x, w[h, :kd] * attn.scale, b[h, :kd] * attn.scale)
        k = F.linear(x, w[h, kd : 2 * kd], b[h, kd : 2 * kd])
        v = F.linear(x, w[h, 2 * kd :], b[h, 2 * kd :])
        p = (q @ k.transpose(1, 2) + bias[h]).softmax(dim=-1)
        outs.append(p @ v)
    return attn.proj(torch.cat(outs, dim=-1))


def fast_block(blk: TinyViTBlock, x: Tensor) -> Tensor:
    """`blk(x)` on B x L x C tokens of its resolution x resolution grid."""
    r, ws, pad, nw = blk.resolution, blk.window_size, blk.pad, blk.n_windows
    shortcut = x
    if r == ws:  # config-time constant: the grid is one window
        x = window_attention(blk.attn, x)
    else:
        x = x.reshape(-1, r, r, blk.dim)
        if pad > 0:
            x = F.pad(x, (0, 0, 0, pad, 0, pad))
        x = window_reverse(window_attention(blk.attn, window_partition(x, ws, nw, nw)), ws, nw, nw)
        if pad > 0:
            x = x[:, :r, :r]
        x = x.reshape(-1, r * r, blk.dim)
    x = shortcut + x
    x = nchw_to_tokens(blk.local_conv(tokens_to_nchw(x, r)))
    return x + blk.mlp(x)


def fast_merge(merge: PatchMerging, x: Tensor) -> Tensor:
    """`merge(x)`: B x C x H x W -> B x L x C' tokens."""
    x = merge.act(merge.conv1(x))
    x = merge.act(merge.conv2(x))
    return nchw_to_tokens(merge.conv3(x))


class FastTinyViT(nn.Module):
    """`encoder(x)` (B x 3 x S x S normalized image -> B x 256 x S/16 x S/16) with the rewrites above.

    Holds the encoder itself (parameters shared, no copies), so later weight changes and `.half()` apply.
    """

    def __init__(self, encoder: TinyViT) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: Tensor) -> Tensor:
        enc = self.encoder
        x = enc.patch_embed(x)
        for layer in enc.layers:
            if isinstance(layer, ConvLayer):
                for mb in layer.blocks:
                    x = mb(x)
                x = fast_merge(layer.downsample, x)
                continue
            assert isinstance(layer, BasicLayer)
            for blk in layer.blocks:
                x = fast_block(blk, x)
            if layer.downsample is not None:  # construction-time constant
                x = fast_merge(layer.downsample, tokens_to_nchw(x, layer.resolution))
        return enc.neck(tokens_to_nchw(x, enc.out_resolution))

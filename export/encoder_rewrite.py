"""The TinyViT encoder rewritten for LiteRT/XNNPACK, with the model's own parameters: same function, fewer copies.

The fast encoder graph (`EncoderGraph(model, fast=True)`, exported by default for TFLite and ONNX) runs this
instead of the upstream-shaped `pocketsam.export.model.tiny_vit` modules, which stay the PyTorch reference every
bundle is verified against. Every change is a reordering of the same arithmetic (parity is tested like any conversion).

Why (measured with `pocketsam profile`; the figures are in docs/performance.md): in the upstream-shaped graph
a fifth of the LiteRT encoder's time was layout copies (TRANSPOSE, RESHAPE, SLICE) around the products, not the
products themselves:

- Attention splits one qkv projection into heads and moves the head axis in front (three 4-D TRANSPOSEs of every
  window tensor, one more to merge the heads back, and RESHAPEs to add the 4-D bias). Here each head has its own
  three projections (row slices of the same `qkv` weight, folded to constants at export) that write tokens-last
  tensors straight into per-head BATCH_MATMULs; `q @ k^T` takes k transposed as an operand flag, the per-head
  bias is a plain broadcast add, and the heads meet in one CONCATENATION before `proj`.
- The local depthwise conv and the patch merges go tokens -> NCHW -> conv. Written as `reshape(B, H, W, C)` +
  `permute`, the converter's own NCHW<->NHWC transposes cancel against ours (upstream's `transpose(1, 2)` +
  `reshape` put a RESHAPE between them): four full-tensor TRANSPOSEs fewer per block.

Every stage runs faster under LiteRT this way; onnxruntime gains less (it already fuses the reshapes and
transposes away), but does not lose: both export it by default, except TFLite full int8 (its
QUANTIZE/DEQUANTIZE islands triple around per-head projections); CoreML keeps the upstream-shaped graph until it
is measured on a Mac (`FormatExporter.default_encoder_graph`, `encoder_graph_by_precision`).

Two variants (`EncoderRewrite`), each measured where it is used (docs/performance.md):
- `grouped_qkv` (graph "fast-grouped"): one projection for the queries of all heads, one for the keys, one for
  the values, sliced per head. Under dynamic-range int8 every FULLY_CONNECTED quantizes its float input on the
  fly, so per-head projections quantized the same window tensor 3 x heads times; grouped, three times. Faster
  for LiteRT int8-dynamic, slightly slower in fp32 (the slices copy), so only int8-dynamic uses it.
- `same_stride2` (LiteRT exports): a 3x3 stride-2 conv with padding 1 on an even-sized input never reads its
  bottom/right padding, so it equals a 4x4 kernel (the 3x3 one, zero-extended on the bottom/right) whose
  symmetric padding 1 is TFLite's SAME. litert-torch then folds the padding into the conv instead of a PAD op
  that copies the whole input (costly for the 1024x1024x3 image under XNNPACK). Used where the extra taps are
  cheap: the 3-channel first conv and the depthwise convs of the patch merges.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .model.tiny_vit import Attention, BasicLayer, ConvLayer, PatchEmbed, PatchMerging, TinyViT, TinyViTBlock
from .model.tiny_vit import window_partition, window_reverse


def tokens_to_nchw(x: Tensor, r: int) -> Tensor:
    """B x (r*r) x C tokens (row-major) -> B x C x r x r, as reshape to NHWC + permute (cancels in LiteRT)."""
    return x.reshape(-1, r, r, x.shape[-1]).permute(0, 3, 1, 2)


def nchw_to_tokens(x: Tensor) -> Tensor:
    """B x C x H x W -> B x (H*W) x C tokens (row-major), as permute to NHWC + reshape."""
    _, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(-1, h * w, c)


@dataclass(frozen=True)
class EncoderRewrite:
    """Which variant of the fast graph to build (module docstring); both off is the plain fast graph."""

    grouped_qkv: bool = False  # q, k, v of all heads as three projections, sliced per head (int8-dynamic)
    same_stride2: bool = False  # cheap stride-2 3x3 convs as 4x4 SAME convs: no PAD op in LiteRT


def _projections(attn: Attention, x: Tensor, grouped: bool) -> list[tuple[Tensor, Tensor, Tensor]]:
    """(q, k, v) of every head for Bw x N x C normalized window tokens, the query scale folded into q's weights.

    Upstream's qkv rows are laid out per head as [q (key_dim), k (key_dim), v (d)]; the rows are sliced from the
    shared parameter (constants after export): per head (`grouped=False`), or gathered into one q, one k and one
    v projection over all heads whose outputs are then sliced per head.
    """
    kd, d, heads = attn.key_dim, attn.d, attn.num_heads
    w = attn.qkv.weight.view(heads, 2 * kd + d, -1)
    b = attn.qkv.bias.view(heads, 2 * kd + d)
    if not grouped:
        return [(F.linear(x, w[h, :kd] * attn.scale, b[h, :kd] * attn.scale),
                 F.linear(x, w[h, kd : 2 * kd], b[h, kd : 2 * kd]),
                 F.linear(x, w[h, 2 * kd :], b[h, 2 * kd :])) for h in range(heads)]
    q = F.linear(x, (w[:, :kd] * attn.scale).reshape(heads * kd, -1), (b[:, :kd] * attn.scale).reshape(-1))
    k = F.linear(x, w[:, kd : 2 * kd].reshape(heads * kd, -1), b[:, kd : 2 * kd].reshape(-1))
    v = F.linear(x, w[:, 2 * kd :].reshape(heads * d, -1), b[:, 2 * kd :].reshape(-1))
    return [(q[..., h * kd : (h + 1) * kd], k[..., h * kd : (h + 1) * kd], v[..., h * d : (h + 1) * d])
            for h in range(heads)]


def window_attention(attn: Attention, x: Tensor, grouped: bool = False) -> Tensor:
    """`attn(x)` on Bw x N x C window tokens, one head at a time (no head-axis transposes)."""
    bias = attn.attention_bias()  # heads x N x N
    outs = []
    for h, (q, k, v) in enumerate(_projections(attn, attn.norm(x), grouped)):  # unrolled at export
        p = (q @ k.transpose(1, 2) + bias[h]).softmax(dim=-1)
        outs.append(p @ v)
    return attn.proj(torch.cat(outs, dim=-1))


def conv_bn(m: nn.Module, x: Tensor, same_stride2: bool = False) -> Tensor:
    """`m(x)` for a Conv2d_BN (eval), the BatchNorm folded into the conv's weights and bias.

    `same_stride2` (3x3, stride 2, padding 1, even input): as a 4x4 kernel zero-extended on the bottom/right
    (module docstring): output row i reads input rows 2i-1 .. 2i+2, the last with weight 0, which is exactly the
    3x3 conv's 2i-1 .. 2i+1."""
    conv, bn = m.c, m.bn
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    w = conv.weight * scale.reshape(-1, 1, 1, 1)
    b = bn.bias - bn.running_mean * scale
    stride, pad = conv.stride, conv.padding
    if same_stride2 and conv.kernel_size == (3, 3) and stride == (2, 2) and pad == (1, 1) \
            and x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0:
        # zero-extended by concatenation, which the converter folds into the constant (a PAD of the weight stayed
        # a runtime op in litert-torch, and XNNPACK then repacked the filter on every call)
        o, i = w.shape[0], w.shape[1]
        w = torch.cat((w, w.new_zeros(o, i, 3, 1)), dim=3)
        w = torch.cat((w, w.new_zeros(o, i, 1, 4)), dim=2)
    return F.conv2d(x, w, b, stride, pad, groups=conv.groups)


def fast_block(blk: TinyViTBlock, x: Tensor, grouped: bool = False) -> Tensor:
    """`blk(x)` on B x L x C tokens of its resolution x resolution grid."""
    r, ws, pad, nw = blk.resolution, blk.window_size, blk.pad, blk.n_windows
    shortcut = x
    if r == ws:  # config-time constant: the grid is one window
        x = window_attention(blk.attn, x, grouped)
    else:
        x = x.reshape(-1, r, r, blk.dim)
        if pad > 0:
            x = F.pad(x, (0, 0, 0, pad, 0, pad))
        x = window_reverse(window_attention(blk.attn, window_partition(x, ws, nw, nw), grouped), ws, nw, nw)
        if pad > 0:
            x = x[:, :r, :r]
        x = x.reshape(-1, r * r, blk.dim)
    x = shortcut + x
    x = nchw_to_tokens(blk.local_conv(tokens_to_nchw(x, r)))
    return x + blk.mlp(x)


def fast_merge(merge: PatchMerging, x: Tensor, same_stride2: bool = False) -> Tensor:
    """`merge(x)`: B x C x H x W -> B x L x C' tokens (`same_stride2`: its depthwise conv, see `conv_bn`)."""
    x = merge.act(merge.conv1(x))
    x = merge.act(conv_bn(merge.conv2, x, same_stride2) if same_stride2 else merge.conv2(x))
    return nchw_to_tokens(merge.conv3(x))


class FastPatchEmbed(nn.Module):
    """`embed(x)`; `same_stride2`: its first, 3-channel conv as in `conv_bn` (the second one, 32 -> 64 channels,
    would pay 16/9 of its 1.2 G multiply-adds to save one PAD, so it keeps its PAD).

    A module (not a function) so that converters naming ops by module path keep them in a "PatchEmbed" scope,
    which the TFLite int8-dynamic recipe keeps float (`tflite.recipes.TFLITE_RECIPES`)."""

    def __init__(self, embed: PatchEmbed, same_stride2: bool) -> None:
        super().__init__()
        self.embed = embed
        self.same_stride2 = same_stride2

    def forward(self, x: Tensor) -> Tensor:
        if not self.same_stride2:  # construction-time constant
            return self.embed(x)
        conv1, act, conv2 = self.embed.seq
        return conv2(act(conv_bn(conv1, x, same_stride2=True)))


class FastTinyViT(nn.Module):
    """`encoder(x)` (B x 3 x S x S normalized image -> B x 256 x S/16 x S/16) with the rewrites above.

    Holds the encoder itself (parameters shared, no copies), so later weight changes and `.half()` apply.
    """

    def __init__(self, encoder: TinyViT, rewrite: EncoderRewrite = EncoderRewrite()) -> None:
        super().__init__()
        self.encoder = encoder
        self.rewrite = rewrite
        self.patch_embed = FastPatchEmbed(encoder.patch_embed, rewrite.same_stride2)

    def extra_repr(self) -> str:  # in repr(module): the TFLite conversion cache keys on it
        return f"rewrite={self.rewrite}"

    def forward(self, x: Tensor) -> Tensor:
        enc, grouped, same = self.encoder, self.rewrite.grouped_qkv, self.rewrite.same_stride2
        x = self.patch_embed(x)
        for layer in enc.layers:
            if isinstance(layer, ConvLayer):
                for mb in layer.blocks:
                    x = mb(x)
                x = fast_merge(layer.downsample, x, same)
                continue
            assert isinstance(layer, BasicLayer)
            for blk in layer.blocks:
                x = fast_block(blk, x, grouped)
            if layer.downsample is not None:  # construction-time constant
                x = fast_merge(layer.downsample, tokens_to_nchw(x, layer.resolution), same)
        return enc.neck(tokens_to_nchw(x, enc.out_resolution))

"""The mask decoder rewritten for speed, with the model's own parameters: same function, fewer FLOPs, no NCHW.

The fast decoder graph (`DecoderGraph(model, fast=True)`, exported by default for ONNX) runs this instead of the
upstream-shaped modules in `pocketsam.export.model`, which stay the PyTorch reference every bundle is verified
against (docs/performance.md has the measurements). Each rewrite is exact
in real arithmetic; in float it differs only by rounding (tests hold it to the reference).

Why: in SAM's two-way transformer every cross attention has a few prompt tokens on one side (N = 5 output tokens
+ the points, ~7) and 4096 image tokens on the other, and the 256 -> 128 projections of the image side dominate
(each 4096x256x128 multiply-adds; 12 of them). Moving the projection to the prompt side instead is exact:

- tokens -> image: scores_h = q_h (X Wk_h^T + bk_h)^T = (q_h Wk_h) X^T + const_row, and softmax ignores constants
  along a row; out_h = P_h (X Wv_h^T + bv_h) = (P_h X) Wv_h^T + bv_h because rows of P sum to 1.
- image -> tokens: scores_h = (X Wq_h^T + bq_h) k_h^T = X (Wq_h^T k_h^T) + bq_h k_h^T, and
  out = sum_h P_h v_h Wo_h^T + bo = [P_1 .. P_H] [v_1 Wo_1^T; ..; v_H Wo_H^T] + bo.
With H = 8 heads and N prompt tokens, each image-side product becomes 4096 x 256 x (8 N) instead of
4096 x 256 x 128: about 2.3x fewer multiply-adds for N = 7 (still fewer up to N = 15), and no head split/merge
transposes of 4096-token tensors.

The output upscaling (two stride-2, kernel-2 transposed convs) is done on tokens: a kernel-2 stride-2 transposed
conv has no overlapping taps, so it is a matmul to (2, 2, C_out) per pixel followed by a depth-to-space; the
LayerNorm2d between them is then a plain LayerNorm over the last axis, and the hypernetwork product is taken before
the last depth-to-space, so only the 4 final masks are rearranged. Every tensor stays 4-D or less.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .model.mask_decoder import MaskDecoder
from .model.transformer import Attention, TwoWayTransformer


def _heads(attn: Attention) -> tuple[int, int]:
    return attn.num_heads, attn.head_dim


# The small per-head products against a weight (H x .. x ..) are written with the heads as the *only* batch axis
# on both operands (prompt batch folded into the rows): a BATCH_MATMUL whose operands broadcast different batch
# shapes is not taken by XNNPACK, and LiteRT then runs it, and splits the graph around it, on its plain kernels
# (measured: decoder 94 ms instead of ~50 ms).


def _heads_first(x: Tensor, b: int, n: int, h: int) -> Tensor:
    """B x N x (H e) -> H x (B N) x e."""
    return x.reshape(b * n, h, -1).transpose(0, 1)


def _heads_last(x: Tensor, b: int, n: int, h: int) -> Tensor:
    """H x (B N) x e -> B x N x (H e)."""
    return x.transpose(0, 1).reshape(b, n, -1)


def _scores(a: Tensor, k: Tensor, einsum: bool) -> Tensor:
    """a @ k^T for B x M x C prompt-side rows and B x Nk x C image tokens -> B x M x Nk.

    `einsum`: written as an einsum, which litert-torch lowers to BATCH_MATMUL. As `a @ k.transpose(1, 2)` it
    becomes a FULLY_CONNECTED whose *weights* are the activation k, which XNNPACK repacks on every call (measured:
    11.7 ms against 3.1 ms for (1, 88, 256) x (4096, 256)). onnxruntime is the other way round (its Einsum ~40 %
    slower than MatMul), so only LiteRT exports ask for it.
    """
    if not einsum:
        return a @ k.transpose(1, 2)
    b, m = a.shape[0], a.shape[1]
    if b > 1 and k.shape[0] == 1:  # static shapes (LiteRT): fold the prompt batch into the rows, no broadcast
        return torch.einsum("bmc,bnc->bmn", a.reshape(1, b * m, -1), k).reshape(b, m, -1)
    return torch.einsum("bmc,bnc->bmn", a, k)


def _weighted(p: Tensor, v: Tensor, einsum: bool) -> Tensor:
    """p @ v for B x M x Nk weights and B x Nk x C image tokens -> B x M x C (einsum: as `_scores`).

    A BATCH_MATMUL whose operands have different batch sizes is not taken by XNNPACK, so with static shapes a
    batch-1 `v` gets the prompt batch folded into the rows instead."""
    if not einsum:
        return p @ v
    b, m = p.shape[0], p.shape[1]
    if b > 1 and v.shape[0] == 1:
        return torch.einsum("bmn,bnc->bmc", p.reshape(1, b * m, -1), v).reshape(b, m, -1)
    return torch.einsum("bmn,bnc->bmc", p, v)


def tokens_to_image(attn: Attention, q: Tensor, k: Tensor, v: Tensor, einsum: bool = False) -> Tensor:
    """`attn(q, k, v)` for few queries and many keys, without projecting the keys.

    q: BxNqxC prompt tokens (+pe); k, v: BxNkxC image tokens (k with pe), batch 1 or B. Returns BxNqxC.
    """
    h, d = _heads(attn)
    b, nq, c = q.shape[0], q.shape[1], q.shape[2]
    qh = _heads_first(attn.q_proj(q) * (1.0 / math.sqrt(d)), b, nq, h)  # H x (B Nq) x d
    qk = qh @ attn.k_proj.weight.reshape(h, d, c)  # H x (B Nq) x C: the key projection moved onto the queries
    qk = qk.reshape(h, b, nq, c).transpose(0, 1).reshape(b, h * nq, c)  # B x (H Nq) x C, row h*Nq + i
    scores = _scores(qk, k, einsum)  # B x (H Nq) x Nk; the key bias cancels in softmax
    pv = _weighted(torch.softmax(scores, dim=-1), v, einsum)  # B x (H Nq) x C
    pv = pv.reshape(b, h, nq, c).transpose(0, 1).reshape(h, b * nq, c)  # H x (B Nq) x C
    out = pv @ attn.v_proj.weight.reshape(h, d, c).transpose(1, 2)  # H x (B Nq) x d
    out = _heads_last(out, b, nq, h) + attn.v_proj.bias  # value bias passes through (rows of P sum to 1)
    return attn.out_proj(out)


def image_to_tokens(attn: Attention, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """`attn(q, k, v)` for many queries and few keys, without projecting the queries or splitting heads.

    q: BxNqxC image tokens (+pe); k, v: BxNkxC prompt tokens (k with pe). Returns BxNqxC.
    """
    h, d = _heads(attn)
    b, nk, c = k.shape[0], k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d)
    kh = _heads_first(attn.k_proj(k) * scale, b, nk, h)  # H x (B Nk) x d
    # the query projection folded into the keys, the weight on the right (XNNPACK takes no constant left operand)
    m = kh @ attn.q_proj.weight.reshape(h, d, c)  # H x (B Nk) x C
    m = m.reshape(h, b, nk, c).permute(1, 3, 0, 2).reshape(b, c, h * nk)  # B x C x (H Nk), column h*Nk + j
    bias = kh @ attn.q_proj.bias.reshape(h, d, 1)  # H x (B Nk) x 1
    bias = bias.reshape(h, b, nk).transpose(0, 1).reshape(b, 1, h * nk)
    scores = q @ m + bias  # B x Nq x (H Nk)
    nq = scores.shape[1]
    p = torch.softmax(scores.reshape(b, nq, h, nk), dim=-1).reshape(b, nq, h * nk)
    vh = _heads_first(attn.v_proj(v), b, nk, h)  # H x (B Nk) x d
    wo = attn.out_proj.weight.reshape(c, h, d).permute(1, 2, 0)  # H x d x C
    vo = (vh @ wo).reshape(h, b, nk, c).transpose(0, 1).reshape(b, h * nk, c)  # B x (H Nk) x C, through out_proj
    # Each head's probabilities sum to 1, so a row of p sums to H: adding bias / H to every row of vo adds the
    # bias once, on the small matrix instead of on the Nq x C product.
    return p @ (vo + attn.out_proj.bias / h)


def _layer_norm_gelu(x: Tensor, ln: torch.nn.Module) -> Tensor:
    """LayerNorm2d (over channels) then GELU, on tokens whose last axis is the channels."""
    return F.gelu(F.layer_norm(x, (ln.num_channels,), ln.weight, ln.bias, ln.eps))


def two_way_transformer(t: TwoWayTransformer, keys: Tensor, key_pe: Tensor, point_embedding: Tensor,
                        einsum: bool = False) -> tuple[Tensor, Tensor]:
    """`TwoWayTransformer.forward` on token-layout inputs: keys BxHWxC, key_pe 1xHWxC, points BxNxC.

    Returns (queries BxNxC, keys BxHWxC), as upstream.
    """
    queries = point_embedding
    for layer in t.layers:
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + point_embedding
            queries = queries + layer.self_attn(q=q, k=q, v=queries)
        queries = layer.norm1(queries)
        k = keys + key_pe  # both cross attentions of the layer see the same keys: added once, not twice
        queries = layer.norm2(queries + tokens_to_image(layer.cross_attn_token_to_image, queries + point_embedding,
                                                        k, keys, einsum))
        queries = layer.norm3(queries + layer.mlp(queries))
        keys = layer.norm4(keys + image_to_tokens(layer.cross_attn_image_to_token, k, queries + point_embedding,
                                                  queries))
    attn_out = tokens_to_image(t.final_attn_token_to_image, queries + point_embedding, keys + key_pe, keys, einsum)
    return t.norm_final_attn(queries + attn_out), keys


def _transposed_conv(x: Tensor, conv: torch.nn.ConvTranspose2d) -> Tensor:
    """A kernel-2 stride-2 ConvTranspose2d on tokens: ... x C_in -> ... x 4 x C_out, sub-pixels (i, j) row-major.

    The bias is added after the reshape, broadcast over the 4 sub-pixels (a tiled bias constant would be a
    BROADCAST_TO in TFLite, which XNNPACK does not take)."""
    c_in, c_out = conv.weight.shape[0], conv.weight.shape[1]
    y = x @ conv.weight.permute(0, 2, 3, 1).reshape(c_in, 4 * c_out)
    return y.reshape(*x.shape[:-1], 4, c_out) + conv.bias


def _depth_to_space(x: Tensor, b: int, h: int, w: int) -> Tensor:
    """B x (h w) x (2 2 C) tokens (row-major pixels, then (i, j, c)) -> B x (2h 2w) x C tokens. 4-D at most."""
    c = x.shape[-1] // 4
    x = x.reshape(b * h, w, 2, 2 * c).transpose(1, 2)  # (B h) x i x w x (j c)
    return x.reshape(b, 4 * h * w, c)


def upscale_and_mask(dec: MaskDecoder, src: Tensor, hyper_in: Tensor, h: int, w: int) -> Tensor:
    """`output_upscaling` + hypernetwork product on tokens: src BxHWxC (row-major HxW), hyper_in BxMx(C/8)
    -> masks BxMx4Hx4W, equal to upstream's `hyper_in @ output_upscaling(src as NCHW)`."""
    conv1, ln, _, conv2, _ = dec.output_upscaling
    b, m = src.shape[0], hyper_in.shape[1]
    x = _transposed_conv(src, conv1)  # B x hw x 4 x C/4
    x = _layer_norm_gelu(_depth_to_space(x.reshape(b, h * w, -1), b, h, w), ln)  # B x (2h 2w) x C/4
    up = F.gelu(_transposed_conv(x, conv2))  # B x (2h 2w) x 4 x C/8: pixel (Y, X), sub-pixel (k, l)
    c8 = conv2.weight.shape[1]
    masks = hyper_in @ up.reshape(b, -1, c8).transpose(1, 2)  # B x M x (2h 2w 2 2), before the last depth-to-space
    masks = masks.reshape(b * m * 2 * h, 2 * w, 2, 2).transpose(1, 2)  # (B M Y) x k x X x l
    return masks.reshape(b, m, 4 * h, 4 * w)


class FastMaskDecoder(torch.nn.Module):
    """`predict_masks` as a module over a `MaskDecoder`'s parameters (shared, not copied).

    A module of its own so that converters that name ops by module path (litert-torch, whose names the TFLite
    full-int8 recipe matches) see the decoder's ops under `fast_mask_decoder`, apart from the prompt encoding.
    """

    def __init__(self, dec: MaskDecoder, grid: tuple[int, int], einsum: bool = False) -> None:
        super().__init__()
        self.dec = dec
        self.grid = grid  # (H, W) of the image embedding
        self.einsum = einsum  # image-side attention products as einsum (LiteRT: BATCH_MATMUL), see `_scores`

    def extra_repr(self) -> str:  # in repr(module): the TFLite conversion cache keys on it
        return f"grid={self.grid}, einsum={self.einsum}"

    def forward(self, keys: Tensor, key_pe: Tensor, sparse: Tensor) -> tuple[Tensor, Tensor]:
        return predict_masks(self.dec, keys, key_pe, sparse, *self.grid, einsum=self.einsum)


def predict_masks(dec: MaskDecoder, keys: Tensor, key_pe: Tensor, sparse: Tensor, h: int, w: int,
                  einsum: bool = False) -> tuple[Tensor, Tensor]:
    """`MaskDecoder.predict_masks` on token-layout inputs.

    keys: BxHWxC image embedding + dense prompt embedding (row-major HxW tokens), key_pe: 1xHWxC, sparse: BxNxC.
    Returns masks Bx4x4Hx4W logits and iou_pred Bx4, as upstream.
    """
    output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    output_tokens = output_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1)
    tokens = torch.cat((output_tokens, sparse), dim=1)
    # keys keep batch 1 when the embedding has it: every product broadcasts it to the B prompt sets, and the first
    # residual update (norm4) makes it B (an Expand here copies 4 MB per click).
    hs, src = two_way_transformer(dec.transformer, keys, key_pe, tokens, einsum)
    mask_tokens_out = hs[:, 1 : 1 + dec.num_mask_tokens, :]
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1
    )  # B x 4 x C/8
    masks = upscale_and_mask(dec, src, hyper_in, h, w)
    return masks, dec.iou_prediction_head(hs[:, 0, :])

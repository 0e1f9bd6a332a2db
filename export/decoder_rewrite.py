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

The final token -> image attention is computed for the IoU and mask tokens only: nothing reads the other
tokens' outputs after it (upstream computes them and drops them).

Engines want the same products written differently; `DecoderRewrite` says how (each measured, docs/performance.md):
- `einsum` (LiteRT): the image-side products as einsum, see `_scores`;
- `tiled_bias` (ONNX): each upscaling bias tiled over the 4 sub-pixels and added before the reshape: one add along
  rows of 4 x C_out, and no BiasGelu (onnxruntime's fusion of a bias add with the GELU after it, which ran 2-3x
  slower per element than its plain Gelu on the 32-channel rows of the last upscaling);
- `transposed_scores` (ONNX): image -> token scores laid out (H Nk) x 4096, their softmax over each head's Nk keys
  done by reductions along the contiguous 4096 axis (onnxruntime's Softmax over a last axis of 7 is slow), the
  probabilities read transposed by the next product.
- `image_cache` (ONNX): the first layer's work that depends on the image alone (`ImageCache`: the image tokens
  with the dense embedding added, their token -> image key and value projections and their image -> token query
  projection) is computed once, returned as extra outputs, and the rest of the graph reads it from there. The
  ONNX export then lets a later call take it as inputs instead (`onnx.rewrite.cache_image_stage`): every click
  after the first on an image skips it (about a tenth of the decoder, docs/performance.md). The projections of the
  image side are the ones the other layers fold onto the prompt side; for the cached layer the projected image
  tokens are cheaper than the fold (4096 x 16 x N per head instead of 4096 x 256 x 8N). Its block-diagonal keys
  are built through one 5-D tensor of 8 x 16 x 8 x N values (ONNX only; LiteRT's form stays within 4-D).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from pocketsam.runtime import spec

from .model.mask_decoder import MaskDecoder
from .model.transformer import Attention, TwoWayTransformer


@dataclass(frozen=True)
class DecoderRewrite:
    """How the fast graph writes its products for one engine (module docstring); all off for CoreML and tests."""

    einsum: bool = False  # image-side attention products as einsum: BATCH_MATMUL in LiteRT (see `_scores`)
    tiled_bias: bool = False  # upscaling biases tiled over the sub-pixels (onnxruntime: no slow BiasGelu)
    transposed_scores: bool = False  # image -> token softmax along the 4096 axis (onnxruntime: see module doc)
    image_cache: bool = False  # the image-only first-layer work as extra outputs, read back by the graph (ONNX)


# What each format exports (formats.py picks by name): LiteRT and onnxruntime as measured; CoreML, not measurable
# on Linux, the plain form.
LITERT = DecoderRewrite(einsum=True)
ONNXRUNTIME = DecoderRewrite(tiled_bias=True, transposed_scores=True, image_cache=True)


class ImageCache(NamedTuple):
    """The first layer's image-only work (`DecoderRewrite.image_cache`), in the order of `spec.IMAGE_CACHE`.

    With H heads of d channels in the cross attentions: tokens B x HW x C (the image embedding + the dense prompt
    embedding, row-major), t2i_keys B x H x d x HW (token -> image key projection of tokens + pe, per head,
    transposed), t2i_values B x H x HW x d (its value projection of tokens), i2t_queries B x HW x (H d) (image ->
    token query projection of tokens + pe, scaled by 1/sqrt(d)). B is 1 for a click without a mask input.
    """

    tokens: Tensor
    t2i_keys: Tensor
    t2i_values: Tensor
    i2t_queries: Tensor


def _heads(attn: Attention) -> tuple[int, int]:
    return attn.num_heads, attn.head_dim


# The small per-head products against a weight (H x .. x ..) are written with the heads as the *only* batch axis
# on both operands (prompt batch folded into the rows): a BATCH_MATMUL whose operands broadcast different batch
# shapes is not taken by XNNPACK, and LiteRT then runs it, and splits the graph around it, on its plain kernels
# (the decoder then takes about twice as long).


def _heads_first(x: Tensor, b: int, n: int, h: int) -> Tensor:
    """B x N x (H e) -> H x (B N) x e."""
    return x.reshape(b * n, h, -1).transpose(0, 1)


def _heads_last(x: Tensor, b: int, n: int, h: int) -> Tensor:
    """H x (B N) x e -> B x N x (H e)."""
    return x.transpose(0, 1).reshape(b, n, -1)


def _scores(a: Tensor, k: Tensor, einsum: bool) -> Tensor:
    """a @ k^T for B x M x C prompt-side rows and B x Nk x C image tokens -> B x M x Nk.

    `einsum`: written as an einsum, which litert-torch lowers to BATCH_MATMUL. As `a @ k.transpose(1, 2)` it
    becomes a FULLY_CONNECTED whose *weights* are the activation k, which XNNPACK repacks on every call (several
    times slower, docs/tflite.md). onnxruntime is the other way round (its Einsum is slower than MatMul), so only
    LiteRT exports ask for it.
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


def image_to_tokens(attn: Attention, q: Tensor, k: Tensor, v: Tensor, transposed: bool = False,
                    projected: bool = False) -> Tensor:
    """`attn(q, k, v)` for many queries and few keys, without projecting the queries or splitting heads.

    q: BxNqxC image tokens (+pe); k, v: BxNkxC prompt tokens (k with pe). Returns BxNqxC. `transposed`: the
    scores laid out B x (H Nk) x Nq (`DecoderRewrite.transposed_scores`). `projected`: q is already the scaled
    query projection, B x Nq x (H d) (`ImageCache.i2t_queries`), met by block-diagonal keys.
    """
    h, d = _heads(attn)
    b, nk, c = k.shape[0], k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d)
    if projected:
        m = _block_diagonal_keys(attn.k_proj(k).reshape(b, nk, h, d))  # B x (H d) x (H Nk)
        bias = None
    else:
        kh = _heads_first(attn.k_proj(k) * scale, b, nk, h)  # H x (B Nk) x d
        # the query projection folded into the keys, the weight on the right (XNNPACK takes no constant left
        # operand)
        m = kh @ attn.q_proj.weight.reshape(h, d, c)  # H x (B Nk) x C
        m = m.reshape(h, b, nk, c).permute(1, 3, 0, 2).reshape(b, c, h * nk)  # B x C x (H Nk), column h*Nk + j
        bias = kh @ attn.q_proj.bias.reshape(h, d, 1)  # H x (B Nk) x 1
        bias = bias.reshape(h, b, nk).transpose(0, 1).reshape(b, 1, h * nk)
    vh = _heads_first(attn.v_proj(v), b, nk, h)  # H x (B Nk) x d
    wo = attn.out_proj.weight.reshape(c, h, d).permute(1, 2, 0)  # H x d x C
    vo = (vh @ wo).reshape(h, b, nk, c).transpose(0, 1).reshape(b, h * nk, c)  # B x (H Nk) x C, through out_proj
    # Each head's probabilities sum to 1, so a row of p sums to H: adding bias / H to every row of vo adds the
    # bias once, on the small matrix instead of on the Nq x C product.
    vo = vo + attn.out_proj.bias / h
    if transposed:
        st = m.transpose(1, 2) @ q.transpose(1, 2)  # B x (H Nk) x Nq
        if bias is not None:
            st = st + bias.transpose(1, 2)
        nq = st.shape[2]
        st = st.reshape(b, h, nk, nq)
        e = torch.exp(st - st.amax(dim=2, keepdim=True))  # softmax over each head's Nk keys
        pt = (e / e.sum(dim=2, keepdim=True)).reshape(b, h * nk, nq)
        return pt.transpose(1, 2) @ vo
    scores = q @ m if bias is None else q @ m + bias  # B x Nq x (H Nk)
    nq = scores.shape[1]
    p = torch.softmax(scores.reshape(b, nq, h, nk), dim=-1).reshape(b, nq, h * nk)
    return p @ vo


def image_cache(t: TwoWayTransformer, keys: Tensor, key_pe: Tensor) -> ImageCache:
    """The first layer's image-only work for keys BxHWxC, key_pe 1xHWxC (`ImageCache`)."""
    layer = t.layers[0]
    if not layer.skip_first_layer_pe:  # SAM's first layer attends without the queries' pe; the cache assumes it
        raise ValueError("the image cache needs a first layer with skip_first_layer_pe (SAM's two-way transformer)")
    t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
    b, n = keys.shape[0], keys.shape[1]
    k = keys + key_pe
    h, d = _heads(t2i)
    if (h, d) != (spec.DECODER_ATTENTION_HEADS, spec.DECODER_ATTENTION_HEAD_DIM) or _heads(i2t) != (h, d):
        raise ValueError(f"the image cache's shapes (spec.IMAGE_CACHE) assume {spec.DECODER_ATTENTION_HEADS} heads "
                         f"of {spec.DECODER_ATTENTION_HEAD_DIM} channels; this decoder has {h} of {d}")
    t2i_keys = t2i.k_proj(k).reshape(b, n, h, d).permute(0, 2, 3, 1)  # B x H x d x HW
    t2i_values = t2i.v_proj(keys).reshape(b, n, h, d).transpose(1, 2)  # B x H x HW x d
    i2t_queries = i2t.q_proj(k) * (1.0 / math.sqrt(_heads(i2t)[1]))  # B x HW x (H d)
    return ImageCache(keys, t2i_keys, t2i_values, i2t_queries)


def tokens_to_image_cached(attn: Attention, q: Tensor, keys_t: Tensor, values: Tensor) -> Tensor:
    """`attn(q, k, v)` with the image side already projected: q BxNqxC prompt tokens (+pe), keys_t 1xHxdxHW and
    values 1xHxHWxd (`ImageCache.t2i_keys` / `t2i_values`, batch 1 or B). Returns BxNqxC."""
    h, d = _heads(attn)
    b, nq = q.shape[0], q.shape[1]
    qh = (attn.q_proj(q) * (1.0 / math.sqrt(d))).reshape(b, nq, h, d).transpose(1, 2)  # B x H x Nq x d
    p = torch.softmax(qh @ keys_t, dim=-1)  # B x H x Nq x HW
    return attn.out_proj((p @ values).transpose(1, 2).reshape(b, nq, h * d))


def _block_diagonal_keys(kh: Tensor) -> Tensor:
    """B x Nk x H x d per-head keys -> B x (H d) x (H Nk), block h holding head h's keys transposed: one product
    of the projected image queries (B x HW x (H d)) with it gives every head's scores, head-major columns."""
    b, nk, h, d = kh.shape
    eye = torch.eye(h, dtype=kh.dtype).reshape(1, h, 1, h, 1)
    return (kh.permute(0, 2, 3, 1).unsqueeze(3) * eye).reshape(b, h * d, h * nk)


def _layer_norm_gelu(x: Tensor, ln: torch.nn.Module) -> Tensor:
    """LayerNorm2d (over channels) then GELU, on tokens whose last axis is the channels."""
    return F.gelu(F.layer_norm(x, (ln.num_channels,), ln.weight, ln.bias, ln.eps))


def two_way_transformer(t: TwoWayTransformer, keys: Tensor, key_pe: Tensor, point_embedding: Tensor,
                        rewrite: DecoderRewrite = DecoderRewrite(), outputs: int | None = None,
                        cache: ImageCache | None = None) -> tuple[Tensor, Tensor]:
    """`TwoWayTransformer.forward` on token-layout inputs: keys BxHWxC, key_pe 1xHWxC, points BxNxC.

    Returns (queries BxNxC, keys BxHWxC), as upstream; `outputs`: only the first `outputs` queries, the only ones
    the caller reads (the final attention is then computed for them alone). `cache`: the first layer reads its
    image side from there (`image_cache` of these keys) instead of projecting `keys`.
    """
    einsum = rewrite.einsum
    queries = point_embedding
    for i, layer in enumerate(t.layers):
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + point_embedding
            queries = queries + layer.self_attn(q=q, k=q, v=queries)
        queries = layer.norm1(queries)
        if i == 0 and cache is not None:
            queries = layer.norm2(queries + tokens_to_image_cached(
                layer.cross_attn_token_to_image, queries + point_embedding, cache.t2i_keys, cache.t2i_values))
            queries = layer.norm3(queries + layer.mlp(queries))
            keys = layer.norm4(cache.tokens + image_to_tokens(
                layer.cross_attn_image_to_token, cache.i2t_queries, queries + point_embedding, queries,
                rewrite.transposed_scores, projected=True))
            continue
        k = keys + key_pe  # both cross attentions of the layer see the same keys: added once, not twice
        queries = layer.norm2(queries + tokens_to_image(layer.cross_attn_token_to_image, queries + point_embedding,
                                                        k, keys, einsum))
        queries = layer.norm3(queries + layer.mlp(queries))
        keys = layer.norm4(keys + image_to_tokens(layer.cross_attn_image_to_token, k, queries + point_embedding,
                                                  queries, rewrite.transposed_scores))
    if outputs is not None:
        queries, point_embedding = queries[:, :outputs], point_embedding[:, :outputs]
    attn_out = tokens_to_image(t.final_attn_token_to_image, queries + point_embedding, keys + key_pe, keys, einsum)
    return t.norm_final_attn(queries + attn_out), keys


def _transposed_conv(x: Tensor, conv: torch.nn.ConvTranspose2d, tiled_bias: bool = False) -> Tensor:
    """A kernel-2 stride-2 ConvTranspose2d on tokens: ... x C_in -> ... x 4 x C_out, sub-pixels (i, j) row-major.

    The bias is added after the reshape, broadcast over the 4 sub-pixels (a tiled bias constant would be a
    BROADCAST_TO in TFLite, which XNNPACK does not take); `tiled_bias` (onnxruntime, where it folds to a
    constant) adds it tiled, before the reshape (`DecoderRewrite`). The reshape also keeps onnxruntime from fusing
    the add with the GELU that follows: its BiasGelu measured slower than the two (docs/performance.md)."""
    c_in, c_out = conv.weight.shape[0], conv.weight.shape[1]
    y = x @ conv.weight.permute(0, 2, 3, 1).reshape(c_in, 4 * c_out)
    if tiled_bias:
        return (y + conv.bias.repeat(4)).reshape(*x.shape[:-1], 4, c_out)
    return y.reshape(*x.shape[:-1], 4, c_out) + conv.bias


def _depth_to_space(x: Tensor, b: int, h: int, w: int) -> Tensor:
    """B x (h w) x (2 2 C) tokens (row-major pixels, then (i, j, c)) -> B x (2h 2w) x C tokens. 4-D at most."""
    c = x.shape[-1] // 4
    x = x.reshape(b * h, w, 2, 2 * c).transpose(1, 2)  # (B h) x i x w x (j c)
    return x.reshape(b, 4 * h * w, c)


def upscale_and_mask(dec: MaskDecoder, src: Tensor, hyper_in: Tensor, h: int, w: int,
                     tiled_bias: bool = False) -> Tensor:
    """`output_upscaling` + hypernetwork product on tokens: src BxHWxC (row-major HxW), hyper_in BxMx(C/8)
    -> masks BxMx4Hx4W, equal to upstream's `hyper_in @ output_upscaling(src as NCHW)`."""
    conv1, ln, _, conv2, _ = dec.output_upscaling
    b, m = src.shape[0], hyper_in.shape[1]
    x = _transposed_conv(src, conv1, tiled_bias)  # B x hw x 4 x C/4
    x = _layer_norm_gelu(_depth_to_space(x.reshape(b, h * w, -1), b, h, w), ln)  # B x (2h 2w) x C/4
    up = F.gelu(_transposed_conv(x, conv2, tiled_bias))  # B x (2h 2w) x 4 x C/8: pixel (Y, X), sub-pixel (k, l)
    c8 = conv2.weight.shape[1]
    masks = hyper_in @ up.reshape(b, -1, c8).transpose(1, 2)  # B x M x (2h 2w 2 2), before the last depth-to-space
    masks = masks.reshape(b * m * 2 * h, 2 * w, 2, 2).transpose(1, 2)  # (B M Y) x k x X x l
    return masks.reshape(b, m, 4 * h, 4 * w)


class FastMaskDecoder(torch.nn.Module):
    """`predict_masks` as a module over a `MaskDecoder`'s parameters (shared, not copied).

    A module of its own so that converters that name ops by module path (litert-torch, whose names the TFLite
    full-int8 recipe matches) see the decoder's ops under `fast_mask_decoder`, apart from the prompt encoding.
    """

    def __init__(self, dec: MaskDecoder, grid: tuple[int, int], rewrite: DecoderRewrite = DecoderRewrite()) -> None:
        super().__init__()
        self.dec = dec
        self.grid = grid  # (H, W) of the image embedding
        self.rewrite = rewrite  # how the products are written for the target engine

    def extra_repr(self) -> str:  # in repr(module): the TFLite conversion cache keys on it
        return f"grid={self.grid}, rewrite={self.rewrite}"

    def forward(self, keys: Tensor, key_pe: Tensor, sparse: Tensor) -> tuple[Tensor, ...]:
        return predict_masks(self.dec, keys, key_pe, sparse, *self.grid, rewrite=self.rewrite)


def predict_masks(dec: MaskDecoder, keys: Tensor, key_pe: Tensor, sparse: Tensor, h: int, w: int,
                  rewrite: DecoderRewrite = DecoderRewrite()) -> tuple[Tensor, ...]:
    """`MaskDecoder.predict_masks` on token-layout inputs.

    keys: BxHWxC image embedding + dense prompt embedding (row-major HxW tokens), key_pe: 1xHWxC, sparse: BxNxC.
    Returns masks Bx4x4Hx4W logits and iou_pred Bx4, as upstream; with `rewrite.image_cache`, then the four
    `ImageCache` tensors the first layer read.
    """
    output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    output_tokens = output_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1)
    tokens = torch.cat((output_tokens, sparse), dim=1)
    # keys keep batch 1 when the embedding has it: every product broadcasts it to the B prompt sets, and the first
    # residual update (norm4) makes it B (an Expand here copies 4 MB per click).
    cache = image_cache(dec.transformer, keys, key_pe) if rewrite.image_cache else None
    # only the IoU token and the mask tokens are read after the transformer
    hs, src = two_way_transformer(dec.transformer, keys, key_pe, tokens, rewrite, outputs=output_tokens.shape[1],
                                  cache=cache)
    mask_tokens_out = hs[:, 1 : 1 + dec.num_mask_tokens, :]
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1
    )  # B x 4 x C/8
    masks = upscale_and_mask(dec, src, hyper_in, h, w, rewrite.tiled_bias)
    return (masks, dec.iou_prediction_head(hs[:, 0, :])) + (tuple(cache) if cache is not None else ())

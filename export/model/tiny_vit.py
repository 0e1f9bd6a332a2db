"""TinyViT image encoder as MobileSAM's `vit_t` uses it (TinyViT-5M at 1024x1024, with SAM's 256-channel neck).

Same module tree and parameter names as upstream `mobile_sam.modeling.tiny_vit_sam.TinyViT` (so official
checkpoints load strictly), rewritten for export:
- every shape below is a Python int fixed by the config at construction (resolution, window, padding); the only
  runtime-dependent size is the batch, which reshapes carry as -1;
- window partition/reverse stay 4-D (upstream goes through a 6-D view), see `window_partition`;
- the attention bias is gathered on every forward from `attention_biases` with a registered non-persistent index
  buffer. There is no cached `ab` buffer: upstream's is filled on `.eval()` and would stay fp32 (and stale) after
  `.half()` or a later `load_state_dict`;
- the query is scaled before `q @ k^T` (not the product after it), which keeps the fp16 intermediate small;
- inference only: no drop-path, no dropout, no gradient checkpointing.

Tensor layouts: images and conv stages are BxCxHxW; transformer stages carry tokens BxLxC with L = H*W in
row-major (y, x) order.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d


@dataclass(frozen=True)
class TinyViTConfig:
    """Hyper-parameters of the encoder. Defaults are MobileSAM `vit_t` (TinyViT-5M)."""

    img_size: int = 1024
    in_chans: int = 3
    num_classes: int = 1000  # the unused classification head; kept so official checkpoints load strictly
    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)  # stage 0 is convolutional: its entry is unused
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)  # stage 0 unused
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    neck_dim: int = 256


class Conv2d_BN(nn.Sequential):  # noqa: N801 - upstream's name, kept for the state-dict keys `.c` / `.bn`
    """Conv2d without bias followed by BatchNorm2d (eval mode: running statistics)."""

    def __init__(self, a: int, b: int, ks: int = 1, stride: int = 1, pad: int = 0, groups: int = 1) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(a, b, ks, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(b))


class PatchEmbed(nn.Module):
    """Bx3xHxW image -> BxCx(H/4)x(W/4): two stride-2 3x3 convs."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        n = embed_dim
        self.seq = nn.Sequential(Conv2d_BN(in_chans, n // 2, 3, 2, 1), nn.GELU(), Conv2d_BN(n // 2, n, 3, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block, BxCxHxW -> BxCxHxW."""

    def __init__(self, in_chans: int, out_chans: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(in_chans * expand_ratio)
        self.conv1 = Conv2d_BN(in_chans, hidden, ks=1)
        self.act1 = nn.GELU()
        self.conv2 = Conv2d_BN(hidden, hidden, ks=3, stride=1, pad=1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2d_BN(hidden, out_chans, ks=1)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        y = self.conv3(y)
        return self.act3(y + x)


class PatchMerging(nn.Module):
    """BxCxHxW -> BxLxC' tokens (L = (H/s)*(W/s)); stride s is 2, or 1 for the merge into the last stage.

    Upstream picks stride 1 when `out_dim in (320, 448, 576)`, which for every TinyViT variant is the merge into
    the last stage; here it is an explicit argument so that shrunk configs keep the same geometry.
    """

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.act = nn.GELU()
        self.conv1 = Conv2d_BN(dim, out_dim, 1, 1, 0)
        self.conv2 = Conv2d_BN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2d_BN(out_dim, out_dim, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        x = self.conv3(x)
        return x.flatten(2).transpose(1, 2)


class ConvLayer(nn.Module):
    """Stage 0: MBConv blocks on BxCxHxW, then a PatchMerging to BxLxC' tokens."""

    def __init__(self, dim: int, depth: int, out_dim: int, expand_ratio: float, merge_stride: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, dim, expand_ratio) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, merge_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x)


def _attention_bias_index(resolution: int) -> tuple[torch.Tensor, int]:
    """(NxN int64 index into the table of distinct |dy|,|dx| offsets, number of offsets), N = resolution**2.

    Offsets are numbered in order of first appearance, exactly as upstream, so `attention_biases` from an official
    checkpoint lines up.
    """
    points = list(itertools.product(range(resolution), range(resolution)))
    offsets: dict[tuple[int, int], int] = {}
    idxs = []
    for p1 in points:
        for p2 in points:
            off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            if off not in offsets:
                offsets[off] = len(offsets)
            idxs.append(offsets[off])
    n = len(points)
    return torch.tensor(idxs, dtype=torch.int64).view(n, n), len(offsets)


class Attention(nn.Module):
    """Multi-head self-attention over BxNxC tokens of one window (N = window**2), with a learned relative bias.

    qkv is laid out per head as [q (key_dim), k (key_dim), v (d)], as upstream.
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float, resolution: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = key_dim**-0.5
        self.key_dim = key_dim
        self.d = int(attn_ratio * key_dim)
        self.dh = self.d * num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, self.dh + 2 * key_dim * num_heads)
        self.proj = nn.Linear(self.dh, dim)
        idx, n_offsets = _attention_bias_index(resolution)
        self.n_tokens = idx.shape[0]
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, n_offsets))
        # Non-persistent: rebuilt from the config, never read from a checkpoint, follows `.to()` but stays int64.
        self.register_buffer("attention_bias_idxs", idx.flatten(), persistent=False)

    def attention_bias(self) -> torch.Tensor:
        """heads x N x N bias, gathered from the parameters now (so it follows `.half()` and new weights)."""
        return self.attention_biases.index_select(1, self.attention_bias_idxs).view(
            self.num_heads, self.n_tokens, self.n_tokens
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.n_tokens
        x = self.norm(x)
        qkv = self.qkv(x).view(-1, n, self.num_heads, 2 * self.key_dim + self.d)  # B x N x heads x (2kd + d)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.d], dim=3)
        q = q.permute(0, 2, 1, 3) * self.scale  # B x heads x N x kd (scaled first: small fp16 intermediates)
        k = k.permute(0, 2, 3, 1)  # B x heads x kd x N
        v = v.permute(0, 2, 1, 3)  # B x heads x N x d
        attn = (q @ k + self.attention_bias()).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(-1, n, self.dh)
        return self.proj(x)


class Mlp(nn.Module):
    """LayerNorm -> fc1 -> GELU -> fc2 on BxLxC tokens."""

    def __init__(self, in_features: int, hidden_features: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_features)
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


def window_partition(x: torch.Tensor, ws: int, n_h: int, n_w: int) -> torch.Tensor:
    """B x (n_h*ws) x (n_w*ws) x C -> (B*n_h*n_w) x (ws*ws) x C, windows in row-major order.

    Upstream views 6-D (B, n_h, ws, n_w, ws, C); folding (ws, C) into one axis and B into n_h keeps every
    intermediate 4-D: (B*n_h, ws, n_w, ws*C) -> swap axes 1,2 -> (B*n_h, n_w, ws, ws*C) -> windows.
    """
    c = x.shape[-1]
    x = x.reshape(-1, ws, n_w, ws * c).transpose(1, 2)
    return x.reshape(-1, ws * ws, c)


def window_reverse(x: torch.Tensor, ws: int, n_h: int, n_w: int) -> torch.Tensor:
    """Inverse of `window_partition`: (B*n_h*n_w) x (ws*ws) x C -> B x (n_h*ws) x (n_w*ws) x C."""
    c = x.shape[-1]
    x = x.reshape(-1, n_w, ws, ws * c).transpose(1, 2)
    return x.reshape(-1, n_h * ws, n_w * ws, c)


class TinyViTBlock(nn.Module):
    """Window attention + depthwise local conv + MLP on BxLxC tokens of an HxW grid (L = H*W)."""

    def __init__(
        self, dim: int, resolution: int, num_heads: int, window_size: int, mlp_ratio: float, local_conv_size: int
    ) -> None:
        super().__init__()
        self.dim = dim
        self.resolution = resolution
        self.window_size = window_size
        self.attn = Attention(dim, dim // num_heads, num_heads, attn_ratio=1, resolution=window_size)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2d_BN(dim, dim, ks=local_conv_size, stride=1, pad=local_conv_size // 2, groups=dim)
        # Static geometry: the grid is zero-padded at the bottom/right to whole windows, as upstream (the padded
        # tokens take part in attention as keys, after the attention's LayerNorm: matching upstream exactly).
        self.pad = (window_size - resolution % window_size) % window_size
        self.n_windows = (resolution + self.pad) // window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = w = self.resolution
        ws, pad, nw = self.window_size, self.pad, self.n_windows
        shortcut = x
        if h == ws:  # a config-time constant, not a data-dependent branch: the grid is one window
            x = self.attn(x)
        else:
            x = x.reshape(-1, h, w, self.dim)
            if pad > 0:
                x = F.pad(x, (0, 0, 0, pad, 0, pad))
            x = window_reverse(self.attn(window_partition(x, ws, nw, nw)), ws, nw, nw)
            if pad > 0:
                x = x[:, :h, :w]
            x = x.reshape(-1, h * w, self.dim)
        x = shortcut + x
        x = x.transpose(1, 2).reshape(-1, self.dim, h, w)
        x = self.local_conv(x)
        x = x.flatten(2).transpose(1, 2)
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    """A transformer stage on BxLxC tokens, optionally followed by a PatchMerging (tokens -> BCHW -> tokens)."""

    def __init__(
        self,
        dim: int,
        resolution: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        local_conv_size: int,
        out_dim: int | None,
        merge_stride: int,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.resolution = resolution
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, resolution, num_heads, window_size, mlp_ratio, local_conv_size) for _ in range(depth)
        )
        self.downsample = PatchMerging(dim, out_dim, merge_stride) if out_dim is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        if self.downsample is not None:  # construction-time constant
            r = self.resolution
            x = self.downsample(x.transpose(1, 2).reshape(-1, self.dim, r, r))
        return x


class TinyViT(nn.Module):
    """Bx3xSxS normalized image (S = img_size) -> Bx256x(S/16)x(S/16) image embedding.

    Stage resolutions for S=1024: patch embed 256, stage 0 256 -> merge (stride 2) -> stage 1 128 -> merge (2) ->
    stage 2 64 -> merge (stride 1) -> stage 3 64 -> neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d).
    `norm_head` and `head` are the unused ImageNet classifier, present only for strict checkpoint loading.
    """

    def __init__(self, cfg: TinyViTConfig = TinyViTConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.img_size = cfg.img_size
        dims, n = cfg.embed_dims, len(cfg.depths)
        self.patch_embed = PatchEmbed(cfg.in_chans, dims[0])
        res = cfg.img_size // 4
        self.layers = nn.ModuleList()
        for i in range(n):
            out_dim = dims[min(i + 1, n - 1)] if i < n - 1 else None
            merge_stride = 1 if i == n - 2 else 2
            if i == 0:
                layer: nn.Module = ConvLayer(dims[0], cfg.depths[0], out_dim, cfg.mbconv_expand_ratio, merge_stride)
            else:
                layer = BasicLayer(
                    dims[i], res, cfg.depths[i], cfg.num_heads[i], cfg.window_sizes[i], cfg.mlp_ratio,
                    cfg.local_conv_size, out_dim, merge_stride,
                )  # fmt: skip
            self.layers.append(layer)
            if i < n - 1:
                res //= merge_stride
        self.out_resolution = res
        self.norm_head = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], cfg.num_classes)
        self.neck = nn.Sequential(
            nn.Conv2d(dims[-1], cfg.neck_dim, kernel_size=1, bias=False),
            LayerNorm2d(cfg.neck_dim),
            nn.Conv2d(cfg.neck_dim, cfg.neck_dim, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(cfg.neck_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        r = self.out_resolution
        x = x.transpose(1, 2).reshape(-1, x.shape[-1], r, r)
        return self.neck(x)

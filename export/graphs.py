"""The two exportable graphs. Their inputs and outputs are `pocketsam.runtime.spec.ENCODER` / `DECODER`, in order.

Both are wrappers around a `MobileSam` (no patching of the model): tensor-only forwards, no Python control flow
on data, no Python ints taken from input shapes. The decoder handles prompt labels by arithmetic, as
segment-anything's `SamOnnxModel`, so the number of points and the batch are free (dynamic) axes.
"""

from __future__ import annotations

import torch
from torch import nn

from pocketsam.runtime import spec

from . import decoder_rewrite, encoder_rewrite
from .formats import DECODER_GRAPHS, ENCODER_GRAPHS
from .model import MobileSam


class EncoderGraph(nn.Module):
    """image 1x3x1024x1024 float (raw RGB 0..255, resized, padded bottom/right with PIXEL_MEAN)
    -> image_embeddings 1x256x64x64.

    Normalization `(x - PIXEL_MEAN) / PIXEL_STD` happens inside, so the padding becomes exactly 0 as in SAM.

    `fast=False` runs the model's upstream-shaped TinyViT: the PyTorch reference. `fast=True` (the TFLite and ONNX
    default export but TFLite full int8, `--encoder-graph fast` for CoreML) runs `encoder_rewrite.FastTinyViT`: the
    same arithmetic with per-head projections and NHWC-friendly layout changes, fewer copies under XNNPACK;
    `rewrite` picks its variants (`encoder_rewrite.EncoderRewrite`).
    """

    def __init__(self, model: MobileSam, fast: bool = False,
                 rewrite: encoder_rewrite.EncoderRewrite = encoder_rewrite.EncoderRewrite()) -> None:
        super().__init__()
        self.fast = fast
        self.image_encoder = model.image_encoder
        if fast:
            self.fast_image_encoder = encoder_rewrite.FastTinyViT(model.image_encoder, rewrite)
        self.register_buffer("pixel_mean", model.pixel_mean.detach().clone().view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", model.pixel_std.detach().clone().view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        encoder = self.fast_image_encoder if self.fast else self.image_encoder  # construction-time constant
        return encoder((image - self.pixel_mean) / self.pixel_std)


def encoder_graph(model: MobileSam, name: str, same_stride2: bool = False) -> EncoderGraph:
    """The encoder graph called `name` (one of ENCODER_GRAPHS) over `model` (`same_stride2`: the fast graphs'
    cheap stride-2 convs as SAME convs, for LiteRT; see `encoder_rewrite.EncoderRewrite`)."""
    if name not in ENCODER_GRAPHS:
        raise ValueError(f"unknown encoder graph {name!r} (choose from {', '.join(ENCODER_GRAPHS)})")
    rewrite = encoder_rewrite.EncoderRewrite(grouped_qkv=name == "fast-grouped", same_stride2=same_stride2)
    return EncoderGraph(model, fast=name != "reference", rewrite=rewrite)


def decoder_graph(model: MobileSam, name: str,
                  rewrite: decoder_rewrite.DecoderRewrite | None = None) -> "DecoderGraph":
    """The decoder graph called `name` (one of DECODER_GRAPHS) over `model` (`rewrite`: how the fast graph writes
    its products for the target engine, `decoder_rewrite.DecoderRewrite`; None: the plain form)."""
    if name not in DECODER_GRAPHS:
        raise ValueError(f"unknown decoder graph {name!r} (choose from {', '.join(DECODER_GRAPHS)})")
    return DecoderGraph(model, fast=name == "fast", rewrite=rewrite)


class DecoderGraph(nn.Module):
    """Prompt encoder + mask decoder with every mask output.

    Inputs (spec.DECODER):
      image_embeddings: 1x256x64x64.
      point_coords: BxNx2 float, (x, y) in the 1024 input frame. Boxes are two points labelled 2 (top-left) and
        3 (bottom-right); without a box, SamPredictor's convention adds one (0, 0) point labelled -1.
      point_labels: BxN float: -1 pad, 0 background, 1 foreground, 2/3 box corners.
      mask_input: Bx1x256x256 logits of an earlier prediction (zeros if unused).
      has_mask_input: B float, 1.0 to use mask_input, else 0.0.
    Outputs:
      low_res_masks: Bx4x256x256 logits in the padded 1024 frame (0: single-mask output, 1..3: multimask).
      iou_predictions: Bx4.
    No resize to the original image size here: that is the runtime's numpy post-processing.

    `fast=False` runs the model's upstream-shaped modules: the PyTorch reference. `fast=True` (the ONNX and TFLite
    default export, `--decoder-graph fast` for CoreML) runs `decoder_rewrite`: the same function with the attention
    projections moved to the prompt side and the upscaling on tokens, ~2x fewer multiply-adds; parity with the
    reference is tested like any other conversion. `rewrite`: how it writes its products for the target engine
    (`decoder_rewrite.DecoderRewrite`).
    """

    def __init__(self, model: MobileSam, fast: bool = False,
                 rewrite: decoder_rewrite.DecoderRewrite | None = None) -> None:
        super().__init__()
        rewrite = rewrite or decoder_rewrite.DecoderRewrite()
        self.fast = fast
        pe = model.prompt_encoder
        self.pe_layer = pe.pe_layer
        self.mask_downscaling = pe.mask_downscaling
        self.mask_decoder = model.mask_decoder
        if fast:
            self.fast_mask_decoder = decoder_rewrite.FastMaskDecoder(model.mask_decoder, pe.image_embedding_size,
                                                                     rewrite)
        self.num_point_embeddings = pe.num_point_embeddings
        self.image_size = float(spec.IMAGE_SIZE)
        # Parameters shared with the model (no copies): the graph sees later weight changes and `.half()`.
        self.not_a_point_embed = pe.not_a_point_embed
        self.point_embeddings = pe.point_embeddings
        self.no_mask_embed = pe.no_mask_embed
        self._dense_pe_size = pe.image_embedding_size
        # forward returns the image cache after the masks (`decoder_rewrite.ImageCache`; the ONNX export's form)
        self.image_cache = fast and rewrite.image_cache

    def _embed_points(self, point_coords: torch.Tensor, point_labels: torch.Tensor) -> torch.Tensor:
        """BxNx2 coords (1024 frame), BxN labels -> BxNx256 sparse embeddings, by arithmetic on the labels."""
        coords = (point_coords + 0.5) / self.image_size  # pixel centers, normalized to [0, 1]
        emb = self.pe_layer._pe_encoding(coords)
        labels = point_labels.unsqueeze(-1)  # BxNx1, broadcasts over the 256 channels
        is_pad = (labels == spec.LABEL_PAD).to(emb.dtype)
        emb = emb * (1.0 - is_pad) + self.not_a_point_embed.weight * is_pad
        for i in range(self.num_point_embeddings):  # label codes 0..3, unrolled at export
            emb = emb + self.point_embeddings[i].weight * (labels == i).to(emb.dtype)
        return emb

    def _embed_masks(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        """Bx1x256x256, B -> Bx256x64x64: the mask's embedding where has_mask_input is 1, else no_mask_embed."""
        has = has_mask_input.reshape(-1, 1, 1, 1)
        no_mask = self.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return has * self.mask_downscaling(mask_input) + (1.0 - has) * no_mask

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sparse = self._embed_points(point_coords, point_labels)
        dense = self._embed_masks(mask_input, has_mask_input)
        image_pe = self.pe_layer(self._dense_pe_size).unsqueeze(0)
        if not self.fast:  # construction-time constant: one graph or the other is traced, never a branch
            return self.mask_decoder.predict_masks(image_embeddings, image_pe, sparse, dense)
        # The mask path stays NCHW: on tokens (space-to-depth + matmuls) it measured no faster in onnxruntime.
        keys = (image_embeddings + dense).flatten(2).transpose(1, 2)  # B x HW x C tokens, row-major
        key_pe = image_pe.flatten(2).transpose(1, 2)
        return self.fast_mask_decoder(keys, key_pe, sparse)


# --- sample inputs and the check every converted file gets ----------------------------------------------------

# Sizes of the symbolic axes in the sample inputs. num_points=3 so that no axis is 1 by accident: a tracer can
# specialize a size-1 axis into a broadcast that then breaks other sizes.
DUMMY_AXES = {"batch": 2, "num_points": 3}


def dummy_inputs(graph: spec.GraphSpec, seed: int = 0, **axes: int) -> tuple[torch.Tensor, ...]:
    """Seeded float32 inputs with the spec's shapes (symbolic axes from DUMMY_AXES unless given), in input order:
    labels drawn from every label code, pixels and coordinates in 0..255, the mask flag on."""
    sizes = {**DUMMY_AXES, **axes}
    g = torch.Generator().manual_seed(seed)
    tensors = []
    for t in graph.inputs:
        shape = t.concrete_shape(**sizes)
        if t.name == "point_labels":
            x = torch.randint(-1, 4, shape, generator=g).float()
        elif t.name == "has_mask_input":
            x = torch.ones(shape)
        elif t.name in ("image", "point_coords"):
            x = torch.rand(shape, generator=g) * 255.0
        else:
            x = torch.randn(shape, generator=g)
        tensors.append(x)
    return tuple(tensors)


def check_against_torch(module: nn.Module, graph: spec.GraphSpec, path, run, sizes: list[dict[str, int]]) -> None:
    """Run the converted file (`run`: {input name: array} -> {output name: array}) and eager `module` on seeded
    inputs of each of `sizes` (symbolic axis sizes, chosen other than the trace's so a frozen axis shows), and raise
    `core.ExportError` where they differ by more than the parity table's conversion bound."""
    from .core import check_conversion

    for axes in sizes:
        args = dummy_inputs(graph, seed=1, **axes)
        with torch.inference_mode():
            want = module(*args)
        want = (want,) if isinstance(want, torch.Tensor) else want
        got = run({n: a.numpy() for n, a in zip(graph.input_names, args)})
        where = " (" + ", ".join(f"{k} {v}" for k, v in axes.items()) + ")" if axes else ""
        check_conversion(path, graph, {n: w.numpy() for n, w in zip(graph.output_names, want)}, got, where)

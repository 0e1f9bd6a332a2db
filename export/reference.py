"""The PyTorch reference behind the runtime's Session interface.

`pocketsam.export` owns the model, so it is here (not in the torch-free runtime) that the torch graphs are wrapped
as Sessions. `Predictor`, `verify` and `bench` then run the reference through the very same numpy pre/post-processing
as every exported bundle.
"""

from __future__ import annotations

import numpy as np
import torch

from pocketsam.runtime.predictor import Predictor
from pocketsam.runtime.spec import DECODER, ENCODER, GraphSpec

from .graphs import DecoderGraph, EncoderGraph
from .model import MobileSam


class TorchSession:
    """A Session over an `nn.Module` whose forward takes the spec's inputs in order and returns its outputs."""

    def __init__(self, module: torch.nn.Module, spec: GraphSpec) -> None:
        self.module = module.eval()
        self.spec = spec
        self.input_names = spec.input_names
        self.output_names = spec.output_names

    @torch.inference_mode()
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feeds[name], dtype=np.float32)) for name in self.input_names]
        out = self.module(*args)
        if isinstance(out, torch.Tensor):
            out = (out,)
        return {name: t.detach().cpu().numpy() for name, t in zip(self.output_names, out)}


def reference_sessions(model: MobileSam) -> tuple[TorchSession, TorchSession]:
    """(encoder, decoder) Sessions over the fp32 PyTorch graphs of `model`."""
    return TorchSession(EncoderGraph(model), ENCODER), TorchSession(DecoderGraph(model), DECODER)


def reference_predictor(model: MobileSam) -> Predictor:
    """A `Predictor` that runs the PyTorch reference through the runtime's pre/post-processing."""
    encoder, decoder = reference_sessions(model)
    return Predictor(encoder, decoder)


def torch_postprocess_masks(
    low_res: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
) -> torch.Tensor:
    """segment-anything's `Sam.postprocess_masks`, in torch: B x C x 256 x 256 logits -> B x C x H x W logits.

    Kept here only as the PyTorch baseline for benchmarks (what SamPredictor pays per click); the runtime's numpy
    `postprocess_masks` is what pocketsam runs, pinned to upstream by the golden files.
    """
    import torch.nn.functional as F

    from pocketsam.runtime.spec import IMAGE_SIZE

    masks = F.interpolate(low_res, (IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    masks = masks[..., : input_size[0], : input_size[1]]
    return F.interpolate(masks, original_size, mode="bilinear", align_corners=False)


def torch_click(model: MobileSam, predictor: Predictor):
    """A zero-argument callable doing one click the way segment-anything's `SamPredictor.predict` does it in PyTorch
    on a cached embedding (the baseline of the `prompt` benchmark part): upstream's eager prompt encoder (a click is
    padded with one point; no mask input, so `mask_downscaling` is skipped) and mask decoder with multimask output,
    torch post-processing to the original size, threshold."""
    from pocketsam.runtime.spec import MASK_THRESHOLD
    from pocketsam.runtime.transforms import apply_coords

    h, w = predictor.original_size
    coords = torch.from_numpy(apply_coords(np.array([[[w * 0.5, h * 0.5]]], np.float32), predictor.original_size))
    labels = torch.ones(1, 1)
    embedding = torch.from_numpy(predictor.get_image_embedding())

    @torch.inference_mode()
    def click():
        sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        low_res, _ = model.mask_decoder(embedding, model.prompt_encoder.get_dense_pe(), sparse, dense,
                                        multimask_output=True)
        return torch_postprocess_masks(low_res, predictor.input_size, predictor.original_size) > MASK_THRESHOLD

    return click

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
    """A zero-argument callable doing one click the way SamPredictor does it in PyTorch on a cached embedding:
    eager decoder + torch post-processing + threshold (the baseline of the `prompt` benchmark part)."""
    from pocketsam.runtime.spec import MASK_THRESHOLD, MULTIMASK_SLICE
    from pocketsam.runtime.transforms import apply_coords

    decoder = DecoderGraph(model).eval()
    h, w = predictor.original_size
    coords = apply_coords(np.array([[[w * 0.5, h * 0.5], [0.0, 0.0]]], np.float32), predictor.original_size)
    feeds = (
        torch.from_numpy(predictor.get_image_embedding()),
        torch.from_numpy(coords),
        torch.tensor([[1.0, -1.0]]),
        torch.zeros(1, 1, 256, 256),
        torch.zeros(1),
    )

    @torch.inference_mode()
    def click():
        low_res, iou = decoder(*feeds)
        low_res = low_res[:, MULTIMASK_SLICE[0] : MULTIMASK_SLICE[1]]
        return torch_postprocess_masks(low_res, predictor.input_size, predictor.original_size) > MASK_THRESHOLD

    return click

"""The model (pocketsam.export.model) and the export graphs (pocketsam.export.graphs).

Upstream parity itself (our vit_t vs `mobile_sam` on the same weights) needs torchvision and runs by hand:
tests/golden/compare_upstream_model.py. Here: layout, graph == eager reference, ONNX export, non-degenerate masks.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from pocketsam.export.checkpoint import official_layout
from pocketsam.export import decoder_rewrite
from pocketsam.export.graphs import DecoderGraph, EncoderGraph, encoder_graph
from pocketsam.export.model import MODEL_BUILDERS, RandomWeightsWarning, build_mobile_sam, build_vit_t
from pocketsam.export.model.tiny_vit import window_partition, window_reverse
from pocketsam.runtime import spec

pytestmark = pytest.mark.filterwarnings("ignore::pocketsam.export.model.RandomWeightsWarning")


def test_vit_t_state_dict_is_the_official_layout():
    sd = build_vit_t().state_dict()
    layout = official_layout()
    assert len(layout) == 439
    assert list(sd) == list(layout)  # same names, same order
    for name, (shape, dtype) in layout.items():
        assert tuple(sd[name].shape) == shape, name
        assert str(sd[name].dtype) == f"torch.{dtype}", name
    assert sum(p.numel() for p in build_vit_t().parameters()) == 10130092  # the fixture's num_parameters


def test_non_persistent_buffers_and_spec_constants():
    m = build_vit_t()
    names = {n for n, _ in m.named_buffers()}
    assert "image_encoder.layers.1.blocks.0.attn.attention_bias_idxs" in names
    assert not any("attention_bias_idxs" in k or k.startswith("pixel_") for k in m.state_dict())
    assert m.pixel_mean.flatten().tolist() == pytest.approx(spec.PIXEL_MEAN)
    assert m.pixel_std.flatten().tolist() == pytest.approx(spec.PIXEL_STD)
    assert not any(n.endswith(".ab") for n in names)  # no cached bias that would stay fp32 after .half()


def test_attention_bias_follows_dtype_and_new_weights(tiny_model):
    import copy

    m = copy.deepcopy(tiny_model)
    attn = m.image_encoder.layers[1].blocks[0].attn
    bias = attn.attention_bias()
    assert bias.shape == (attn.num_heads, 49, 49)
    # bias[h, i, j] depends only on (|dy|, |dx|) between tokens i and j of the 7x7 window
    assert torch.equal(bias[:, 0, 1], bias[:, 1, 0]) and torch.equal(bias[:, 0, 8], bias[:, 8, 0])
    with torch.no_grad():
        attn.attention_biases.add_(1.0)
    assert torch.allclose(attn.attention_bias(), bias + 1.0)
    m.half()
    assert attn.attention_bias().dtype == torch.float16
    assert attn.attention_bias_idxs.dtype == torch.int64


def test_window_partition_matches_6d_reference():
    torch.manual_seed(0)
    b, nh, ws, c = 2, 3, 7, 5
    x = torch.randn(b, nh * ws, nh * ws, c)
    ref = x.view(b, nh, ws, nh, ws, c).transpose(2, 3).reshape(b * nh * nh, ws * ws, c)  # upstream's 6-D view
    win = window_partition(x, ws, nh, nh)
    assert torch.equal(win, ref)
    assert torch.equal(window_reverse(win, ws, nh, nh), x)


def test_build_warns_random_weights_and_is_deterministic():
    with pytest.warns(RandomWeightsWarning, match="random weights, seed 3"):
        a = build_mobile_sam(seed=3, config="tiny")
    b = build_mobile_sam(seed=3, config="tiny")
    c = build_mobile_sam(seed=4, config="tiny")
    for k, t in a.state_dict().items():
        assert torch.equal(t, b.state_dict()[k]), k
    assert not torch.equal(a.state_dict()["mask_decoder.iou_token.weight"], c.state_dict()["mask_decoder.iou_token.weight"])
    assert not a.training
    with pytest.raises(ValueError, match="unknown model config"):
        build_mobile_sam(config="vit_h")
    assert set(MODEL_BUILDERS) == {"vit_t", "tiny"}


def test_encoder_graph_normalizes_inside(tiny_model):
    g = EncoderGraph(tiny_model).eval()
    torch.manual_seed(0)
    x = torch.rand(1, 3, 1024, 1024) * 255
    x[..., 600:, :] = torch.tensor(spec.PAD_VALUE_RAW).view(1, 3, 1, 1)  # padding with the mean ...
    with torch.no_grad():
        out = g(x)
        normalized = (x - tiny_model.pixel_mean) / tiny_model.pixel_std
        assert normalized[..., 600:, :].abs().max() < 1e-6  # ... normalizes to SAM's zero padding
        ref = tiny_model.image_encoder(normalized)
    assert out.shape == spec.ENCODER.outputs[0].concrete_shape()
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("graph,same_stride2", [("fast", False), ("fast", True), ("fast-grouped", True)])
@pytest.mark.parametrize("config", ["tiny", "vit_t"])
def test_fast_encoder_graph_equals_reference(config, graph, same_stride2, tiny_model, vit_t_model):
    """export/encoder_rewrite.py reorders the same arithmetic (per-head or grouped projections with the query scale
    folded into the weights, layout changes; LiteRT's stride-2 convs as zero-extended 4x4 SAME convs with their
    BatchNorm folded): embeddings of magnitude ~5 move by 6e-6..7.4e-6 (measured, vit_t); 2e-5 leaves room for
    BLAS differences, and stays 5x under the fp32 export's own tolerance (1e-4)."""
    model = tiny_model if config == "tiny" else vit_t_model
    torch.manual_seed(0)
    x = torch.rand(1, 3, 1024, 1024) * 255
    with torch.no_grad():
        ref = encoder_graph(model, "reference").eval()(x)
        out = encoder_graph(model, graph, same_stride2).eval()(x)
    assert ref.abs().max() > 1.0  # real numbers
    torch.testing.assert_close(out, ref, rtol=0, atol=2e-5)
    with pytest.raises(ValueError, match="unknown encoder graph"):
        encoder_graph(model, "faster")


# --- DecoderGraph (label arithmetic) == upstream-style eager path (boolean indexing) -----------------------------


def _eager(model, emb, coords, labels, box=None, mask=None):
    """SamPredictor's path: prompt encoder with boolean-indexed labels, a pad point when no box, all 4 masks."""
    pts = (torch.as_tensor(coords), torch.as_tensor(labels)) if coords is not None else None
    box = torch.as_tensor(box) if box is not None else None
    mask = torch.as_tensor(mask) if mask is not None else None
    sparse, dense = model.prompt_encoder(points=pts, boxes=box, masks=mask)
    return model.mask_decoder.predict_masks(emb, model.prompt_encoder.get_dense_pe(), sparse, dense)


def _graph_feeds(coords, labels, box=None, mask=None):
    """The same prompts as DecoderGraph inputs: box corners as labels 2/3, else one (0, 0) pad point (-1)."""
    b = coords.shape[0]
    if box is None:
        coords = np.concatenate([coords, np.zeros((b, 1, 2), np.float32)], 1)
        labels = np.concatenate([labels, -np.ones((b, 1), np.float32)], 1)
    else:
        coords = np.concatenate([coords, box.reshape(b, 2, 2)], 1)
        labels = np.concatenate([labels, np.tile([[2.0, 3.0]], (b, 1))], 1).astype(np.float32)
    m = np.zeros((b, 1, 256, 256), np.float32) if mask is None else mask
    has = np.full((b,), 0.0 if mask is None else 1.0, np.float32)
    return [torch.from_numpy(a) for a in (coords.astype(np.float32), labels.astype(np.float32), m, has)]


def _cases():
    rng = np.random.default_rng(7)
    return {
        "1 fg point": (np.array([[[512.0, 300.0]]], np.float32), np.array([[1.0]], np.float32), None, None),
        "fg+bg points": (rng.uniform(0, 1023, (1, 2, 2)).astype(np.float32), np.array([[1.0, 0.0]], np.float32),
                         None, None),  # fmt: skip
        "box + bg point": (np.array([[[700.0, 100.0]]], np.float32), np.array([[0.0]], np.float32),
                           np.array([[100.0, 50.0, 800.0, 950.0]], np.float32), None),  # fmt: skip
        "batch 3 + mask input": (rng.uniform(0, 1023, (3, 2, 2)).astype(np.float32),
                                 np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], np.float32), None,
                                 rng.normal(0, 4, (3, 1, 256, 256)).astype(np.float32)),  # fmt: skip
    }


# The fast graph re-associates the attention and upscaling products (export/decoder_rewrite.py): float rounding
# moves logits of magnitude ~15 by up to 7e-5 (measured, tiny and vit_t, batch 3 with masks), vs 1e-5 for the
# upstream-shaped graph whose products are the same as eager's.
# The engines' forms (LiteRT's einsum with the prompt batch folded into the rows; onnxruntime's tiled biases and
# transposed image -> token scores) compute the same products.
_DECODER_ATOL = {"reference": 1e-5, "fast": 2e-4, "fast-litert": 2e-4, "fast-onnxruntime": 2e-4}
_REWRITES = {"fast": decoder_rewrite.DecoderRewrite(), "fast-litert": decoder_rewrite.LITERT,
             "fast-onnxruntime": decoder_rewrite.ONNXRUNTIME}


@pytest.mark.parametrize("variant", list(_DECODER_ATOL))
@pytest.mark.parametrize("config", ["tiny", "vit_t"])
def test_decoder_graph_equals_eager(config, variant, tiny_model, vit_t_model):
    model = tiny_model if config == "tiny" else vit_t_model
    fast = variant != "reference"
    graph = DecoderGraph(model, fast=fast, rewrite=_REWRITES.get(variant, decoder_rewrite.DecoderRewrite())).eval()
    emb = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(1))  # order 1, like the encoder's
    with torch.no_grad():
        for name, (coords, labels, box, mask) in _cases().items():
            ref_masks, ref_iou = _eager(model, emb, coords, labels, box, mask)
            masks, iou = graph(emb, *_graph_feeds(coords, labels, box, mask))[:2]  # (+ the ONNX form's cache)
            b = coords.shape[0]
            assert masks.shape == (b, 4, 256, 256) and iou.shape == (b, 4), name
            torch.testing.assert_close(masks, ref_masks, rtol=0, atol=_DECODER_ATOL[variant], msg=name)
            torch.testing.assert_close(iou, ref_iou, rtol=0, atol=_DECODER_ATOL[variant], msg=name)
            assert ref_masks.abs().max() > 0.1, name  # real numbers, not zeros


@pytest.mark.parametrize("fast", [False, True], ids=["reference", "fast"])
def test_graphs_export_to_onnx_with_dynamic_axes(tiny_model, tmp_path, fast):
    """TorchScript exporter, opset 17, batch and num_points dynamic; ONNX Runtime equals torch on other sizes."""
    ort = pytest.importorskip("onnxruntime")
    dec = DecoderGraph(tiny_model, fast=fast, rewrite=decoder_rewrite.ONNXRUNTIME if fast else None).eval()
    feeds0 = _graph_feeds(*_cases()["1 fg point"])
    emb = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(2))
    path = tmp_path / "decoder.onnx"
    dyn = {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)} for t in spec.DECODER.inputs + spec.DECODER.outputs}
    dyn = {k: v for k, v in dyn.items() if v}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(dec, (emb, *feeds0), str(path), dynamo=False, opset_version=17,
                          input_names=spec.DECODER.input_names, output_names=spec.DECODER.output_names,
                          dynamic_axes=dyn)  # fmt: skip
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    coords, labels, box, mask = _cases()["batch 3 + mask input"]
    feeds = _graph_feeds(coords, labels, box, mask)  # batch 3, 3 points: neither matches the traced 1 x 2
    with torch.no_grad():
        ref = dec(emb, *feeds)
    got = sess.run(None, dict(zip(spec.DECODER.input_names, [emb.numpy()] + [f.numpy() for f in feeds])))
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r.numpy(), rtol=0, atol=1e-4)


# --- synthetic weights: masks are non-degenerate on real photos ----------------------------------------------------


def _photo_input(name: str):
    """skimage photo -> (1x3x1024x1024 encoder input padded with PIXEL_MEAN, valid h, w in the 1024 frame)."""
    import skimage.data
    from PIL import Image

    img = getattr(skimage.data, name)()
    h, w = img.shape[:2]
    s = spec.IMAGE_SIZE / max(h, w)
    nh, nw = int(h * s + 0.5), int(w * s + 0.5)
    r = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR), dtype=np.float32)
    x = np.empty((spec.IMAGE_SIZE, spec.IMAGE_SIZE, 3), np.float32)
    x[:] = spec.PAD_VALUE_RAW
    x[:nh, :nw] = r
    return torch.from_numpy(x).permute(2, 0, 1)[None], nh, nw


def test_synthetic_masks_are_non_degenerate_on_photos(vit_t_model):
    """Center foreground point on two photos: every multimask output covers 5-95% of the image, the masks differ
    from each other and between photos (measured for seed 0: 0.41-0.60 on astronaut, 0.47-0.53 on chelsea)."""
    enc, dec = EncoderGraph(vit_t_model).eval(), DecoderGraph(vit_t_model).eval()
    fg = {}
    with torch.no_grad():
        for name in ("astronaut", "chelsea"):
            x, nh, nw = _photo_input(name)
            emb = enc(x)
            assert 0.5 < emb.std() < 2 and emb.abs().max() < 20  # order 1: atol 1e-4 is meaningful
            coords = torch.tensor([[[nw / 2, nh / 2], [0.0, 0.0]]])
            labels = torch.tensor([[spec.LABEL_FOREGROUND, spec.LABEL_PAD]], dtype=torch.float32)
            masks, _ = dec(emb, coords, labels, torch.zeros(1, 1, 256, 256), torch.zeros(1))
            lo, hi = spec.MULTIMASK_SLICE
            fg[name] = (masks[0, lo:hi, : nh // 4, : nw // 4] > spec.MASK_THRESHOLD).numpy()
    for name, m in fg.items():
        frac = m.mean(axis=(1, 2))
        assert np.all((frac > 0.05) & (frac < 0.95)), (name, frac)
        for i in range(3):
            for j in range(i + 1, 3):
                assert (m[i] != m[j]).mean() > 0.05, (name, i, j)
    h = min(fg["astronaut"].shape[1], fg["chelsea"].shape[1])
    w = min(fg["astronaut"].shape[2], fg["chelsea"].shape[2])
    assert (fg["astronaut"][:, :h, :w] != fg["chelsea"][:, :h, :w]).mean() > 0.05

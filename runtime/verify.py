"""Parity of a bundle against the PyTorch fp32 reference, with no torch needed on the device.

At export time the reference's outputs on a fixed real photo and fixed prompts are recorded in `probe.npz`
(`record_reference`). `compare` then runs any pair of Sessions through the same `Predictor` and measures the
metrics of `pocketsam.runtime.parity`; `judge` turns them into ✓/✗ rows. With torch at hand,
`pocketsam verify --reference torch` records a fresh reference per image instead of reading the probe.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

import numpy as np

from .parity import checks_for, weaker
from .predictor import Predictor
from .session import Session
from .spec import ENCODER


@dataclass(frozen=True)
class ProbePrompt:
    """A prompt in the original image frame: points (N x 2, (x, y)), labels (N), box (x0, y0, x1, y1)."""

    name: str
    point_coords: np.ndarray | None
    point_labels: np.ndarray | None
    box: np.ndarray | None


def probe_prompts(original_size: tuple[int, int]) -> list[ProbePrompt]:
    """The fixed prompts of a probe, placed by fractions of the image size (original frame).

    They cover each way SAM is prompted: one click, a click plus a background click, a box, and box + click.
    """
    h, w = original_size

    def pts(*xy: tuple[float, float]) -> np.ndarray:
        return np.array([[fx * w, fy * h] for fx, fy in xy], dtype=np.float32)

    box = np.array([0.25 * w, 0.2 * h, 0.75 * w, 0.8 * h], dtype=np.float32)
    return [
        ProbePrompt("point", pts((0.5, 0.5)), np.array([1], np.float32), None),
        ProbePrompt("two_points", pts((0.45, 0.55), (0.1, 0.1)), np.array([1, 0], np.float32), None),
        ProbePrompt("box", None, None, box),
        ProbePrompt("box_point", pts((0.5, 0.45)), np.array([1], np.float32), box),
    ]


class FixedEncoder:
    """A Session that returns a given embedding whatever the image: runs a decoder on the reference embedding."""

    input_names = ENCODER.input_names
    output_names = ENCODER.output_names

    def __init__(self, embedding: np.ndarray) -> None:
        self._out = {ENCODER.outputs[0].name: embedding}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._out


def record_reference(
    image: np.ndarray, encoder: Session, decoder: Session, decoder_points: int | None = None
) -> dict[str, np.ndarray]:
    """Run the reference on `image` (H x W x 3 uint8 RGB) and the probe prompts; arrays for `probe.npz`.

    `decoder_points`: pad prompts as a fixed-shape decoder of that many points will see them.
    """
    predictor = Predictor(encoder, decoder, decoder_points=decoder_points)
    predictor.set_image(image)
    prompts = probe_prompts(predictor.original_size)
    probe: dict[str, np.ndarray] = {"image": image, "image_embeddings": predictor.get_image_embedding()}
    for p in prompts:
        _, scores, low_res = predictor.predict(p.point_coords, p.point_labels, p.box, return_logits=True)
        probe[f"{p.name}/low_res_logits"] = low_res
        probe[f"{p.name}/scores"] = scores
    return probe


def _reference_logits(probe: dict[str, np.ndarray], predictor: Predictor, name: str) -> np.ndarray:
    from .transforms import postprocess_masks  # the shared post-processing, as every backend uses

    return postprocess_masks(probe[f"{name}/low_res_logits"], predictor.input_size, predictor.original_size)


def pooled_iou(a: np.ndarray, b: np.ndarray) -> float:
    """sum(a & b) / sum(a | b) over boolean arrays of one shape; 1.0 when both are empty."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def compare(
    probe: dict[str, np.ndarray],
    encoder: Session,
    decoder: Session,
    decoder_points: int | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics of `encoder`/`decoder` against a recorded reference, by part ("encoder", "decoder", "e2e")."""
    from .transforms import threshold

    image = probe["image"]
    ref_emb = probe["image_embeddings"]
    e2e = Predictor(encoder, decoder, decoder_points=decoder_points)
    e2e.set_image(image)
    dec_only = Predictor(FixedEncoder(ref_emb), decoder, decoder_points=decoder_points)
    dec_only.set_image(image)
    prompts = probe_prompts(e2e.original_size)

    emb = e2e.get_image_embedding()
    emb_abs = float(np.abs(emb - ref_emb).max())
    metrics: dict[str, dict[str, float]] = {
        "encoder": {
            "embedding_max_abs": emb_abs,
            "embedding_max_rel": emb_abs / max(float(np.abs(ref_emb).max()), 1e-12),
        }
    }
    for part, predictor in (("decoder", dec_only), ("e2e", e2e)):
        ref_masks, got_masks, logit_err, score_err = [], [], 0.0, 0.0
        for p in prompts:
            logits, scores, low_res = predictor.predict(p.point_coords, p.point_labels, p.box, return_logits=True)
            ref_masks.append(threshold(_reference_logits(probe, predictor, p.name)))
            got_masks.append(threshold(logits))
            logit_err = max(logit_err, float(np.abs(low_res - probe[f"{p.name}/low_res_logits"]).max()))
            score_err = max(score_err, float(np.abs(scores - probe[f"{p.name}/scores"]).max()))
        per_mask = [pooled_iou(r, g) for rs, gs in zip(ref_masks, got_masks) for r, g in zip(rs, gs)]
        metrics[part] = {
            "mask_iou": pooled_iou(np.concatenate(ref_masks), np.concatenate(got_masks)),
            "mask_iou_min": float(min(per_mask)),
            "low_res_logits_max_abs": logit_err,
            "score_max_abs": score_err,
        }
    return metrics


@dataclass(frozen=True)
class CheckResult:
    """One ✓/✗ line: a metric of one part against its bound (or an unjudged figure when bound is None)."""

    part: str
    precision: str
    metric: str
    value: float
    op: str | None
    bound: float | None
    passed: bool | None
    reason: str

    def line(self) -> str:
        mark = {True: "✓", False: "✗", None: "·"}[self.passed]
        bound = "" if self.bound is None else f"  (tolerance {self.op} {self.bound:g}: {self.reason})"
        return f"{mark} {self.part:<8}{self.precision:<13}{self.metric:<24}{self.value:.6g}{bound}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(
    metrics: dict[str, dict[str, float]], encoder_precision: str, decoder_precision: str, format: str = "*"
) -> list[CheckResult]:
    """Every measured metric as a row, judged where the parity table has a bound for it (for `format`)."""
    precisions = {
        "encoder": encoder_precision,
        "decoder": decoder_precision,
        "e2e": weaker(encoder_precision, decoder_precision, format),
    }
    rows = []
    for part, values in metrics.items():
        checks = {c.metric: c for c in checks_for(part, precisions[part], format)}
        for metric, value in values.items():
            c = checks.get(metric)
            rows.append(
                CheckResult(
                    part,
                    precisions[part],
                    metric,
                    value,
                    c.op if c else None,
                    c.bound if c else None,
                    c.passes(value) if c else None,
                    c.reason if c else "",
                )
            )
    return rows


def verify_sessions(
    references: Iterable[tuple[str, dict[str, np.ndarray]]],
    encoder: Session,
    decoder: Session,
    encoder_precision: str,
    decoder_precision: str,
    decoder_points: int | None = None,
    format: str = "*",
) -> list[tuple[str, list[CheckResult]]]:
    """Judge a pair of Sessions against each (label, recorded reference); one list of rows per reference."""
    return [
        (label, judge(compare(ref, encoder, decoder, decoder_points), encoder_precision, decoder_precision, format))
        for label, ref in references
    ]

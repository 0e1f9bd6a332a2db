"""Instant fake Sessions with the spec's I/O, for benchmark tests that check plumbing, not speed."""

from __future__ import annotations

import numpy as np

from pocketsam.runtime.spec import DECODER, ENCODER


class FakeEncoder:
    input_names, output_names = ENCODER.input_names, ENCODER.output_names

    def __init__(self, log: list | None = None, tag: str = "enc") -> None:
        self.log, self.tag = log, tag

    def run(self, feeds):
        if self.log is not None:
            self.log.append(self.tag)
        return {"image_embeddings": np.zeros((1, 256, 64, 64), np.float32)}


class FakeDecoder:
    input_names, output_names = DECODER.input_names, DECODER.output_names

    def run(self, feeds):
        b = feeds["point_coords"].shape[0]
        return {"low_res_masks": np.zeros((b, 4, 256, 256), np.float32),
                "iou_predictions": np.full((b, 4), 0.5, np.float32)}

"""Applying the LiteRT recipes (`recipes.py`) with ai-edge-quantizer to a converted fp32 .tflite.

`quantize_tflite` is the one function that reads a recipe.
ai-edge-quantizer works on the .tflite flatbuffer itself (no torch, < 1 s for weight recipes); the full-integer
recipe calibrates activation ranges by running the float model on real-image feeds, one feed list per signature.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from pocketsam.runtime.errors import PocketSamError

from ..core import QuantizationError
from .recipes import WEIGHTED_OPS, TflitePrecision, TfliteRecipe

# ai-edge-quantizer's name for TFLite's TRANSPOSE_CONV
_AEQ_NAMES = {"TRANSPOSE_CONV": "CONV_2D_TRANSPOSE"}


def aeq_rules(recipe: TfliteRecipe, model_path: Path | None = None) -> list[dict[str, Any]]:
    """The ai-edge-quantizer rules of `recipe` (a list; later rules override earlier ones). `model_path` (the
    fp32 .tflite) is needed when the recipe keeps ops float by their row count."""
    from ai_edge_quantizer import recipe as aeq

    granularity = "CHANNELWISE" if recipe.per_channel else "TENSORWISE"
    if recipe.precision is TflitePrecision.FP16:
        return [_rule("*", "float_casting", weight={"num_bits": 16, "dtype": "FLOAT", "symmetric": True,
                                                     "granularity": "TENSORWISE"},
                      compute="FLOAT", explicit_dequantize=True)]
    if recipe.precision is TflitePrecision.INT8_DYNAMIC:
        rules = aeq.dynamic_wi8_afp32()
    elif recipe.precision is TflitePrecision.INT8:
        (static,) = aeq.static_wi8_ai8()
        rules = ([static] if recipe.int8_ops is None else [{**copy.deepcopy(static), "operation": op}
                                                         for op in recipe.int8_ops])
        # Float I/O: the runtime feeds every precision the same float32 arrays (and the image's 0..255 pixels
        # would otherwise be requantized by the caller).
        rules += [_no_quantize(op) for op in ("INPUT", "OUTPUT", *recipe.float_ops)]
    else:
        raise QuantizationError(f"no quantizer recipe for {recipe.precision.value}")
    rules += [{**_no_quantize("*"), "regex": f".*(?:{scope}).*"} for scope in recipe.float_scopes]
    for r in rules:
        if "weight_tensor_config" in r.get("op_config", {}):
            r["op_config"]["weight_tensor_config"]["granularity"] = granularity
    if recipe.op_types is not None:
        rules += [_no_quantize(op) for op in WEIGHTED_OPS if op not in recipe.op_types]
    if recipe.min_rows and model_path is not None:
        # An op's scope is its output tensor names, each followed by ";" (ai-edge-quantizer's get_op_scope).
        every_op = recipe.precision is TflitePrecision.INT8
        rules += [{**_no_quantize(op), "regex": "^" + re.escape(name) + ";"}
                  for op, name in small_weighted_ops(model_path, recipe.min_rows, every_op)]
    return rules


def small_weighted_ops(model_path: Path, min_rows: int, every_op: bool = False) -> list[tuple[str, str]]:
    """(ai-edge-quantizer op name, output tensor name) of the weighted ops (`every_op`: of every op the quantizer
    knows) with fewer than `min_rows` activation rows: the product of the output's leading axes (FULLY_CONNECTED:
    tokens; NHWC conv: output pixels)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_quantizer.utils.tfl_flatbuffer_utils import TFL_OP_CODE_TO_NAME

    buf = Path(model_path).read_bytes()
    model = schema.Model.GetRootAsModel(buf, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    small = []
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        for i in range(sg.OperatorsLength()):
            op = sg.Operators(i)
            oc = model.OperatorCodes(op.OpcodeIndex())
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            name = names.get(code, "")
            aeq = _AEQ_NAMES.get(name, name)
            if every_op and code in TFL_OP_CODE_TO_NAME:
                aeq = str(TFL_OP_CODE_TO_NAME[code].value)
            elif aeq not in WEIGHTED_OPS:
                continue
            if op.OutputsLength() < 1:
                continue
            out = sg.Tensors(op.Outputs(0))
            shape = [int(d) for d in out.ShapeAsNumpy()] if out.ShapeLength() else []
            # FC: leading axes; NHWC conv: N*H*W; a 1-D tensor (a per-token statistic) counts its length
            rows = int(np.prod(shape[:-1])) if len(shape) > 1 else (shape[0] if shape else 0)
            if rows < min_rows:
                small.append((aeq, out.Name().decode()))
    return small


def _rule(op: str, algorithm: str, **config: Any) -> dict[str, Any]:
    op_config: dict[str, Any] = {"compute_precision": config["compute"], "explicit_dequantize":
                                 config.get("explicit_dequantize", False), "skip_checks": False,
                                 "min_weight_elements": 0}
    if "weight" in config:
        op_config["weight_tensor_config"] = config["weight"]
    return {"regex": ".*", "operation": op, "algorithm_key": algorithm, "op_config": op_config}


def _no_quantize(op: str) -> dict[str, Any]:
    return {"regex": ".*", "operation": op, "algorithm_key": "no_quantize"}


def quantize_tflite(
    fp32_path: Path,
    out_path: Path,
    recipe: TfliteRecipe,
    calibration: dict[str, list[dict[str, np.ndarray]]] | None = None,
) -> Path:
    """Write `fp32_path` quantized by `recipe` to `out_path` (fp32 is a copy).

    `calibration`: {signature key: [feed dict by the signature's input names]} for calibrated recipes.
    """
    if recipe.precision is TflitePrecision.FP32:
        out_path.write_bytes(Path(fp32_path).read_bytes())
        return out_path
    if recipe.calibrated and not calibration:
        raise QuantizationError(f"{recipe.precision.value} needs calibration images")
    from ai_edge_quantizer import quantizer

    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):  # its own bars and reports
            q = quantizer.Quantizer(str(fp32_path), aeq_rules(recipe, Path(fp32_path)))
            result = None
            if q.need_calibration:
                result = _calibrate(q, Path(fp32_path), calibration)
            quantized = q.quantize(result, enable_progress_bar=False, enable_progress_report=False)
            quantized.export_model(str(out_path), overwrite=True)
    except (PocketSamError, QuantizationError):
        raise
    except Exception as e:
        raise QuantizationError(f"ai-edge-quantizer failed on {Path(fp32_path).name} ({recipe.precision.value}): "
                                f"{e}") from e
    return out_path


def _calibrate(q: Any, fp32_path: Path, calibration: dict[str, list[dict[str, np.ndarray]]]) -> dict[str, Any]:
    """Activation min/max per tensor, tracked in C++ by the interpreter's profiler (ai-edge-quantizer's
    CALIBRATION_PROFILER_BASED mode): ~15 s for the vit_t encoder on 7 photos, where the default mode (every tensor
    kept, then read op by op in Python) took ~8 min. The profiler reports every statistic as a scalar, where the
    quantizer expects one value per axis of the tensor (keepdims) for per-tensor ranges: reshaped here."""
    from ai_edge_quantizer.calibrator import CalibrationMode

    result = q.calibrate(calibration, num_threads=os.cpu_count() or 1, mode=CalibrationMode.CALIBRATION_PROFILER_BASED)
    ranks = _tensor_ranks(fp32_path)
    for name, qsv in result.items():
        rank = ranks.get(name)
        for key in ("min", "max"):
            if key in qsv and rank is not None and np.ndim(qsv[key]) != rank and np.size(qsv[key]) == 1:
                qsv[key] = np.reshape(qsv[key], (1,) * rank)
    return result


def _tensor_ranks(model_path: Path) -> dict[str, int]:
    """{tensor name: rank} over every subgraph of a .tflite."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(Path(model_path).read_bytes(), 0)
    ranks = {}
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        for i in range(sg.TensorsLength()):
            t = sg.Tensors(i)
            ranks[t.Name().decode()] = t.ShapeLength()
    return ranks

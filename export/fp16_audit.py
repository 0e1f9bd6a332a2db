"""The fp16 audit: what the Neural Engine's half precision does to MobileSAM, measured without a Mac.

CoreML prediction needs macOS, so this runs the PyTorch graphs (`EncoderGraph`, `DecoderGraph`) with every
intermediate tensor rounded to float16, on real photos, and measures what that costs against fp32 with the
runtime's own metrics (`pocketsam.runtime.verify.compare`, pooled mask IoU).

How the emulation works (a `TorchDispatchMode`, so it sees every aten op, not only module outputs; forward hooks on
every module keep track of which module an op runs in):
- every float32 op input is rounded to float16 (weights included: parameters enter ops as inputs), the op is
  computed in float32 and its output rounded to float16 — values beyond the fp16 range become ±inf, exactly the
  overflow an fp16 engine hits. This models fp16 storage with wide accumulators (what the ANE and Apple GPUs do);
- LayerNorm is computed the naive two-pass way in fp16, `var = mean(round16((x - mean)^2))`, so an element whose
  deviation exceeds sqrt(65504) ~ 256 overflows, which is the LayerNorm failure reported for this model family.
  (How the ANE computes layer_norm is not documented; this is the pessimistic model, and it is what we guard.)
- ops inside modules kept in fp32 (the export's op-level precision selection) run unrounded, and their outputs are
  rounded when an fp16 op consumes them: the casts CoreML inserts around fp32 ops.

The verdict (`flag_fp32_modules`) is computed from the *fp32* magnitudes on the same photos: a module is kept in
fp32 when any op directly inside it reaches within `HEADROOM` of the fp16 range (for LayerNorm: its squared
deviations). `pocketsam.export.coreml` calls the same function to choose the ops its fp16 export keeps in fp32, so
the audit's verdict and the artifact agree by construction, and `tests/test_fp16_audit.py` checks it on the file.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from pocketsam.runtime import spec
from pocketsam.runtime.parity import checks_for
from pocketsam.runtime.spec import GraphSpec
from pocketsam.runtime.verify import compare, record_reference

from .calibration import decoder_calibration
from .graphs import decoder_graph, encoder_graph

FP16_MAX = 65504.0  # largest finite float16
# A module is kept in fp32 when its fp32 peak reaches FP16_MAX / HEADROOM. A factor of 4 (two binades) because the
# peak is measured on a handful of photos: other images (saturated, high-contrast, other sizes) reach higher, and
# an overflow is not a small error but an inf that poisons every later layer.
HEADROOM = 4.0
# LayerNorm reaches the dispatch mode as `layer_norm` under inference mode, as `native_layer_norm` otherwise.
_LN = torch.ops.aten.native_layer_norm.default
_LN_FUSED = torch.ops.aten.layer_norm.default
PARTS = ("encoder", "decoder")


# --- bookkeeping: which module is running --------------------------------------------------------------------


class _ModuleStack:
    """Forward pre-hooks / hooks on every submodule: `current` is the innermost module path now running."""

    def __init__(self, root: nn.Module) -> None:
        self.stack: list[str] = [""]
        self.types: dict[str, str] = {name: type(m).__name__ for name, m in root.named_modules()}
        self._handles = []
        for name, m in root.named_modules():
            if not name:
                continue
            self._handles.append(m.register_forward_pre_hook(self._enter(name)))
            self._handles.append(m.register_forward_hook(self._leave))

    def _enter(self, name: str):
        def hook(_module, _args) -> None:  # returns None: the module's input is left as it is
            self.stack.append(name)

        return hook

    def _leave(self, _module, _args, _out) -> None:  # returns None: the module's output is left as it is
        self.stack.pop()

    @property
    def current(self) -> str:
        return self.stack[-1]

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def is_kept(path: str, keep_fp32: Iterable[str]) -> bool:
    """True when `path` is a kept module or lies inside one (the rule the CoreML op selector applies too)."""
    return any(path == k or path.startswith(k + ".") for k in keep_fp32)


@dataclass
class LayerStat:
    """Largest magnitudes of the ops run directly inside one module (its submodules have their own rows)."""

    path: str
    type: str
    max_abs: float = 0.0  # largest |output| of any op here (fp32 value, before rounding)
    ln_max_sq: float = 0.0  # LayerNorm only: largest squared deviation (x - mean)^2 of its input
    nonfinite: int = 0  # outputs that were inf/NaN after rounding (emulated runs)

    @property
    def peak(self) -> float:
        """The quantity that must stay inside the fp16 range."""
        return max(self.max_abs, self.ln_max_sq)

    @property
    def fraction(self) -> float:
        return self.peak / FP16_MAX


def _round16(x: Any) -> Any:
    if isinstance(x, torch.Tensor) and x.dtype == torch.float32:
        return x.to(torch.float16).to(torch.float32)
    return x


def _naive_fp16_layer_norm(x, shape, weight, bias, eps):
    """LayerNorm as a two-pass fp16 engine computes it (every intermediate rounded to fp16)."""
    dims = tuple(range(x.dim() - len(shape), x.dim()))
    mean = _round16(x.mean(dim=dims, keepdim=True))
    d = _round16(x - mean)
    var = _round16(_round16(d * d).mean(dim=dims, keepdim=True))
    rstd = _round16(torch.rsqrt(var + eps))
    y = _round16(d * rstd)
    if weight is not None:
        y = _round16(y * weight)
    if bias is not None:
        y = y + bias
    return y, mean, rstd


# Ops that only move or select values: their outputs hold values of their inputs, which are already rounded (and
# whose magnitudes the producing op recorded), so they are neither rounded nor measured. It keeps the audit fast.
_MOVES = frozenset(
    "view _unsafe_view reshape permute transpose t expand clone contiguous alias detach slice select split "
    "split_with_sizes unsqueeze squeeze cat stack index_select flatten unflatten lift_fresh copy _to_copy "
    "constant_pad_nd unbind repeat".split()
)


def _peak(t: torch.Tensor) -> float:
    """max |t| in one pass (inf/NaN propagate)."""
    return float(torch.linalg.vector_norm(t, float("inf")))


class _Fp16Mode(TorchDispatchMode):
    """Records per-module magnitudes; with `emulate`, rounds every op outside `keep_fp32` to fp16."""

    def __init__(self, modules: _ModuleStack, stats: dict[str, LayerStat], emulate: bool, keep_fp32: Sequence[str]):
        super().__init__()
        self.modules, self.stats, self.emulate, self.keep = modules, stats, emulate, tuple(keep_fp32)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket.__name__ in _MOVES:
            return func(*args, **kwargs)
        path = self.modules.current
        stat = self.stats.get(path)
        if stat is None:
            stat = self.stats[path] = LayerStat(path, self.modules.types.get(path, "?"))
        fp16_here = self.emulate and not is_kept(path, self.keep)
        if fp16_here and self.keep:
            # An input may come from a kept (fp32) op: CoreML casts it to fp16 here. Without kept modules every
            # input already is fp16-exact (rounded outputs, pre-rounded weights and feeds), so this is skipped.
            args, kwargs = tree_map(_round16, args), tree_map(_round16, kwargs)
        if func is _LN or func is _LN_FUSED:
            x, shape = args[0], args[1]
            dims = tuple(range(x.dim() - len(shape), x.dim()))
            dev = x - x.mean(dim=dims, keepdim=True)
            sq = _peak(dev) ** 2 if dev.numel() else 0.0
            stat.ln_max_sq = max(stat.ln_max_sq, sq if math.isfinite(sq) else math.inf)
            if fp16_here:
                weight = args[2] if len(args) > 2 else kwargs.get("weight")
                bias = args[3] if len(args) > 3 else kwargs.get("bias")
                eps = args[4] if len(args) > 4 else kwargs.get("eps", 1e-5)
                out = _naive_fp16_layer_norm(x, shape, weight, bias, eps)
                out = out if func is _LN else out[0]
            else:
                out = func(*args, **kwargs)
        else:
            out = func(*args, **kwargs)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        for t in outs:
            if isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.numel():
                m = _peak(t)
                stat.max_abs = max(stat.max_abs, m if math.isfinite(m) else math.inf)
                if fp16_here and not m < FP16_MAX:  # rounding makes inf (or NaN is already there)
                    stat.nonfinite += int((~torch.isfinite(_round16(t))).sum())
        return tree_map(_round16, out) if fp16_here else out


class AuditSession:
    """A Session over a torch graph run under the fp16 audit mode (stats only, or fp16 emulation).

    With `emulate`, a private copy of the module gets its weights rounded to fp16 once (except in kept modules:
    CoreML keeps an fp32 op's weights in fp32), and feeds are rounded on entry, as the model's input cast does.
    """

    def __init__(self, module: nn.Module, graph: GraphSpec, emulate: bool, keep_fp32: Sequence[str] = ()) -> None:
        self.emulate, self.keep = emulate, tuple(keep_fp32)
        if emulate:
            module = copy.deepcopy(module)
            with torch.no_grad():
                for name, p in (*module.named_parameters(), *module.named_buffers()):
                    owner = name.rsplit(".", 1)[0] if "." in name else ""
                    if p.dtype == torch.float32 and not is_kept(owner, self.keep):
                        p.copy_(_round16(p))
        self.module = module.eval()
        self.graph = graph
        self.input_names, self.output_names = graph.input_names, graph.output_names
        self.stats: dict[str, LayerStat] = {}

    @torch.inference_mode()
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n], dtype=np.float32)) for n in self.input_names]
        if self.emulate:
            args = [_round16(a) for a in args]
        modules = _ModuleStack(self.module)
        try:
            with _Fp16Mode(modules, self.stats, self.emulate, self.keep):
                out = self.module(*args)
        finally:
            modules.close()
        out = (out,) if isinstance(out, torch.Tensor) else out
        return {n: t.float().numpy() for n, t in zip(self.output_names, out)}


# The graphs audited unless told otherwise: CoreML's default export (formats.py), the audit's consumer.
AUDITED_DECODER_GRAPH = "reference"
AUDITED_ENCODER_GRAPH = "reference"


def _graphs(model, decoder: str = AUDITED_DECODER_GRAPH,
            encoder: str = AUDITED_ENCODER_GRAPH) -> dict[str, tuple[nn.Module, GraphSpec]]:
    # A private copy: hooks never touch the caller's model. `decoder` / `encoder`: which graphs
    # (graphs.DECODER_GRAPHS / ENCODER_GRAPHS) are audited, so the magnitudes are those of the graphs the export
    # converts.
    model = copy.deepcopy(model).eval()
    return {"encoder": (encoder_graph(model, encoder), spec.ENCODER),
            "decoder": (decoder_graph(model, decoder), spec.DECODER)}


def measure_fp32_peaks(model, images: Sequence[np.ndarray], seed: int = 0, decoder: str = AUDITED_DECODER_GRAPH,
                       encoder: str = AUDITED_ENCODER_GRAPH) -> dict[str, dict[str, LayerStat]]:
    """{part: {module path: LayerStat}} of the fp32 graphs on real photos (decoder: seeded clicks, boxes).

    The encoder runs once per photo; the decoder on those photos' real embeddings with the calibration prompts of
    `pocketsam.export.calibration.decoder_calibration`.
    """
    g = _graphs(model, decoder, encoder)
    enc = AuditSession(*g["encoder"], emulate=False)
    dec = AuditSession(*g["decoder"], emulate=False)
    decoder_calibration(enc, dec, images, seed=seed)
    return {"encoder": enc.stats, "decoder": dec.stats}


def flag_fp32_modules(stats: dict[str, LayerStat], headroom: float = HEADROOM) -> list[str]:
    """Module paths whose fp32 peak reaches FP16_MAX / headroom: the modules an fp16 export must keep in fp32."""
    return sorted(p for p, s in stats.items() if p and s.peak * headroom >= FP16_MAX)


def fp16_keep_list(model, images: Sequence[np.ndarray], headroom: float = HEADROOM,
                   decoder: str = AUDITED_DECODER_GRAPH, encoder: str = AUDITED_ENCODER_GRAPH) -> dict[str, list[str]]:
    """{part: modules to keep in fp32}: the audit's verdict, as the CoreML fp16 export consumes it (`decoder`,
    `encoder`: the graphs that export converts)."""
    peaks = measure_fp32_peaks(model, images, decoder=decoder, encoder=encoder)
    return {part: flag_fp32_modules(s, headroom) for part, s in peaks.items()}


# --- the full audit ------------------------------------------------------------------------------------------


@dataclass
class Fp16Audit:
    """The audit's result: per-layer peaks, the modules to keep fp32, and the error of fp16 with and without them."""

    images: list[str]
    headroom: float
    layers: dict[str, list[dict]]  # part -> rows (path, type, max_abs, ln_max_sq, fraction, flagged), by peak
    keep_fp32: dict[str, list[str]]  # part -> module paths
    naive: dict[str, dict[str, dict[str, float]]]  # image -> compare() metrics, everything in fp16
    policy: dict[str, dict[str, dict[str, float]]]  # image -> compare() metrics, keep_fp32 modules in fp32
    nonfinite: dict[str, dict[str, int]] = field(default_factory=dict)  # mode -> part -> inf/NaN count
    bound: float = 0.99  # the parity table's e2e fp16 mask IoU bound

    def worst(self, mode: str, part: str, metric: str) -> float:
        runs = self.naive if mode == "naive" else self.policy
        values = [m[part][metric] for m in runs.values()]
        return min(values) if metric.startswith("mask_iou") else max(values)

    @property
    def passed(self) -> bool:
        """fp16 with the kept modules meets the parity table's fp16 bound on every photo."""
        return self.worst("policy", "e2e", "mask_iou") >= self.bound and not sum(self.nonfinite["policy"].values())

    @property
    def naive_passed(self) -> bool:
        return self.worst("naive", "e2e", "mask_iou") >= self.bound and not sum(self.nonfinite["naive"].values())

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed, "naive_passed": self.naive_passed}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1, default=float) + "\n"

    def to_text(self, top: int = 12) -> str:
        lines = [
            f"fp16 audit on {len(self.images)} photos ({', '.join(self.images)}); fp16 max {FP16_MAX:g}, "
            f"headroom {self.headroom:g}x (flag at peak >= {FP16_MAX / self.headroom:g})",
        ]
        for part in PARTS:
            rows = self.layers[part]
            lines.append(f"{part}: {len(rows)} layers; largest peaks (max |activation|, LayerNorm: max (x-mean)^2):")
            for r in rows[:top]:
                mark = "KEEP fp32" if r["flagged"] else ""
                lines.append(f"  {r['fraction'] * 100:7.3f}% of fp16 max  {r['peak']:11.4g}  {r['type']:<14} "
                             f"{r['path'] or '(graph)'}  {mark}")
            kept = self.keep_fp32[part]
            lines.append(f"  kept in fp32: {', '.join(kept) if kept else 'none (no layer near the fp16 range)'}")
        for mode, runs in (("all fp16", self.naive), ("fp16, flagged modules fp32", self.policy)):
            lines.append(f"{mode}: inf/NaN outputs {self.nonfinite['naive' if runs is self.naive else 'policy']}")
            for image, m in runs.items():
                lines.append(
                    f"  {image:<22} embedding max abs {m['encoder']['embedding_max_abs']:.4g} "
                    f"(rel {m['encoder']['embedding_max_rel']:.3g}), decoder mask IoU {m['decoder']['mask_iou']:.5f}, "
                    f"e2e mask IoU {m['e2e']['mask_iou']:.5f} (min per mask {m['e2e']['mask_iou_min']:.4f})"
                )
        verdict = "SAFE" if self.passed else "NOT SAFE"
        lines.append(
            f"verdict: fp16 with the kept modules is {verdict} (worst e2e mask IoU "
            f"{self.worst('policy', 'e2e', 'mask_iou'):.5f}, bound >= {self.bound}); all-fp16 worst "
            f"{self.worst('naive', 'e2e', 'mask_iou'):.5f} ({'passes' if self.naive_passed else 'fails'})"
        )
        return "\n".join(lines)


def _rows(stats: dict[str, LayerStat], keep: list[str]) -> list[dict]:
    rows = [
        {"path": s.path, "type": s.type, "max_abs": s.max_abs, "ln_max_sq": s.ln_max_sq, "peak": s.peak,
         "fraction": s.fraction, "flagged": s.path in keep}
        for s in stats.values()
    ]
    return sorted(rows, key=lambda r: -r["peak"])


def audit_fp16(
    model,
    images: Sequence[tuple[str, np.ndarray]],
    headroom: float = HEADROOM,
    keep_fp32: dict[str, list[str]] | None = None,
) -> Fp16Audit:
    """Run the audit on `(name, HxWx3 uint8 RGB photo)` pairs.

    `keep_fp32`: the modules to keep in fp32 in the "policy" run; default: the audit's own verdict on these photos
    (`flag_fp32_modules`), which is what the CoreML fp16 export keeps.
    """
    from .reference import reference_sessions

    photos = [img for _, img in images]
    peaks = measure_fp32_peaks(model, photos)
    verdict = {part: flag_fp32_modules(peaks[part], headroom) for part in PARTS}
    keep = verdict if keep_fp32 is None else keep_fp32
    ref_enc, ref_dec = reference_sessions(copy.deepcopy(model).eval())
    g = _graphs(model)
    refs = {name: record_reference(img, ref_enc, ref_dec) for name, img in images}
    naive, policy, nonfinite = {}, {}, {}
    for mode, out in (("naive", naive), ("policy", policy)):
        enc = AuditSession(*g["encoder"], emulate=True, keep_fp32=() if mode == "naive" else keep["encoder"])
        dec = AuditSession(*g["decoder"], emulate=True, keep_fp32=() if mode == "naive" else keep["decoder"])
        for name, _ in images:
            out[name] = compare(refs[name], enc, dec)
        nonfinite[mode] = {
            "encoder": sum(s.nonfinite for s in enc.stats.values()),
            "decoder": sum(s.nonfinite for s in dec.stats.values()),
        }
    bound = next(c.bound for c in checks_for("e2e", "fp16") if c.metric == "mask_iou")
    return Fp16Audit(
        images=[n for n, _ in images],
        headroom=headroom,
        layers={part: _rows(peaks[part], verdict[part]) for part in PARTS},
        keep_fp32=keep,
        naive=naive,
        policy=policy,
        nonfinite=nonfinite,
        bound=bound,
    )


# --- agreement with a CoreML export ------------------------------------------------------------------------


def coreml_agreement(bundle_root, keep_fp32: dict[str, list[str]]) -> list[str]:
    """Every way a CoreML bundle's op precisions differ from `keep_fp32` (empty: they agree).

    Per fp16-compute part: the modules the export recorded as kept in fp32 must be the verdict's, and the ops that
    compute in fp32 in the saved program must be exactly the ops the export's op selector kept for them.
    """
    from pocketsam.runtime.bundle import load_bundle
    from pocketsam.runtime.coreml_structure import read_structure

    bundle = load_bundle(bundle_root)
    if bundle.format != "coreml":
        return [f"{bundle.root} is a {bundle.format} bundle, not CoreML"]
    problems = []
    for part in PARTS:
        info = bundle.part(part)
        if info.precision == "fp32":
            continue  # no precision selection: everything is fp32
        s = read_structure(info.path)
        recorded = json.loads(s.metadata.get("pocketsam.fp32_modules", "[]"))
        chosen_ops = json.loads(s.metadata.get("pocketsam.fp32_ops", "[]"))
        if sorted(recorded) != sorted(keep_fp32[part]):
            problems.append(f"{part}: the export kept {recorded or 'nothing'} in fp32, the audit says "
                            f"{keep_fp32[part] or 'nothing'}")
        stray = [o for o in s.fp32_ops if not any(o == c or o.startswith(c + "_") for c in chosen_ops)]
        if stray:
            problems.append(f"{part}: ops compute in fp32 that no kept module asked for: {stray[:5]}")
        missing = [c for c in chosen_ops if not any(o == c or o.startswith(c + "_") for o in s.fp32_ops)]
        if missing:
            problems.append(f"{part}: ops chosen for fp32 do not compute in fp32 in the file: {missing[:5]}")
        if recorded and not s.fp32_ops:
            problems.append(f"{part}: modules {recorded} were to stay fp32 but no op computes in fp32")
    return problems


def run_audit_command(checkpoint, seed: int, config: str, images_dir, limit: int, bundle, json_path) -> tuple[str, bool]:
    """`pocketsam audit-fp16`: (report text, passed)."""
    import warnings
    from pathlib import Path

    from pocketsam.runtime.image import named_images

    from .model import build_mobile_sam

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_mobile_sam(checkpoint=checkpoint, seed=seed, config=config)
    result = audit_fp16(model, list(named_images(images_dir, limit)))
    text, ok = result.to_text(), result.passed
    if bundle is not None:
        problems = coreml_agreement(bundle, result.keep_fp32)
        if problems:
            text += "\nbundle agreement: ✗ " + "; ".join(problems)
            ok = False
        else:
            text += f"\nbundle agreement: ✓ {bundle}'s fp32 ops are exactly the audit's verdict"
    if json_path is not None:
        Path(json_path).write_text(result.to_json())
        text += f"\nwrote {json_path}"
    return text, ok

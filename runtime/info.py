"""`pocketsam info`: a bundle's manifest, its graphs' inputs and outputs as the engine sees them, and sizes."""

from __future__ import annotations

from .bundle import Bundle


def _coreml_lines(bundle: Bundle, part: str) -> list[str]:
    """CoreML: the .mlpackage's structure read from its spec (any OS, no prediction): I/O checked against the spec,
    operator histogram, weight precision, size, and the ops that commonly fall off the Neural Engine."""
    from .coreml_structure import read_structure
    from .errors import PocketSamError
    from .spec import GRAPHS

    try:
        return ["    " + line for line in read_structure(bundle.part(part).path, GRAPHS[part]).lines()]
    except PocketSamError as e:
        return [f"    (structure not read: {e})"]


def _io_lines(bundle: Bundle, part: str) -> list[str]:
    """Inputs/outputs read from the model file by its engine, or a note when the engine is not installed."""
    if bundle.format == "coreml":  # read from the spec, on any OS, without compiling the model
        return _coreml_lines(bundle, part)
    from .errors import PocketSamError
    from .loading import open_bundle

    try:
        _, enc, dec = open_bundle(bundle)
    except PocketSamError as e:
        return [f"    (inputs/outputs not read: {e})"]
    session = enc if part == "encoder" else dec
    describe_io = getattr(session, "describe_io", None)
    if describe_io is None:
        return [f"    inputs {session.input_names}, outputs {session.output_names}"]
    rows = describe_io()
    width = max(len(name) for _, name, _, _ in rows) + 2  # names as long as cached_image_tokens keep a gap
    lines = [f"    {kind:<7}{name:<{width}}{shape} {dtype}" for kind, name, shape, dtype in rows]
    return lines + _operator_lines(session)


def _operator_lines(session) -> list[str]:
    """Operators, what stays float and what mobile delegates may not run, for sessions that can list them
    (LiteRT: `pocketsam.runtime.tflite_ops`)."""
    operators = getattr(session, "operators", None)
    if operators is None:
        return []
    from .tflite_ops import describe_ops

    return describe_ops(operators())


def describe(bundle: Bundle) -> str:
    """A human-readable summary of a bundle."""
    m = bundle.manifest
    lines = [
        f"bundle     {bundle.root}",
        f"format     {bundle.format}   spec version {m['spec_version']}   created {m.get('created', '?')}",
        f"weights    {bundle.checkpoint_description} (config {m.get('config', 'vit_t')})",
    ]
    for part in ("encoder", "decoder"):
        p = bundle.part(part)
        lines.append(
            f"{part:<10} {p.path.name}  {p.precision}  {p.size_bytes / 2**20:.2f} MiB  sha256 {p.sha256[:16]}…"
        )
        lines.extend(_io_lines(bundle, part))
    if m.get("calibration"):
        lines.append(f"calibration {m['calibration']['images']} images from {m['calibration']['source']}")
    tools = ", ".join(f"{k} {v}" for k, v in m.get("tools", {}).items())
    lines.append(f"tools      {tools}")
    if m.get("parity"):
        lines.append("parity at export (PyTorch fp32 reference, probe photo):")
        marks = {True: "✓", False: "✗", None: "·"}
        for r in m["parity"]:
            bound = "" if r["bound"] is None else f"  ({r['op']} {r['bound']:g})"
            lines.append(f"  {marks[r['passed']]} {r['part']:<8}{r['metric']:<24}{r['value']:.6g}{bound}")
    return "\n".join(lines)

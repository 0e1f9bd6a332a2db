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


def _open(bundle: Bundle) -> tuple[tuple | None, str]:
    """((encoder, decoder) sessions or None, the `engine` line): the engine that runs the bundle here and its
    version (LiteRT: ai-edge-litert, or tflite-runtime where it is the fallback; onnxruntime: its providers)."""
    if bundle.format == "coreml":  # read from the spec, on any OS, without compiling the model
        from importlib import metadata

        try:
            version = metadata.version("coremltools")
        except metadata.PackageNotFoundError:
            version = "not installed"
        return None, f"coremltools {version} (structure read from the files; Core ML predicts on macOS only)"
    from .errors import PocketSamError
    from .loading import open_bundle

    try:
        _, enc, dec = open_bundle(bundle)
    except PocketSamError as e:
        return None, f"not opened here: {e}"
    return (enc, dec), engine_label(enc)


def engine_label(session) -> str:
    """"<engine> <version>" of an opened session, with onnxruntime's held providers or whether LiteRT's XNNPACK
    took the graph ("?" where a session has no such attributes, e.g. the PyTorch reference's)."""
    line = f"{getattr(session, 'engine', '?')} {getattr(session, 'engine_version', '?')}"
    xnnpack = getattr(session, "xnnpack", None)  # LiteRT: whether XNNPACK really took the graph
    if xnnpack is not None:
        line += ", XNNPACK" if xnnpack else ", builtin kernels (no XNNPACK)"
    if getattr(session, "providers_label", None):
        line += f", providers {session.providers_label}"
    return line


def _io_lines(bundle: Bundle, part: str, sessions: tuple | None) -> list[str]:
    """Inputs/outputs read from the model file by its engine, or a note when the engine could not open it."""
    if bundle.format == "coreml":
        return _coreml_lines(bundle, part)
    if sessions is None:
        return ["    (inputs/outputs not read: see the engine line)"]
    session = sessions[0] if part == "encoder" else sessions[1]
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
    sessions, engine = _open(bundle)
    lines.append(f"engine     {engine}")
    for part in ("encoder", "decoder"):
        p = bundle.part(part)
        lines.append(
            f"{part:<10} {p.path.name}  {p.precision}  {p.size_bytes / 2**20:.2f} MiB  sha256 {p.sha256[:16]}…"
        )
        lines.extend(_io_lines(bundle, part, sessions))
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

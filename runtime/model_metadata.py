"""pocketsam's `pocketsam.*` metadata read straight from a model file, with no engine and no converter installed.

Every exporter stamps the part's identity into its file (spec version, part, weights id): ONNX in
`ModelProto.metadata_props`, TFLite in the model's `metadata` entries, CoreML in the description's user-defined
metadata. `load_bundle` compares it with the manifest, so a part copied in from another export (with its hash fixed
in the manifest) is refused at open instead of running silently. The readers walk only the few fields they need:
protobuf wire format for ONNX and CoreML, the flatbuffer layout for TFLite.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

from .errors import BundleError

PREFIX = "pocketsam."

# Field numbers (onnx.proto, CoreML's Model.proto / FeatureTypes.proto).
_ONNX_METADATA_PROPS = 14  # ModelProto.metadata_props: repeated StringStringEntryProto {key = 1, value = 2}
_COREML_DESCRIPTION, _COREML_METADATA, _COREML_USER_DEFINED = 2, 100, 100  # Model.description.metadata.userDefined
_COREML_MODEL_FILE = ("Data", "com.apple.CoreML", "model.mlmodel")
# TFLite schema: Model table fields (0-based): buffers = 4, metadata = 6; Metadata {name = 0, buffer = 1};
# Buffer {data = 0, offset = 1, size = 2}.
_TFL_BUFFERS, _TFL_METADATA = 4, 6


class _Truncated(Exception):
    pass


def _varint(buf, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Truncated
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _fields(buf, start: int, end: int):
    """(field number, wire type, value) of a protobuf message's fields; length-delimited values as (start, end)."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = (pos, pos + n), pos + n
        elif wire == 5:
            value, pos = None, pos + 4
        else:
            raise _Truncated
        if pos > end:
            raise _Truncated
        yield number, wire, value


def _message(buf, span: tuple[int, int], number: int) -> tuple[int, int] | None:
    """The span of the last field `number` (a sub-message) inside `span`."""
    found = None
    for n, wire, value in _fields(buf, *span):
        if n == number and wire == 2:
            found = value
    return found


def _string_map(buf, span: tuple[int, int], number: int) -> dict[str, str]:
    """Entries {key = 1, value = 2} of the repeated field `number` inside `span` (protobuf maps have this shape)."""
    out = {}
    for n, wire, value in _fields(buf, *span):
        if n != number or wire != 2:
            continue
        entry = {k: bytes(buf[v[0]:v[1]]).decode("utf-8", "replace") for k, w, v in _fields(buf, *value) if w == 2}
        out[entry.get(1, "")] = entry.get(2, "")
    return out


def _onnx(buf) -> dict[str, str]:
    return _string_map(buf, (0, len(buf)), _ONNX_METADATA_PROPS)


def _coreml(buf) -> dict[str, str]:
    description = _message(buf, (0, len(buf)), _COREML_DESCRIPTION)
    metadata = description and _message(buf, description, _COREML_METADATA)
    return _string_map(buf, metadata, _COREML_USER_DEFINED) if metadata else {}


def _u32(buf, pos: int) -> int:
    if pos + 4 > len(buf):
        raise _Truncated
    return struct.unpack_from("<I", buf, pos)[0]


def _table_field(buf, table: int, index: int) -> int | None:
    """Absolute position of a flatbuffer table's field `index`, or None when absent."""
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    vsize = struct.unpack_from("<H", buf, vtable)[0]
    slot = 4 + 2 * index
    if slot + 2 > vsize:
        return None
    offset = struct.unpack_from("<H", buf, vtable + slot)[0]
    return table + offset if offset else None


def _vector(buf, field: int | None) -> tuple[int, int]:
    """(position of the first element, length) of the vector a field points to ((0, 0) when absent)."""
    if field is None:
        return 0, 0
    vec = field + _u32(buf, field)
    return vec + 4, _u32(buf, vec)


def _tflite(buf) -> dict[str, str]:
    model = _u32(buf, 0)
    buffers_at, n_buffers = _vector(buf, _table_field(buf, model, _TFL_BUFFERS))
    metadata_at, n_metadata = _vector(buf, _table_field(buf, model, _TFL_METADATA))
    out = {}
    for i in range(n_metadata):
        entry = metadata_at + 4 * i + _u32(buf, metadata_at + 4 * i)
        name_at, name_len = _vector(buf, _table_field(buf, entry, 0))
        name = bytes(buf[name_at:name_at + name_len]).decode("utf-8", "replace")
        index_field = _table_field(buf, entry, 1)
        index = _u32(buf, index_field) if index_field is not None else 0
        if not name.startswith(PREFIX) or index >= n_buffers:
            continue
        buffer = buffers_at + 4 * index + _u32(buf, buffers_at + 4 * index)
        data_at, data_len = _vector(buf, _table_field(buf, buffer, 0))
        if data_len == 0:  # weights stored after the flatbuffer (large models): offset + size fields (uint64)
            off_field, size_field = _table_field(buf, buffer, 1), _table_field(buf, buffer, 2)
            if off_field is not None and size_field is not None:
                data_at = struct.unpack_from("<Q", buf, off_field)[0]
                data_len = struct.unpack_from("<Q", buf, size_field)[0]
        if data_at + data_len > len(buf):
            raise _Truncated
        out[name] = bytes(buf[data_at:data_at + data_len]).decode("utf-8", "replace")
    return out


_READERS = {"onnx": _onnx, "tflite": _tflite, "coreml": _coreml}


def read_metadata(path: Path, format: str) -> dict[str, str]:
    """{key: value} of the `pocketsam.*` metadata in a model file of `format` ("onnx", "tflite", "coreml"; for
    CoreML `path` is the .mlpackage folder). BundleError when the file cannot be parsed."""
    path = Path(path)
    target = path.joinpath(*_COREML_MODEL_FILE) if format == "coreml" else path
    try:
        with open(target, "rb") as fh:
            if fh.seek(0, 2) == 0:
                raise BundleError(f"{path}: empty model file")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                found = _READERS[format](buf)
    except (_Truncated, struct.error, IndexError) as e:
        raise BundleError(f"{path}: cannot read the model's metadata (corrupt or not a {format} file)") from e
    except OSError as e:
        raise BundleError(f"{path}: cannot read the model file ({e.strerror or e})") from None
    return {k: v for k, v in found.items() if k.startswith(PREFIX)}

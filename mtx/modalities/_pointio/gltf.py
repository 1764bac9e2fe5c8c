"""glTF 2.0 / GLB structure checks, before open3d (assimp) is asked to read the file.

assimp trusts a glTF's accessor counts, so the JSON is read here first (bounded) and every
accessor is checked to fit its buffer view, every view its buffer, every buffer the bytes that
exist; the mesh's total vertices and triangles are checked against the in-memory limits. Also
names the external buffers a ``.gltf`` uses, so discovery does not embed them on their own.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from urllib.parse import unquote

from ...errors import DecodeError
from .. import _budget
from . import base

MAX_JSON = 64 << 20
_COMPONENT = {5120: 1, 5121: 1, 5122: 2, 5123: 2, 5125: 4, 5126: 4}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}


def read_document(path: Path, head: bytes, size: int, fmt: str) -> tuple[dict, int]:
    """The glTF JSON and the length of a GLB's binary chunk (0 for ``.gltf``)."""
    if fmt == "glb":
        head = _bytes(path, head, 20)
        if len(head) < 20:
            raise DecodeError("truncated GLB: no JSON chunk header")
        length, (jlen, jtype) = struct.unpack_from("<I", head, 8)[0], struct.unpack_from("<I4s", head, 12)
        if jtype != b"JSON" or length > size or 20 + jlen > size or jlen > MAX_JSON:
            raise DecodeError(f"corrupt GLB: header length {length:,} / JSON chunk {jlen:,} bytes in a "
                              f"{size:,}-byte file")
        rest = 20 + jlen + ((-jlen) % 4)
        data = _bytes(path, head, min(size, rest + 8))
        raw, tail = data[20: 20 + jlen], data[rest: rest + 8]
        bin_len = struct.unpack("<I", tail[:4])[0] if len(tail) == 8 and tail[4:] == b"BIN\0" else 0
        if rest + 8 + bin_len > size:
            raise DecodeError(f"truncated GLB: a {bin_len:,}-byte binary chunk in a {size:,}-byte file")
    else:
        if size > MAX_JSON:
            raise DecodeError(f"glTF JSON of {size:,} bytes is larger than {MAX_JSON >> 20} MiB")
        raw, bin_len = _bytes(path, head, size), 0
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise DecodeError(f"corrupt glTF JSON: {str(e)[:120]}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("asset"), dict):
        raise DecodeError("corrupt glTF: no \"asset\" object")
    return doc, bin_len


def _bytes(path: Path, head: bytes, n: int) -> bytes:
    if len(head) >= n:
        return head[:n]
    with open(path, "rb") as f:
        return f.read(n)


def buffer_uris(doc: dict) -> list[str]:
    """The external (file) URIs of a glTF's buffers."""
    out = []
    for b in _list(doc, "buffers"):
        uri = b.get("uri") if isinstance(b, dict) else None
        if isinstance(uri, str) and not uri.startswith("data:"):
            out.append(unquote(uri))
    return out


def companions(path: Path) -> list[Path]:
    """Buffers a ``.gltf`` reads from beside it (not inputs of their own)."""
    try:
        if path.suffix.lower() != ".gltf" or path.stat().st_size > MAX_JSON:
            return []
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return []
    if not isinstance(doc, dict):
        return []
    return [path.parent / u for u in buffer_uris(doc) if "://" not in u]


def check_document(doc: dict, path: Path, bin_len: int) -> dict:
    """Every accessor fits its view, every view its buffer, every buffer the existing bytes.

    Returns facts (declared vertices and triangles); raises DecodeError otherwise."""
    sizes = [_buffer_size(b, path, bin_len) for b in _list(doc, "buffers")]
    views = _list(doc, "bufferViews")
    for i, v in enumerate(views):
        b = _int(v, "buffer", -1)
        if not 0 <= b < len(sizes) or _int(v, "byteOffset") + _int(v, "byteLength") > sizes[b]:
            raise DecodeError(f"corrupt glTF: bufferView {i} lies outside its buffer")
    accessors = _list(doc, "accessors")
    for i, a in enumerate(accessors):
        _check_accessor(i, a, views)
    verts = tris = 0
    for mesh in _list(doc, "meshes"):
        for p in _list(mesh, "primitives"):
            pos = _accessor(accessors, (p.get("attributes") or {}).get("POSITION"))
            ind = _accessor(accessors, p.get("indices"))
            n = _int(pos, "count") if pos else 0
            verts += n
            tris += (_int(ind, "count") if ind else n) // 3
    vcap, tcap = base.max_vertices(), base.max_triangles()
    if verts > vcap or tris > tcap:
        raise DecodeError(f"glTF mesh with {verts:,} vertices / {tris:,} triangles is above the "
                          f"{vcap:,} / {tcap:,} read into memory (the per-sample memory budget; "
                          f"{_budget.RAISE})")
    return {"declared_vertices": verts, "declared_triangles": tris}


def _check_accessor(i: int, a: dict, views: list) -> None:
    if "bufferView" not in a:
        return  # all zeros or sparse: nothing is read from a buffer
    view = views[a["bufferView"]] if 0 <= _int(a, "bufferView", -1) < len(views) else None
    comp, width = _COMPONENT.get(a.get("componentType")), _WIDTH.get(a.get("type"))
    if view is None or comp is None or width is None:
        raise DecodeError(f"corrupt glTF: accessor {i} has no valid bufferView/componentType/type")
    count, elem = _int(a, "count"), comp * width
    stride = max(_int(view, "byteStride"), elem)
    need = _int(a, "byteOffset") + (count - 1) * stride + elem if count else 0
    if need > _int(view, "byteLength"):
        raise DecodeError(f"corrupt glTF: accessor {i} declares {count:,} elements ({need:,} bytes), "
                          f"its bufferView holds {_int(view, 'byteLength'):,}")


def _buffer_size(b: dict, path: Path, bin_len: int) -> int:
    uri = b.get("uri") if isinstance(b, dict) else None
    declared = _int(b, "byteLength")
    if uri is None:
        have = bin_len
    elif uri.startswith("data:"):
        have = len(uri.partition(",")[2]) * 3 // 4
    elif "://" in uri:
        raise DecodeError(f"glTF buffer {uri[:60]!r} is not a local file; mtx reads local files only")
    else:
        try:
            have = (path.parent / unquote(uri)).stat().st_size
        except OSError:
            raise DecodeError(f"glTF buffer {uri[:60]!r} not found beside the file") from None
    if declared > have:
        raise DecodeError(f"corrupt glTF: a buffer declares {declared:,} bytes, {have:,} exist")
    return declared


def _list(d, key: str) -> list:
    v = d.get(key) if isinstance(d, dict) else None
    return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []


def _int(d, key: str, default: int = 0) -> int:
    v = d.get(key, default) if isinstance(d, dict) else default
    if not isinstance(v, int) or isinstance(v, bool) or v < (0 if default >= 0 else -1):
        raise DecodeError(f"corrupt glTF: {key} = {v!r}")
    return v


def _accessor(accessors: list, i) -> dict | None:
    return accessors[i] if isinstance(i, int) and 0 <= i < len(accessors) else None

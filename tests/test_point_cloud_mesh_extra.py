"""point_cloud with the optional open3d extra (``mtx[mesh]``): glTF/GLB/FBX meshes, Poisson-disk
sampling, and how mtx behaves without it. Tests that read through open3d skip when it is not
importable; the sniffing and missing-extra tests run everywhere."""
from __future__ import annotations

import base64
import builtins
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_point_cloud import head_of, load_points, torus_mesh, write_obj
from test_point_cloud_io import face_shares, gridded_cube, original

from mtx.errors import DecodeError, MissingDependency
from mtx.modalities import _pointio as pio
from mtx.modalities import get_modality
from mtx.modalities._base import CLAIM, REFINED, Sniffed
from mtx.sniff import sniff

MOD = get_modality("point_cloud")
ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------
# Writers: minimal but valid glTF 2.0 (JSON + base64 or external buffer), GLB, binary FBX 7.4
# ---------------------------------------------------------------------------------------------


def gltf_parts(verts, faces) -> tuple[dict, bytes]:
    v, f = np.asarray(verts, "<f4"), np.asarray(faces, "<u4").reshape(-1)
    ib, vb = f.tobytes(), v.tobytes()
    pad = (-len(ib)) % 4
    blob = ib + b"\0" * pad + vb
    doc = {"asset": {"version": "2.0", "generator": "mtx tests"}, "scene": 0, "scenes": [{"nodes": [0]}],
           "nodes": [{"mesh": 0}], "meshes": [{"primitives": [{"attributes": {"POSITION": 1}, "indices": 0}]}],
           "buffers": [{"byteLength": len(blob)}],
           "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": len(ib), "target": 34963},
                           {"buffer": 0, "byteOffset": len(ib) + pad, "byteLength": len(vb), "target": 34962}],
           "accessors": [{"bufferView": 0, "componentType": 5125, "count": len(f), "type": "SCALAR"},
                         {"bufferView": 1, "componentType": 5126, "count": len(v), "type": "VEC3",
                          "min": v.min(0).tolist(), "max": v.max(0).tolist()}]}
    return doc, blob


def write_glb(path: Path, verts, faces, doc_edit=None) -> Path:
    doc, blob = gltf_parts(verts, faces)
    if doc_edit:
        doc_edit(doc)
    js = json.dumps(doc).encode()
    js += b" " * ((-len(js)) % 4)
    blob += b"\0" * ((-len(blob)) % 4)
    body = struct.pack("<I4s", len(js), b"JSON") + js + struct.pack("<I4s", len(blob), b"BIN\0") + blob
    path.write_bytes(struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body)
    return path


def write_gltf(path: Path, verts, faces, external: bool = False) -> Path:
    doc, blob = gltf_parts(verts, faces)
    if external:
        (path.parent / (path.stem + ".bin")).write_bytes(blob)
        doc["buffers"][0]["uri"] = path.stem + ".bin"
    else:
        doc["buffers"][0]["uri"] = "data:application/octet-stream;base64," + base64.b64encode(blob).decode()
    path.write_text(json.dumps(doc, indent=1))
    return path


def _fbx_prop(kind: str, val) -> bytes:
    if kind in "LI":
        return kind.encode() + struct.pack("<q" if kind == "L" else "<i", val)
    if kind == "S":
        b = val if isinstance(val, bytes) else val.encode()
        return b"S" + struct.pack("<I", len(b)) + b
    a = np.asarray(val, "<f8" if kind == "d" else "<i4").tobytes()
    return kind.encode() + struct.pack("<III", len(val), 0, len(a)) + a


def _fbx_node(name: str, props=(), children=()):
    def at(offset: int) -> bytes:
        pb = b"".join(_fbx_prop(k, v) for k, v in props)
        pos, kids = offset + 13 + len(name) + len(pb), b""
        for c in children:
            kids += c(pos + len(kids))
        if children:
            kids += b"\0" * 13
        end = pos + len(kids)
        return struct.pack("<IIIB", end, len(props), len(pb), len(name)) + name.encode() + pb + kids
    return at


def write_fbx(path: Path, verts, faces) -> Path:
    """Binary FBX 7.4: one Geometry (Vertices, PolygonVertexIndex) under one Model."""
    idx = [i for t in np.asarray(faces).tolist() for i in t[:-1] + [~t[-1]]]
    N = _fbx_node
    geometry = N("Geometry", [("L", 100), ("S", b"Mesh\x00\x01Geometry"), ("S", "Mesh")],
                 [N("Vertices", [("d", np.asarray(verts, np.float64).ravel())]),
                  N("PolygonVertexIndex", [("i", idx)]), N("GeometryVersion", [("I", 124)])])
    tops = [N("FBXHeaderExtension", [], [N("FBXHeaderVersion", [("I", 1003)]), N("FBXVersion", [("I", 7400)])]),
            N("GlobalSettings", [], [N("Version", [("I", 1000)])]),
            N("Objects", [], [geometry, N("Model", [("L", 200), ("S", b"Mesh\x00\x01Model"), ("S", "Mesh")], [N("Version", [("I", 232)])])]),
            N("Connections", [], [N("C", [("S", "OO"), ("L", 100), ("L", 200)]),
                                  N("C", [("S", "OO"), ("L", 200), ("L", 0)])])]
    out = b"Kaydara FBX Binary  \x00\x1a\x00" + struct.pack("<I", 7400)
    for t in tops:
        out += t(len(out))
    path.write_bytes(out + b"\0" * 13)
    return path


@pytest.fixture(scope="module")
def exchange(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("exchange")
    v, f = torus_mesh()
    return {"obj": write_obj(d / "t.obj", v, f), "glb": write_glb(d / "t.glb", v, f),
            "gltf": write_gltf(d / "t.gltf", v, f), "fbx": write_fbx(d / "t.fbx", v, f)}


@pytest.fixture
def o3d():
    try:
        import open3d
    except (ImportError, OSError) as e:
        pytest.skip(f"open3d (the mtx[mesh] extra) is not importable here: {str(e)[:80]}")
    return open3d


# ---------------------------------------------------------------------------------------------
# Without the extra: sniffed, then one clear line naming it
# ---------------------------------------------------------------------------------------------


def test_exchange_formats_are_claimed(exchange, tmp_path):
    for fmt in ("glb", "gltf", "fbx"):
        p = exchange[fmt]
        ev = MOD.sniff(head_of(p), p)
        assert ev.strength == CLAIM and ev.format == fmt, ev
        assert sniff(p).modality == "point_cloud"
    as_json = tmp_path / "model.json"  # a glTF under another name: still recognised, less strongly
    as_json.write_bytes(exchange["gltf"].read_bytes())
    ev = MOD.sniff(head_of(as_json), as_json)
    assert ev.strength == REFINED and ev.format == "gltf"


@pytest.mark.parametrize("failure", ["missing", "libusb"])
def test_without_open3d_a_one_line_error_names_the_extra(exchange, monkeypatch, failure):
    monkeypatch.setattr(pio.o3d, "_module", None)
    if failure == "missing":
        monkeypatch.setitem(sys.modules, "open3d", None)  # import open3d -> ImportError
    else:
        real = builtins.__import__

        def fake(name, *a, **k):
            if name == "open3d":
                raise OSError("libusb-1.0.so.0: cannot open shared object file: No such file or directory")
            return real(name, *a, **k)

        monkeypatch.setattr(builtins, "__import__", fake)
    cases = [(exchange[fmt], {}) for fmt in ("glb", "gltf", "fbx")] + [(exchange["obj"], {"mesh_sampling": "poisson"})]
    for p, cfg in cases:
        with pytest.raises(MissingDependency) as ei:
            load_points(p, **cfg)
        msg = ei.value.message
        assert "pip install 'mtx[mesh]'" in msg and "\n" not in msg and len(msg) < 250, msg
        if failure == "libusb":
            assert "libusb-1.0.so.0" in msg and "apt-get install libusb-1.0-0" in msg, msg
    # Everything else needs no extra.
    assert load_points(exchange["obj"])[1]["mesh"]["used"] == "surface samples"


# ---------------------------------------------------------------------------------------------
# With the extra
# ---------------------------------------------------------------------------------------------


def test_gltf_glb_fbx_give_the_same_points_as_obj(exchange, o3d):
    ref, _ = load_points(exchange["obj"])
    for fmt in ("glb", "gltf", "fbx"):
        pts, meta = load_points(exchange[fmt])
        assert meta["format"] == fmt and meta["mesh"]["used"] == "surface samples", meta
        assert meta["mesh"]["triangles"] == 576
        assert np.array_equal(pts, ref), fmt
    _, meta = load_points(exchange["glb"], mesh_sampling="vertices")
    assert meta["mesh"]["used"] == "vertices" and meta["points_in_file"] == 288
    (s,) = MOD.load(exchange["glb"], MOD.config(), Sniffed(b"", "glb"))  # a format without its head
    assert np.array_equal(s.arrays["points"], ref)


def test_poisson_disk_sampling(tmp_path, o3d):
    v, f = gridded_cube(40)
    p = write_obj(tmp_path / "cube.obj", v.astype(np.float32), f)
    a, meta = load_points(p, mesh_sampling="poisson")
    b, _ = load_points(p, mesh_sampling="poisson")
    m = meta["mesh"]
    assert m["used"] == "poisson disk samples" and "Poisson" in m["method"] and m["seed"] == 0
    assert np.array_equal(a, b)  # seeded
    assert not np.array_equal(a, load_points(p, mesh_sampling="poisson", seed=3)[0])
    orig = original(a, meta)
    assert np.allclose(np.abs(orig).max(1), 1.0, atol=1e-5)
    shares = face_shares(orig)
    assert shares.min() > 0.12 and shares.max() < 0.22, shares
    # The file's face order does not matter.
    perm = np.random.default_rng(0).permutation(len(f))
    q = write_obj(tmp_path / "shuffled.obj", v.astype(np.float32), f[perm])
    assert np.array_equal(load_points(q, mesh_sampling="poisson")[0], a)


def test_corrupt_exchange_files_fail_clearly_and_stdout_stays_clean(tmp_path, exchange, o3d, capfd):
    v, f = torus_mesh()
    bad = {}
    (tmp_path / "garbage.glb").write_bytes(b"glTF" + struct.pack("<II", 2, 4000) + bytes(range(256)) * 4)
    bad["garbage.glb"] = "GLB"

    def lie(doc):
        doc["accessors"][1]["count"] = 10**9

    write_glb(tmp_path / "lying.glb", v, f, lie)
    bad["lying.glb"] = "accessor 1 declares 1,000,000,000 elements"
    write_glb(tmp_path / "zeros.glb", np.zeros_like(v), f)
    bad["zeros.glb"] = "vertices are 0"
    fbx = exchange["fbx"].read_bytes()
    (tmp_path / "cut.fbx").write_bytes(fbx[: len(fbx) // 2])
    bad["cut.fbx"] = "FBX"
    ext = write_gltf(tmp_path / "ext.gltf", v, f, external=True)
    (tmp_path / "ext.bin").unlink()
    bad["ext.gltf"] = "not found beside the file"
    (tmp_path / "notjson.gltf").write_text('{"asset": {"version": "2.0"}, oops')
    bad["notjson.gltf"] = "corrupt glTF JSON"
    capfd.readouterr()
    for name, needle in bad.items():
        with pytest.raises(DecodeError) as ei:
            load_points(tmp_path / name)
        msg = ei.value.message
        assert needle in msg and "\n" not in msg and len(msg) < 300, (name, msg)
    out = capfd.readouterr().out
    assert out == "", out  # open3d's warnings never reach stdout
    assert ext.exists()


def test_gltf_external_buffer_is_read_and_not_embedded_alone(tmp_path, exchange, o3d):
    v, f = torus_mesh()
    p = write_gltf(tmp_path / "ext.gltf", v, f, external=True)
    assert MOD.companions(p) == [tmp_path / "ext.bin"]
    assert np.array_equal(load_points(p)[0], load_points(exchange["obj"])[0])


def test_cli_stdout_is_only_data(tmp_path, exchange, o3d):
    """A real run: open3d warns about a corrupt GLB, yet stdout holds only the JSON summary."""
    (tmp_path / "in").mkdir()
    good = tmp_path / "in" / "good.glb"
    good.write_bytes(exchange["glb"].read_bytes())
    (tmp_path / "in" / "bad.glb").write_bytes(b"glTF" + struct.pack("<II", 2, 4000) + bytes(4000))
    r = subprocess.run([sys.executable, "-m", "mtx", "embed", str(tmp_path / "in"), "-o", str(tmp_path / "o.h5"),
                        "-m", "tiny", "-w", "seeded", "-j", "1", "--json", "-q"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 3, r.stderr[-2000:]
    summary = json.loads(r.stdout)  # nothing but the JSON document
    assert "Open3D" not in r.stdout and summary

"""point_cloud I/O: sniffing hands the loader the format, one open per file, mesh surface sampling,
degenerate and lying meshes."""
from __future__ import annotations

import os
import struct
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from test_point_cloud import (
    cloud,
    head_of,
    load_points,
    torus_mesh,
    write_las,
    write_obj,
    write_off,
    write_pcd,
    write_ply,
    write_stl,
    write_xyz,
)

from mtx.errors import DecodeError
from mtx.modalities import _pointio as pio
from mtx.modalities import get_modality
from mtx.modalities._base import Sniffed
from mtx.sniff import sniff

MOD = get_modality("point_cloud")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """One file of every format mtx reads without an extra, keyed by the format sniffing names."""
    d = tmp_path_factory.mktemp("fmt")
    x = cloud(2000)
    v, f = torus_mesh()
    out = {"ply": write_ply(d / "a.ply", x, "binary_little_endian"), "pcd": write_pcd(d / "a.pcd", x, "binary"),
           "las": write_las(d / "a.laz", x), "xyz": write_xyz(d / "a.xyz", x), "off": write_off(d / "m.off", v, f),
           "obj": write_obj(d / "m.obj", v, f), "stl-ascii": write_stl(d / "a.stl", v, f, False),
           "stl-binary": write_stl(d / "b.stl", v, f, True), "npy": d / "a.npy", "npz": d / "a.npz",
           "kitti": d / "velodyne" / "0001.bin"}
    np.save(out["npy"], x)
    np.savez(out["npz"], points=x)
    out["kitti"].parent.mkdir()
    np.c_[x, np.zeros((len(x), 1), np.float32)].astype("<f4").tofile(out["kitti"])
    out["ply-mesh"] = write_ply(d / "mesh.ply", v, "ascii", faces=f)
    return out


# ---------------------------------------------------------------------------------------------
# Sniffed: the format travels from sniff to load; the file is opened once by the loader
# ---------------------------------------------------------------------------------------------

_OPENS: list[list[str]] = []


def _audit(event: str, args) -> None:
    if event == "open" and _OPENS and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENS[-1].append(os.path.abspath(os.fsdecode(args[0])))


sys.addaudithook(_audit)  # audit hooks cannot be removed: this one records only inside opens_of()


def opens_of(path: Path, fn) -> int:
    """How many times ``fn()`` opens ``path`` (Python-level opens: io.open, os.open)."""
    _OPENS.append([])
    try:
        fn()
    finally:
        seen = _OPENS.pop()
    return seen.count(os.path.abspath(path))


def test_sniff_names_the_format(files):
    for fmt, p in files.items():
        dec = sniff(p)
        assert dec.modality == "point_cloud", fmt
        assert dec.format == MOD.sniff(head_of(p), p).format == fmt.removesuffix("-mesh"), (fmt, dec)


def test_loader_opens_the_file_once(files):
    for fmt, p in files.items():
        dec = sniff(p)
        with_sniffed = opens_of(p, lambda p=p, dec=dec: list(MOD.load(p, MOD.config(), dec.sniffed)))
        without = opens_of(p, lambda p=p: list(MOD.load(p, MOD.config())))
        assert with_sniffed == 1 and without == 1, (fmt, with_sniffed, without)
        # sniffing itself reads the head once; only an NPZ's members need a look inside the archive
        assert opens_of(p, lambda p=p: sniff(p)) == (2 if fmt == "npz" else 1), fmt


def test_sniffed_format_is_trusted_and_detection_is_the_fallback(tmp_path, files):
    plain = tmp_path / "numbers.txt"  # no point-cloud hint: sniff does not claim it
    write_xyz(plain, cloud(300))
    assert MOD.sniff(head_of(plain), plain) is None
    ref = list(MOD.load(plain, MOD.config()))[0].arrays["points"]
    for sn in (Sniffed(head_of(plain), "xyz"), Sniffed(head_of(plain), ""), Sniffed(b"", "csv"), None):
        (s,) = MOD.load(plain, MOD.config(), sn)
        assert s.meta["format"] == "xyz" and np.array_equal(s.arrays["points"], ref), sn
    # --modality point_cloud on a .bin without a velodyne hint: no format sniffed, detected by load
    raw = tmp_path / "scan.bin"
    raw.write_bytes(files["kitti"].read_bytes())
    dec = sniff(raw, modality="point_cloud")
    assert dec.format == "" and list(MOD.load(raw, MOD.config(), dec.sniffed))[0].meta["format"] == "kitti"
    # The head the loader is handed is used as it is: a PLY header from the sniffed bytes.
    p = files["ply"]
    (s,) = MOD.load(p, MOD.config(), Sniffed(head_of(p), "ply"))
    assert s.meta["ply_format"] == "binary_little_endian"


def test_long_headers_are_read_past_the_sniffed_head(tmp_path):
    x = cloud(500)
    p = write_ply(tmp_path / "long.ply", x, "binary_little_endian")
    raw = p.read_bytes()
    comments = b"".join(b"comment %05d padding the header past the sniffed head\n" % i for i in range(300))
    q = tmp_path / "long_header.ply"
    q.write_bytes(raw.replace(b"comment made by test_point_cloud\n", comments))
    assert raw.index(b"end_header") < 8192 < q.read_bytes().index(b"end_header")
    a, _ = load_points(p)
    b = list(MOD.load(q, MOD.config(), sniff(q).sniffed))[0].arrays["points"]
    assert np.array_equal(a, b)


# ---------------------------------------------------------------------------------------------
# Meshes: sampled on their surface by default
# ---------------------------------------------------------------------------------------------


def gridded_cube(n: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """A [-1, 1]^3 cube: five faces of two triangles, the +z face a (n+1)^2-vertex grid."""
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
    quads = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4]]  # all but +z
    tris = [[q[0], q[1], q[2]] for q in quads] + [[q[0], q[2], q[3]] for q in quads]
    g = np.linspace(-1, 1, n + 1)
    gx, gy = np.meshgrid(g, g, indexing="ij")
    top = np.stack([gx.ravel(), gy.ravel(), np.ones(gx.size)], 1)
    idx = np.arange(top.shape[0]).reshape(n + 1, n + 1) + 8
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[:-1, 1:], idx[1:, 1:]
    tris += np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)]).tolist()
    return np.concatenate([corners, top]), np.asarray(tris)


def face_shares(pts: np.ndarray) -> np.ndarray:
    """Fraction of the points on each of the six faces of [-1, 1]^3 (+x -x +y -y +z -z)."""
    axis = np.abs(pts).argmax(1)
    sign = np.sign(pts[np.arange(len(pts)), axis])
    face = 2 * axis + (sign < 0)
    return np.bincount(face, minlength=6) / len(pts)


def original(pts: np.ndarray, meta: dict) -> np.ndarray:
    return pts[0].astype(np.float64) * meta["radius"] + meta["centroid"]


def test_gridded_cube_is_sampled_over_all_faces_by_area(tmp_path):
    v, f = gridded_cube()
    assert (np.abs(v[:, 2] - 1) < 1e-12).mean() > 0.998  # 99.8 % of the vertices are on one face
    p = write_obj(tmp_path / "cube.obj", v.astype(np.float32), f)
    pts, meta = load_points(p)
    m = meta["mesh"]
    assert m["used"] == "surface samples" and m["method"] == "area-weighted triangle sampling"
    assert m["samples"] == 8192 and m["seed"] == 0 and m["vertices"] == len(v) and m["triangles"] == len(f)
    assert abs(m["surface_area"] - 24.0) < 1e-9
    orig = original(pts, meta)
    assert np.allclose(np.abs(orig).max(1), 1.0, atol=1e-5)  # every point on the surface
    shares = face_shares(orig)
    assert shares.min() > 0.12 and shares.max() < 0.22, shares  # ~1/6 each (FPS output)
    # The surface samples themselves, before FPS: area-weighted, 1/6 per face within noise.
    raw, facts = pio.sample_surface(pio.Mesh(v, f), 8192, 0)
    assert np.abs(face_shares(raw) - 1 / 6).max() < 0.02, face_shares(raw)
    # -O point_cloud.mesh_sampling=vertices keeps the old reading: almost all on the +z face.
    vpts, vmeta = load_points(p, mesh_sampling="vertices")
    assert vmeta["mesh"]["used"] == "vertices" and face_shares(original(vpts, vmeta))[4] > 0.9


def test_surface_samples_are_seeded(tmp_path):
    v, f = torus_mesh()
    p = write_off(tmp_path / "t.off", v, f)
    a, ma = load_points(p)
    b, _ = load_points(p)
    c, mc = load_points(p, seed=1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert ma["mesh"]["seed"] == 0 and mc["mesh"]["seed"] == 1


def test_degenerate_faces_and_nan_vertices_are_skipped_with_a_fact(tmp_path):
    v, f = torus_mesh()
    v = v.astype(np.float64)
    extra = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0]], float)  # three collinear vertices
    v2 = np.concatenate([v, extra, [[np.nan, 0, 0]]])
    n = len(v)
    f2 = np.concatenate([f, [[n, n + 1, n + 2], [0, 1, n + 3], [n, n, n]]])  # flat, NaN, repeated
    p = write_off(tmp_path / "odd.off", v2, f2)
    pts, meta = load_points(p)
    m = meta["mesh"]
    assert m["used"] == "surface samples" and np.isfinite(pts).all()
    assert m["zero_area_triangles"] == 2 and m["nonfinite_triangles"] == 1 and m["triangles"] == len(f2)
    # A mesh without any area: its vertices are used, and the reason recorded.
    flat = write_off(tmp_path / "flat.off", extra, [[0, 1, 2], [0, 0, 1]])
    pts, meta = load_points(flat)
    assert meta["mesh"]["used"] == "vertices" and "no area" in meta["mesh"]["note"]
    # Faces but no usable corners at all: NaN everywhere -> a clear error, not a crash.
    nan = write_off(tmp_path / "nan.off", np.full((3, 3), np.nan), [[0, 1, 2]])
    with pytest.raises(DecodeError, match="no finite points"):
        load_points(nan)


def _bounded(p: Path, **cfg) -> tuple[dict | None, str | None, int]:
    """load_points under tracemalloc: (meta or None, error message or None, peak bytes)."""
    tracemalloc.start()
    try:
        meta, err = load_points(p, **cfg)[1], None
    except DecodeError as e:
        meta, err = None, e.message
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return meta, err, peak


def test_lying_and_broken_meshes_fail_clearly_without_allocating(tmp_path):
    v, f = torus_mesh()
    cases = {}
    raw = write_ply(tmp_path / "m.ply", v, "binary_little_endian", faces=f).read_bytes()
    cases["ply 1e9 faces"] = (raw.replace(b"element face 576", b"element face 1000000000"), "ply",
                              "declares 1,000,000,000 faces")
    cases["ply face cut"] = (raw[:-100], "ply", "truncated binary PLY")
    off = write_off(tmp_path / "o.off", v, f).read_text()
    cases["off 1e9 vertices"] = (off.replace("288 576 0", "1000000000 576 0", 1).encode(), "off",
                                 "truncated OFF")
    cases["off 1e9 faces"] = (off.replace("288 576 0", "288 1000000000 0", 1).encode(), "off", "truncated OFF")
    cases["off bad index"] = ((off + "3 0 1 999\n").replace("288 576 0", "288 577 0", 1).encode(), "off",
                              "does not exist")
    cases["obj negative index"] = (b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 -9\n", "obj", "does not exist")
    stl = write_stl(tmp_path / "b.stl", v, f, True).read_bytes()
    cases["stl 1e9 triangles"] = (stl[:80] + struct.pack("<I", 10**9) + stl[84:], "stl", "truncated binary STL")
    asc = write_ply(tmp_path / "a.ply", v, "ascii", faces=f).read_text()
    cases["ascii ply 1e9 faces"] = (asc.replace("element face 576", "element face 1000000000").encode(), "ply",
                                    "truncated ASCII PLY")
    cases["ascii ply bad face"] = (asc.replace("\n3 ", "\n3 x", 1).encode(), "ply", "malformed face line 0")
    for name, (data, ext, needle) in cases.items():
        p = tmp_path / f"case.{ext}"
        p.write_bytes(data)
        meta, err, peak = _bounded(p)
        assert peak < 64 << 20, (name, peak)
        assert err is not None and needle in err and "\n" not in err, (name, err)


def test_meshes_above_the_limit_give_their_vertices(tmp_path, monkeypatch):
    monkeypatch.setattr(pio.base, "MAX_MESH_TRIANGLES", 100)
    v, f = torus_mesh()
    for p in (write_ply(tmp_path / "m.ply", v, "ascii", faces=f), write_obj(tmp_path / "m.obj", v, f),
              write_stl(tmp_path / "m.stl", v, f, True), write_stl(tmp_path / "a.stl", v, f, False)):
        pts, meta = load_points(p)
        assert meta["mesh"]["used"] == "vertices" and "100" in meta["mesh"]["note"], (p.name, meta["mesh"])
        assert meta["points_in_file"] >= len(v), p.name


def test_vertices_mode_streams_without_reading_faces(tmp_path, monkeypatch):
    v, f = torus_mesh()
    paths = [write_ply(tmp_path / "m.ply", v, "binary_little_endian", faces=f), write_off(tmp_path / "m.off", v, f),
             write_obj(tmp_path / "m.obj", v, f)]
    for cls in (pio.ply.PlyReader, pio.meshes.OffReader, pio.meshes.ObjReader):
        monkeypatch.setattr(cls, "mesh", lambda self: pytest.fail("faces read in vertices mode"))
    for p in paths:
        pts, meta = load_points(p, mesh_sampling="vertices")
        assert meta["mesh"] == {"vertices": len(v), "faces": len(f), "used": "vertices"}, p.name
        assert meta["points_in_file"] == len(v)

"""point_cloud: readers, sniffing, order-independent preprocessing, FPS/kNN, tokenizer contract."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_modality

from mtx.encoder import pool
from mtx.errors import DecodeError
from mtx.modalities import _pointio as pio
from mtx.modalities import _points as P
from mtx.modalities import get_modality
from mtx.modalities._base import CLAIM, HINT, REFINED, STRUCTURE

MOD = get_modality("point_cloud")

# ---------------------------------------------------------------------------------------------
# Fixture writers
# ---------------------------------------------------------------------------------------------


def cloud(n: int = 3000, seed: int = 0) -> np.ndarray:
    """A lumpy closed surface (no symmetric ties), float32-exact values."""
    r = np.random.default_rng(seed)
    u = r.normal(size=(n, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    rad = 1 + 0.3 * np.sin(3 * u[:, 0]) * np.cos(2 * u[:, 1]) + 0.2 * u[:, 2] ** 2
    return (u * rad[:, None] * [2.0, 1.0, 0.7] + [10.0, -3.0, 5.0]).astype(np.float32)


def _num(v) -> str:
    return repr(float(v))  # exact: parses back to the same float64


def write_ply(path: Path, xyz, fmt: str = "ascii", faces=None, extra: bool = False,
              declare: int | None = None) -> Path:
    n = len(xyz)
    props = [("float", "x"), ("float", "y"), ("float", "z")]
    cols = [np.asarray(xyz[:, i], np.float32) for i in range(3)]
    if extra:  # extra vertex properties before and after xyz
        props = [("uchar", "red")] + props + [("double", "nx"), ("int", "label")]
        cols = [np.full(n, 7, np.uint8)] + cols + [np.ones(n), np.arange(n, dtype=np.int32)]
    head = ["ply", f"format {fmt} 1.0", "comment made by test_point_cloud",
            f"element vertex {n if declare is None else declare}"]
    head += [f"property {t} {nm}" for t, nm in props]
    if faces is not None:
        head += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    head.append("end_header")
    with open(path, "wb") as f:
        f.write(("\n".join(head) + "\n").encode())
        if fmt == "ascii":
            for i in range(n):
                f.write((" ".join(_num(c[i]) if c.dtype.kind == "f" else str(c[i]) for c in cols) + "\n").encode())
            for face in faces if faces is not None else []:
                f.write((f"{len(face)} " + " ".join(map(str, face)) + "\n").encode())
        else:
            e = "<" if fmt == "binary_little_endian" else ">"
            code = {"float": "f4", "uchar": "u1", "double": "f8", "int": "i4"}
            dt = np.dtype([(nm, e + code[t]) for t, nm in props])
            rec = np.empty(n, dt)
            for (_, nm), c in zip(props, cols, strict=True):
                rec[nm] = c
            f.write(rec.tobytes())
            if faces is not None:
                fd = np.dtype([("n", "u1"), ("i", e + "i4", (3,))])
                fr = np.empty(len(faces), fd)
                fr["n"] = 3
                fr["i"] = faces
                f.write(fr.tobytes())
    return path


def lzf_compress(data: bytes) -> bytes:
    """A small greedy LZF compressor (literal runs + back references, incl. overlapping ones)."""
    out, lit, table, i, n = bytearray(), bytearray(), {}, 0, len(data)

    def flush():
        nonlocal lit
        while lit:
            out.append(len(lit[:32]) - 1)
            out.extend(lit[:32])
            lit = lit[32:]

    while i < n:
        if i + 2 < n:
            key = data[i: i + 3]
            ref = table.get(key)
            table[key] = i
            if ref is not None and i - ref <= 8192:
                ln = 3
                while i + ln < n and ln < 264 and data[ref + ln] == data[i + ln]:
                    ln += 1
                flush()
                off, length = i - ref - 1, ln - 2
                if length < 7:
                    out.append((length << 5) | (off >> 8))
                else:
                    out += bytes([(7 << 5) | (off >> 8), length - 7])
                out.append(off & 0xFF)
                i += ln
                continue
        lit.append(data[i])
        i += 1
    flush()
    return bytes(out)


def write_pcd(path: Path, xyz, data: str = "ascii") -> Path:
    n = len(xyz)
    rgb = np.arange(n, dtype=np.uint32)
    head = ("# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z rgb\nSIZE 4 4 4 4\n"
            f"TYPE F F F U\nCOUNT 1 1 1 1\nWIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\n"
            f"POINTS {n}\nDATA {data}\n").encode()
    x = np.asarray(xyz, np.float32)
    with open(path, "wb") as f:
        f.write(head)
        if data == "ascii":
            for i in range(n):
                f.write(f"{_num(x[i, 0])} {_num(x[i, 1])} {_num(x[i, 2])} {rgb[i]}\n".encode())
        else:
            dt = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
            rec = np.empty(n, dt)
            rec["x"], rec["y"], rec["z"], rec["rgb"] = x[:, 0], x[:, 1], x[:, 2], rgb
            if data == "binary":
                f.write(rec.tobytes())
            else:  # column layout, LZF
                raw = b"".join(np.ascontiguousarray(rec[k]).tobytes() for k in ("x", "y", "z", "rgb"))
                comp = lzf_compress(raw)
                f.write(struct.pack("<II", len(comp), len(raw)) + comp)
    return path


def write_xyz(path: Path, xyz, pts: bool = False, delim: str = " ") -> Path:
    with open(path, "w") as f:
        if pts:
            f.write(f"{len(xyz)}\n")
        for p in xyz:
            cols = [_num(v) for v in p] + (["12", "200", "100", "50"] if pts else [])
            f.write(delim.join(cols) + "\n")
    return path


def write_las(path: Path, xyz) -> Path:
    import laspy

    hdr = laspy.LasHeader(point_format=3, version="1.2")
    hdr.scales = np.array([1e-4, 1e-4, 1e-4])
    hdr.offsets = np.floor(np.asarray(xyz, np.float64).min(0))
    las = laspy.LasData(hdr)
    las.x, las.y, las.z = np.asarray(xyz, np.float64).T
    las.write(str(path))  # .laz -> LAZ through lazrs
    return path


def torus_mesh(nu: int = 24, nv: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """A triangulated torus with nu*nv (< 1024) vertices, float32-exact."""
    u, v = np.meshgrid(np.arange(nu) * 2 * np.pi / nu, np.arange(nv) * 2 * np.pi / nv, indexing="ij")
    x = (1 + 0.35 * np.cos(v)) * np.cos(u)
    y = (1 + 0.35 * np.cos(v)) * np.sin(u) * 0.8
    z = 0.35 * np.sin(v)
    verts = np.stack([x, y, z], -1).reshape(-1, 3).astype(np.float32)
    idx = np.arange(nu * nv).reshape(nu, nv)
    a, b = idx, np.roll(idx, -1, 0)
    c, d = np.roll(idx, -1, 1), np.roll(np.roll(idx, -1, 0), -1, 1)
    faces = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    return verts, faces


def write_obj(path: Path, verts, faces) -> Path:
    with open(path, "w") as f:
        f.write("# test mesh\no torus\n")
        for v in verts:
            f.write("v " + " ".join(_num(c) for c in v) + "\n")
        f.write("vn 0 0 1\n")
        for t in faces:  # v//vn syntax, 1-based
            f.write("f " + " ".join(f"{i + 1}//1" for i in t) + "\n")
    return path


def write_off(path: Path, verts, faces, glued: bool = False) -> Path:
    with open(path, "w") as f:
        f.write(f"OFF{len(verts)} {len(faces)} 0\n" if glued else f"OFF\n{len(verts)} {len(faces)} 0\n")
        for v in verts:
            f.write(" ".join(_num(c) for c in v) + "\n")
        for t in faces:
            f.write(f"{len(t)} " + " ".join(map(str, t)) + "\n")
    return path


def write_stl(path: Path, verts, faces, binary: bool) -> Path:
    tri = np.asarray(verts, np.float32)[np.asarray(faces)]
    if binary:
        dt = np.dtype([("n", "<f4", (3,)), ("v", "<f4", (3, 3)), ("a", "<u2")])
        rec = np.zeros(len(tri), dt)
        rec["v"] = tri
        path.write_bytes(b"binary stl".ljust(80, b" ") + struct.pack("<I", len(tri)) + rec.tobytes())
    else:
        lines = ["solid t"]
        for t in tri:
            lines += ["  facet normal 0 0 0", "    outer loop"]
            lines += [f"      vertex {_num(p[0])} {_num(p[1])} {_num(p[2])}" for p in t]
            lines += ["    endloop", "  endfacet"]
        path.write_text("\n".join(lines + ["endsolid t"]) + "\n")
    return path


def head_of(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(8192)


def load_points(path: Path, **cfg) -> tuple[np.ndarray, dict]:
    (s,) = list(MOD.load(Path(path), MOD.config(**cfg)))
    return s.arrays["points"], s.meta


def vectors(model, paths: list[Path], **cfg) -> torch.Tensor:
    """Load several files, run them as ONE batch through tokenizer + encoder, mean-pool."""
    c = MOD.config(**cfg)
    samples = [s for p in paths for s in MOD.load(Path(p), c)]
    tok = model.tokenizer("point_cloud", c)
    with torch.inference_mode():
        tokens = tok({k: v.to(model.device) for k, v in MOD.collate(samples).items()})
        v = pool(model.encode_tokens(tokens), tokens, MOD.default_pool(tok.init))
    return torch.nn.functional.normalize(v, dim=1)


@pytest.fixture(scope="module")
def ref_files(tmp_path_factory) -> dict[str, Path]:
    """The same float32 cloud in every point format."""
    d = tmp_path_factory.mktemp("pc")
    x = cloud()
    files = {
        "ply-ascii": write_ply(d / "a.ply", x, "ascii"),
        "ply-le": write_ply(d / "le.ply", x, "binary_little_endian"),
        "ply-be-extra": write_ply(d / "be.ply", x, "binary_big_endian", extra=True),
        "ply-ascii-extra": write_ply(d / "ae.ply", x, "ascii", extra=True),
        "pcd-ascii": write_pcd(d / "a.pcd", x, "ascii"),
        "pcd-binary": write_pcd(d / "b.pcd", x, "binary"),
        "pcd-compressed": write_pcd(d / "c.pcd", x, "binary_compressed"),
        "xyz": write_xyz(d / "a.xyz", x),
        "xyz-comma": write_xyz(d / "c.xyzn", np.c_[x, np.zeros_like(x)], delim=","),
        "pts": write_xyz(d / "a.pts", x, pts=True),
        "npy": d / "a.npy",
        "npz": d / "a.npz",
        "kitti": d / "velodyne" / "000001.bin",
    }
    np.save(files["npy"], np.c_[x, np.ones((len(x), 1), np.float32)])
    np.savez_compressed(files["npz"], labels=np.arange(len(x)), points=x)
    files["kitti"].parent.mkdir()
    np.c_[x, np.zeros((len(x), 1), np.float32)].astype("<f4").tofile(files["kitti"])
    return files


# ---------------------------------------------------------------------------------------------
# Sniffing
# ---------------------------------------------------------------------------------------------


def test_sniff_claims_each_format(ref_files, tmp_path):
    from mtx.sniff import sniff

    expect = {"ply-ascii": CLAIM, "ply-le": CLAIM, "ply-be-extra": CLAIM, "pcd-ascii": CLAIM,
              "pcd-binary": CLAIM, "pcd-compressed": CLAIM, "xyz": REFINED, "xyz-comma": REFINED,
              "pts": REFINED, "npy": STRUCTURE, "npz": STRUCTURE, "kitti": HINT}
    for name, strength in expect.items():
        p = ref_files[name]
        ev = MOD.sniff(head_of(p), p)
        assert ev is not None and ev.strength == strength, (name, ev)
        assert sniff(p).modality == "point_cloud", name
    v, f = torus_mesh()
    meshes = {write_obj(tmp_path / "m.obj", v, f): CLAIM, write_off(tmp_path / "m.off", v, f): CLAIM,
              write_off(tmp_path / "g.off", v, f, glued=True): CLAIM,
              write_stl(tmp_path / "a.stl", v, f, False): CLAIM, write_stl(tmp_path / "b.stl", v, f, True): CLAIM,
              write_las(tmp_path / "a.las", cloud(50)): CLAIM, write_las(tmp_path / "a.laz", cloud(50)): CLAIM}
    for p, strength in meshes.items():
        ev = MOD.sniff(head_of(p), p)
        assert ev is not None and ev.strength == strength, (p.name, ev)
    # Content decides, not the extension: an OBJ without extension is still refined evidence.
    q = tmp_path / "mesh_noext"
    q.write_bytes((tmp_path / "m.obj").read_bytes())
    assert MOD.sniff(head_of(q), q).strength == REFINED


def test_sniff_leaves_neighbours_alone(tmp_path):
    from PIL import Image

    png = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(png)
    prose = tmp_path / "notes.txt"
    prose.write_text("Hello world, this is text.\n")
    table = tmp_path / "t.csv"
    table.write_text("a,b,c\n1,2,3\n")
    numeric_txt = tmp_path / "numbers.txt"
    write_xyz(numeric_txt, cloud(20))
    cube = tmp_path / "cube.npy"  # hyperspectral-like (H, W, B)
    np.save(cube, np.zeros((8, 8, 32), np.float32))
    series = tmp_path / "series.npy"  # 1-D: time series
    np.save(series, np.zeros(100, np.float32))
    bin_ = tmp_path / "raw.bin"  # .bin without a velodyne hint
    np.zeros((10, 4), np.float32).tofile(bin_)
    objpick = tmp_path / "obj.npy"
    np.save(objpick, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for p in (png, prose, table, numeric_txt, cube, series, bin_, objpick):
        assert MOD.sniff(head_of(p), p) is None, p.name
    # ...but hints refine shared containers: ModelNet's .txt files, a points/ folder.
    mn = tmp_path / "modelnet40_normal_resampled" / "chair_0001.txt"
    mn.parent.mkdir()
    write_xyz(mn, np.c_[cloud(20), np.zeros((20, 3))], delim=",")
    assert MOD.sniff(head_of(mn), mn).strength == REFINED
    ints = tmp_path / "ints.npy"
    np.save(ints, np.zeros((50, 3), np.int32))
    assert MOD.sniff(head_of(ints), ints).strength < STRUCTURE
    (tmp_path / "lidar").mkdir()
    hinted = tmp_path / "lidar" / "ints.npy"
    np.save(hinted, np.zeros((50, 3), np.int32))
    assert MOD.sniff(head_of(hinted), hinted).strength == REFINED


# ---------------------------------------------------------------------------------------------
# Readers and preprocessing
# ---------------------------------------------------------------------------------------------


def test_every_format_gives_identical_points(ref_files):
    ref, meta = load_points(ref_files["ply-le"])
    assert ref.shape == (1, 1024, 3) and ref.dtype == np.float32
    assert meta["points_in_file"] == 3000 and "subsample" not in meta
    assert abs(np.linalg.norm(ref[0], axis=1).max() - 1.0) < 1e-6  # unit sphere
    for name, p in ref_files.items():
        pts, m = load_points(p)
        assert np.array_equal(pts, ref), name
    _, m = load_points(ref_files["ply-be-extra"])
    assert m["vertex_properties"] == ["red", "x", "y", "z", "nx", "label"]
    assert load_points(ref_files["pts"])[1]["declared_points"] == 3000
    assert load_points(ref_files["npz"])[1]["npz_key"] == "points"


def test_las_and_laz_chunked(tmp_path):
    x = cloud(40000, seed=3).astype(np.float64) * 50 + [512000.0, 4100000.0, 300.0]  # UTM-like
    las, laz = write_las(tmp_path / "t.las", x), write_las(tmp_path / "t.laz", x)
    a, ma = load_points(las)
    b, mb = load_points(laz)
    assert np.array_equal(a, b) and mb["compressed"] and not ma["compressed"]
    assert ma["points_in_file"] == 40000 and ma["subsample"]["to"] == 16384
    # Streaming in small chunks keeps the same subsample as one big read.
    one, small = pio.Reservoir(16384, 0), pio.Reservoir(16384, 0)
    with pio.open_reader(las) as r:
        for c in r.points():
            one.add(c)
    with pio.open_reader(laz) as r:
        for c in r.points(chunk=3001):
            small.add(c)
    assert np.array_equal(one.points(), small.points())
    # LAS keeps double precision: the 1e-4 scale survives the 5e6 offset.
    assert np.abs(one.points()[:, :1] - np.round(one.points()[:, :1], 4)).max() < 1e-6


def test_reservoir_is_bounded_and_order_independent():
    r = np.random.default_rng(0)
    x = r.normal(size=(50000, 3))
    x[::97] = np.nan
    a, b = pio.Reservoir(1000, 7), pio.Reservoir(1000, 7)
    for i in range(0, len(x), 4096):
        a.add(x[i: i + 4096])
        assert len(a.xyz) <= 1000
    perm = r.permutation(len(x))
    for i in range(0, len(x), 9999):
        b.add(x[perm][i: i + 9999])
    assert np.array_equal(a.points(), b.points())
    assert a.nonfinite == len(x[::97]) and a.read == 50000
    c = pio.Reservoir(1000, 8)
    c.add(x)
    assert not np.array_equal(a.points(), c.points())  # the seed matters


def test_meshes_same_samples_in_every_container(tmp_path):
    v, f = torus_mesh()
    paths = [write_ply(tmp_path / "a.ply", v, "ascii", faces=f),
             write_ply(tmp_path / "b.ply", v, "binary_little_endian", faces=f),
             write_ply(tmp_path / "c.ply", v, "binary_big_endian", faces=f),
             write_obj(tmp_path / "m.obj", v, f), write_off(tmp_path / "m.off", v, f),
             write_stl(tmp_path / "a.stl", v, f, False), write_stl(tmp_path / "b.stl", v, f, True)]
    # The face order and corner rotation in the file do not matter either.
    perm = np.random.default_rng(1).permutation(len(f))
    paths.append(write_obj(tmp_path / "shuffled.obj", v, np.roll(f[perm], 1, axis=1)))
    ref, meta = load_points(paths[0])
    assert meta["mesh"]["used"] == "surface samples" and meta["mesh"]["vertices"] == len(v)
    for p in paths[1:]:
        pts, m = load_points(p)
        assert np.array_equal(pts, ref), p.name
    # Samples lie on the surface: compare with the vertex-only reading of a dense torus.
    big_v, big_f = torus_mesh(64, 32)  # 2048 vertices: used as they are on request (or by "auto")
    dense = write_ply(tmp_path / "dense.ply", big_v, "binary_little_endian", faces=big_f)
    pts, m = load_points(dense, mesh_sampling="vertices")
    assert m["mesh"]["used"] == "vertices"
    assert load_points(dense, mesh_sampling="auto")[1]["mesh"]["used"] == "vertices"
    forced, m2 = load_points(dense)
    assert m2["mesh"]["used"] == "surface samples" and not np.array_equal(forced, pts)
    verts_only, m3 = load_points(paths[3], mesh_sampling="vertices")
    assert m3["mesh"]["used"] == "vertices"


def test_obj_quads_are_triangulated_on_the_surface(tmp_path):
    c = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
    quads = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    p = tmp_path / "cube.obj"
    p.write_text("".join(f"v {a} {b} {z}\n" for a, b, z in c) + "".join(
        "f " + " ".join(str(i + 1) for i in q) + "\n" for q in quads))
    pts, meta = load_points(p)
    orig = pts[0].astype(np.float64) * meta["radius"] + meta["centroid"]
    assert np.allclose(np.abs(orig).max(axis=1), 1.0, atol=1e-5)  # every sample on a cube face
    assert meta["mesh"]["faces"] == 6
    assert (np.abs(orig) < 0.5).sum() > 500  # face interiors, not just the 8 corners


def test_small_and_degenerate_clouds(tmp_path):
    p = tmp_path / "few.xyz"
    write_xyz(p, cloud(10))
    pts, meta = load_points(p)
    assert pts.shape == (1, 1024, 3) and len(np.unique(pts[0], axis=0)) == 10 and "repeated" in meta
    one = tmp_path / "one.xyz"
    one.write_text("1 2 3\n1 2 3\n")
    with pytest.raises(DecodeError, match="all 2 points lie at one location"):
        load_points(one)  # issue #17 item 4: centred, it would be an all-zero input


def test_nan_points_are_dropped_and_recorded(tmp_path):
    x = cloud(500).astype(np.float64)
    x[::50, 1] = np.nan
    x[3, 0] = np.inf
    p = write_ply(tmp_path / "some_nan.ply", x.astype(np.float32), "binary_little_endian")
    pts, meta = load_points(p)
    assert meta["dropped_nonfinite"] == 11 and np.isfinite(pts).all()


# ---------------------------------------------------------------------------------------------
# Bad inputs -> DecodeError with a clear one-line reason
# ---------------------------------------------------------------------------------------------


def _bad_files(d: Path) -> dict[str, tuple[Path, str]]:
    x = cloud(200)
    out = {}
    nan = np.full((100, 3), np.nan, np.float32)
    out["ply all NaN"] = (write_ply(d / "nan.ply", nan, "ascii"), "no finite points")
    out["ply 0 vertices"] = (write_ply(d / "empty.ply", x[:0], "binary_little_endian"), "0 points")
    good = write_ply(d / "good.ply", x, "binary_little_endian").read_bytes()
    (d / "trunc.ply").write_bytes(good[: len(good) - 1000])
    out["truncated binary ply"] = (d / "trunc.ply", "truncated binary PLY")
    out["ply claims 1e9"] = (write_ply(d / "huge.ply", x, "binary_little_endian", declare=10**9),
                             "declares 1,000,000,000 vertices")
    out["ascii ply claims 1e9"] = (write_ply(d / "hugea.ply", x, "ascii", declare=10**9), "truncated ASCII PLY")
    a = write_ply(d / "a.ply", x, "ascii").read_text().splitlines()
    (d / "short.ply").write_text("\n".join(a[:-20]) + "\n")
    out["truncated ascii ply"] = (d / "short.ply", "truncated ASCII PLY")
    (d / "hdr.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\n")
    out["no end_header"] = (d / "hdr.ply", "no 'end_header'")
    (d / "noxyz.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float a\nend_header\n1\n")
    out["ply without xyz"] = (d / "noxyz.ply", "no x/y/z")
    las = write_las(d / "c.las", x).read_bytes()
    (d / "corrupt.las").write_bytes(las[:100] + struct.pack("<I", 5000) + las[104:])  # VLR count
    out["las corrupt header"] = (d / "corrupt.las", "corrupt LAS/LAZ header")
    (d / "garbage.las").write_bytes(b"LASF" + bytes(range(256)) * 2)
    out["las garbage header"] = (d / "garbage.las", "corrupt LAS/LAZ header")
    (d / "trunc.las").write_bytes(las[:-500])
    out["las truncated"] = (d / "trunc.las", "truncated LAS")
    pcd = write_pcd(d / "b.pcd", x, "binary").read_bytes()
    (d / "t.pcd").write_bytes(pcd[:-64])
    out["pcd truncated"] = (d / "t.pcd", "truncated binary PCD")
    c = bytearray(write_pcd(d / "c.pcd", x, "binary_compressed").read_bytes())
    pos = c.index(b"DATA binary_compressed\n") + len(b"DATA binary_compressed\n") + 8
    c[pos] = 0xFF  # a back reference before the start of the output
    (d / "lzf.pcd").write_bytes(bytes(c))
    out["pcd corrupt lzf"] = (d / "lzf.pcd", "LZF")
    np.save(d / "obj.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    out["npy objects"] = (d / "obj.npy", "unpickle")
    np.save(d / "flat.npy", np.zeros((10, 2), np.float32))
    out["npy wrong shape"] = (d / "flat.npy", "expected (N, >=3)")
    (d / "velodyne").mkdir()
    (d / "velodyne" / "odd.bin").write_bytes(b"\0" * 18)
    out["kitti size"] = (d / "velodyne" / "odd.bin", "not a multiple of 16")
    (d / "bad.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n")
    out["obj bad index"] = (d / "bad.obj", "does not exist")
    (d / "bad.xyz").write_text("1 2 3\n4 five 6\n")
    out["xyz not numeric"] = (d / "bad.xyz", "corrupt XYZ")
    return out


def test_bad_inputs_raise_clear_decode_errors(tmp_path):
    import tracemalloc

    for name, (p, needle) in _bad_files(tmp_path).items():
        tracemalloc.start()
        with pytest.raises(DecodeError) as ei:
            list(MOD.load(p, MOD.config()))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        msg = ei.value.message
        assert needle in msg, (name, msg)
        assert "\n" not in msg and len(msg) < 300, (name, msg)
        assert peak < 64 << 20, (name, peak)  # no allocation from a lying header


def test_sniff_still_claims_broken_files(tmp_path):
    # A corrupt PLY/LAS is still a point cloud: it becomes a point_cloud failure row, not "unknown".
    bad = _bad_files(tmp_path)
    for key in ("truncated binary ply", "ply 0 vertices", "las corrupt header"):
        p = bad[key][0]
        assert MOD.sniff(head_of(p), p).strength == CLAIM


def test_lzf_known_vector():
    from mtx.modalities._pointio.pcd import lzf_decompress

    # literal "abc", then a 3-byte back reference at distance 3, then an overlapping run of 'c'.
    data = bytes([2]) + b"abc" + bytes([0x20, 0x02]) + bytes([0xE0, 0x00, 0x00])
    assert lzf_decompress(data, 6 + 9) == b"abcabc" + b"c" * 9
    blob = (np.arange(5000) % 37).astype(np.uint8).tobytes() + bytes(3000)
    assert lzf_decompress(lzf_compress(blob), len(blob)) == blob
    with pytest.raises(DecodeError):
        lzf_decompress(data, 14)


# ---------------------------------------------------------------------------------------------
# FPS / kNN
# ---------------------------------------------------------------------------------------------


def test_fps_batched_deterministic_and_order_free():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 500, 3, generator=g, dtype=torch.float64)
    idx = P.farthest_point_sample(x, 64)
    for b in range(3):  # batching changes nothing
        assert torch.equal(idx[b], P.farthest_point_sample(x[b: b + 1], 64)[0])
        assert len(set(idx[b].tolist())) == 64
        c = x[b].mean(0)
        assert idx[b, 0] == ((x[b] - c) ** 2).sum(1).argmax()  # starts farthest from the centroid
    # Reference: a plain numpy FPS.
    p = x[0].numpy()
    sel = [int(idx[0, 0])]
    d = ((p - p[sel[0]]) ** 2).sum(1)
    for _ in range(63):
        sel.append(int(d.argmax()))
        d = np.minimum(d, ((p - p[sel[-1]]) ** 2).sum(1))
    assert sel == idx[0].tolist()
    perm = torch.randperm(500, generator=g)
    shuffled = P.farthest_point_sample(x[:1, perm], 64)[0]
    assert torch.equal(perm[shuffled], idx[0])  # same points, whatever their order


def test_loader_fps_matches_torch_fps():
    x = np.random.default_rng(4).normal(size=(3000, 3))
    assert np.array_equal(P.fps_numpy(x, 300), P.farthest_point_sample(torch.from_numpy(x)[None], 300)[0].numpy())


def test_knn_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    pts, ctr = torch.rand(2, 300, 3, generator=g), torch.rand(2, 20, 3, generator=g)
    idx = P.knn(pts, ctr, 8)
    d = ((ctr[:, :, None] - pts[:, None]) ** 2).sum(-1)
    ref = d.argsort(-1)[..., :8]
    assert torch.equal(idx.sort(-1).values, ref.sort(-1).values)


# ---------------------------------------------------------------------------------------------
# Tokenizer contract and the acceptance invariances (real B/16 geometry)
# ---------------------------------------------------------------------------------------------


def test_shape_contract_b16(ref_files, b16_model):
    dec, samples, tokens, hidden = run_modality(b16_model, ref_files["ply-ascii"])
    assert dec.modality == "point_cloud" and dec.reason.startswith("claim")
    assert tokens.x.shape == (1, 257, 768) and tokens.pad_mask is None and tokens.has_cls
    assert hidden.shape == (1, 257, 768) and torch.isfinite(hidden).all()
    assert MOD.cost(samples[0], b16_model.spec, MOD.config()) == 257
    m = samples[0].meta  # what `mtx tokenize` shows
    assert {"points_in_file", "fps_points", "groups", "group_size", "centroid", "radius"} <= set(m)
    tok = b16_model.tokenizer("point_cloud", MOD.config())
    assert tok.init == "seeded" and MOD.default_pool(tok.init) == "mean"
    again = MOD.tokenizer(b16_model.spec, None, MOD.config())
    assert again.describe()["sha256"] == tok.describe()["sha256"]  # seeded = reproducible
    small = run_modality(b16_model, ref_files["ply-le"], groups=64, group_size=16)[2]
    assert small.x.shape == (1, 65, 768)


def test_acceptance_invariances_b16(tmp_path, b16_model):
    x = cloud(6000, seed=5)
    perm = np.random.default_rng(2).permutation(len(x))
    v, f = torus_mesh()
    files = [
        write_ply(tmp_path / "orig.ply", x, "binary_little_endian"),
        write_ply(tmp_path / "shuffled.ply", x[perm], "binary_little_endian"),
        write_ply(tmp_path / "moved.ply", (x * 3.7 + [-120.0, 44.0, 9.5]).astype(np.float32), "ascii"),
        write_ply(tmp_path / "other.ply", cloud(6000, seed=9) * [1, 1, 0.02], "binary_little_endian"),
        write_ply(tmp_path / "mesh_a.ply", v, "ascii", faces=f),
        write_ply(tmp_path / "mesh_b.ply", v, "binary_little_endian", faces=f),
        write_obj(tmp_path / "mesh.obj", v, f),
    ]
    # > 16,384 points: the seeded subsample must be order independent too.
    big = cloud(30000, seed=6)
    np.save(tmp_path / "big.npy", big)
    np.save(tmp_path / "big_shuffled.npy", big[np.random.default_rng(3).permutation(len(big))])
    files += [tmp_path / "big.npy", tmp_path / "big_shuffled.npy"]
    vec = vectors(b16_model, files)
    cos = (vec @ vec.T).numpy()
    assert cos[0, 1] > 0.999, "shuffled points"
    assert cos[0, 2] > 0.999, "translated + uniformly scaled"
    assert cos[4, 5] > 0.99 and cos[4, 6] > 0.99, "ASCII PLY / binary PLY / OBJ of one mesh"
    assert cos[7, 8] > 0.999, "shuffled large cloud (subsample path)"
    # The invariances are not vacuous: a different shape is clearly further away.
    assert cos[0, 3] < 0.99 and cos[0, 3] < cos[0, 2] - 0.01, cos[0, 3]  # ~0.978 (a flat sheet)


def test_tokenizer_rows_are_independent_of_the_batch(tiny_model):
    tok = tiny_model.tokenizer("point_cloud", MOD.config())
    x = torch.from_numpy(np.stack([np.random.default_rng(i).normal(size=(1024, 3)).astype(np.float32)
                                   for i in range(3)]))
    with torch.inference_mode():
        both = tok({"points": x}).x
        one = tok({"points": x[1:2]}).x
    assert both.shape == (3, 257, 64)
    assert torch.allclose(both[1:2], one, atol=1e-5)  # rows are independent of their batch-mates

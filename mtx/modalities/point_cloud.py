"""point_cloud: PLY, PCD, XYZ/PTS, OFF/OBJ/STL (+ glTF/GLB/FBX) meshes, LAS/LAZ, NPY/NPZ, KITTI .bin -> 257 tokens.

Data2Seq for points as in the paper's official point-cloud code (Point-MAE/Point-BERT
grouping): farthest-point sampling picks 256 centres, each centre's 32 nearest neighbours form
a group, a mini-PointNet embeds the group's coordinates relative to its centre, an MLP of the
centre gives the position embedding, and a CLS token is prepended.

Preprocessing (CPU, :meth:`point_cloud.load`): xyz only; non-finite points dropped (counted);
a cloud larger than ``presample`` points is first reduced to a seeded, order-independent
random subsample while it streams in (memory bounded for 10^8-point LiDAR tiles); centre on
the centroid, scale to the unit sphere, farthest-point sampling down to ``points`` (1024).
Clouds with fewer points repeat their FPS order to fill the 1024 slots (duplicates do not
change a max-pooled group). The output array ``points`` [1, 1024, 3] float32 is in FPS order.

Meshes (``mesh_sampling``): ``surface`` (default) draws ``surface_samples`` (8192) area-weighted
points on the triangles, seeded and independent of the face order, so one mesh gives one vector
whatever the container and however finely it is tessellated; ``poisson`` draws Poisson-disk
samples through open3d (``mtx[mesh]``); ``vertices`` uses the vertices as the points;
``auto`` is the rule of mtx <= 0.1 (vertices when there are at least ``min_mesh_vertices``,
else surface samples). What was done is recorded in ``meta["mesh"]``. glTF/GLB/FBX are read
through open3d (``pip install 'mtx[mesh]'``); the other formats need no extra. File I/O lives in
:mod:`mtx.modalities._pointio`, the FPS/kNN arithmetic in :mod:`mtx.modalities._points`.

Tokenizer deviations from the trained original, all deliberate and recorded: the mini-PointNet
uses LayerNorm where Point-MAE has BatchNorm (a BatchNorm without trained running statistics
is an arbitrary fixed affine map at inference; LayerNorm is defined per point); a pre-LN on the
tokens as the CLIP front end has, so the frozen blocks see tokens at the scale they were
trained on; seeded Kaiming-normal weights with zero biases (with PyTorch's default init the
biases swamp the small relative coordinates: six different shapes gave a mean pairwise cosine
of 0.996 through the seeded B/16, 0.972 with this init). The second MLP's first layer acts on
``concat([group max, point feature])``; its weight is split so the group half runs once per
group (the same function, 20 % fewer FLOPs). FPS/kNN run in the tokenizer on the device,
batched; on CUDA the FPS loop is replayed as a CUDA graph.
"""
from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DecodeError, UsageError
from ..settings import setting
from . import _pointio as pio
from . import _points as P
from ._base import (
    CLAIM,
    EXTENSION,
    HINT,
    REFINED,
    STRUCTURE,
    Evidence,
    Modality,
    ModalityConfig,
    Sample,
    Sniffed,
    Tokenizer,
    Tokens,
    seeded,
)
from ._pointio.detect import (
    XYZ_EXTS,
    cloud_array,
    cloud_shape,
    file_size,
    npy_header,
    path_hint,
    velodyne_hint,
)
from ._registry import register_modality

MESH_MODES = ("surface", "poisson", "vertices", "auto")


@dataclass
class PointCloudConfig(ModalityConfig):
    points: int = setting(1024, lo=1)  # points after FPS (the tokenizer's input)
    presample: int = setting(16384, lo=1)  # seeded order-independent subsample first when the cloud is larger
    groups: int = setting(256, lo=1)  # FPS centres = group tokens
    group_size: int = setting(32, lo=1)  # kNN neighbours per centre
    seed: int = setting(0, lo=0)  # subsample and surface-sampling seed
    mesh_sampling: str = setting("surface", choices=MESH_MODES)  # surface | poisson (mtx[mesh]) | vertices | auto (<= 0.1 rule)
    min_mesh_vertices: int = setting(1024, lo=0)  # auto: vertices when the mesh has at least this many
    surface_samples: int = setting(8192, lo=1)  # points drawn on a mesh's surface (surface, poisson)
    npz_key: str | None = setting(None)  # array inside an .npz (default: points/xyz/pos/... or the only fit)
    bin_fields: int = setting(4, lo=3)  # float32 values per point in a KITTI velodyne .bin

    def check(self) -> None:
        if not (1 <= self.group_size <= self.points and 1 <= self.groups <= self.points):
            raise UsageError(f"point_cloud: groups ({self.groups}) and group_size ({self.group_size}) "
                             f"must be between 1 and points ({self.points})")
        if self.presample < self.points:
            raise UsageError(f"point_cloud: presample ({self.presample}) must be >= points ({self.points})")


def normalize_and_sample(xyz: np.ndarray, n: int, total: int | None = None) -> tuple[np.ndarray, dict]:
    """Canonically ordered finite points [M, 3] -> ([n, 3] float32 in FPS order, facts).

    Centre on the centroid, scale to the unit sphere, FPS to ``n`` (or FPS order repeated
    when M < n)."""
    centroid = xyz.mean(axis=0)
    c = xyz - centroid
    radius = float(np.sqrt((c * c).sum(axis=1).max()))
    if not np.isfinite(radius) or not np.isfinite(centroid).all():
        raise DecodeError("coordinates too large to normalise (overflow)")
    facts: dict = {"centroid": [float(v) for v in centroid], "radius": radius}
    if radius == 0.0:  # centring leaves nothing: every cloud like this would give the same input
        raise DecodeError(f"no shape to embed: all {total or len(xyz):,} points lie at one location "
                          f"({', '.join(f'{v:.6g}' for v in centroid)})")
    c /= radius
    m = min(len(c), n)
    idx = P.fps_numpy(c, m)
    if m < n:
        facts["repeated"] = f"{len(c)} points repeated in FPS order to fill {n}"
        idx = np.resize(idx, n)
    return np.ascontiguousarray(c[idx], dtype=np.float32), facts


class PointGroupTokenizer(Tokenizer):
    """FPS centres + kNN groups + mini-PointNet + centre-position MLP + CLS + pre-LN.

    Input ``points`` [R, N, 3] (any device); output ``[R, 1 + groups, D]``. FPS and kNN run on
    the input's device, batched.
    """

    def __init__(self, dim: int, groups: int, group_size: int, seed: int, eps: float = 1e-5):
        super().__init__()
        self.groups, self.group_size = groups, group_size
        with seeded(seed):
            self.first = nn.Sequential(nn.Linear(3, 128), nn.LayerNorm(128), nn.ReLU(), nn.Linear(128, 256))
            self.second = nn.Sequential(nn.Linear(512, 512), nn.LayerNorm(512), nn.ReLU(),
                                        nn.Linear(512, dim))
            self.pos = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, dim))
            self.cls = nn.Parameter(torch.randn(dim) * 0.02)
            self.cls_pos = nn.Parameter(torch.randn(dim) * 0.02)
            self.norm_pre = nn.LayerNorm(dim, eps=eps)
            # Variance-preserving weights and zero biases: with PyTorch's default init the biases
            # dominate the small relative coordinates and every group embeds alike.
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    nn.init.zeros_(m.bias)
        self.init, self.seed = "seeded", seed

    def group(self, pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[R, N, 3] -> centres [R, G, 3], neighbourhoods relative to their centre [R, G, k, 3]."""
        cidx = P.farthest_point_sample(pts, self.groups)
        centres = P.gather_points(pts, cidx)
        nidx = P.knn(pts, centres, self.group_size)
        return centres, P.gather_points(pts, nidx) - centres[:, :, None]

    def forward(self, inputs: dict[str, torch.Tensor]) -> Tokens:
        pts = inputs["points"].float()
        centres, nb = self.group(pts)
        f = self.first(nb)  # [R, G, k, 256]
        g = f.amax(2, keepdim=True)  # [R, G, 1, 256] group feature
        # second[0] acts on concat([g, f]); split its weight so the group half runs once per group.
        lin = self.second[0]
        h = F.linear(f, lin.weight[:, 256:], lin.bias) + F.linear(g, lin.weight[:, :256])
        for layer in self.second[1:]:
            h = layer(h)
        f = h.amax(2)  # [R, G, D]
        x = f + self.pos(centres)
        r = x.shape[0]
        cls = (self.cls + self.cls_pos).expand(r, 1, -1)
        return Tokens(self.norm_pre(torch.cat([cls, x], dim=1)), None, True)


@register_modality
class point_cloud(Modality):  # noqa: N801 - class name == registry key == module name
    """A point cloud becomes **257 tokens**: a CLS token + 256 group tokens, the Data2Seq of the
    paper's official point-cloud code (Point-MAE / Point-BERT grouping).

    ## Which files

    PLY (ASCII/binary), PCD, XYZ/XYZN/XYZRGB/PTS, OFF/OBJ/STL meshes, LAS/LAZ, NPY/NPZ arrays of
    shape (N, 3..12), KITTI velodyne `.bin` (float32 × 4, only with a `velodyne` path hint or
    `--modality point_cloud`). Format headers (`ply`, PCD, LAS `LASF`, GLB `glTF`, FBX
    `Kaydara FBX Binary`, a glTF JSON `"asset"` object) are claims; NPY/NPZ are shared with time
    series, IMU and hyperspectral, so a float (N, 3..12) array reads as points and a path hint
    (`lidar`, `pointcloud`, `velodyne`, `modelnet`, ...) strengthens it; NPY/NPZ **records** with
    numeric fields named `x`, `y`, `z` (any case; extra fields such as `intensity` ignored) are
    points (`refined`). XYZ text may start with a **header line** of column names (`x y z`,
    `X,Y,Z,R,G,B`, CloudCompare's `//X,Y,Z,...`): it is skipped and names the coordinate columns
    wherever they are (`xyz_columns` in the meta).

    **glTF/GLB/FBX meshes** are read through open3d, the optional `mesh` extra
    (`pip install 'mtx[mesh]'`; open3d needs the system library libusb-1.0, e.g.
    `apt-get install libusb-1.0-0`). Without it they are still recognised and fail with one line
    naming the extra; every other format needs no extra. A `.gltf` file's external buffers are
    read with it and not embedded on their own.

    ## From file to 1024 points

    1. xyz only; non-finite points dropped (counted).
    2. Clouds larger than 16,384 points are first reduced to a **seeded, order-independent random
       subsample while streaming in**, so a 10⁸-point LiDAR tile costs memory for 16k points, and
       the same cloud in another point order gives the same subsample.
    3. Centre on the centroid and scale to the unit sphere (scale and position invariance, as in
       the training data of point-cloud encoders).
    4. **Farthest-point sampling** down to 1024 points — even coverage of the shape, unlike random
       sampling that follows point density. Smaller clouds repeat their FPS order to fill the slots
       (duplicates do not change a max-pooled group).
    5. Meshes are **sampled on their surface**: 8192 points, each on a triangle picked with
       probability proportional to its area, seeded by `seed`. The triangles are put in a canonical
       order first, so the same mesh gives the same points in PLY, OFF, OBJ, STL, glTF, GLB or FBX
       and whatever its face order — and however it is tessellated: a cube with one finely gridded
       face (99.8 % of its vertices) is sampled ~1/6 per face. `mesh_sampling` chooses:
       `surface` (default); `poisson` — Poisson-disk samples (open3d's sample elimination, more
       even spacing; needs `mtx[mesh]`); `vertices` — the vertices as points (streamed, faces not
       read); `auto` — the rule of mtx ≤ 0.1 (vertices when there are at least
       `min_mesh_vertices`, else surface samples). `meta["mesh"]` records what was done: `used`,
       `method`, `samples`, `seed`, `vertices`, `faces`, `triangles`, `surface_area`, and what was
       skipped: `zero_area_triangles` (never picked), `nonfinite_triangles` (a NaN/inf corner).
       A face naming a vertex that does not exist is an error; a mesh without area gives its
       vertices (noted). Face and vertex counts are checked against the file size before anything
       is allocated; a mesh above 2,000,000 triangles gives its vertices (noted) instead of being
       held in memory.

    Reading (`mtx/modalities/_pointio/`, one module per format family behind `open_reader`): the
    file is opened once per load, and the format that sniffing found is used as it is, not
    detected again. Large PLY/PCD/LAS/XYZ/NPY files stream in chunks of 10⁶ points.

    ## Tokens

    `PointGroupTokenizer` (on the device, batched): FPS picks 256 centres, each centre's 32 nearest
    neighbours form a group expressed relative to its centre; a mini-PointNet (shared MLP 3→128→256,
    max over the group, concatenated back to each point, 512→512→D, max) embeds each group; an MLP
    of the centre (3→128→D) gives its position; CLS prepended; pre-LayerNorm.

    Deliberate deviations from the trained original, recorded: **LayerNorm instead of BatchNorm**
    in the mini-PointNet (a BatchNorm without trained running statistics is an arbitrary affine map
    at inference; LayerNorm is defined per point), variance-preserving init with zero biases (with
    PyTorch's default init the biases dominate the small relative coordinates and every group
    embeds alike), and a pre-LayerNorm so the frozen blocks see tokens at the scale they were
    trained on.

    ## Weights and pooling

    `init=seeded` (the Meta-Transformer release has no point tokenizer); **mean** pooling.
    """
    name = "point_cloud"
    extensions = (".ply", ".pcd", ".xyz", ".xyzn", ".xyzrgb", ".pts", ".off", ".obj", ".stl", ".las",
                  ".laz", ".npy", ".npz", ".bin", ".gltf", ".glb", ".fbx")
    summary = ("PLY, PCD, XYZ/PTS, OFF/OBJ/STL meshes, LAS/LAZ, NPY/NPZ (N, >=3), KITTI velodyne .bin; "
               "glTF/GLB/FBX with mtx[mesh]")
    tokens = "257 = 1 + 256 groups (FPS + kNN 32)"
    clip_init = False
    Config = PointCloudConfig

    def synth(self, d: Path, n: int, points: int = 2048) -> list[Path]:
        """``n`` binary PLY clouds of anisotropic Gaussian points."""
        rng, out = np.random.default_rng(5), []
        for i in range(n):
            v = rng.normal(size=(points, 3)).astype("<f4") * np.array([1, 0.5 + i % 3, 0.3], "<f4")
            header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {points}\nproperty float x\n"
                      "property float y\nproperty float z\nend_header\n").encode()
            p = d / f"cloud{i:05d}.ply"
            p.write_bytes(header + v.tobytes())
            out.append(p)
        return out

    # -- discovery -------------------------------------------------------------------------
    def degenerate(self, d: Path) -> list[Path]:
        """XYZ clouds whose points all lie at one location, or all have NaN coordinates."""
        one, nan = d / "one_place.xyz", d / "nan.xyz"
        one.write_text("1 2 3\n" * 50)
        nan.write_text("nan nan nan\n" * 50)
        return [one, nan]

    def sniff(self, head: bytes, path: Path) -> Evidence | None:
        ext = path.suffix.lower()
        fmt = pio.detect_format(head, path)
        if fmt is None:
            if ext in (".npy", ".npz", ".bin", ".txt"):
                return None
            return super().sniff(head, path)
        name, why = fmt
        hint = path_hint(path)
        if name in ("ply", "pcd", "las", "stl-binary", "glb", "fbx"):
            return Evidence(self.name, CLAIM, why, name)
        if name in ("off", "stl-ascii", "obj", "gltf"):
            own = {"off": ".off", "stl-ascii": ".stl", "obj": ".obj", "gltf": ".gltf"}[name]
            return Evidence(self.name, CLAIM if ext == own else REFINED, why, name)
        if name == "xyz":
            if ext in XYZ_EXTS:
                return Evidence(self.name, REFINED, why, name)
            return Evidence(self.name, REFINED, f"{why}, path hint {hint!r}", name) if hint else None
        if name in ("npy", "npz"):
            return self._sniff_array(name, head, path, hint)
        if name == "kitti" and velodyne_hint(path) and file_size(path) % 16 == 0:
            return Evidence(self.name, HINT, "KITTI velodyne .bin (float32 x 4, 'velodyne' in the path)", name)
        return None

    def _sniff_array(self, kind: str, head: bytes, path: Path, hint: str | None) -> Evidence | None:
        # NPY/NPZ are shared with time_series, imu and hyperspectral. A float (N, 3..12) array
        # reads as points (STRUCTURE); a point-cloud path hint refines it. Other shapes: not ours.
        if kind == "npy":
            h = npy_header(io.BytesIO(head))
            if h is None:
                return None
            shape, _, dtype = h
        else:
            try:
                _, shape, dtype = pio.npz_member(path, None)
            except DecodeError:
                return None
        if dtype.names:
            if not cloud_array(tuple(shape), dtype):
                return None
            what = f"{kind.upper()} array of {shape[0]} records with fields {', '.join(dtype.names)}"
            return Evidence(self.name, REFINED, f"{what}, x/y/z read as points"
                            + (f", path hint {hint!r}" if hint else ""), kind)
        if not cloud_shape(tuple(shape)) or dtype.kind not in "fiu":
            return None
        what = f"{kind.upper()} array {tuple(shape)} {dtype}"
        if hint:
            return Evidence(self.name, REFINED, f"{what}, path hint {hint!r}", kind)
        if dtype.kind == "f":
            return Evidence(self.name, STRUCTURE, f"{what} read as (N, xyz...) points", kind)
        return Evidence(self.name, EXTENSION, f"{what} (integer; pass --modality point_cloud)", kind)

    def companions(self, path: Path) -> list[Path]:
        return pio.gltf_companions(path)

    # -- CPU side --------------------------------------------------------------------------
    def load(self, path: Path, cfg: PointCloudConfig, sniffed: Sniffed | None = None) -> Iterator[Sample]:
        res = pio.Reservoir(cfg.presample, cfg.seed)
        with pio.open_reader(path, sniffed, npz_key=cfg.npz_key, bin_fields=cfg.bin_fields) as r:
            meta: dict = {"format": r.format, **r.meta}
            chunks = self._mesh_chunks(r, cfg, meta) if r.is_mesh else r.points()
            for chunk in pio.describe_chunks(chunks):
                res.add(chunk)
            meta.update(r.meta)
        if res.read == 0:
            raise DecodeError(f"no points: the {r.format.upper()} file holds 0 points/vertices")
        if res.finite == 0:
            raise DecodeError(f"no finite points: all {res.read:,} points have NaN/inf coordinates")
        meta["points_in_file"] = res.read
        if res.nonfinite:
            meta["dropped_nonfinite"] = res.nonfinite
        if res.finite > cfg.presample:
            meta["subsample"] = {"from": res.finite, "to": cfg.presample, "seed": cfg.seed,
                                 "method": "smallest seeded hash of the coordinates (order-independent)"}
        pts, facts = normalize_and_sample(res.points(), cfg.points, res.finite)
        meta.update(facts)
        meta["fps_points"] = cfg.points
        meta["groups"] = cfg.groups
        meta["group_size"] = cfg.group_size
        yield Sample("", {"points": pts[None]}, meta)

    def _mesh_chunks(self, r: pio.Reader, cfg: PointCloudConfig, meta: dict) -> Iterator[np.ndarray]:
        """A mesh's points as ``mesh_sampling`` asks; what was done goes to ``meta["mesh"]``."""
        info: dict = {}
        meta["mesh"] = info
        mode = cfg.mesh_sampling
        if mode == "vertices" or (mode == "auto" and (r.n_vertices or 0) >= cfg.min_mesh_vertices):
            yield from self._vertices(r, info)
            return
        try:
            mesh = r.mesh()
        except pio.MeshTooLarge as e:
            info["note"] = f"{e}; vertices used"
            yield from self._vertices(r, info)
            return
        info.update(vertices=len(mesh.vertices), faces=int(mesh.n_faces), **mesh.facts)
        if mesh.faces is None or not len(mesh.faces):
            info.update(used="vertices", note="no faces")
            yield mesh.vertices
            return
        if mode == "auto" and len(mesh.vertices) >= cfg.min_mesh_vertices:
            info["used"] = "vertices"
            yield mesh.vertices
            return
        yield self._surface_points(mesh, cfg, info)

    @staticmethod
    def _vertices(r: pio.Reader, info: dict) -> Iterator[np.ndarray]:
        yield from r.points()
        info.update(vertices=r.n_vertices, faces=int(r.n_faces), used="vertices")

    @staticmethod
    def _surface_points(mesh: pio.Mesh, cfg: PointCloudConfig, info: dict) -> np.ndarray:
        if cfg.mesh_sampling == "poisson":
            pts, facts = pio.poisson_disk(mesh, cfg.surface_samples, cfg.seed)
            used = "poisson disk samples"
        else:
            pts, facts = pio.sample_surface(mesh, cfg.surface_samples, cfg.seed)
            used = "surface samples"
            if pts is not None:
                facts["method"] = "area-weighted triangle sampling"
        info.update(facts)
        if pts is None:
            info.update(used="vertices", note="faces have no area; vertices used")
            return mesh.vertices
        info.update(used=used, samples=len(pts), seed=cfg.seed)
        return pts

    def cost(self, sample: Sample, spec, cfg: PointCloudConfig) -> int:
        return 1 + cfg.groups

    # -- device side -----------------------------------------------------------------------
    def tokenizer(self, spec, front, cfg: PointCloudConfig) -> Tokenizer:
        return PointGroupTokenizer(spec.dim, cfg.groups, cfg.group_size, self.seed(spec, cfg), spec.eps)

"""point_cloud: PLY, PCD, XYZ/PTS, OFF/OBJ/STL meshes, LAS/LAZ, NPY/NPZ, KITTI .bin -> 257 tokens.

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

Meshes: vertices when the mesh has at least ``min_mesh_vertices`` (1024) vertices, otherwise
``surface_samples`` area-uniform surface samples. The rule is the same for PLY, OFF, OBJ and STL,
so one mesh gives one vector whatever the container.

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

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtx.errors import DecodeError, UsageError
from mtx.modalities import _points as P
from mtx.modalities._base import (
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
from mtx.modalities._registry import register_modality

MESH_MODES = ("auto", "vertices", "surface")


@dataclass
class PointCloudConfig(ModalityConfig):
    points: int = 1024  # points after FPS (the tokenizer's input)
    presample: int = 16384  # seeded order-independent subsample first when the cloud is larger
    groups: int = 256  # FPS centres = group tokens
    group_size: int = 32  # kNN neighbours per centre
    seed: int = 0  # subsample and surface-sampling seed
    mesh_sampling: str = "auto"  # auto | vertices | surface
    min_mesh_vertices: int = 1024  # auto: fewer vertices -> surface samples
    surface_samples: int = 8192
    npz_key: str | None = None  # array inside an .npz (default: points/xyz/pos/... or the only fit)
    bin_fields: int = 4  # float32 values per point in a KITTI velodyne .bin

    def __post_init__(self) -> None:
        if self.mesh_sampling not in MESH_MODES:
            raise UsageError(f"point_cloud mesh_sampling {self.mesh_sampling!r}: choose {', '.join(MESH_MODES)}")
        if not (1 <= self.group_size <= self.points and 1 <= self.groups <= self.points):
            raise UsageError(f"point_cloud: groups ({self.groups}) and group_size ({self.group_size}) "
                             f"must be between 1 and points ({self.points})")
        if self.presample < self.points:
            raise UsageError(f"point_cloud: presample ({self.presample}) must be >= points ({self.points})")
        if self.bin_fields < 3:
            raise UsageError("point_cloud: bin_fields must be >= 3 (x, y, z first)")


def normalize_and_sample(xyz: np.ndarray, n: int) -> tuple[np.ndarray, dict]:
    """Canonically ordered finite points [M, 3] -> ([n, 3] float32 in FPS order, facts).

    Centre on the centroid, scale to the unit sphere, FPS to ``n`` (or FPS order repeated
    when M < n)."""
    centroid = xyz.mean(axis=0)
    c = xyz - centroid
    radius = float(np.sqrt((c * c).sum(axis=1).max()))
    if not np.isfinite(radius) or not np.isfinite(centroid).all():
        raise DecodeError("coordinates too large to normalise (overflow)")
    facts: dict = {"centroid": [float(v) for v in centroid], "radius": radius}
    if radius == 0.0:
        facts["degenerate"] = "all points at one location"
        radius = 1.0
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
    name = "point_cloud"
    extensions = (".ply", ".pcd", ".xyz", ".xyzn", ".xyzrgb", ".pts", ".off", ".obj", ".stl", ".las",
                  ".laz", ".npy", ".npz", ".bin")
    summary = "PLY, PCD, XYZ/PTS, OFF/OBJ/STL meshes, LAS/LAZ, NPY/NPZ (N, >=3), KITTI velodyne .bin"
    tokens = "257 = 1 + 256 groups (FPS + kNN 32)"
    clip_init = False
    Config = PointCloudConfig

    # -- discovery -------------------------------------------------------------------------
    def sniff(self, head: bytes, path: Path) -> Evidence | None:
        ext = path.suffix.lower()
        fmt = P.detect_format(head, path)
        hint = P.path_hint(path)
        if fmt is None:
            if ext in (".npy", ".npz", ".bin", ".txt"):
                return None
            return super().sniff(head, path)
        name, why = fmt
        if name in ("ply", "pcd", "las", "stl-binary"):
            return Evidence(self.name, CLAIM, why)
        if name in ("off", "stl-ascii", "obj"):
            own = {"off": ".off", "stl-ascii": ".stl", "obj": ".obj"}[name]
            return Evidence(self.name, CLAIM if ext == own else REFINED, why)
        if name == "xyz":
            if ext in P.XYZ_EXTS:
                return Evidence(self.name, REFINED, why)
            return Evidence(self.name, REFINED, f"{why}, path hint {hint!r}") if hint else None
        if name in ("npy", "npz"):
            return self._sniff_array(name, head, path, hint)
        if name == "kitti" and P.velodyne_hint(path) and P.file_size(path) % 16 == 0:
            return Evidence(self.name, HINT, "KITTI velodyne .bin (float32 x 4, 'velodyne' in the path)")
        return None

    def _sniff_array(self, kind: str, head: bytes, path: Path, hint: str | None) -> Evidence | None:
        # NPY/NPZ are shared with time_series, imu and hyperspectral. A float (N, 3..12) array
        # reads as points (STRUCTURE); a point-cloud path hint refines it. Other shapes: not ours.
        import io

        if kind == "npy":
            h = P.npy_header(io.BytesIO(head))
            if h is None:
                return None
            shape, _, dtype = h
        else:
            try:
                _, shape, dtype = P.npz_member(path, None)
            except DecodeError:
                return None
        if not P.cloud_shape(tuple(shape)) or dtype.kind not in "fiu" or dtype.names:
            return None
        what = f"{kind.upper()} array {tuple(shape)} {dtype}"
        if hint:
            return Evidence(self.name, REFINED, f"{what}, path hint {hint!r}")
        if dtype.kind == "f":
            return Evidence(self.name, STRUCTURE, f"{what} read as (N, xyz...) points")
        return Evidence(self.name, EXTENSION, f"{what} (integer; pass --modality point_cloud)")

    # -- CPU side --------------------------------------------------------------------------
    def load(self, path: Path, cfg: PointCloudConfig, sniffed: Sniffed | None = None) -> Iterator[Sample]:
        path = Path(path)
        with open(path, "rb") as f:
            head = f.read(8192)
        if not head:
            raise DecodeError("empty file (0 bytes)")
        fmt = P.detect_format(head, path)
        name = fmt[0] if fmt else P.format_from_extension(head, path)
        if name is None:
            raise DecodeError("not a point-cloud format mtx reads (PLY, PCD, XYZ/PTS, OFF, OBJ, STL, "
                              "LAS/LAZ, NPY/NPZ, KITTI .bin)")
        meta: dict = {"format": name}
        res = P.Reservoir(cfg.presample, cfg.seed)
        for chunk in P.describe_chunks(self._chunks(name, path, cfg, meta)):
            res.add(chunk)
        if res.read == 0:
            raise DecodeError(f"no points: the {name.upper()} file holds 0 points/vertices")
        if res.finite == 0:
            raise DecodeError(f"no finite points: all {res.read:,} points have NaN/inf coordinates")
        meta["points_in_file"] = res.read
        if res.nonfinite:
            meta["dropped_nonfinite"] = res.nonfinite
        if res.finite > cfg.presample:
            meta["subsample"] = {"from": res.finite, "to": cfg.presample, "seed": cfg.seed,
                                 "method": "smallest seeded hash of the coordinates (order-independent)"}
        pts, facts = normalize_and_sample(res.points(), cfg.points)
        meta.update(facts)
        meta["fps_points"] = cfg.points
        meta["groups"] = cfg.groups
        meta["group_size"] = cfg.group_size
        yield Sample("", {"points": pts[None]}, meta)

    def _chunks(self, name: str, path: Path, cfg: PointCloudConfig, meta: dict) -> Iterator[np.ndarray]:
        if name == "ply":
            r = P.PlyReader(path)
            meta.update(r.meta)
            if r.face is not None and r.face.count and self._surface(cfg, r.n):
                yield self._mesh_points(r.mesh(), cfg, meta)
            else:
                if r.face is not None and r.face.count:
                    meta["mesh"] = {"vertices": r.n, "faces": r.face.count, "used": "vertices"}
                yield from r.chunks()
        elif name == "pcd":
            r = P.PcdReader(path)
            meta.update(r.meta)
            yield from r.chunks()
        elif name == "las":
            yield from P.las_chunks(path, meta)
        elif name == "xyz":
            yield from P.xyz_chunks(path, meta)
        elif name == "off":
            yield self._mesh_points(P.read_off(path, lambda nv: self._surface(cfg, nv)), cfg, meta)
        elif name == "obj":
            yield self._mesh_points(P.read_obj(path, lambda nv: self._surface(cfg, nv)), cfg, meta)
        elif name in ("stl-ascii", "stl-binary"):
            yield self._mesh_points(P.read_stl(path, name == "stl-binary"), cfg, meta)
        elif name == "npy":
            a = P.npy_array(path)
            meta.update(array_shape=list(a.shape), array_dtype=str(a.dtype))
            yield from P.array_chunks(a, "NPY array")
        elif name == "npz":
            key, a = P.npz_array(path, cfg.npz_key)
            meta.update(npz_key=key, array_shape=list(a.shape), array_dtype=str(a.dtype))
            yield from P.array_chunks(a, f"NPZ array {key!r}")
        elif name == "kitti":
            meta["bin_fields"] = cfg.bin_fields
            yield from P.kitti_chunks(path, cfg.bin_fields)

    @staticmethod
    def _surface(cfg: PointCloudConfig, n_vertices: int) -> bool:
        return cfg.mesh_sampling == "surface" or (
            cfg.mesh_sampling == "auto" and n_vertices < cfg.min_mesh_vertices)

    def _mesh_points(self, mesh: P.Mesh, cfg: PointCloudConfig, meta: dict) -> np.ndarray:
        nv = len(mesh.vertices)
        info = {"vertices": nv, "faces": int(mesh.n_faces)}
        meta["mesh"] = info
        if mesh.faces is not None and len(mesh.faces) and self._surface(cfg, nv):
            s = P.sample_surface(mesh.vertices, mesh.faces, cfg.surface_samples, cfg.seed)
            if s is not None:
                info.update(used="surface samples", samples=cfg.surface_samples, seed=cfg.seed)
                return s
            info["note"] = "faces have no area; vertices used"
        info["used"] = "vertices"
        return mesh.vertices

    def cost(self, sample: Sample, spec, cfg: PointCloudConfig) -> int:
        return 1 + cfg.groups

    # -- device side -----------------------------------------------------------------------
    def tokenizer(self, spec, front, cfg: PointCloudConfig) -> Tokenizer:
        return PointGroupTokenizer(spec.dim, cfg.groups, cfg.group_size, self.seed(spec, cfg), spec.eps)

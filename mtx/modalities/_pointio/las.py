"""LAS/LAZ (laspy, LAZ through lazrs): the header checked first, then points in chunks."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ...errors import DecodeError, MissingDependency
from .base import CHUNK, Reader, chunk_points, header_bytes

_MIN_HEADER = {0: 227, 1: 227, 2: 227, 3: 235, 4: 375}
_MIN_RECORD = {0: 20, 1: 28, 2: 26, 3: 34, 4: 57, 5: 63, 6: 30, 7: 36, 8: 38, 9: 59, 10: 67}


def check_las_header(h: bytes, size: int) -> None:
    """Validate the LAS public header block (its first 375 bytes) before laspy sees it.

    laspy trusts the header's counts: a corrupt VLR count makes it loop for minutes reading
    past the end of the file, so counts and offsets are checked against the file size first.
    """
    def bad(why: str) -> DecodeError:
        return DecodeError(f"corrupt LAS/LAZ header: {why}")

    h = h[:375]
    if len(h) < 227 or h[:4] != b"LASF":
        raise bad(f"{len(h)}-byte header (a LAS header has at least 227 bytes after 'LASF')")
    major, minor = h[24], h[25]
    if major != 1 or minor not in _MIN_HEADER:
        raise bad(f"version {major}.{minor} (expected 1.0-1.4)")

    def u16(o: int) -> int:
        return int.from_bytes(h[o: o + 2], "little")

    def u32(o: int) -> int:
        return int.from_bytes(h[o: o + 4], "little")

    hsize, off, nvlr, fmt, rec = u16(94), u32(96), u32(100), h[104] & 0x3F, u16(105)
    if not _MIN_HEADER[minor] <= hsize <= min(size, 65535):
        raise bad(f"header size {hsize} is impossible for LAS 1.{minor} in a {size:,}-byte file")
    if not hsize <= off <= size:
        raise bad(f"point data offset {off:,} outside the file ({size:,} bytes)")
    if nvlr * 54 > off - hsize:
        raise bad(f"{nvlr:,} VLRs cannot fit in the {off - hsize:,} bytes before the point data")
    if fmt not in _MIN_RECORD:
        raise bad(f"point format {fmt} (expected 0-10)")
    if rec < _MIN_RECORD[fmt]:
        raise bad(f"point record length {rec} is too short for point format {fmt}")
    scales = np.frombuffer(h[131:155], "<f8")
    offsets = np.frombuffer(h[155:179], "<f8")
    if not (np.isfinite(scales).all() and (scales != 0).all() and np.isfinite(offsets).all()):
        raise bad(f"scales {scales.tolist()} / offsets {offsets.tolist()} are not usable")
    if minor >= 4 and len(h) >= 247:
        start, n_evlr = int.from_bytes(h[235:243], "little"), u32(243)
        if n_evlr and (start > size or n_evlr * 60 > size - start):
            raise bad(f"{n_evlr:,} extended VLRs at offset {start:,} do not fit in the file")


class LasReader(Reader):
    format = "las"

    def __init__(self, *args):
        super().__init__(*args)
        check_las_header(header_bytes(self.f, self.head, lambda r: len(r) >= 375, 375), self.size)

    def points(self, chunk: int = CHUNK) -> Iterator[np.ndarray]:
        try:
            import laspy
        except ImportError:  # pragma: no cover - a base dependency
            raise MissingDependency("LAS/LAZ needs laspy: pip install 'laspy[lazrs]'") from None
        try:
            fh = laspy.open(self.rewind(0), closefd=False)
        except laspy.errors.LaspyException as e:
            raise DecodeError(f"corrupt LAS/LAZ header: {e}") from None
        except (OSError, ValueError, EOFError, KeyError, IndexError) as e:
            raise DecodeError(f"corrupt LAS/LAZ header: {type(e).__name__}: {e}") from None
        with fh:
            yield from self._chunks(fh, laspy, chunk)

    def _chunks(self, fh, laspy, chunk: int) -> Iterator[np.ndarray]:
        hdr = fh.header
        n = self.n_vertices = int(hdr.point_count)
        compressed = bool(getattr(fh, "is_compressed", self.path.suffix.lower() == ".laz"))
        self.meta.update(las_version=str(hdr.version), point_format=int(hdr.point_format.id),
                         compressed=compressed, declared_points=n)
        scales, offsets = np.asarray(hdr.scales, np.float64), np.asarray(hdr.offsets, np.float64)
        if not compressed:
            have = self.size - int(hdr.offset_to_point_data)
            need = n * hdr.point_format.size
            if have < need:
                raise DecodeError(f"truncated LAS: the header declares {n:,} points "
                                  f"({need:,} bytes) but only {max(have, 0):,} bytes follow")
        try:
            for pts in fh.chunk_iterator(chunk_points(int(hdr.point_format.size), chunk)):
                a = pts.array
                yield np.stack([a["X"] * scales[0] + offsets[0], a["Y"] * scales[1] + offsets[1],
                                a["Z"] * scales[2] + offsets[2]], axis=1)
        except laspy.errors.LaspyException as e:
            if "lazrs" in str(e).lower() or "backend" in str(e).lower():
                raise MissingDependency(f"LAZ needs a decompression backend: pip install lazrs ({e})") \
                    from None
            raise DecodeError(f"corrupt LAS/LAZ point data: {e}") from None
        except (OSError, ValueError, EOFError, RuntimeError) as e:
            raise DecodeError(f"corrupt LAS/LAZ point data: {type(e).__name__}: {e}") from None

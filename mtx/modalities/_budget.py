"""One memory budget per sample, checked by every reader before it allocates.

The rule (docs/reliability.md, "Bounded memory"): a reader knows, or bounds, how much memory a
sample will take *before* it allocates it — from a header's declared sizes (pixels, vertices,
points, bands, frames, channels), a compressed member's declared length, or by counting while it
streams — and compares that with one budget:

- **What is counted** is the reader's estimate of what it holds at once for one sample: the
  decoded data times the copies its preprocessing makes (``each`` = bytes per declared item).
- **The budget** is a process-wide setting: :func:`set_max_sample_memory` (the API), else the
  environment variable ``MTX_MAX_SAMPLE_MEMORY`` (``512M``, ``2G``, ``1.5GiB``, plain bytes, or
  ``unlimited``), else :data:`DEFAULT`. :func:`set_max_sample_memory` also sets the variable, so
  decoder processes started afterwards (spawned: they inherit the environment) use it too.
- **Over the budget** a reader that can subsample (point clouds, long audio/video, IMU/series
  windows, tables streamed by rows, oversized pictures reduced before their preprocessing
  copies) does so and records it; one that cannot raises :class:`OverBudget`, a
  :class:`~mtx.errors.DecodeError`: "declares N …, over the limit of M; raise it with …".
- **A declared size is never trusted**: before the budget, it is compared with what the file
  can hold (its bytes times the format's largest compression ratio, :func:`check_stored`), and
  compressed data is read with a cap (:func:`read_capped`), never ``.read()`` whole.

Default: 256 MiB. A decoder process holds ~290 MB of its own (torch and the decoders imported;
~740 MB resident with shared libraries), so one sample at the limit keeps it near 0.55 GB of its
own memory (~1 GB resident) and the main process of a one-file ``mtx embed`` (~1.2 GB resident
with the tiny model) well under 2.5 GB. It admits every ordinary input: a 60-megapixel RGB PNG is
decoded whole (larger pictures are reduced right after decoding, JPEGs decoded at 1/2..1/8
scale), 8-bit 4K video (10-bit 4K and 8K frames need ~0.3 and ~0.8 GiB: raise the budget),
100M-point LiDAR tiles (streamed), cubes of any size held in files (read band by band).
"""
from __future__ import annotations

import math
import os
import re
from typing import BinaryIO

from ..errors import DecodeError, UsageError

ENV = "MTX_MAX_SAMPLE_MEMORY"
DEFAULT = 256 << 20
RAISE = "raise it with --max-sample-memory / MTX_MAX_SAMPLE_MEMORY"

# Largest output bytes per input byte of the compressors readers meet: a declared decoded size
# above ``stored * ratio`` is a lie (a corrupt header or a bomb), whatever the budget.
DEFLATE_RATIO = 1032  # zlib / gzip / zip deflate (a 258-byte match costs ~2 bits)
LZF_RATIO = 88  # LZF: 264 bytes per 3-byte back reference (PCD binary_compressed)
ANY_RATIO = 1 << 16  # formats whose codecs are not known up front (TIFF LZW/ZSTD, HDF5 filters)

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 1000**2,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1000**3, "gib": 1 << 30, "t": 1 << 40, "tb": 1000**4,
          "tib": 1 << 40}
_UNLIMITED = ("unlimited", "none", "off", "inf")
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-z]*)\s*$", re.I)
_override: str | None = None  # set by set_max_sample_memory (the environment variable mirrors it)


class OverBudget(DecodeError):
    """A sample whose decoding would take more memory than the per-sample budget."""


def parse_size(text: str | int | float | None) -> int | None:
    """``"512M"``, ``"2G"``, ``"1.5GiB"``, ``"300000000"``, ``2**30`` -> bytes; ``unlimited`` -> None.

    ``K``/``M``/``G``/``T`` (and ``KiB``... ) are powers of 1024; ``KB``/``MB``/``GB``/``TB`` of 1000.

    Raises:
        UsageError: not a size, or not positive.
    """
    if text is None:
        return DEFAULT
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip().lower()
        if s in _UNLIMITED:
            return None
        m = _SIZE.match(s)
        if not m or m.group(2) not in _UNITS:
            raise UsageError(f"max sample memory {text!r} is not a size (e.g. 512M, 2G, 300000000 or "
                             "unlimited)")
        value = float(m.group(1)) * _UNITS[m.group(2)]
    if not math.isfinite(value) or value < 1 << 20:
        raise UsageError(f"max sample memory {text!r} is below 1 MiB; give e.g. 256M or 2G")
    return int(value)


def max_sample_memory() -> int | None:
    """The per-sample budget in bytes (None: unlimited): :func:`set_max_sample_memory`, else
    ``MTX_MAX_SAMPLE_MEMORY``, else :data:`DEFAULT`."""
    text = _override if _override is not None else os.environ.get(ENV, "").strip()
    return parse_size(text) if text else DEFAULT


def set_max_sample_memory(value: str | int | None) -> str | None:
    """Set the per-sample memory budget for this process and the decoder processes it starts.

    Args:
        value: bytes, a size text (``"512M"``, ``"2G"``), ``"unlimited"``, or None to go back to
            the environment / default.

    Returns:
        The previous setting (pass it back to restore it).

    Raises:
        UsageError: not a size.
    """
    global _override
    previous = _override
    if value is None:
        _override = None
        os.environ.pop(ENV, None)
        return previous
    parse_size(value)  # validate before anything changes
    _override = str(value)
    os.environ[ENV] = _override  # spawned decoder processes inherit it
    return previous


def human(n: float) -> str:
    """Bytes as text: ``268435456`` -> ``256 MiB``, ``4e11`` -> ``373 GiB``."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            v = n / size
            return f"{v:.3g} {unit}" if v < 1000 else f"{v:,.0f} {unit}"
    return f"{int(n)} bytes"


def check(count: int | float, what: str, each: float = 1.0, verb: str = "declares") -> None:
    """Refuse ``count`` items of ``each`` bytes when they exceed the budget.

    Args:
        count: how many items the file declares (or holds so far, while streaming).
        what: the items, plural ("vertices", "pixels of RGBA", "rows x 6 channels").
        each: bytes the reader holds per item (the decoded value times its working copies).
        verb: "declares" for a header's size, "holds" for what streaming counted.

    Raises:
        OverBudget: "declares N what (~X), over the limit of M per sample; raise it with ...".
    """
    limit = max_sample_memory()
    need = float(count) * each
    if limit is not None and need > limit:
        raise OverBudget(f"{verb} {_count(count)} {what} (~{human(need)} in memory), over the limit of {human(limit)} "
                         f"per sample; {RAISE}")


def fits(count: int | float, each: float = 1.0) -> bool:
    """Whether ``count`` items of ``each`` bytes fit the budget."""
    limit = max_sample_memory()
    return limit is None or float(count) * each <= limit


def allowed(each: float, fraction: float = 1.0) -> int:
    """How many items of ``each`` bytes fit ``fraction`` of the budget (huge when unlimited)."""
    limit = max_sample_memory()
    if limit is None:
        return 1 << 62
    return max(1, int(limit * fraction // max(each, 1e-9)))


def check_stored(declared: int | float, stored: int | float, ratio: float, what: str) -> None:
    """Refuse a declared decoded size that ``stored`` bytes cannot hold even at ``ratio`` (the
    compressor's largest expansion; 1 for uncompressed data).

    Raises:
        DecodeError: "declares N bytes of ..., but its S stored bytes can hold at most ...".
    """
    if declared > 0 and stored <= 0:
        raise DecodeError(f"declares {human(declared)} of {what}, but stores no data at all (never written, or a "
                          "corrupt header): nothing to embed")
    if declared > stored * ratio:
        cap = f"at most {human(stored * ratio)}" + (f" (x{ratio:g}, the format's largest compression ratio)"
                                                     if ratio > 1 else "")
        raise DecodeError(f"declares {human(declared)} of {what}, but its {human(stored)} of stored data "
                          f"can hold {cap}: a corrupt header or a decompression bomb")


def read_capped(f: BinaryIO, limit: int, what: str, step: int = 1 << 20) -> bytes:
    """Read ``f`` to its end, refusing (before holding them) more than ``limit`` bytes.

    Raises:
        DecodeError: the stream decodes to more than ``limit`` bytes (what its header declared).
    """
    parts, total = [], 0
    while True:
        part = f.read(min(step, limit - total + 1))
        if not part:
            return b"".join(parts)
        total += len(part)
        if total > limit:
            raise DecodeError(f"{what} decompresses to more than the {limit:,} bytes declared "
                              "(a corrupt or hostile archive)")
        parts.append(part)


def chunk_items(each: float, cap: int, fraction: float = 1 / 8) -> int:
    """Items per streamed chunk: at most ``cap``, and at most ``fraction`` of the budget."""
    return max(1, min(cap, allowed(each, fraction)))


def _count(n: int | float) -> str:
    return f"{n:,.0f}" if float(n).is_integer() else f"{n:,.1f}"

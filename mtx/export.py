"""Reading an embeddings file in bounded memory: ``mtx info`` facts and ``mtx export``.

Everything here reads only the documented datasets (``/embeddings``, ``/id``, ``/path``,
``/modality``, ``/failures``, ``/files``, ``/modalities/<name>`` and the root attributes) through
h5py slicing, so a merged file whose datasets are HDF5 virtual datasets reads exactly like a
consolidated one. Rows are read in chunks of about 64 MiB: memory stays flat for a 10M-row store.

Export formats (ids, modality and source path always travel with the vectors, float32):

- ``parquet``: one file, columns ``id`` (string), ``modality`` (string), ``path`` (string) and
  ``embedding`` (``fixed_size_list<float32>[D]``), one row group per chunk.
- ``npy``: a directory with ``embeddings.npy`` (``[N, D]`` float32, ``np.load(mmap_mode="r")``),
  ``rows.jsonl`` (row ``i``: ``{"id", "modality", "path"}``) and ``meta.json``.
- ``jsonl``: one JSON object per row: ``{"id", "modality", "path", "embedding": [...]}``.
- ``safetensors``: tensors ``embeddings`` (F32 ``[N, D]``), ``modality`` (U8 codes; names in
  the ``modalities`` metadata entry), and the strings as UTF-8 bytes + offsets: ``id_bytes``/
  ``id_offsets`` and ``path_bytes``/``path_offsets`` (row ``i`` is
  ``bytes[offsets[i]:offsets[i+1]]``).

Every export is written under a temporary name and renamed when complete.
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import struct
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import StoreError, UsageError, arg

if TYPE_CHECKING:  # numpy loads on first use: `import mtx` stays cheap
    import numpy as np

FORMATS = ("npy", "parquet", "jsonl", "safetensors")
STREAM = "-"  # the output name for stdout
# Formats that can be written front to back to a pipe, and why the others cannot.
STREAMING = ("jsonl", "npy")
NOT_STREAMING = {"parquet": "Parquet ends with a footer that indexes the row groups written before it",
                 "safetensors": "safetensors starts with a header of byte offsets known only at the end"}
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")  # what `mtx embed -o` accepts
EXPORT_FORMAT = "mtx-export"
CHUNK_BYTES = 64 << 20  # rows per read ~ 64 MiB of float32 vectors


# ------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------


@dataclass
class Chunk:
    """Rows ``rows`` (absolute indices, increasing) of a store, with what was asked for."""

    rows: np.ndarray
    vectors: np.ndarray | None = None  # [n, D] float32
    ids: list[str] | None = None
    paths: list[str] | None = None
    modalities: list[str] | None = None
    codes: np.ndarray | None = None  # modality codes (index into StoreReader.modality_names)


def _strs(values: np.ndarray) -> list[str]:
    return [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v for v in values]


class StoreReader:
    """Chunked, read-only access to a final (or merged/virtual) mtx embeddings file.

    Example:
        >>> with StoreReader("features.h5") as r:  # doctest: +SKIP
        ...     for c in r.chunks(modality="image", vectors=True, ids=True):
        ...         print(c.ids[0], c.vectors.shape)
    """

    def __init__(self, path: str | Path):
        import h5py

        self.path = Path(path)
        if not self.path.exists():
            raise StoreError(f"{self.path}: no such file")
        try:
            self.f = h5py.File(self.path, "r")
        except Exception as e:  # noqa: BLE001 - any h5py failure means an unreadable file
            raise StoreError(f"{self.path}: not a readable HDF5 file ({type(e).__name__}: {e})") from None
        try:
            if self.f.attrs.get("format") != "mtx-embeddings":
                raise StoreError(f"{self.path}: not an mtx embeddings file (no format='mtx-embeddings' "
                                 "attribute); was it written by `mtx embed`?")
            for name in ("embeddings", "id", "path", "modality"):
                if name not in self.f:
                    raise StoreError(f"{self.path}: dataset /{name} is missing (damaged or unfinished file)")
            emb = self.f["embeddings"]
            self.n = int(emb.shape[0])
            self.dim = int(emb.shape[1])
            self.store_dtype = str(emb.dtype)
            mds = self.f["modality"]
            enum = h5py.check_enum_dtype(mds.dtype)
            if enum is not None:
                self.modality_names = [k for k, _ in sorted(enum.items(), key=lambda kv: kv[1])]
                self._code_of = dict(enum)
            else:  # string modality (part files): codes are assigned as names are met
                self.modality_names = []
                self._code_of = {}
            self._enum = enum is not None
            self._sources_ok = False
        except BaseException:
            self.f.close()
            raise

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> "StoreReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- facts ---------------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in self.f.attrs.items()}

    def modality_attrs(self) -> dict[str, dict[str, Any]]:
        if "modalities" not in self.f:
            return {}
        return {name: {k: _plain(v) for k, v in g.attrs.items()} for name, g in self.f["modalities"].items()}

    def chunk_rows(self, target_bytes: int = CHUNK_BYTES) -> int:
        """Rows per read: ~target_bytes of float32, a multiple of the HDF5 chunk height."""
        rows = max(1, target_bytes // max(1, self.dim * 4))
        h = (self.f["embeddings"].chunks or (1,))[0]
        return max(h, rows // h * h)

    def _codes(self, start: int, stop: int) -> np.ndarray:
        import numpy as np

        ds = self.f["modality"]
        if self._enum:
            return np.asarray(ds[start:stop]).astype(np.int64)
        names = _strs(ds[start:stop])
        for m in names:
            if m not in self._code_of:
                self._code_of[m] = len(self.modality_names)
                self.modality_names.append(m)
        return np.array([self._code_of[m] for m in names], np.int64)

    def code(self, modality: str) -> int | None:
        """The code of ``modality`` in /modality, or None when no row can have it."""
        if not self._enum:  # string datasets: learn every name first (one cheap pass)
            for s in range(0, self.n, 1 << 20):
                self._codes(s, min(self.n, s + (1 << 20)))
        return self._code_of.get(modality)

    def counts(self) -> dict[str, int]:
        """Rows per modality (chunked bincount over /modality)."""
        import numpy as np

        total = np.zeros(0, np.int64)
        for s in range(0, self.n, 1 << 20):
            c = np.bincount(self._codes(s, min(self.n, s + (1 << 20))))
            total = np.pad(total, (0, max(0, len(c) - len(total))))
            total[: len(c)] += c
        return {self.modality_names[i]: int(v) for i, v in enumerate(total) if v}

    # -- rows ----------------------------------------------------------------------------
    def chunks(self, *, modality: str | None = None, vectors: bool = True, ids: bool = False,
               paths: bool = False, modalities: bool = False, rows: int | None = None,
               prefetch: bool = True, reuse: bool = False) -> Iterator[Chunk]:
        """Yield the rows in order, ``rows`` at a time, optionally only those of ``modality``.

        ``prefetch`` reads the next chunk in a thread while the caller works on this one.
        ``reuse`` reads the vectors into a small ring of preallocated buffers (no page faults for
        a fresh 64 MiB array per chunk): a chunk's ``vectors`` are then valid only until the
        next chunk is requested, so use it only when nothing keeps them.
        """
        if vectors:
            self.require_sources()
        it = self._chunks(modality, vectors, ids, paths, modalities, rows or self.chunk_rows(), reuse)
        return _prefetch(it) if prefetch else it

    def _chunks(self, modality, vectors, ids, paths, modalities, step, reuse=False) -> Iterator[Chunk]:
        import numpy as np

        want = None
        if modality is not None:
            want = self.code(modality)
            if want is None:
                return
        emb, id_ds, path_ds = self.f["embeddings"], self.f["id"], self.f["path"]
        # One buffer being read, one queued by _prefetch, one held by the caller.
        ring = [np.empty((min(step, self.n), self.dim), emb.dtype) for _ in range(3)] if reuse and self.n else None
        for k, start in enumerate(range(0, self.n, step)):
            stop = min(self.n, start + step)
            codes = self._codes(start, stop) if (want is not None or modalities) else None
            sel = None if want is None else np.nonzero(codes == want)[0]
            if sel is not None and len(sel) == 0:
                continue
            c = Chunk(np.arange(start, stop) if sel is None else start + sel)
            if vectors:
                if ring is not None:
                    v = ring[k % len(ring)][: stop - start]
                    emb.read_direct(v, np.s_[start:stop], np.s_[0:stop - start])
                else:
                    v = np.asarray(emb[start:stop])
                v = v if sel is None else v[sel]
                c.vectors = v.astype(np.float32, copy=False)
            if ids:
                c.ids = _strs(id_ds[start:stop] if sel is None else id_ds[start:stop][sel])
            if paths:
                c.paths = _strs(path_ds[start:stop] if sel is None else path_ds[start:stop][sel])
            if codes is not None:
                c.codes = codes if sel is None else codes[sel]
                if modalities:
                    c.modalities = [self.modality_names[i] for i in c.codes]
            yield c

    def rows(self, rows: np.ndarray | list[int]) -> dict[str, list]:
        """id, path, modality of a few rows (any order)."""
        import numpy as np

        rows = np.asarray(rows, np.int64)
        if len(rows) == 0:
            return {"id": [], "path": [], "modality": []}
        order = np.unique(rows)
        ids = _strs(self.f["id"][order])
        paths = _strs(self.f["path"][order])
        if self._enum:
            codes = np.asarray(self.f["modality"][order]).astype(np.int64)
            mods = [self.modality_names[i] for i in codes]
        else:
            mods = _strs(self.f["modality"][order])
        pos = {int(r): i for i, r in enumerate(order)}
        return {"id": [ids[pos[int(r)]] for r in rows], "path": [paths[pos[int(r)]] for r in rows],
                "modality": [mods[pos[int(r)]] for r in rows]}

    def vectors_at(self, rows: np.ndarray | list[int]) -> np.ndarray:
        import numpy as np

        self.require_sources()
        rows = np.asarray(rows, np.int64)
        order = np.unique(rows)
        v = np.asarray(self.f["embeddings"][order]).astype(np.float32) if len(order) else \
            np.zeros((0, self.dim), np.float32)
        pos = np.searchsorted(order, rows)
        return v[pos]

    def find_ids(self, wanted: list[str]) -> dict[str, int]:
        """Row of each wanted id that exists (one chunked pass over /id)."""
        left = set(wanted)
        found: dict[str, int] = {}
        step = 1 << 18
        for start in range(0, self.n, step):
            for i, v in enumerate(_strs(self.f["id"][start:min(self.n, start + step)])):
                if v in left:
                    found[v] = start + i
                    left.discard(v)
            if not left:
                break
        return found

    # -- virtual datasets ------------------------------------------------------------------
    def require_sources(self) -> None:
        """Refuse to read vectors when part files of a merged (virtual) file are missing (HDF5
        would read their rows as the fill value, NaN)."""
        if not self._sources_ok:
            from .store import require_sources

            require_sources(self.f, self.path)
            self._sources_ok = True

    def virtual_sources(self) -> list[dict[str, Any]]:
        """Source files of virtual datasets: name, whether it can be found, size."""
        from . import store

        seen: dict[str, dict[str, Any]] = {}
        for name in ("embeddings", "id", "path", "modality", "n_tokens"):
            ds = self.f.get(name)
            if ds is None or not getattr(ds, "is_virtual", False):
                continue
            for vs in ds.virtual_sources():
                fn = vs.file_name
                if fn in seen or fn == ".":
                    continue
                p = store.vds_source(self.path, fn)
                seen[fn] = {"file": fn, "found": p is not None,
                            "size": p.stat().st_size if p is not None else None}
        return list(seen.values())


def _plain(v: Any) -> Any:
    import numpy as np

    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v.item() if hasattr(v, "item") else v


def _prefetch(it: Iterator[Chunk], depth: int = 1) -> Iterator[Chunk]:
    """Read the next chunk in a thread while the caller works on this one (BLAS, writers)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def run() -> None:
        try:
            for c in it:
                while not stop.is_set():
                    try:
                        q.put(c, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            q.put(e)

    t = threading.Thread(target=run, name="mtx-read", daemon=True)
    t.start()
    try:
        while True:
            c = q.get()
            if c is done:
                return
            if isinstance(c, BaseException):
                raise c
            yield c
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                q.get_nowait()
        t.join()


# ------------------------------------------------------------------------------------------
# info
# ------------------------------------------------------------------------------------------


def store_info(path: str | Path, *, all_failures: bool = False, first: int = 5) -> dict[str, Any]:
    """Facts about an embeddings file for ``mtx info`` (JSON-able).

    Args:
        path: the HDF5 file (consolidated or merged/virtual).
        all_failures: list every failure instead of the first ``first``.
        first: how many failures to list otherwise.

    Returns:
        A dict: ``n_rows``, ``dim``, ``store_dtype``, ``rows_by_modality``, ``preset``,
        ``weights_source``, ``weights_sha256``, ``created``, ``format_version``, ``file_size``,
        ``modalities`` (per modality: tokenizer, init, seed, sha256, pool, config),
        ``n_failures``, ``failures``, ``files`` (inputs by status), ``virtual`` and ``sources``.
    """
    with StoreReader(path) as r:
        a = r.attrs
        mods = {}
        for name, ma in sorted(r.modality_attrs().items()):
            if not ma:
                continue
            cfg = ma.pop("config_json", None)
            with contextlib.suppress(TypeError, ValueError):
                ma["config"] = json.loads(cfg) if cfg else None
            mods[name] = ma
        n_fail, fails = 0, []
        if "failures" in r.f and "path" in r.f["failures"]:
            g = r.f["failures"]
            n_fail = len(g["path"])
            stop = n_fail if all_failures else min(first, n_fail)
            cols = {k: _strs(g[k][:stop]) if k in g else [""] * stop for k in ("path", "modality", "stage", "message")}
            fails = [{k: cols[k][i] for k in cols} for i in range(stop)]
        files: dict[str, int] = {}
        if "files" in r.f and "status" in r.f["files"]:
            ds = r.f["files/status"]
            for s in range(0, len(ds), 1 << 20):
                for v in _strs(ds[s:s + (1 << 20)]):
                    files[v] = files.get(v, 0) + 1
        sources = r.virtual_sources()
        size = r.path.stat().st_size
        geometry = None
        with contextlib.suppress(TypeError, ValueError):
            geometry = json.loads(a.get("geometry_json", "null"))
        return {
            "path": str(r.path),
            "format": a.get("format"),
            "format_version": a.get("format_version"),
            "mtx_version": a.get("mtx_version"),
            "created": a.get("created"),
            "file_size": size,
            "virtual": bool(sources),
            "sources": sources,
            "total_size": size + sum(s["size"] or 0 for s in sources),
            "n_rows": r.n,
            "dim": r.dim,
            "store_dtype": r.store_dtype,
            "rows_by_modality": r.counts(),
            "preset": a.get("preset"),
            "geometry": geometry,
            "weights_source": a.get("weights_source"),
            "weights_sha256": a.get("weights_sha256"),
            "encoder_sha256": a.get("encoder_sha256"),
            "compute_dtype": a.get("compute_dtype"),
            "device_kind": a.get("device_kind"),
            "config_sha256": a.get("config_sha256"),
            "modalities": mods,
            "files": files,
            "n_failures": n_fail,
            "failures": fails,
            "attrs": {k: v for k, v in a.items() if k not in ("config_json", "modality_configs_json")},
        }


# ------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------


def infer_format(output: str | Path) -> str | None:
    """The export format an output path suggests (``x.parquet`` -> parquet), or None."""
    suffix = Path(output).suffix.lower()
    return {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl",
            ".safetensors": "safetensors", ".npy": "npy"}.get(suffix)


def export(
    store: str | Path,
    output: str | Path,
    format: str | None = None,  # noqa: A002 - the CLI option's name
    *,
    modality: str | None = None,
    overwrite: bool = False,
    chunk_rows: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Stream an embeddings file into a format other tools load, in bounded memory.

    Args:
        store: the mtx HDF5 file.
        output: the file (parquet, jsonl, safetensors) or directory (npy) to write, or ``"-"``
            for stdout: jsonl (the default there) or npy (the ``[N, D]`` float32 array alone);
            parquet and safetensors need a file (they are refused with the reason).
        format: ``npy``, ``parquet``, ``jsonl`` or ``safetensors``; default: from ``output``'s
            suffix (``.parquet``, ``.jsonl``, ``.safetensors``, ``.npy``).
        modality: export only the rows of this modality.
        overwrite: replace an existing ``output``.
        chunk_rows: rows per read/row group (default: ~64 MiB of vectors).
        progress: called with ``(rows written, rows total)`` after every chunk.

    Returns:
        ``{"output", "format", "n_rows", "dim", "modality"}``.

    Raises:
        UsageError: unknown format or modality, or ``output`` exists without ``overwrite``.
        StoreError: ``store`` is not a readable mtx file.

    Example:
        >>> mtx.export("features.h5", "features.parquet")  # doctest: +SKIP
        {'output': 'features.parquet', 'format': 'parquet', 'n_rows': 11, 'dim': 768, 'modality': None}
    """
    if str(output) == STREAM:
        return _export_stream(store, format or "jsonl", modality=modality, chunk_rows=chunk_rows,
                              progress=progress)
    fmt = format or infer_format(output)
    if fmt is None:
        raise UsageError(f"{output}: cannot tell the export format from the name; "
                         f"pass {arg('format', 'FORMAT')} (one of {', '.join(FORMATS)})")
    if fmt not in FORMATS:
        raise UsageError(f"format {fmt!r}: choose one of {', '.join(FORMATS)}")
    out = Path(output)
    if out.exists() and not overwrite:
        raise UsageError(f"{out}: already exists; pass {arg('overwrite')} to replace it")
    if not out.parent.exists():
        raise UsageError(f"{out}: directory {out.parent} does not exist")
    with StoreReader(store) as r:
        if modality is not None:
            _check_modality(r, modality)
        total = r.counts().get(modality, 0) if modality else r.n
        meta = _export_meta(r, modality, total)
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        _remove(tmp)
        try:
            writer = {"npy": _write_npy, "parquet": _write_parquet, "jsonl": _write_jsonl,
                      "safetensors": _write_safetensors}[fmt]
            chunks = r.chunks(modality=modality, vectors=True, ids=True, paths=True, modalities=True,
                              rows=chunk_rows, reuse=True)  # every writer is done with a chunk at next()
            n = writer(tmp, chunks, r, total, meta, progress)
            if overwrite:
                _remove(out)
            os.replace(tmp, out)
        except BaseException:
            _remove(tmp)
            raise
    return {"output": str(out), "format": fmt, "n_rows": n, "dim": r.dim, "modality": modality}


def _export_stream(store: str | Path, fmt: str, *, modality: str | None, chunk_rows: int | None,
                   progress: Callable[[int, int], None] | None, stream: Any = None) -> dict[str, Any]:
    """``output="-"``: write a streaming format to stdout (``stream``: a binary file, default
    ``sys.stdout.buffer``). jsonl is the whole export; npy is the ``[N, D]`` float32 array alone
    (``np.load`` reads it from a pipe; ids and paths: ``-f jsonl`` or a file)."""
    if fmt not in FORMATS:
        raise UsageError(f"format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt not in STREAMING:
        raise UsageError(f"{fmt} cannot be written to stdout (output -): {NOT_STREAMING[fmt]}; write it to a "
                         f"file, or stream {arg('format', 'jsonl')} or {arg('format', 'npy')}")
    stream = stream if stream is not None else sys.stdout.buffer
    with StoreReader(store) as r:
        if modality is not None:
            _check_modality(r, modality)
        total = r.counts().get(modality, 0) if modality else r.n
        chunks = r.chunks(modality=modality, vectors=True, ids=fmt == "jsonl", paths=fmt == "jsonl",
                          modalities=fmt == "jsonl", rows=chunk_rows, reuse=True)
        if fmt == "npy":
            n = _npy_stream(stream, chunks, r.dim, total, progress)
        else:
            n = _jsonl_lines(lambda text: stream.write(text.encode("utf-8", "surrogateescape")), chunks, total,
                             progress)
        stream.flush()
    return {"output": STREAM, "format": fmt, "n_rows": n, "dim": r.dim, "modality": modality}


def _check_modality(r: StoreReader, modality: str) -> None:
    from .modalities import get_modality

    if r.code(modality) is None:
        get_modality(modality)  # an unknown name raises with the list of known ones


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _export_meta(r: StoreReader, modality: str | None, total: int) -> dict[str, Any]:
    a = r.attrs
    return {"format": EXPORT_FORMAT, "source": str(r.path.resolve()), "n_rows": total, "dim": r.dim,
            "dtype": "float32", "modality_filter": modality, "preset": a.get("preset"),
            "weights_source": a.get("weights_source"), "weights_sha256": a.get("weights_sha256"),
            "config_sha256": a.get("config_sha256"), "mtx_version": a.get("mtx_version")}


def _tick(progress, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


def _write_npy(tmp: Path, chunks, r: StoreReader, total: int, meta: dict, progress) -> int:

    tmp.mkdir()
    with open(tmp / "embeddings.npy", "wb") as fv, open(tmp / "rows.jsonl", "w", encoding="utf-8") as fr:
        def rows(c: Chunk) -> None:
            dumps = json.dumps
            fr.write("".join(f'{{"id": {dumps(i, ensure_ascii=False)}, "modality": {dumps(m)}, '
                             f'"path": {dumps(p, ensure_ascii=False)}}}\n'
                             for i, m, p in zip(c.ids, c.modalities, c.paths, strict=True)))

        n = _npy_stream(fv, chunks, r.dim, total, progress, rows)
    (tmp / "meta.json").write_text(json.dumps({**meta, "layout": {
        "embeddings.npy": "[n_rows, dim] float32; row i belongs to line i of rows.jsonl",
        "rows.jsonl": "one JSON object per row: id, modality, path"}}, indent=1) + "\n")
    return n


def _npy_stream(fv, chunks, dim: int, total: int, progress, each: Callable[[Chunk], None] | None = None) -> int:
    """Write the ``[total, dim]`` float32 .npy to the binary file ``fv`` front to back (a pipe
    will do: the header needs only the row count, known before the first chunk)."""
    import numpy as np

    np.lib.format.write_array_header_1_0(
        fv, {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False, "shape": (total, dim)})
    n = 0
    for c in chunks:
        fv.write(np.ascontiguousarray(c.vectors, dtype="<f4").tobytes())
        if each is not None:
            each(c)
        n += len(c.rows)
        _tick(progress, n, total)
    return n


def parquet_schema(dim: int, meta: dict[str, Any] | None = None):
    """The Arrow schema of a Parquet export: id, modality, path, embedding (fixed-size list)."""
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("modality", pa.string()), ("path", pa.string()),
                      ("embedding", pa.list_(pa.float32(), dim))],
                     metadata={b"mtx": json.dumps(meta).encode()} if meta else None)


def _write_parquet(tmp: Path, chunks, r: StoreReader, total: int, meta: dict, progress) -> int:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = parquet_schema(r.dim, meta)
    n = 0
    # Floats barely compress (and dictionary-encoding them is wasted work): store the vectors
    # plain, compress and dictionary-encode only the string columns.
    with pq.ParquetWriter(tmp, schema, compression={"id": "snappy", "modality": "snappy", "path": "snappy",
                                                    "embedding": "none"},
                          use_dictionary=["modality", "path"], write_statistics=["id", "modality", "path"]) as w:
        for c in chunks:
            flat = pa.array(np.ascontiguousarray(c.vectors, np.float32).reshape(-1), pa.float32())
            batch = pa.record_batch([pa.array(c.ids, pa.string()), pa.array(c.modalities, pa.string()),
                                     pa.array(c.paths, pa.string()),
                                     pa.FixedSizeListArray.from_arrays(flat, r.dim)], schema=schema)
            w.write_batch(batch, row_group_size=len(c.rows))
            n += len(c.rows)
            _tick(progress, n, total)
    return n  # with no rows the file holds the schema only: a valid empty table


def _vector_texts(v: np.ndarray) -> list[str]:
    """Each row of ``v`` as comma-separated decimals that parse back to the same float32.

    Arrow writes the shortest float32 decimals in C++; they are parsed back (as double, then
    float32, as a JSON reader does) and compared bit for bit. A batch that fails the check or
    holds NaN/inf falls back to json's own float repr (the exact double: always round-trips).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n, dim = v.shape
    flat = np.ascontiguousarray(v, np.float32).reshape(-1)
    if n and dim and np.isfinite(flat).all():
        text = pc.cast(pa.array(flat), pa.string())
        text = pc.if_else(pc.equal(text, "-0"), "-0.0", text)  # JSON reads "-0" as the integer 0
        back = pc.cast(pc.cast(text, pa.float64()), pa.float32()).to_numpy(zero_copy_only=False)
        if np.array_equal(back.view(np.uint32), flat.view(np.uint32)):
            offsets = pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int64))
            return pc.binary_join(pa.LargeListArray.from_arrays(offsets, text), ", ").to_pylist()
    return [", ".join(json.dumps(x) for x in r) for r in v.tolist()]


def _write_jsonl(tmp: Path, chunks, r: StoreReader, total: int, meta: dict, progress) -> int:
    with open(tmp, "w", encoding="utf-8") as f:
        return _jsonl_lines(f.write, chunks, total, progress)


def _jsonl_lines(write: Callable[[str], Any], chunks, total: int, progress) -> int:
    """One JSON line per row (id, modality, path, embedding), passed to ``write`` in blocks."""
    dumps = json.dumps
    n = 0
    step = 2048  # rows formatted at a time: keeps the Python strings of a chunk small
    for c in chunks:
        for s in range(0, len(c.rows), step):
            texts = _vector_texts(c.vectors[s:s + step])
            write("".join(
                f'{{"id": {dumps(i, ensure_ascii=False)}, "modality": {dumps(m)}, '
                f'"path": {dumps(p, ensure_ascii=False)}, "embedding": [{t}]}}\n'
                for i, m, p, t in zip(c.ids[s:s + step], c.modalities[s:s + step], c.paths[s:s + step],
                                      texts, strict=True)))
        n += len(c.rows)
        _tick(progress, n, total)
    return n


def _write_safetensors(tmp: Path, chunks, r: StoreReader, total: int, meta: dict, progress) -> int:
    """Stream a safetensors file: a header reserved up front, the vectors written in place,
    the string columns spooled to temporary files and appended, then the header filled in."""
    import numpy as np

    names = list(r.modality_names)
    if len(names) > 255:
        raise StoreError(f"{r.path}: more than 255 modality names; cannot store them as U8 codes")
    md = {"format": EXPORT_FORMAT, "modalities": json.dumps(names), "mtx": json.dumps(meta)}
    off_bytes = (total + 1) * 8
    layout = [("id_offsets", "I64", [total + 1], off_bytes), ("path_offsets", "I64", [total + 1], off_bytes),
              ("embeddings", "F32", [total, r.dim], total * r.dim * 4), ("modality", "U8", [total], total)]
    # Reserve room for the header with the largest numbers it can hold (strings come last).
    big = 1 << 62
    probe = _st_header(layout + [("id_bytes", "U8", [big], big), ("path_bytes", "U8", [big], big)], md)
    reserve = (len(probe) + 64 + 7) // 8 * 8
    data0 = 8 + reserve
    starts = {}
    pos = 0
    for name, _, _, size in layout:
        starts[name] = pos
        pos += size
    n = 0
    id_pos = path_pos = 0
    with open(tmp, "wb") as f, tempfile.TemporaryFile(dir=tmp.parent) as fid, \
            tempfile.TemporaryFile(dir=tmp.parent) as fpath:
        f.write(b"\0" * data0)
        f.seek(data0 + starts["modality"])
        f.write(b"\0" * total)  # allocate so the codes can be written in place
        for c in chunks:
            k = len(c.rows)
            f.seek(data0 + starts["embeddings"] + n * r.dim * 4)
            f.write(np.ascontiguousarray(c.vectors, dtype="<f4").tobytes())
            f.seek(data0 + starts["modality"] + n)
            f.write(np.asarray(c.codes, np.uint8).tobytes())
            for col, spool, base in (("id", fid, id_pos), ("path", fpath, path_pos)):
                enc = [s.encode("utf-8", "surrogateescape") for s in (c.ids if col == "id" else c.paths)]
                lens = np.fromiter((len(b) for b in enc), np.int64, count=k)
                ends = base + np.cumsum(lens)
                offs = np.concatenate([[base], ends]) if n == 0 else ends
                f.seek(data0 + starts[f"{col}_offsets"] + (n + (0 if n == 0 else 1)) * 8)
                f.write(offs.astype("<i8").tobytes())
                spool.write(b"".join(enc))
                if col == "id":
                    id_pos = int(ends[-1]) if k else id_pos
                else:
                    path_pos = int(ends[-1]) if k else path_pos
            n += k
            _tick(progress, n, total)
        if n != total:
            raise StoreError(f"{r.path}: read {n} rows, expected {total} (file changed during export?)")
        f.seek(data0 + pos)
        for spool in (fid, fpath):
            spool.seek(0)
            shutil.copyfileobj(spool, f, 1 << 22)
        f.truncate(data0 + pos + id_pos + path_pos)  # also zero-fills what a 0-row export skipped
        header = _st_header(layout + [("id_bytes", "U8", [id_pos], id_pos),
                                      ("path_bytes", "U8", [path_pos], path_pos)], md)
        if len(header) > reserve:  # cannot happen: the probe used larger numbers
            raise StoreError("internal: safetensors header larger than reserved")
        f.seek(0)
        f.write(struct.pack("<Q", reserve) + header + b" " * (reserve - len(header)))
    return n


def _st_header(layout: list[tuple[str, str, list[int], int]], md: dict[str, str]) -> bytes:
    h: dict[str, Any] = {"__metadata__": md}
    pos = 0
    for name, dt, shape, size in layout:
        h[name] = {"dtype": dt, "shape": shape, "data_offsets": [pos, pos + size]}
        pos += size
    return json.dumps(h, separators=(",", ":")).encode()


# ------------------------------------------------------------------------------------------
# Reading exports back
# ------------------------------------------------------------------------------------------


def read_export(path: str | Path, format: str | None = None) -> tuple[list[str], list[str], np.ndarray]:  # noqa: A002
    """Load an export back into ``(ids, modalities, vectors float32 [N, D])`` (whole, in memory).

    Example:
        >>> ids, mods, vecs = read_export("features.parquet")  # doctest: +SKIP
    """
    import numpy as np

    p = Path(path)
    fmt = format or ("npy" if p.is_dir() else infer_format(p))
    if fmt == "npy":
        vecs = np.load(p / "embeddings.npy", allow_pickle=False)
        rows = [json.loads(line) for line in (p / "rows.jsonl").read_text(encoding="utf-8").splitlines()]
        return [x["id"] for x in rows], [x["modality"] for x in rows], vecs
    if fmt == "parquet":
        import pyarrow.parquet as pq

        t = pq.read_table(p)
        emb = t.column("embedding").combine_chunks()
        dim = emb.type.list_size
        vecs = emb.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False) \
            if len(emb) else np.zeros((0, dim), np.float32)
        return t.column("id").to_pylist(), t.column("modality").to_pylist(), vecs
    if fmt == "jsonl":
        ids, mods, vecs = [], [], []
        with open(p, encoding="utf-8") as f:
            for line in f:
                d = json.loads(line)
                ids.append(d["id"])
                mods.append(d["modality"])
                vecs.append(d["embedding"])
        return ids, mods, np.array(vecs, np.float32)
    if fmt == "safetensors":
        from safetensors import safe_open

        with safe_open(str(p), "numpy") as f:
            md = f.metadata()
            t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
        names = json.loads(md["modalities"])
        blob, offs = t["id_bytes"].tobytes(), t["id_offsets"]
        ids = [blob[offs[i]:offs[i + 1]].decode("utf-8", "surrogateescape") for i in range(len(offs) - 1)]
        return ids, [names[c] for c in t["modality"]], t["embeddings"]
    raise UsageError(f"{p}: cannot tell the export format; pass format=")

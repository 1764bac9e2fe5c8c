"""The HDF5 store: crash-safe part files, resume index, consolidation, reading.

Layout of a run writing ``OUT.h5``::

    OUT.h5              the consolidated result (format version 1), replaced atomically
    OUT.h5.parts/       work in progress: run.json (config) + immutable part-*.h5 files
    OUT.h5.lock         one writer per output (flock: a killed run's lock is free at once; the
                        file is kept, so every run locks the same inode; MTX_LOCK=off skips it)

A part file is written as ``*.tmp``, closed, fsynced, renamed, and the directory fsynced, so a
killed run loses at most the part it was writing. Consolidation reads the previous final file
and every part, keeps the newest row of each id whose file is complete, writes ``OUT.h5.tmp``
and renames it over ``OUT.h5``; only then are the parts removed.

The store knows nothing about torch: it takes numpy arrays.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigMismatch, OutputLocked, StoreError, UsageError, arg
from .settings import mismatch, refusal

FORMAT_NAME = "mtx-embeddings"
FORMAT_VERSION = 1
STR = None  # set lazily: h5py.string_dtype()


def _h5():
    import h5py

    global STR
    if STR is None:
        STR = h5py.string_dtype("utf-8")
    return h5py


def parts_dir_of(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


# What a run writing OUT keeps beside it: OUT.parts/ (parts, run.json, plan.json, shard markers
# and locks), OUT.lock, OUT.tmp (consolidation, merge). Any OUT.<...>.tmp counts too. A new side
# file of an output must match this rule: discovery never takes one for an input.
SIDE_SUFFIXES = ("parts", "lock", "tmp")


def is_side_name(name: str, output_name: str) -> bool:
    """Whether a file called ``name`` beside the output ``output_name`` is that output or one of
    its side files (see :data:`SIDE_SUFFIXES`)."""
    if name == output_name:
        return True
    if not name.startswith(output_name + "."):
        return False
    rest = name[len(output_name) + 1:]
    return rest in SIDE_SUFFIXES or rest.endswith(".tmp")


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)




def config_hash(config: dict[str, Any]) -> str:
    from .modalities._base import canonical_json

    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


# ------------------------------------------------------------------------------------------
# Rows
# ------------------------------------------------------------------------------------------


@dataclass
class FileRecord:
    """One input file and what became of it (the resume index)."""

    path: str  # absolute path
    id: str  # id of the file (relative to its input root)
    modality: str
    size: int
    mtime_ns: int
    content_hash: str
    n_samples: int
    status: str  # "ok" | "failed" | "skipped" (no modality claims it; --skip-unknown)


@dataclass
class Failure:
    path: str
    modality: str
    stage: str
    message: str


@dataclass
class Rows:
    """A block of embedded samples."""

    ids: list[str]
    paths: list[str]
    modalities: list[str]
    vectors: np.ndarray  # [n, D] float32
    n_tokens: np.ndarray  # [n] int32
    tokens: list[np.ndarray] | None = None  # per sample [T_i, D] (with --save-tokens)


@dataclass
class PartBuffer:
    rows: list[Rows] = field(default_factory=list)
    files: list[FileRecord] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def n_rows(self) -> int:
        return sum(len(r.ids) for r in self.rows)

    def empty(self) -> bool:
        return not (self.rows or self.files or self.failures)


def h5_text(s: str) -> str:
    """``s`` as valid UTF-8 text for HDF5. A file name that is not UTF-8 reaches Python with
    surrogate escapes (``os.fsdecode``); it is stored with backslash escapes instead
    (``b"caf\\xe9.png"`` -> ``"caf\\xe9.png"``), so one odd name cannot stop a run."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a lone surrogate that is not an escaped byte
            return s.encode("utf-8", "backslashreplace").decode("utf-8")
    return s


def _write_str(g, name: str, values: list[str]) -> None:
    g.create_dataset(name, data=np.array([h5_text(v) for v in values], dtype=object), dtype=STR)


def _read_str(ds) -> list[str]:
    if len(ds) == 0:
        return []
    return [v.decode() if isinstance(v, bytes) else v for v in ds.asstr()[()]]


def _write_records(f, buf_files: list[FileRecord], failures: list[Failure]) -> None:
    g = f.create_group("files")
    _write_str(g, "path", [r.path for r in buf_files])
    _write_str(g, "id", [r.id for r in buf_files])
    _write_str(g, "modality", [r.modality for r in buf_files])
    g.create_dataset("size", data=np.array([r.size for r in buf_files], dtype=np.int64))
    g.create_dataset("mtime_ns", data=np.array([r.mtime_ns for r in buf_files], dtype=np.int64))
    _write_str(g, "content_hash", [r.content_hash for r in buf_files])
    g.create_dataset("n_samples", data=np.array([r.n_samples for r in buf_files], dtype=np.int64))
    _write_str(g, "status", [r.status for r in buf_files])
    fg = f.create_group("failures")
    for name in ("path", "modality", "stage", "message"):
        _write_str(fg, name, [getattr(x, name) for x in failures])


def read_files(f) -> list[FileRecord]:
    g = f["files"]
    cols = {k: _read_str(g[k]) for k in ("path", "id", "modality", "content_hash", "status")}
    nums = {k: g[k][()].tolist() for k in ("size", "mtime_ns", "n_samples")}
    return [FileRecord(cols["path"][i], cols["id"][i], cols["modality"][i], nums["size"][i],
                       nums["mtime_ns"][i], cols["content_hash"][i], nums["n_samples"][i],
                       cols["status"][i]) for i in range(len(cols["path"]))]


def read_failures(f) -> list[Failure]:
    g = f["failures"]
    cols = {k: _read_str(g[k]) for k in ("path", "modality", "stage", "message")}
    return [Failure(*(cols[k][i] for k in ("path", "modality", "stage", "message")))
            for i in range(len(cols["path"]))]


def _modality_list(f) -> list[str]:
    """/modality as strings (an HDF5 enum in final files, strings in parts)."""
    ds = f["modality"]
    if ds.dtype.kind in "iu":
        h5py = _h5()
        mapping = {v: k for k, v in h5py.check_enum_dtype(ds.dtype).items()}
        return [mapping[int(v)] for v in ds[()]]
    return _read_str(ds)


def write_part(path: Path, buf: PartBuffer, dim: int, cfg_hash: str, store_dtype: str) -> None:
    """Write one immutable part file atomically.

    The HDF5 image is built in memory and written with plain file I/O, so a full disk or a file
    size limit is an ordinary OSError: HDF5 never holds a half-written file (a failed HDF5 close
    can crash the interpreter later).
    """
    h5py = _h5()
    tmp = path.with_name(path.name + ".tmp")
    n = buf.n_rows
    dt = np.float16 if store_dtype == "float16" else np.float32
    with h5py.File(f"mtx-part-{id(buf)}", "w", driver="core", backing_store=False) as f:
        vecs = (np.concatenate([r.vectors for r in buf.rows]) if buf.rows
                else np.zeros((0, dim), np.float32)).astype(dt)
        f.create_dataset("embeddings", data=vecs)
        _write_str(f, "id", [i for r in buf.rows for i in r.ids])
        _write_str(f, "path", [p for r in buf.rows for p in r.paths])
        _write_str(f, "modality", [m for r in buf.rows for m in r.modalities])
        f.create_dataset("n_tokens", data=np.concatenate([r.n_tokens for r in buf.rows]).astype(np.int32)
                         if buf.rows else np.zeros(0, np.int32))
        if any(r.tokens is not None for r in buf.rows):
            toks = [t for r in buf.rows for t in (r.tokens or [])]
            g = f.create_group("tokens")
            g.create_dataset("data", data=np.concatenate(toks).astype(np.float32) if toks
                             else np.zeros((0, dim), np.float32))
            g.create_dataset("offsets", data=np.concatenate([[0], np.cumsum([len(t) for t in toks])])
                             .astype(np.int64))
        _write_records(f, buf.files, buf.failures)
        f.attrs["config_sha256"] = cfg_hash
        f.attrs["n_rows"] = n
        f.attrs["sha256"] = _rows_digest(vecs, [h5_text(i) for r in buf.rows for i in r.ids])
        f.attrs["complete"] = True
        f.flush()
        image = f.id.get_file_image()
    try:
        with open(tmp, "wb") as fh:
            fh.write(image)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.replace(tmp, path)
    fsync_dir(path.parent)


def check_space(dest: Path, need: int) -> None:
    """Refuse before HDF5 writes anything when ``need`` bytes cannot fit (disk or RLIMIT_FSIZE)."""
    import resource
    import shutil

    free = shutil.disk_usage(dest.parent).free
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    room = min(free, limit if limit != resource.RLIM_INFINITY else free)
    if need * 1.05 + (1 << 20) > room:
        raise StoreError(f"{dest}: cannot write the final file: it needs about {need / 1e6:.1f} MB and only "
                         f"{room / 1e6:.1f} MB can be written here (disk full or file size limit); "
                         "committed work is kept in the .parts directory, free space and rerun to finish")


def _rows_digest(vecs: np.ndarray, ids: list[str]) -> str:
    h = hashlib.sha256(np.ascontiguousarray(vecs).tobytes())
    h.update("\n".join(ids).encode())
    return h.hexdigest()


def verify_part(path: Path, cfg_hash: str | None = None) -> int:
    """Check a part: opens, complete flag, row count, config hash, content sha256. Returns rows."""
    h5py = _h5()
    try:
        with h5py.File(path, "r") as f:
            if not f.attrs.get("complete", False):
                raise StoreError(f"{path}: part is incomplete (no complete flag)")
            n = int(f.attrs["n_rows"])
            if f["embeddings"].shape[0] != n or len(f["id"]) != n:
                raise StoreError(f"{path}: row count {f['embeddings'].shape[0]} != recorded {n}")
            if cfg_hash and f.attrs["config_sha256"] != cfg_hash:
                raise ConfigMismatch(f"{path}: part was made with another config")
            if _rows_digest(f["embeddings"][()], _read_str(f["id"])) != f.attrs["sha256"]:
                raise StoreError(f"{path}: content does not match its sha256 (corrupt part)")
            return n
    except StoreError:
        raise
    except Exception as e:  # noqa: BLE001 - any h5py failure means an unreadable part
        raise StoreError(f"{path}: unreadable part ({type(e).__name__}: {e})") from None


# ------------------------------------------------------------------------------------------
# The writer side of a run
# ------------------------------------------------------------------------------------------


def check_output(output: str | Path) -> None:
    """Before any heavy work (the model, the decoders): the output can be written where it is
    asked for. A usage problem (exit 2), one line each: a directory, a missing folder, a folder
    that refuses new files (permissions, a read-only file system)."""
    output = Path(output)
    parent = output.parent if str(output.parent) else Path(".")
    if output.is_dir():
        raise UsageError(f"{output}: is a directory; give the output file, e.g. {output / 'embeddings.h5'}")
    if not parent.is_dir():
        raise UsageError(f"{output}: folder {parent} does not exist; create it or choose another output")
    try:  # os.access is not enough: root passes it, a read-only mount does not say so
        fd = os.open(parent / f".{output.name}.{os.getpid()}.probe", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as e:
        raise UsageError(f"{output}: cannot write in {parent} ({e.strerror or e}); choose an output in a folder "
                         "you can write to") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(parent / f".{output.name}.{os.getpid()}.probe")


def _sharded_layout(p: Path) -> bool:
    """A file of a sharded run's layout in the parts folder (plan, markers, shard parts/locks)."""
    return p.name == "plan.json" or p.name.startswith(("part-s", "shard-"))


def _no_flock(lock_path: Path, e: OSError) -> StoreError:
    """The lock could not be taken for another reason than a holder: say what to do."""
    if e.errno in (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOLCK):
        return StoreError(f"{lock_path}: this file system does not support file locks (flock: "
                          f"{e.strerror or e}); write the output to a local disk, mount with -o flock "
                          "(Lustre), or set MTX_LOCK=off if you make sure one run writes it")
    return StoreError(f"{lock_path}: cannot lock the output ({e.strerror or e})")


class Store:
    """One output being written: lock, config check, parts, resume index, consolidation."""

    def __init__(self, output: str | Path, config: dict[str, Any], *, overwrite: bool = False,
                 store_dtype: str = "float32", part_rows: int = 2048, part_seconds: float = 30.0,
                 modality_configs: dict[str, dict[str, Any]] | None = None,
                 shard: tuple[int, int] | None = None, modality_defaults: dict[str, dict[str, Any]] | None = None):
        self.output = Path(output)
        self.parts_dir = parts_dir_of(self.output)
        self.shard = shard
        # One writer per output; with shards, one writer per shard (shards share the parts dir).
        self.lock_path = (self.parts_dir / f"shard-{shard[0]:04d}-of-{shard[1]:04d}.lock" if shard
                          else self.output.with_name(self.output.name + ".lock"))
        self.config = config
        self.cfg_hash = config_hash(config)
        self.store_dtype = store_dtype
        self.part_rows = part_rows
        self.part_seconds = part_seconds
        self.overwrite = overwrite
        self._lock_fd: int | None = None
        self._seq = 0
        prefix = f"s{shard[0]:04d}-" if shard else ""
        self._run = f"{prefix}{int(time.time() * 1000):x}-{os.getpid()}"
        self.dim = int(config["geometry"]["dim"])
        self.modality_configs = modality_configs or {}
        self.modality_defaults = modality_defaults or {}  # a field an older output lacks had its default
        self._index: tuple | None = None  # rows_of's lazy index
        self._old_modality_configs: dict[str, dict[str, Any]] = {}
        self._old_config: dict[str, Any] = {}
        # --overwrite: the parts replace the output, which stays whole (and readable, also as an
        # input of this run) until the new one is complete; recorded in run.json for a resume.
        self.replaces = False

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> "Store":
        if self.output.parent and not self.output.parent.exists():
            raise UsageError(f"{self.output}: directory {self.output.parent} does not exist; create it first "
                             "or choose another output")
        if self.output.is_dir():
            raise StoreError(f"{self.output}: is a directory; give the output file, "
                             f"e.g. {self.output / 'embeddings.h5'}")
        if self.shard:
            if self.overwrite:
                raise StoreError(f"{self.output}: {arg('overwrite')} cannot be combined with {arg('shard', 'I/N')} (other "
                                 f"shards share {self.parts_dir}); remove it and the output first")
            self.parts_dir.mkdir(exist_ok=True)
        self._lock()
        try:
            self._prepare()
        except BaseException:
            self.close()
            raise
        return self

    def _prepare(self) -> None:
        if not self.shard and (self.parts_dir / "plan.json").exists() and not self.overwrite:
            raise StoreError(f"{self.output}: is being written in shards ({self.parts_dir / 'plan.json'}); "
                             "run the remaining `--shard I/N` commands, then `mtx merge`, or pass "
                             f"{arg('overwrite')}")
        if self.overwrite:
            self._start_replacement()
        self._check_config()
        self.parts_dir.mkdir(exist_ok=True)
        run_json = self.parts_dir / "run.json"
        if not run_json.exists():
            tmp = run_json.with_name(f"run.json.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"config_sha256": self.cfg_hash, "config": self.config,
                                      "modality_configs": self.merged_modality_configs(),
                                      "replaces_output": self.replaces},
                                      indent=1, default=str))
            os.replace(tmp, run_json)
            fsync_dir(self.parts_dir)

    def close(self) -> None:
        # The lock file stays: unlinking it would let a run waiting on the old inode and a new
        # run on a fresh file both hold "the" lock. Its name never matches an input (discovery).
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "Store":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _lock(self) -> None:
        if os.environ.get("MTX_LOCK", "").lower() in ("0", "off", "none"):
            return  # the user vouches that one run writes this output (no flock on this file system)
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreError(f"{self.lock_path}: cannot create the lock file ({e.strerror or e}); "
                             "choose an output in a folder you can write to") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if not isinstance(e, BlockingIOError):
                os.close(fd)
                raise _no_flock(self.lock_path, e) from None
            holder = ""
            with contextlib.suppress(OSError):
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            raise OutputLocked(f"{self.output}: another mtx run is writing it ({holder or 'unknown pid'}); "
                               "wait for it or choose another output") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._lock_fd = fd

    def _start_replacement(self) -> None:
        """``--overwrite``: start the replacement of the output, leaving the output itself alone.

        Parts of an interrupted replacement with the same settings are kept (the run resumes
        them); any other unsharded work in progress is dropped. A sharded layout (plan, shard
        parts and markers, which a merged output may reference) stays until the new output is
        in place.
        """
        self.replaces = True
        run_json = self.parts_dir / "run.json"
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            d = json.loads(run_json.read_text())
            if d.get("replaces_output") and d["config_sha256"] == self.cfg_hash:
                return
        if self.parts_dir.is_dir():
            for p in self.parts_dir.iterdir():
                if not _sharded_layout(p):
                    p.unlink()

    def _drop_replaced(self) -> None:
        """After the replacement is in place: what was left of the old output's layout goes."""
        if self.replaces and self.parts_dir.is_dir():
            for p in self.parts_dir.iterdir():
                if _sharded_layout(p):
                    with contextlib.suppress(OSError):
                        p.unlink()

    def merged_modality_configs(self) -> dict[str, dict[str, Any]]:
        """Configs of modalities already in the output, plus the current ones for new modalities."""
        return {**self.modality_configs, **self._old_modality_configs}

    def _existing_hash(self) -> str | None:
        run_json = self.parts_dir / "run.json"
        if run_json.exists():
            try:
                d = json.loads(run_json.read_text())
                self._old_modality_configs.update(d.get("modality_configs", {}))
                self._old_config = d.get("config") or {}
                self.replaces = self.replaces or bool(d.get("replaces_output"))
                return d["config_sha256"]
            except (ValueError, KeyError):
                return None
        if self.output.exists() and not self.shard and not self.replaces:
            h5py = _h5()
            try:
                with h5py.File(self.output, "r") as f:
                    if f.attrs.get("format") != FORMAT_NAME:
                        raise StoreError(f"{self.output}: exists and is not an mtx embeddings file; "
                                         f"choose another output or pass {arg('overwrite')}")
                    with contextlib.suppress(ValueError, KeyError):
                        self._old_modality_configs.update(json.loads(f.attrs["modality_configs_json"]))
                    with contextlib.suppress(ValueError, KeyError):
                        self._old_config = json.loads(f.attrs["config_json"])
                    return str(f.attrs.get("config_sha256", ""))
            except StoreError:
                raise
            except Exception as e:  # noqa: BLE001
                raise StoreError(f"{self.output}: exists but cannot be read ({e}); "
                                 f"pass {arg('overwrite')} to replace it") from None
        return None

    def _check_config(self) -> None:
        """Refuse settings that differ from the run that wrote the output (compared in canonical
        form, field by field), naming each difference and the options that keep the old ones."""
        old = self._existing_hash()
        lines, fixes = self.differences(old)
        if lines:
            raise ConfigMismatch(refusal(f"{self.output}: settings differ from the run that wrote it", lines,
                                         fixes, f"{arg('overwrite')} to replace it, or write to another output"))

    def differences(self, old_hash: str | None) -> tuple[list[str], list[str]]:
        """(one line per setting that differs, the options that keep the recorded ones)."""
        if not old_hash and not self._old_config and not self._old_modality_configs:
            return [], []  # nothing recorded: a new output
        same = old_hash == self.cfg_hash  # the same hash: the same run settings
        lines, fixes = mismatch(str(self.output), {} if same else self._old_config, {} if same else self.config,
                                self._old_modality_configs, self.modality_configs, self.modality_defaults)
        if not same and not lines:
            lines = ["the recorded settings hash differs (written by another mtx version?)"]
        return lines, fixes

    def existing_settings(self) -> tuple[str | None, dict[str, Any], dict[str, dict[str, Any]]]:
        """(config hash, run settings, per-modality configs) recorded by the run that wrote it."""
        h = self._existing_hash()
        return h, self._old_config, self._old_modality_configs

    # -- resume ------------------------------------------------------------------------------
    def sources(self) -> list[Path]:
        """Committed sources in commit order: the previous final file, then the parts."""
        out = [self.output] if self.output.exists() and not self.replaces else []
        if self.parts_dir.exists():
            parts = self.parts_dir.glob("part-*.h5")
            if self.replaces:  # the shard parts of the output being replaced are not ours
                parts = (p for p in parts if not _sharded_layout(p))
            out += sorted(parts, key=lambda p: (p.stat().st_mtime_ns, p.name))
        return out

    def done_files(self) -> dict[str, FileRecord]:
        """path -> record of every input already embedded or failed in committed work."""
        h5py = _h5()
        done: dict[str, FileRecord] = {}
        for src in self.sources():
            try:
                with h5py.File(src, "r") as f:
                    for r in read_files(f):
                        done[r.path] = r
            except Exception:  # noqa: BLE001 - a damaged part is ignored (its work is redone)
                continue
        return done

    def rows_of(self, path: str, old_id: str, new_id: str, new_path: str) -> "Rows | None":
        """The committed rows of input ``path`` re-labelled for an identical file at ``new_path``."""
        h5py = _h5()
        if self._index is None:  # built once per run: path -> rows, and the record positions
            files: dict[str, FileRecord] = {}
            rec_src: dict[str, list[int]] = {}
            rows: dict[str, list[tuple[int, int, str]]] = {}
            srcs = self.sources()
            try:
                for si, src in enumerate(srcs):
                    with h5py.File(src, "r") as f:
                        for r in read_files(f):
                            files[r.path] = r
                            rec_src.setdefault(r.path, []).append(si)
                        for i, (sid, p) in enumerate(zip(_read_str(f["id"]), _read_str(f["path"]), strict=True)):
                            rows.setdefault(p, []).append((si, i, sid))
            except Exception:  # noqa: BLE001 - unreadable source: fall back to recomputing
                return None
            self._index = (srcs, files, rec_src, rows)
        srcs, files, rec_src, rows = self._index
        found: dict[str, tuple] = {}
        for si, i, sid in rows.get(path, []):
            if _current(path, si, files, rec_src):
                with h5py.File(srcs[si], "r") as f:
                    found[sid] = (f["embeddings"][i].astype(np.float32), int(f["n_tokens"][i]), _modality_list(f)[i])
        if not found:
            return None
        keys = sorted(found)
        return Rows(ids=[new_id + k[len(old_id):] for k in keys], paths=[new_path] * len(keys),
                    modalities=[found[k][2] for k in keys],
                    vectors=np.stack([found[k][0] for k in keys]),
                    n_tokens=np.array([found[k][1] for k in keys], np.int32))

    # -- writing -----------------------------------------------------------------------------
    def commit(self, buf: PartBuffer) -> Path | None:
        if buf.empty():
            return None
        self._seq += 1
        path = self.parts_dir / f"part-{self._run}-{self._seq:06d}.h5"
        try:
            write_part(path, buf, self.dim, self.cfg_hash, self.store_dtype)
        except Exception as e:  # noqa: BLE001 - ENOSPC, EFBIG, EIO, h5py errors: all fatal
            with contextlib.suppress(OSError):
                path.with_name(path.name + ".tmp").unlink()
            why = getattr(e, "strerror", None) or str(e).splitlines()[0] if str(e) else type(e).__name__
            raise StoreError(f"{path}: cannot write ({why}); committed work is kept, "
                             "free space and rerun to resume") from None
        return path

    def finish_shard(self, attrs: dict[str, Any], modality_attrs: dict[str, dict[str, Any]],
                     summary: dict[str, Any]) -> Path:
        """Mark this shard complete (its parts are committed); ``mtx merge`` needs every marker."""
        i, n = self.shard
        marker = self.parts_dir / f"shard-{i:04d}-of-{n:04d}.json"
        tmp = marker.with_name(marker.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"shard": i, "n_shards": n, "config_sha256": self.cfg_hash,
                                   "attrs": attrs, "modality_attrs": modality_attrs,
                                   "summary": {k: summary[k] for k in ("n_inputs", "n_embedded", "n_skipped",
                                                                       "n_failed", "n_samples")},
                                   "finished": time.time()}, default=str))
        os.replace(tmp, marker)
        fsync_dir(self.parts_dir)
        return marker

    def consolidate(self, attrs: dict[str, Any], modality_attrs: dict[str, dict[str, Any]]) -> dict:
        """Write the final file from the previous one + all parts; remove the parts."""
        sources = self.sources()
        tmp = self.output.with_name(self.output.name + ".tmp")
        check_space(self.output, sum(p.stat().st_size for p in sources))
        try:
            from .consolidation import consolidate

            info = consolidate(sources, tmp, attrs, modality_attrs, self.store_dtype, self.dim)
            os.replace(tmp, self.output)
            fsync_dir(self.output.parent)
        except Exception as e:  # noqa: BLE001
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StoreError(f"{self.output}: cannot write the final file ({getattr(e, 'strerror', None) or e}); "
                             "the parts are kept, rerun to finish") from None
        for p in sources:
            if p != self.output:
                p.unlink()
        self._drop_replaced()
        with contextlib.suppress(OSError):
            (self.parts_dir / "run.json").unlink()
            self.parts_dir.rmdir()
        return info


def _current(path: str, si: int, files: dict[str, FileRecord], rec_src: dict[str, list[int]]) -> bool:
    """Is a row of ``path`` found in source ``si`` part of the file's current, finished version?

    Its file must be ``ok``, and the row must come after the path's previous record (rows of
    an earlier version of a changed file, or of a run that later failed it, are dropped) and no
    later than its last record (a file record is always committed with or after its rows).
    """
    rec = files.get(path)
    if rec is None or rec.status != "ok":
        return False
    s = rec_src[path]
    return (s[-2] if len(s) > 1 else -1) < si <= s[-1]


# ------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------


def vds_source(vds: Path, name: str) -> Path | None:
    """Where HDF5 finds a virtual dataset's source file ``name``: HDF5_VDS_PREFIX, as given
    (relative to the working directory), beside the file; None when it is in none of them."""
    if name == ".":
        return vds
    cands = [Path(os.environ["HDF5_VDS_PREFIX"]) / name] if os.environ.get("HDF5_VDS_PREFIX") else []
    cands += [Path(name), Path(vds).parent / name]
    return next((c for c in cands if c.exists()), None)


def missing_sources(f, path: str | Path) -> tuple[list[str], int]:
    """(source files of the virtual datasets of the open file ``f`` that cannot be found, how many
    source files there are)."""
    names: dict[str, bool] = {}
    for ds in f.values():
        if getattr(ds, "is_virtual", False):
            for vs in ds.virtual_sources():
                if vs.file_name not in names:
                    names[vs.file_name] = vds_source(Path(path), vs.file_name) is None
    return [n for n, gone in names.items() if gone], len(names)


def missing_sources_message(path: str | Path, missing: list[str], total: int) -> str:
    """What a read of a merged file whose parts are gone says: which parts, and the fix."""
    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    return (f"{path}: a merged (virtual) file whose parts are missing: {len(missing)} of {total} part file(s) "
            f"not found ({shown}); its rows would read as NaN. Use it beside its .parts directory, or run "
            f"`mtx merge --copy {Path(path).name}` next to the parts for a self-contained file")


def require_sources(f, path: str | Path) -> None:
    """Refuse to read the vectors of a merged file whose part files are missing.

    Raises:
        StoreError: naming the missing parts and the fix (``mtx merge --copy``).
    """
    missing, total = missing_sources(f, path)
    if missing:
        raise StoreError(missing_sources_message(path, missing, total))


def read(path: str | Path, modality: str | None = None) -> tuple[list[str], np.ndarray]:
    """Read ids and vectors (float32) of a final file, optionally of one modality.

    Raises:
        StoreError: a merged (virtual) file whose part files are missing.
    """
    h5py = _h5()
    with h5py.File(path, "r") as f:
        require_sources(f, path)
        ids = _read_str(f["id"])
        vecs = f["embeddings"][()].astype(np.float32)
        if modality:
            mods = _modality_list(f)
            sel = [i for i, m in enumerate(mods) if m == modality]
            return [ids[i] for i in sel], vecs[sel]
    return ids, vecs

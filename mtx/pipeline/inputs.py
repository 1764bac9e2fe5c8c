"""Inputs: discovery (paths, directories, globs, stdin lists), sample ids, fingerprints."""
from __future__ import annotations

import contextlib
import glob as globlib
import hashlib
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Input:
    path: Path  # absolute
    id: str  # relative to its input root (posix)


def sample_id(base: str, key: str) -> str:
    """The id of a sample: its file's id (or label) + ``#key`` when the sample is a part of the
    file (``row=3``, ``line=2``, ``t=10``); the one place this rule is written."""
    return f"{base}#{key}" if key else base


def _walk(root: Path) -> Iterator[Path]:
    """Recursive, sorted, hidden entries skipped, symlinked directories not followed (no loops)."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def _rel_id(path: Path, root: Path | None) -> str:
    if root is not None:
        with contextlib.suppress(ValueError):
            return path.relative_to(root).as_posix()
    with contextlib.suppress(ValueError):
        return path.relative_to(Path.cwd()).as_posix()
    return path.as_posix()


def read_stdin_list(stream, null: bool) -> list[str]:
    data = stream.read()
    if isinstance(data, bytes):
        data = data.decode("utf-8", "surrogateescape")
    parts = data.split("\0") if null else data.splitlines()
    return [p for p in (x.strip("\n") if null else x.strip() for x in parts) if p]


def _expand(raw: str, stdin, null: bool) -> Iterator[tuple[Path, Path | None] | str]:
    """(file, its input root or None) for every file ``raw`` names, or a problem message."""
    if raw == "-":
        src = stdin if stdin is not None else (sys.stdin.buffer if null else sys.stdin)
        for line in read_stdin_list(src, null):
            yield from _files_of(Path(line))
        return
    p = Path(raw).expanduser()
    if p.is_dir() or p.exists() or p.is_symlink():
        yield from _files_of(p)
    elif any(c in raw for c in "*?["):
        hits = sorted(globlib.glob(raw, recursive=True))
        if not hits:
            yield "glob matched no files"
        for h in hits:
            yield from _files_of(Path(h))
    else:
        yield "no such file or directory"


def _files_of(p: Path) -> Iterator[tuple[Path, Path | None]]:
    if p.is_dir():
        root = Path(os.path.abspath(p))
        for f in _walk(p):
            yield f, root
    else:
        yield p, None


def discover(inputs: Iterable[str], *, stdin=None, null: bool = False) -> tuple[list[Input], list[tuple[str, str]]]:
    """Expand paths, directories (recursive), globs and ``-`` into a sorted, de-duplicated list.

    Returns ``(inputs, problems)`` where problems are ``(path, message)`` for inputs that do not
    exist or cannot be listed. Companion files (an ENVI header's data file) are removed.
    """
    found: dict[Path, Input] = {}
    problems: list[tuple[str, str]] = []
    for raw in inputs:
        for hit in _expand(raw, stdin, null):
            if isinstance(hit, str):
                problems.append((raw, hit))
                continue
            ap = Path(os.path.abspath(hit[0]))
            if ap not in found:
                found[ap] = Input(ap, _rel_id(ap, hit[1]))
    companions = _companions(found)
    items = [v for k, v in found.items() if k not in companions]
    # Two roots can hold the same relative name (A/x.txt and B/x.txt): such ids fall back to the
    # path relative to the working directory (or absolute), so every id stays unique.
    counts: dict[str, int] = {}
    for it in items:
        counts[it.id] = counts.get(it.id, 0) + 1
    items = [Input(it.path, _rel_id(it.path, None)) if counts[it.id] > 1 else it for it in items]
    items.sort(key=lambda i: (i.id, str(i.path)))
    return items, problems


def _companions(found: Iterable[Path]) -> set[Path]:
    """Files another input consumes (an ENVI header's data file): not embedded on their own."""
    from ..modalities import list_modalities

    mods = list_modalities()
    out: set[Path] = set()
    for ap in found:
        for m in mods:
            out.update(Path(os.path.abspath(c)) for c in m.companions(ap))
    return out


def fingerprint(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def content_hash(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()

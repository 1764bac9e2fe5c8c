"""Inputs: discovery (paths, directories, globs, stdin lists), sample ids, fingerprints."""
from __future__ import annotations

import contextlib
import fnmatch
import glob as globlib
import hashlib
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._files import NOT_FOUND, check_argument, os_error_words, too_long


@dataclass(frozen=True)
class Input:
    path: Path  # absolute
    id: str  # relative to its input root (posix)


def sample_id(base: str, key: str) -> str:
    """The id of a sample: its file's id (or label) + ``#key`` when the sample is a part of the
    file (``row=3``, ``line=2``, ``t=10``); the one place this rule is written."""
    return f"{base}#{key}" if key else base


@dataclass(frozen=True)
class Filters:
    """Which discovered files become inputs.

    Attributes:
        include: keep only files matching one of these globs (none: every file).
        exclude: leave out files matching one of these globs.
        hidden: also take hidden files and folders (names starting with ``.``) inside walked
            folders; a hidden file named explicitly is always taken.
        output: the output being written: it and its side files (``OUT.parts/``, ``OUT.lock``,
            ``OUT.tmp``...) are never inputs, wherever they sit.

    A glob is matched (``fnmatch``: ``*`` also matches ``/``) against the file's path relative
    to the folder it was found in, its name, and its absolute path; any match counts.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    hidden: bool = False
    output: str | Path | None = None

    def wants(self, ap: str, rel: str) -> bool:
        if not self.include and not self.exclude:
            return True
        names = (rel, os.path.basename(ap), ap)
        if self.include and not any(fnmatch.fnmatchcase(n, g) for g in self.include for n in names):
            return False
        return not any(fnmatch.fnmatchcase(n, g) for g in self.exclude for n in names)


@dataclass
class Discovery:
    """What :func:`discover` found. Unpacks as ``items, problems`` (the older return value).

    Attributes:
        items: the inputs, sorted by id, de-duplicated, companions removed.
        problems: ``(path, message)`` of every input discovery could not reach (a broken
            symlink, a loop, an unreadable folder, a path over the length limit, a name on a
            stdin list that does not exist, a glob that matched nothing): ``discover`` failures.
        missing: path arguments that do not exist (a usage error for the command line).
        hidden: hidden files and folders skipped inside walked folders.
        excluded: files left out by ``include``/``exclude``.
    """

    items: list[Input] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    hidden: int = 0
    excluded: int = 0

    def __iter__(self) -> Iterator[Any]:
        yield self.items
        yield self.problems

    def __getitem__(self, i: int) -> Any:
        return (self.items, self.problems)[i]

    def __len__(self) -> int:
        return 2


class _OutputGuard:
    """Tells the output and its side files apart from inputs (by real directory, so a symlinked
    or relative spelling of the same folder is recognised)."""

    def __init__(self, output: str | Path | None):
        from ..store import is_side_name

        self.is_side_name = is_side_name
        self.name = ""
        if output is not None:
            out = Path(os.path.abspath(Path(output).expanduser()))
            self.name = out.name
            self.dir = os.path.realpath(out.parent)
            self.parts = os.path.join(self.dir, out.name + ".parts")
        self._real: dict[str, str] = {}

    def covers(self, path: str) -> bool:
        if not self.name:
            return False
        parent, name = os.path.split(path)
        real = self._real.get(parent)
        if real is None:
            real = self._real[parent] = os.path.realpath(parent)
        return ((real == self.dir and self.is_side_name(name, self.name)) or real == self.parts
                or real.startswith(self.parts + os.sep))


class _Finder:
    """One discovery: walks, checks and collects (see :func:`discover`)."""

    def __init__(self, flt: Filters):
        self.flt = flt
        self.guard = _OutputGuard(flt.output)
        self.out = Discovery()
        self.found: dict[str, str | None] = {}  # abs path -> the folder it was found in
        self._seen_problems: set[str] = set()

    def problem(self, path: str, message: str) -> None:
        if path not in self._seen_problems:
            self._seen_problems.add(path)
            self.out.problems.append((path, message))

    def add_file(self, path: str, root: str | None) -> None:
        ap = os.path.abspath(path)
        if self.guard.covers(ap) or ap in self.found:
            return
        why = too_long(ap)
        if why:
            self.problem(ap, why)
            return
        self.found[ap] = root

    def argument(self, raw: str, *, listed: bool = False) -> None:
        """A path named on the command line (or, ``listed``, on a stdin list)."""
        p = os.path.expanduser(raw)
        if not listed and check_argument(p) == NOT_FOUND:
            if any(c in raw for c in "*?["):
                self.glob(raw)
            else:
                self.out.missing.append(raw)
            return
        ap = os.path.abspath(p)
        try:
            st = os.stat(p)
        except OSError as e:
            self.problem(ap, os_error_words(p, e))
            return
        if stat.S_ISDIR(st.st_mode):
            self.walk(ap)
        else:
            self.add_file(ap, None)

    def glob(self, raw: str) -> None:
        hits = sorted(globlib.glob(os.path.expanduser(raw), recursive=True, include_hidden=self.flt.hidden))
        if not hits:
            self.problem(raw, "glob matched no files")
        for h in hits:
            if os.path.isdir(h) and not os.path.islink(h):
                self.walk(os.path.abspath(h))
            else:
                self.add_file(h, None)

    def walk(self, root: str) -> None:
        """Every file under ``root``: sorted, symlinked folders not followed (no loops), hidden
        entries skipped and counted, every folder or link that cannot be read a problem."""
        if self.guard.covers(root):
            return
        stack = [root]
        while stack:
            d = stack.pop()
            try:
                with os.scandir(d) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as e:
                self.problem(d, f"{os_error_words(d, e)}: the files in this folder cannot be listed")
                continue
            subdirs = []
            for e in entries:
                if self.guard.covers(e.path):
                    continue
                if not self.flt.hidden and e.name.startswith("."):
                    self.out.hidden += 1
                    continue
                kind = self._kind(e)
                if kind == "dir":
                    subdirs.append(e.path)
                elif kind == "file":
                    self.add_file(e.path, root)
            stack.extend(reversed(subdirs))

    def _kind(self, e: os.DirEntry) -> str:
        """'dir', 'file' (anything else that is not a folder; the decoders refuse special
        files), or 'skip' (a symlink to a folder: not followed)."""
        try:
            if e.is_dir(follow_symlinks=False):
                return "dir"
            if not e.is_symlink():
                return "file"
            st = os.stat(e.path)  # where the link points
        except OSError as err:
            self.problem(e.path, os_error_words(e.path, err))
            return "skip"
        return "skip" if stat.S_ISDIR(st.st_mode) else "file"

    def items(self) -> list[Input]:
        out = []
        companions = {str(c) for c in _companions(Path(ap) for ap in self.found)}
        cwd = os.getcwd()
        for ap, root in self.found.items():
            if ap in companions:
                continue
            rel = _rel(ap, str(root)) if root is not None else None
            rel = rel or _rel(ap, cwd) or Path(ap).as_posix()
            if self.flt.wants(ap, rel):
                out.append(Input(Path(ap), rel))
            else:
                self.out.excluded += 1
        return out


def _rel(ap: str, root: str) -> str | None:
    """``ap`` relative to the folder ``root`` (posix), or None when it is not inside it."""
    prefix = root if root.endswith(os.sep) else root + os.sep
    if ap.startswith(prefix) and len(ap) > len(prefix):
        return ap[len(prefix):].replace(os.sep, "/")
    return None


def _rel_id(path: Path, root: Path | None) -> str:
    if root is not None:
        with contextlib.suppress(ValueError):
            return path.relative_to(root).as_posix()
    with contextlib.suppress(ValueError):
        return path.relative_to(Path.cwd()).as_posix()
    return path.as_posix()


def left_out_parts(hidden: int = 0, excluded: int = 0, unknown: int = 0) -> list[str]:
    """What discovery (and ``--skip-unknown``) left out, a phrase per kind ([] when nothing)."""
    parts = [f"{hidden} hidden (--hidden includes them)"] if hidden else []
    parts += [f"{excluded} excluded by --include/--exclude"] if excluded else []
    parts += [f"{unknown} that no modality claims (--skip-unknown)"] if unknown else []
    return parts


def left_out(counts: dict[str, Any]) -> str:
    """``left out: …`` from a summary's ``n_hidden``/``n_excluded``/``n_unknown`` ('' when nothing)."""
    parts = left_out_parts(counts.get("n_hidden", 0), counts.get("n_excluded", 0), counts.get("n_unknown", 0))
    return ("left out: " + ", ".join(parts)) if parts else ""


def read_stdin_list(stream, null: bool) -> list[str]:
    data = stream.read()
    if isinstance(data, bytes):
        data = data.decode("utf-8", "surrogateescape")
    parts = data.split("\0") if null else data.splitlines()
    return [p for p in (x.strip("\n") if null else x.strip() for x in parts) if p]


def discover(inputs: Iterable[str], *, stdin=None, null: bool = False,
             filters: Filters | None = None) -> Discovery:
    """Expand paths, directories (recursive), globs and ``-`` into a sorted, de-duplicated list.

    Args:
        inputs: paths, folders (walked), globs, or ``-`` for a list of paths on stdin.
        stdin: the stream ``-`` reads (default: ``sys.stdin``).
        null: the stdin list is NUL-separated.
        filters: include/exclude globs, hidden files, the output to keep out (:class:`Filters`).

    Returns:
        A :class:`Discovery` (it unpacks as ``items, problems``). Companion files (an ENVI
        header's data file) are removed.
    """
    finder = _Finder(filters or Filters())
    for raw in inputs:
        if raw == "-":
            src = stdin if stdin is not None else (sys.stdin.buffer if null else sys.stdin)
            for line in read_stdin_list(src, null):
                finder.argument(line, listed=True)
        else:
            finder.argument(raw)
    items = finder.items()
    # Two roots can hold the same relative name (A/x.txt and B/x.txt): such ids fall back to the
    # path relative to the working directory (or absolute), so every id stays unique.
    counts: dict[str, int] = {}
    for it in items:
        counts[it.id] = counts.get(it.id, 0) + 1
    items = [Input(it.path, _rel_id(it.path, None)) if counts[it.id] > 1 else it for it in items]
    items.sort(key=lambda i: (i.id, str(i.path)))
    finder.out.items = items
    return finder.out


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

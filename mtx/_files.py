"""What a path is, in one set of words: the checks before any file is opened.

Discovery (``mtx embed``), the decoders, sniffing and ``mtx tokenize`` all ask here whether a
path is a regular file they may read, so a FIFO, a device or a socket is refused everywhere
(opening a FIFO blocks until a writer comes) and a broken symlink, a loop or a path over the
system's length limit reads the same in ``--dry-run``, in a run and in ``tokenize``.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .errors import DecodeError

try:
    PATH_MAX = os.pathconf("/", "PC_PATH_MAX")
except (OSError, ValueError, AttributeError):  # pragma: no cover - not POSIX
    PATH_MAX = 4096

NOT_REGULAR = "not a regular file (a FIFO, socket or device); refusing to read it"
NOT_FOUND = "no such file or directory"
DISAPPEARED = "file disappeared before it could be read"


def too_long(path: str | os.PathLike) -> str | None:
    """The words for a path the system cannot open by name (over PATH_MAX), or None."""
    n = len(os.fsencode(path))
    if n >= PATH_MAX:
        return f"path too long ({n:,} bytes; this system's limit is {PATH_MAX:,})"
    return None


def broken_link(path: str | os.PathLike) -> str:
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return f"broken symlink: its target {target} does not exist"


def os_error_words(path: str | os.PathLike, e: OSError, *, listed: bool = False) -> str:
    """One line for an ``OSError`` raised by ``stat``/``open``/``scandir`` of ``path``.

    ``listed``: the path was seen by discovery, so a missing file has disappeared since.
    """
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        if os.path.islink(path):
            return broken_link(path)
        return DISAPPEARED if listed else NOT_FOUND
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if e.errno == errno.ELOOP:
        return "symlink loop"
    if e.errno == errno.ENAMETOOLONG:
        return too_long(path) or f"a name in the path is too long ({e.strerror})"
    return f"cannot read: {e.strerror or e}"


def stat_regular(path: str | os.PathLike, *, listed: bool = False) -> os.stat_result:
    """``stat`` of a regular file; anything else (missing, a directory, a FIFO, a device, a
    socket, a broken symlink, a loop) raises :class:`DecodeError` with one line, before the
    file is opened."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise DecodeError(os_error_words(path, e, listed=listed)) from None
    if stat.S_ISDIR(st.st_mode):
        raise DecodeError("is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise DecodeError(NOT_REGULAR)
    return st


def check_argument(path: str | os.PathLike) -> str | None:
    """Why a path named on the command line cannot be used at all (it does not exist), or None
    when it exists in some form (a file, a directory, even a broken symlink: those are
    reported as failures of that input, not as usage errors)."""
    p = Path(path)
    try:
        os.lstat(p)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return NOT_FOUND
    return None

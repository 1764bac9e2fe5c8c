"""Typed errors. Library code raises these; the CLI turns them into one line and an exit code.

Every message names the subject, the problem and the next action.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

_CLI = contextvars.ContextVar("mtx_cli_frontend", default=False)


def arg(name: str, value: Any = True) -> str:
    """How the caller sets argument ``name``, for "next action" hints: ``overwrite=True`` to a
    Python caller, ``--overwrite`` inside the command line (:func:`cli_frontend`), so a library
    message never tells an API user to pass a flag."""
    if _CLI.get():
        flag = "--" + name.replace("_", "-")
        return flag if value is True else f"{flag} {value}"
    return f"{name}={value}" if isinstance(value, str) else f"{name}={value!r}"


@contextlib.contextmanager
def cli_frontend() -> Iterator[None]:
    """Word hints as command-line flags while the CLI runs a command."""
    token = _CLI.set(True)
    try:
        yield
    finally:
        _CLI.reset(token)


class MtxError(Exception):
    """Base class for every error mtx reports to users."""

    exit_code = 1

    def __init__(self, message: str, *, path: str | None = None):
        super().__init__(message)
        self.path = path

    @property
    def reason(self) -> str:
        """The message without the path it is about."""
        return str(self.args[0]) if self.args else self.__class__.__name__

    @property
    def message(self) -> str:
        msg = str(self.args[0]) if self.args else self.__class__.__name__
        return f"{self.path}: {msg}" if self.path and not msg.startswith(self.path) else msg


class UsageError(MtxError):
    exit_code = 2


class UnknownModality(MtxError):
    """No modality recognises a file (sniffing lists every attempt)."""


class AmbiguousModality(MtxError):
    """Two modalities claim a file with equal strength."""


class DecodeError(MtxError):
    """A file could not be decoded or preprocessed (corrupt, truncated, unsupported)."""


class MissingDependency(MtxError):
    """An optional decoder or system library is not installed."""


class FileTimeout(MtxError):
    """A decoder made no progress on a file for ``--timeout`` seconds."""


class WorkerCrashed(MtxError):
    """A decoder process died (a segfault in a decoder, an OOM kill)."""


class TokenizeError(MtxError):
    """Samples do not fit their modality's tokenizer."""


class WeightsError(MtxError):
    """Weights missing, unreadable, unsafe, mismatched or of an unknown layout."""


class DeviceError(MtxError):
    """The requested device or dtype is not available."""


class StoreError(MtxError):
    """The HDF5 output is unreadable, locked, of another config, or cannot be written."""


class ConfigMismatch(StoreError):
    pass


class OutputLocked(StoreError):
    pass


class NotReproducible(ConfigMismatch):
    """This install cannot embed a query the way the store's vectors were embedded."""


class Interrupted(MtxError):
    """SIGINT/SIGTERM during a run: committed work is kept; the exit code is 128 + the signal."""

    def __init__(self, signum: int):
        import signal

        super().__init__(f"interrupted by {signal.Signals(signum).name}; committed work is kept, "
                         "rerun the same command to resume")
        self.exit_code = 128 + signum


def short(exc: BaseException, *, with_path: bool = True) -> str:
    """One line describing any exception, for failure rows and stderr; ``with_path=False``
    leaves out the path an :class:`MtxError` carries (a failure row names its file already)."""
    if isinstance(exc, MtxError):
        text = exc.message if with_path else exc.reason
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return " ".join(text.split())[:500]

"""nertron's exceptions: one tree, importable without the optional dependencies of the features that raise them.

Every error a user can cause and fix derives from ``NertronError``: a bad argument (``InvalidValue``, a
``ValueError``, and ``InvalidType``, a ``TypeError``, each naming the argument), an unusable file or folder
(``InvalidFile``, an ``OSError``, naming it), a missing extra, an unreachable Triton server. The CLI reports
these in one line with exit status 2. Any other exception is a bug: the CLI calls it an internal error (exit
status 1) and ``NERTRON_DEBUG=1`` prints its traceback. Other operating-system errors (``OSError``: a full
disk, a busy port) name their file and also count as the user's to fix.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class NertronError(Exception):
    """Base of every error a user can fix; its message says what, where and why."""


class InvalidValue(NertronError, ValueError):
    """An argument, option, input line or file holds a value that cannot be used; the message names it."""


class InvalidType(NertronError, TypeError):
    """An argument has a type that cannot be used; the message names the argument."""


class TritonError(NertronError, RuntimeError):
    """Triton could not serve a request (or is not usable) and there is no fallback, or the server answered
    something a fallback must not hide (a malformed reply, a request it rejects, a model that does not fit)."""


class TritonUnavailable(TritonError):
    """The server could not be reached in time: unreachable, not ready, overloaded, no reply within the
    timeout, or the channel was closed. The only failure a fallback computes locally (or a retry resends)."""


class ModelMismatch(TritonError):
    """The server serves another model than the local bundle: its fingerprint (``Bundle.fingerprint``) differs.
    Not a transport failure: a fallback never hides it, and no row of the other model is returned."""


class TritonServerError(NertronError, RuntimeError):
    """A ``tritonserver`` could not start, exited early or did not become ready; the message quotes its log."""


class MissingExtra(NertronError, ImportError):
    """An optional dependency of a feature is not installed (or cannot be imported); the message says which
    extra brings it."""


class InvalidFile(NertronError, OSError):
    """A file or folder the caller named cannot be used (missing, unreadable, a folder where a file belongs, ...);
    the message names it. Each kind also derives from the matching built-in ``OSError`` subclass, so that
    ``except FileNotFoundError`` keeps working."""

    def __str__(self) -> str:  # the message and the file, without OSError's "[Errno N]"
        if self.strerror and self.filename is not None:
            return f"{self.filename}: {self.strerror}"
        return self.strerror or super().__str__()


class MissingFile(InvalidFile, FileNotFoundError):
    """A file or folder the caller named does not exist."""


class FileIsFolder(InvalidFile, IsADirectoryError):
    """A folder was named where a file belongs."""


class FolderIsFile(InvalidFile, NotADirectoryError):
    """A file was named where a folder belongs."""


class FileNotPermitted(InvalidFile, PermissionError):
    """A file or folder the caller named may not be read or written."""


_FILE_ERRORS: tuple[tuple[type[OSError], type[InvalidFile]], ...] = (
    (FileNotFoundError, MissingFile),
    (IsADirectoryError, FileIsFolder),
    (NotADirectoryError, FolderIsFile),
    (PermissionError, FileNotPermitted),
)


def file_error(error: OSError, what: str | None = None) -> InvalidFile:
    """``error`` as the ``InvalidFile`` of its kind, with its errno and file name; ``what`` (e.g. "model",
    "--data") prefixes the message. An error that is already an ``InvalidFile`` is returned as it is."""
    if isinstance(error, InvalidFile):
        return error
    kind = next((ours for builtin, ours in _FILE_ERRORS if isinstance(error, builtin)), InvalidFile)
    why = error.strerror or " ".join(str(error).split()) or type(error).__name__
    if error.filename is not None and error.strerror:
        why = f"{error.filename}: {why}"
    message = f"{what} {why}" if what else why
    return kind(error.errno, message) if error.errno is not None else kind(message)


@contextlib.contextmanager
def reraise_files(what: str | None = None) -> Iterator[None]:
    """Turns an ``OSError`` raised inside the block into ``file_error(error, what)``."""
    try:
        yield
    except InvalidFile:
        raise
    except OSError as error:
        raise file_error(error, what) from None

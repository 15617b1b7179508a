"""nertron's exceptions: one tree, importable without the optional dependencies of the features that raise them.

Every error a user can cause and fix derives from ``NertronError``: a bad argument (``InvalidValue``, a
``ValueError``, and ``InvalidType``, a ``TypeError``, each naming the argument), an unusable file (naming it),
a missing extra, an unreachable Triton server. The CLI reports these in one line with exit status 2. Any other
exception is a bug: the CLI calls it an internal error (exit status 1) and ``NERTRON_DEBUG=1`` prints its
traceback. Operating-system errors (``OSError``: a missing file, a full disk, a busy port) name their file
and also count as the user's to fix.
"""

from __future__ import annotations


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


class TritonServerError(NertronError, RuntimeError):
    """A ``tritonserver`` could not start, exited early or did not become ready; the message quotes its log."""


class MissingExtra(NertronError, ImportError):
    """An optional dependency of a feature is not installed (or cannot be imported); the message says which
    extra brings it."""

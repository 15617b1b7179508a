"""nertron's own exceptions, importable without the optional dependencies of the features that raise them.

Bad arguments raise ``TypeError``/``ValueError`` naming the argument, and unusable files ``ValueError`` or
``FileNotFoundError`` naming the file; these are for what only happens at run time.
"""

from __future__ import annotations


class TritonError(RuntimeError):
    """Triton could not serve a request (or is not usable) and there is no fallback, or the server answered
    something a fallback must not hide (a malformed reply, a request it rejects, a model that does not fit)."""


class TritonUnavailable(TritonError):
    """The server could not be reached in time: unreachable, not ready, overloaded, no reply within the
    timeout, or the channel was closed. The only failure a fallback computes locally (or a retry resends)."""


class TritonServerError(RuntimeError):
    """A ``tritonserver`` could not start, exited early or did not become ready; the message quotes its log."""


class MissingExtra(ImportError):
    """An optional dependency of a feature is not installed; the message says which extra brings it."""

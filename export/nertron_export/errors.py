"""The error of an export that failed a check."""


class ExportError(RuntimeError):
    """The exported model failed a check (parity with PyTorch, a malformed checkpoint)."""

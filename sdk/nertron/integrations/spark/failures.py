"""A job that failed on an executor, told on the driver in one line.

Spark reports a Python error on an executor as the driver-side ``PythonException`` (or a ``Py4JJavaError``)
that carries the executor's whole traceback. When the cause is a nertron error (a bad row, a bundle that
did not arrive intact, an unreachable server with no fallback), :func:`job_errors` raises that error
instead: the same class, its one-line message.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Iterator

from nertron.errors import NertronError

_ERROR_LINE = re.compile(r"^(nertron(?:\.\w+)*)\.(\w+): (.+)$", re.MULTILINE)


def executor_error(failure: BaseException) -> NertronError | None:
    """The nertron error that made a Spark job fail on an executor, rebuilt on the driver; None if the
    failure was not one."""
    text = str(failure)
    java = getattr(failure, "java_exception", None)
    if java is not None:
        text += "\n" + str(java)
    found = None
    for match in _ERROR_LINE.finditer(text):
        module, name, message = match.groups()
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        if isinstance(cls, type) and issubclass(cls, NertronError):
            try:
                found = cls(message.strip())
            except TypeError:  # a class that takes other arguments
                found = NertronError(message.strip())
    return found


@contextlib.contextmanager
def job_errors() -> Iterator[None]:
    """Runs Spark actions so that a nertron error on an executor is raised on the driver as itself, one
    line, without the executor's traceback; any other failure is raised unchanged::

        with job_errors():
            annotate(df, "text").write.parquet(out)
    """
    try:
        yield
    except Exception as failure:
        error = executor_error(failure)
        if error is None:
            raise
        error.spark_failure = failure  # type: ignore[attr-defined]  # Spark's own report, for debugging
        raise error from None

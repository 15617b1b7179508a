"""The ``tritonserver`` binary bundled in nvidia-pytriton (``pip install "nertron[server]"``) and what it
needs to run a python-backend model here.

The bundled binary needs a private backend directory (see :func:`python_backend_directory`) and an
environment in which the python-backend stub embeds this interpreter: the venv's ``bin`` first on
``PATH`` (the stub ignores ``PYTHONPATH``; it finds ``pyvenv.cfg`` from ``PATH``) and the interpreter's
libpython on ``LD_LIBRARY_PATH``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import sysconfig
from pathlib import Path

from nertron.errors import TritonServerError
from nertron.extras import missing


def bundled_tritonserver() -> Path:
    """The ``tritonserver`` binary of the installed nvidia-pytriton wheel."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise missing("pytriton", "the bundled tritonserver (or give the path of one)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "tritonserver" / "bin" / "tritonserver"
    if not binary.is_file():
        raise FileNotFoundError(f"nvidia-pytriton has no tritonserver binary at {binary}")
    return binary


def python_backend_directory(target: str | Path, tritonserver: str | Path | None = None) -> Path:
    """Makes ``target/python/`` with links to the bundled python backend, its utils and the stub for
    this Python version (the stub must sit beside ``libtriton_python.so``); returns ``target``."""
    root = Path(tritonserver or bundled_tritonserver()).resolve().parent.parent
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    sources = [
        root / "backends" / "python" / "libtriton_python.so",
        root / "backends" / "python" / "triton_python_backend_utils.py",
        root / "python_backend_stubs" / version / "triton_python_backend_stub",
    ]
    for source in sources:
        if not source.is_file():
            raise FileNotFoundError(f"the Triton python backend lacks {source} (Python {version})")
    backend = Path(target) / "python"
    backend.mkdir(parents=True, exist_ok=True)
    for source in sources:
        link = backend / source.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source)
    return Path(target)


def stub_environment() -> dict[str, str]:
    """The environment in which the python-backend stub runs this interpreter and its site-packages."""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise TritonServerError(
            f"{sys.executable} was built without a shared libpython, which the Triton python backend "
            "stub needs; use a Python built with --enable-shared"
        )
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.prefix) / "bin"), env.get("PATH", "")])
    libdir = str(sysconfig.get_config_var("LIBDIR"))
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH")) if p)
    return env

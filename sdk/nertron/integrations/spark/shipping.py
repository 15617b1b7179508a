"""A bundle directory that exists on the driver only, shipped to every executor with Spark's own file
distribution (``SparkContext.addArchive``) and checked file by file against its sha256 sums on arrival.

The driver packs a bundle directory once per process (again if its files change) into an uncompressed tar
named by its content's digest, so that two bundles never collide; Spark serves it from the driver and
unpacks it once per executor. Each Python worker verifies the unpacked files once, then reuses the path.
The archives live in a temporary folder of the driver process, removed when it exits.
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import socket
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nertron.errors import NertronError

if TYPE_CHECKING:
    from pyspark import SparkContext


class BundleNotShipped(NertronError, RuntimeError):
    """The shipped bundle is missing or damaged on an executor; the message names the bundle, the executor
    and the file."""


@dataclass(frozen=True)
class ShippedBundle:
    """A bundle as the executors receive it: the Spark archive's name, the driver's path (for messages) and
    each file's relative path with its sha256."""

    name: str
    source: str
    files: tuple[tuple[str, str], ...]

    def local_path(self) -> Path:
        """On an executor: the unpacked bundle, verified at its first use in this process."""
        with _verified_lock:
            if self.name not in _verified:
                _verified[self.name] = self._verify()
            return _verified[self.name]

    def _verify(self) -> Path:
        from pyspark import SparkFiles

        root = Path(SparkFiles.get(self.name))
        where = f"model bundle {self.source} shipped to executor {socket.gethostname()}"
        if not root.is_dir():
            raise BundleNotShipped(f"{where}: not found at {root} (did the driver's addArchive reach it?)")
        for relative, expected in self.files:
            path = root / relative
            if not path.is_file():
                raise BundleNotShipped(f"{where}: file {relative} is missing at {root}")
            got = _sha256(path)
            if got != expected:
                raise BundleNotShipped(
                    f"{where} arrived damaged: {relative} has sha256 {got[:16]}..., the driver's is {expected[:16]}..."
                )
        return root


_verified: dict[str, Path] = {}
_verified_lock = threading.Lock()

_staged: dict[tuple[str, tuple[tuple[str, int, int], ...]], tuple[ShippedBundle, Path]] = {}
_added: set[tuple[str, str]] = set()  # (Spark application id, archive name) already added
_staging_lock = threading.Lock()
_staging_root: Path | None = None


def ship_bundle(context: SparkContext, bundle: Path) -> ShippedBundle:
    """Packs ``bundle`` (once per state of its files) and adds it to ``context``'s archives, once per
    application; returns what the executors need to find and verify it."""
    bundle = bundle.resolve()
    files = sorted(p for p in bundle.rglob("*") if p.is_file())  # is_file follows links, as the tar does
    state = tuple((str(p.relative_to(bundle)), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    with _staging_lock:
        key = (str(bundle), state)
        if key not in _staged:
            _staged[key] = _stage(bundle, files)
        shipped, archive = _staged[key]
        added = (str(context.applicationId), shipped.name)
        if added not in _added:
            context.addArchive(f"{archive}#{shipped.name}")
            _added.add(added)
    return shipped


def staged_archive(shipped: ShippedBundle) -> Path:
    """The driver's archive of ``shipped`` (what Spark serves to the executors)."""
    with _staging_lock:
        for candidate, archive in _staged.values():
            if candidate == shipped:
                return archive
    raise KeyError(shipped.name)


def _stage(bundle: Path, files: list[Path]) -> tuple[ShippedBundle, Path]:
    sums = tuple((str(p.relative_to(bundle)), _sha256(p)) for p in files)
    digest = hashlib.sha256(repr(sums).encode()).hexdigest()[:20]
    name = f"nertron-bundle-{digest}"
    archive = _staging_dir() / f"{name}.tar"
    partial = archive.with_suffix(".partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT, dereference=True) as tar:
        for path, (relative, _) in zip(files, sums, strict=True):
            tar.add(path, arcname=relative, recursive=False)  # relative names: Spark refuses "./" entries
    partial.rename(archive)
    return ShippedBundle(name=name, source=str(bundle), files=sums), archive


def _staging_dir() -> Path:
    global _staging_root
    if _staging_root is None:
        _staging_root = Path(tempfile.mkdtemp(prefix="nertron-shipped-"))
        atexit.register(shutil.rmtree, _staging_root, ignore_errors=True)
    return _staging_root


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()

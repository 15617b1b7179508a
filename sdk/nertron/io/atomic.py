"""Files and folders written so that a failure leaves what was there before.

Each is built beside its target (in the same folder, so on the same file system) under a hidden name and moved
into place with one rename once it is complete; on failure the half-built copy is removed and the target is
untouched. A folder that already exists is swapped with the new one atomically where the kernel can
(``renameat2(RENAME_EXCHANGE)``, Linux), else with two renames. Targets that are not regular files
(``/dev/null``, ``/dev/full``, a pipe) cannot be replaced and are written in place.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO

from nertron.errors import InvalidValue

PARTIAL_SUFFIX = ".partial"


def _resolved(path: Path) -> Path:
    """``path`` with a final symlink followed: the link stays, what it points to is replaced."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _copy_metadata(source: Path, target: int | Path) -> None:
    """The permission bits (and, where allowed, the owner) of ``source`` onto ``target``."""
    info = source.stat()
    os.chmod(target, stat.S_IMODE(info.st_mode))
    with contextlib.suppress(OSError):  # only root may give a file away; others keep their own
        os.chown(target, info.st_uid, info.st_gid)


@contextlib.contextmanager
def replacing_file(
    path: str | os.PathLike[str], *, binary: bool = False, keep_partial: Callable[[], bool] | None = None
) -> Iterator[IO[str] | IO[bytes]]:
    """A stream whose content replaces the file at ``path`` when the block ends without an exception.

    When it ends with one, the file is left as it was, unless ``keep_partial()`` says that what was written
    so far must be kept (``nertron ner -o`` keeps the rows finished before a failure or Ctrl-C): then it
    replaces the file all the same. A new file gets the permissions the umask gives; a replaced one keeps
    its own.
    """
    mode = "wb" if binary else "w"
    if Path(path).exists() and not Path(path).is_file():  # a device or a pipe (/dev/stdout): written in place
        with _closed(Path(path).open(mode, encoding=None if binary else "utf-8")) as stream:
            yield stream
        return
    target = _resolved(Path(path))
    descriptor, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=PARTIAL_SUFFIX)
    partial = Path(name)
    try:
        if target.exists():
            _copy_metadata(target, descriptor)
        else:
            os.fchmod(descriptor, 0o666 & ~_umask())
        stream = os.fdopen(descriptor, mode, encoding=None if binary else "utf-8")
    except BaseException:
        os.close(descriptor)
        partial.unlink(missing_ok=True)
        raise
    try:
        with _closed(stream):
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
    except BaseException:
        if keep_partial is not None and keep_partial():
            with contextlib.suppress(OSError):  # the error in flight says what went wrong
                os.replace(partial, target)
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)


@contextlib.contextmanager
def _closed(stream: IO[str] | IO[bytes]) -> Iterator[IO[str] | IO[bytes]]:
    """``stream``, closed at the end; after an exception, an error in closing it (a full disk again) is dropped,
    so that the exception in flight is the one reported."""
    try:
        yield stream
    except BaseException:
        with contextlib.suppress(OSError):
            stream.close()
        raise
    stream.close()


def write_file(path: str | os.PathLike[str], content: str | bytes) -> None:
    """Replaces the file at ``path`` with ``content`` (text as UTF-8) in one step."""
    with replacing_file(path, binary=isinstance(content, bytes)) as stream:
        stream.write(content)  # type: ignore[arg-type]


@contextlib.contextmanager
def replacing_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """An empty folder, beside ``path``, to build the new content in; when the block ends without an exception
    it takes the place of ``path`` (whatever ``path`` held is removed). On an exception it is removed and
    ``path`` is left as it was."""
    target = _resolved(Path(path))
    if target.exists() and not target.is_dir():
        raise InvalidValue(f"{path} is a file; a folder is written there")
    with scratch_folder(target) as work:
        yield work
        place_folder(work, target)


@contextlib.contextmanager
def scratch_folder(beside: str | os.PathLike[str]) -> Iterator[Path]:
    """A new empty hidden folder beside ``beside`` (so on its file system), removed with what it holds when the
    block ends."""
    target = Path(os.path.abspath(beside))
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=PARTIAL_SUFFIX))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def place_folder(built: Path, target: Path) -> None:
    """Moves the folder ``built`` to ``target`` (on the same file system), replacing what ``target`` held; a
    replaced folder's permissions are kept. The old content is removed."""
    if not target.exists():
        os.chmod(built, 0o777 & ~_umask())
        os.rename(built, target)
        return
    os.chmod(built, stat.S_IMODE(target.stat().st_mode))
    _exchange(built, target)  # built now holds the old content
    shutil.rmtree(built, ignore_errors=True)


def _exchange(new: Path, old: Path) -> None:
    """Swaps two folders: atomically with ``renameat2(RENAME_EXCHANGE)``, else by two renames."""
    if _renameat2 is not None and _renameat2(_AT_FDCWD, os.fsencode(new), _AT_FDCWD, os.fsencode(old), 2) == 0:
        return
    aside = Path(tempfile.mkdtemp(dir=old.parent, prefix=f".{old.name}.", suffix=".old"))
    os.rename(old, aside)  # onto the empty folder just made, which it replaces
    try:
        os.rename(new, old)
    except BaseException:
        os.rename(aside, old)
        raise
    os.rename(aside, new)


_AT_FDCWD = -100
_renameat2: Callable[..., int] | None
try:
    _renameat2 = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).renameat2
except (AttributeError, OSError, TypeError):  # not glibc >= 2.28 (macOS, musl): two renames
    _renameat2 = None


def check_apart(
    output: tuple[str, str | os.PathLike[str]], inputs: Mapping[str, str | os.PathLike[str] | None]
) -> None:
    """Refuses an output folder or file that is, lies inside, or contains one of ``inputs`` (by real path):
    replacing it would destroy the input while it is read. ``output`` and ``inputs`` are ``(option, path)``."""
    option, out_path = output
    out = Path(os.path.realpath(out_path))
    for input_option, path in inputs.items():
        if path is None or not os.path.exists(path):
            continue
        source = Path(os.path.realpath(path))
        if out == source:
            why = "is the same path as"
        elif out.is_relative_to(source):
            why = "lies inside"
        elif source.is_relative_to(out):
            why = "contains"
        else:
            continue
        raise InvalidValue(f"{option} {out_path} {why} {input_option} {path}; write to a folder of its own")

"""Files and folders written so that a failure leaves what was there before.

Each is built beside its target (in the folder that holds it, so on the same file system) under a hidden name
ending in ``.partial`` and moved into place with one rename once it is complete; on failure the half-built copy
is removed and the target is untouched. A folder that already exists is swapped with the new one atomically
where the kernel can (``renameat2(RENAME_EXCHANGE)``, Linux), else with two renames. What cannot be replaced
is written in place: a device, a pipe or a terminal (``/dev/stdout``, ``/dev/null``), and a writable file in a
folder that is not. A mount point cannot be replaced and is refused.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

from nertron.errors import FileNotPermitted, FolderIsFile, InvalidValue

PARTIAL_SUFFIX = ".partial"


class PendingFile:
    """A file being written beside its target (``stream``); ``commit()`` moves it into place, after which further
    writes go to the file in place (``nertron ner -o`` commits after its first row, so rows finished before a
    failure or a kill are kept, and a run that fails before it leaves the old file)."""

    def __init__(self, stream: IO[str] | IO[bytes], partial: Path | None, target: Path) -> None:
        self.stream, self.partial, self.target = stream, partial, target

    @property
    def committed(self) -> bool:
        return self.partial is None

    def commit(self) -> None:
        if self.partial is not None:
            self.stream.flush()
            os.fsync(self.stream.fileno())
            os.replace(self.partial, self.target)
            self.partial = None


def _in_place(path: Path) -> bool:
    """Whether ``path`` must be written where it is: a device, a pipe or a terminal, also through a link
    (``/dev/stdout`` may point at a pipe that no folder holds, or at a file that others append to)."""
    if os.path.abspath(path).startswith(("/dev/", "/proc/")):
        return True
    return path.exists() and not path.is_file()


def _target_of(path: Path) -> Path:
    """``path`` with its links followed: the link stays, what it points to is replaced."""
    return Path(os.path.realpath(path))


def _partial_name(folder: Path, name: str, create: Callable[[Path], object]) -> Path:
    """A new hidden ``folder/.NAME.XXXXXXXX.partial``, made by ``create(path)`` (which fails if it exists)."""
    while True:
        partial = folder / f".{name}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}"
        try:
            create(partial)
            return partial
        except FileExistsError:
            continue


def _new_file(folder: Path, name: str) -> tuple[int, Path]:
    """A new hidden file in ``folder`` for ``name``, open, with the mode the umask gives (as ``open`` does)."""
    descriptors: list[int] = []
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC
    partial = _partial_name(folder, name, lambda path: descriptors.append(os.open(path, flags, 0o666)))
    return descriptors[0], partial


def _new_folder(folder: Path, name: str) -> Path:
    """A new hidden, empty folder in ``folder`` for ``name``, with the mode the umask gives."""
    return _partial_name(folder, name, lambda path: path.mkdir(0o777))


@contextlib.contextmanager
def replacing_file(path: str | os.PathLike[str], *, binary: bool = False) -> Iterator[PendingFile]:
    """A ``PendingFile`` for ``path``: committed when the block ends without an exception; removed when it ends
    with one before ``commit()`` (the file is then left as it was). A replaced file keeps its permissions;
    a read-only file is refused (``FileNotPermitted``), as opening it would be."""
    given = Path(path)
    mode = "wb" if binary else "w"
    encoding = None if binary else "utf-8"
    if _in_place(given):
        with _closed(given.open(mode, encoding=encoding)) as stream:
            yield PendingFile(stream, None, given)
        return
    target = _target_of(given)
    if target.exists() and not os.access(target, os.W_OK):
        raise FileNotPermitted(errno.EACCES, "Permission denied (a read-only file)", str(path))
    try:
        descriptor, partial = _new_file(target.parent, target.name)
    except PermissionError:
        if not (target.is_file() and os.access(target, os.W_OK)):
            raise
        with _closed(target.open(mode, encoding=encoding)) as stream:  # a writable file in a read-only folder
            yield PendingFile(stream, None, target)
        return
    try:
        if target.exists():
            _copy_metadata(target, descriptor)
        stream = os.fdopen(descriptor, mode, encoding=encoding)
    except BaseException:
        os.close(descriptor)
        partial.unlink(missing_ok=True)
        raise
    pending = PendingFile(stream, partial, target)
    try:
        with _closed(stream):
            yield pending
            pending.commit()
    finally:
        partial.unlink(missing_ok=True)  # nothing there once committed


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


def _copy_metadata(source: Path, target: int | Path) -> None:
    """The permission bits (and, where allowed, the owner) of ``source`` onto ``target``."""
    info = source.stat()
    os.chmod(target, stat.S_IMODE(info.st_mode))
    with contextlib.suppress(OSError):  # only root may give a file away; others keep their own
        os.chown(target, info.st_uid, info.st_gid)


def write_file(path: str | os.PathLike[str], content: str | bytes) -> None:
    """Replaces the file at ``path`` with ``content`` (text as UTF-8) in one step."""
    with replacing_file(path, binary=isinstance(content, bytes)) as pending:
        pending.stream.write(content)  # type: ignore[arg-type]


@contextlib.contextmanager
def replacing_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """An empty folder, beside ``path``, to build the new content in; when the block ends without an exception
    it takes the place of ``path`` (whatever ``path`` held is removed). On an exception it is removed and
    ``path`` is left as it was."""
    target = _target_of(Path(path))
    if target.exists() and not target.is_dir():
        raise FolderIsFile(errno.ENOTDIR, f"{path} is a file; a folder is written there")
    if target.is_dir() and os.path.ismount(target):
        raise InvalidValue(f"{path} is a mount point, which cannot be replaced; give a folder inside it")
    with scratch_folder(target) as work:
        yield work
        place_folder(work, target)


@contextlib.contextmanager
def scratch_folder(beside: str | os.PathLike[str]) -> Iterator[Path]:
    """A new empty hidden folder beside ``beside`` (so on its file system), removed with what it holds when the
    block ends."""
    target = _target_of(Path(beside))
    target.parent.mkdir(parents=True, exist_ok=True)
    work = _new_folder(target.parent, target.name)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def place_folder(built: Path, target: Path, *, keep: Callable[[Path], bool] | None = None) -> None:
    """Moves the folder ``built`` to ``target`` (on the same file system), replacing what ``target`` held; a
    replaced folder's permissions are kept. Entries of the old folder that ``keep(entry)`` accepts and
    ``built`` lacks are moved over first (a Triton model's other versions); the rest is removed."""
    if not target.exists():
        os.rename(built, target)
        return
    if keep is not None:
        for entry in target.iterdir():
            if keep(entry) and not (built / entry.name).exists():
                os.rename(entry, built / entry.name)
    os.chmod(built, stat.S_IMODE(target.stat().st_mode))
    _exchange(built, target)  # built now holds the old content
    shutil.rmtree(built, ignore_errors=True)


def _exchange(new: Path, old: Path) -> None:
    """Swaps two folders: atomically with ``renameat2(RENAME_EXCHANGE)``, else by two renames (the old one
    moved aside to a ``.partial`` name first, and back if the second rename fails)."""
    if _renameat2 is not None and _renameat2(_AT_FDCWD, os.fsencode(new), _AT_FDCWD, os.fsencode(old), 2) == 0:
        return
    aside = _new_folder(old.parent, old.name)
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


# An input option's value: one path, several (an option that takes several files), or None (not given).
InputPaths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None


def _paths(given: InputPaths) -> list[str | os.PathLike[str]]:
    if given is None:
        return []
    return [given] if isinstance(given, str | os.PathLike) else list(given)


def check_apart(
    output: tuple[str, str | os.PathLike[str]],
    inputs: Mapping[str, InputPaths],
    *,
    replaced: Sequence[str] = ("",),
) -> None:
    """Refuses an output whose replaced parts (``replaced``: names inside it; by default the output itself) are,
    lie inside, or contain one of ``inputs`` (by real path): replacing them would destroy the input while it
    is read. ``output`` is ``(option, path)``; ``inputs`` maps each input's option to its path, or its paths
    (an option that takes several files), or None."""
    option, out_path = output
    for part in replaced:
        out = Path(os.path.realpath(Path(out_path, part)))
        named = f"{option} {out_path}" + (f" (its {part})" if part else "")
        for input_option, path in ((o, p) for o, given in inputs.items() for p in _paths(given)):
            if not os.path.exists(path):
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
            raise InvalidValue(f"{named} {why} {input_option} {path}; write to a folder of its own")

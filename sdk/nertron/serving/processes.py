"""Process and port helpers for running a server under a supervisor: free and busy ports, a child that dies
with its parent, a watchdog that takes the child's whole process group along, signals held back while a
child is created, process groups, and private temporary files that the next start removes if their owner
was killed."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

WATCHDOG_SCRIPT = Path(__file__).with_name("watchdog.py")


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on (or holds) ``host:port``, so that a server could not bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed socket in TIME_WAIT does not count
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def die_with_parent(parent: int, *, process_group: int | None = None) -> Callable[[], None]:
    """A ``preexec_fn`` that has Linux kill the child when the thread that started it dies (even by
    SIGKILL), so that a server never outlives its supervisor; and puts the child in ``process_group``
    (0: a group of its own), as ``Popen(process_group=...)`` does from Python 3.11 on."""

    def set_death_signal() -> None:
        if process_group is not None:
            os.setpgid(0, process_group)
        with contextlib.suppress(OSError, AttributeError):  # not Linux: no such guarantee
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the signal was set
            os._exit(1)

    return set_death_signal


def join_group(process_group: int) -> Callable[[], None]:
    """A ``preexec_fn`` that puts the child in ``process_group`` (``Popen(process_group=...)`` before 3.11)."""
    return lambda: os.setpgid(0, process_group)


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Holds SIGINT/SIGTERM back, then re-raises them: a KeyboardInterrupt raised inside ``Popen``
    would lose the handle of a server that has already started."""
    signals = (signal.SIGINT, signal.SIGTERM)
    handlers = [signal.getsignal(s) for s in signals]
    if threading.current_thread() is not threading.main_thread() or None in handlers:
        yield
        return
    received: list[int] = []
    for s in signals:
        signal.signal(s, lambda signum, _: received.append(signum))
    try:
        yield
    finally:
        for s, handler in zip(signals, handlers, strict=True):
            signal.signal(s, handler)
        for signum in received:
            signal.raise_signal(signum)


def group_members(pgid: int) -> list[int]:
    """Processes of the process group ``pgid`` (none where there is no /proc)."""
    return [pid for pid in all_pids() if _stat_field(pid, 2) == pgid]


def all_pids() -> list[int]:
    """Every process id (none where there is no /proc)."""
    with contextlib.suppress(OSError):
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    return []


def parent_pid(pid: int) -> int:
    """The parent of ``pid`` (-1 if it is gone)."""
    return _stat_field(pid, 1)


def descendants(roots: list[int]) -> list[int]:
    """``roots`` and every process below them, by parent links (a process that left its parent's process
    group, as pyspark's daemon does, is found too)."""
    children: dict[int, list[int]] = {}
    for pid in all_pids():
        children.setdefault(parent_pid(pid), []).append(pid)
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def command_line(pid: int) -> str:
    """``pid``'s command line, arguments joined by spaces ("" if it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def working_dir(pid: int) -> str:
    """``pid``'s current directory ("" if it is gone or not ours to read)."""
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def start_time(pid: int) -> int:
    """When ``pid`` started (clock ticks after boot; -1 if it is gone): with the pid, it names one process
    even once the pid is reused."""
    return _stat_field(pid, 19)


def running(pid: int, started: int) -> bool:
    """Whether the process ``pid`` that started at ``started`` (``start_time``) runs still (a zombie has
    ended)."""
    fields = _stat_fields(pid)
    return len(fields) > 19 and fields[0] != "Z" and fields[19] == str(started)


def _stat_field(pid: int, index: int) -> int:
    """Field ``index`` after the command name of ``/proc/pid/stat`` (1: ppid, 2: pgrp, 19: start time); -1 if
    gone."""
    try:
        return int(_stat_fields(pid)[index])
    except (IndexError, ValueError):
        return -1


def _stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/pid/stat`` after the command name (0: state, 1: ppid, ...); [] if gone."""
    try:
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


class Watchdog:
    """A process in the process group ``pgid`` that SIGKILLs the rest of the group, and removes the shared
    memory regions ``shm_prefix*``, once this process is gone, however it ends: see ``watchdog.py``.

    ``release()`` (after a clean stop) lets it do that now and waits for it.
    """

    def __init__(self, pgid: int, shm_prefix: str = "") -> None:
        read, self._write = os.pipe()  # both not inherited by other children
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", str(WATCHDOG_SCRIPT), str(pgid), shm_prefix],
                stdin=read,
                stdout=subprocess.DEVNULL,
                preexec_fn=join_group(pgid),
            )
        except BaseException:
            os.close(self._write)
            raise
        finally:
            os.close(read)

    def release(self, timeout: float = 15.0) -> int | None:
        """Closes the pipe, so that the watchdog kills what is left of the group and exits; its exit code."""
        if self._write >= 0:
            os.close(self._write)
            self._write = -1
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def private_tempdir(kind: str) -> tempfile.TemporaryDirectory[str]:
    """A temporary folder ``nertron-<kind>-<pid>-*`` owned by this process (``claim``); those of owners that
    have ended (a supervisor killed before it could clean up) are removed first."""
    remove_stale(Path(tempfile.gettempdir()), f"nertron-{kind}-")
    return tempfile.TemporaryDirectory(prefix=f"nertron-{kind}-{os.getpid()}-")


LOCK_SUFFIX = ".lock"
# Lock files this process holds a shared lock on, each by its own open file description, until it ends.
_claims: dict[Path, int] = {}
_claims_lock = threading.Lock()


def owner_lock(folder: Path, prefix: str, pid: int | str) -> Path:
    """The lock file whose holders own the entries ``<prefix><pid>-*`` and ``<prefix><pid>_*`` of ``folder``."""
    return folder / f"{prefix}{pid}{LOCK_SUFFIX}"


def claim(folder: Path, prefix: str, pid: int | None = None) -> None:
    """Marks the entries ``<prefix><pid>…`` of ``folder`` (``pid``: this process's) as owned by this process
    for as long as it lives: it holds a shared ``flock`` on their lock file (``owner_lock``), which the kernel
    releases when the process ends, however it ends. Shared, as a process of another PID namespace may have
    the same pid. Where the lock file is not ours to open (another user's), nothing is claimed."""
    import fcntl

    path = owner_lock(folder, prefix, os.getpid() if pid is None else pid)
    with _claims_lock:
        while path not in _claims:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except OSError:
                return
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits while a cleanup holds it
            if _same_file(fd, path):
                _claims[path] = fd
            else:  # removed by the cleanup it waited for: lock the file that replaces it
                os.close(fd)


def remove_stale(folder: Path, prefix: str) -> list[Path]:
    """Removes the files and folders ``<prefix><pid>-*`` or ``<prefix><pid>_*`` of ``folder`` whose owner has
    ended, and their lock file; then claims this process's (``claim``), which it is about to create. An owner
    has ended when no process holds its lock file: a pid this process cannot see proves nothing, as /tmp or
    /dev/shm may be shared with processes of other PID namespaces. Entries without a lock file (an older
    nertron's) are kept while their pid runs here. Returns the entries removed."""
    owners: dict[str, list[Path]] = {}
    for path in folder.glob(f"{prefix}*"):
        rest = path.name[len(prefix) :]
        if rest.endswith(LOCK_SUFFIX) and rest[: -len(LOCK_SUFFIX)].isdigit():
            owner, entry = rest[: -len(LOCK_SUFFIX)], None
        else:
            owner, entry = rest.replace("_", "-").split("-", 1)[0], path
        if not owner.isdigit() or len(owner) > 7:  # pids are below 2**22
            continue
        owners.setdefault(owner, []).extend([entry] if entry else [])
    removed = []
    for owner, entries in sorted(owners.items()):
        removed += _remove_if_ended(owner_lock(folder, prefix, owner), int(owner), entries)
    claim(folder, prefix)
    return removed


def _remove_if_ended(lock: Path, pid: int, entries: list[Path]) -> list[Path]:
    """Removes ``entries`` of ``pid`` and ``lock`` if this process can lock ``lock`` exclusively (their owners
    have ended); returns the entries removed."""
    import fcntl

    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd, unclaimed = os.open(lock, flags | os.O_CREAT | os.O_EXCL, 0o600), True
    except FileExistsError:
        try:
            fd, unclaimed = os.open(lock, flags), False
        except OSError:  # removed meanwhile by another cleanup, or another user's: not ours to judge
            return []
    except OSError:
        return []
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: an owner lives
            return []
        if not _same_file(fd, lock):  # removed meanwhile by another cleanup, and maybe claimed anew since
            return []
        if unclaimed and pid_alive(pid):  # entries of an owner that takes no lock (an older nertron)
            lock.unlink(missing_ok=True)
            return []
        for path in entries:
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        lock.unlink(missing_ok=True)  # still locked: an owner waiting for it takes a new file
        return [path for path in entries if not os.path.lexists(path)]
    finally:
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        here, there = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists in this PID namespace (a zombie counts: its parent has not reaped it
    yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True

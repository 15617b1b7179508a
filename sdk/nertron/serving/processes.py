"""Process and port helpers for running a server under a supervisor: free and busy ports, a child that dies
with its parent, signals held back while a child is created, process groups."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path


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


def die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn`` that has Linux kill the child when the thread that started it dies (even by
    SIGKILL), so that a server never outlives its supervisor."""

    def set_death_signal() -> None:
        with contextlib.suppress(OSError, AttributeError):  # not Linux: no such guarantee
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the signal was set
            os._exit(1)

    return set_death_signal


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
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                members.append(int(stat.parent.name))
    return members

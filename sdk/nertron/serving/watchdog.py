"""Kills a server's process group when its supervisor dies: ``python watchdog.py PGID [SHM_PREFIX]``.

``Watchdog`` (``nertron.serving.processes``) starts this script inside the group of the server it
watches, with the read end of a pipe as stdin; the supervisor holds the only write end. When the
supervisor ends, however it ends (SIGKILL included), the read returns end-of-file and this script
SIGKILLs every other member of its group: tritonserver and its python-backend stubs, which a busy stub
would otherwise outlive for many minutes (it ignores SIGTERM and hangs in its own exit when its parent
dies). As a member it keeps the group id from being reused meanwhile. Then it removes the python
backend's shared-memory regions named ``SHM_PREFIX*``.

Standard library only, and run as a script: it starts in milliseconds, without importing nertron.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

GIVE_UP_AFTER = 10.0  # seconds of killing; a process in uninterruptible sleep dies when it wakes


def others_in_group(pgid: int) -> list[int]:
    """Live members of the process group ``pgid`` but this one (zombies are dead already)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()  # state ppid pgrp ...
            pid = int(stat.parent.name)
            if int(fields[2]) == pgid and fields[0] != "Z" and pid != os.getpid():
                found.append(pid)
    return found


def kill_group(pgid: int) -> None:
    deadline = time.monotonic() + GIVE_UP_AFTER
    while (members := others_in_group(pgid)) and time.monotonic() < deadline:
        for pid in members:  # again until none is left: the server may fork a stub meanwhile
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)


def main(argv: list[str]) -> None:
    pgid, shm_prefix = int(argv[0]), argv[1] if len(argv) > 1 else ""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # only the pipe or SIGKILL ends it
        signal.signal(signum, signal.SIG_IGN)
    while os.read(0, 4096):  # until every write end is closed
        pass
    kill_group(pgid)
    if shm_prefix:
        for region in Path("/dev/shm").glob(f"{shm_prefix}*"):
            region.unlink(missing_ok=True)


if __name__ == "__main__":
    main(sys.argv[1:])

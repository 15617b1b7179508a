"""Private temporary files: the next start removes those whose owner has ended, judged by a lock the owner holds
while it lives, never by whether its pid can be seen (/tmp and /dev/shm may be shared across PID namespaces)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from nertron.serving.processes import owner_lock, private_tempdir, remove_stale

PREFIX = "nertron-triton-"
OWNER = """
import sys
from pathlib import Path

from nertron.serving.processes import claim, private_tempdir

if sys.argv[1] == "claim":  # the entries of a pid of another PID namespace
    claim(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    print("claimed", flush=True)
else:
    kept = private_tempdir(sys.argv[2])
    print(kept.name, flush=True)
sys.stdin.read()  # until the test kills it
"""


def unseen_pid() -> int:
    """A pid that no process of this PID namespace has (pids are below pid_max): a process of another one."""
    return int(Path("/proc/sys/kernel/pid_max").read_text())


@contextmanager
def owner(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A process that owns entries (see OWNER) until it is killed, and the line it printed once it did."""
    process = subprocess.Popen(
        [sys.executable, "-c", OWNER, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None
        yield process, process.stdout.readline().strip()
    finally:
        process.kill()
        process.communicate()


def test_the_entries_of_a_live_owner_stay_even_when_its_pid_is_not_visible(tmp_path: Path) -> None:
    pid = unseen_pid()
    folder, region = tmp_path / f"{PREFIX}{pid}-a1b2", tmp_path / f"{PREFIX}{pid}_0123_region"
    folder.mkdir()
    (folder / "tritonserver-0.log").write_text("")
    region.write_text("")
    with owner("claim", str(tmp_path), PREFIX, str(pid)) as (process, line):
        assert line == "claimed"
        assert remove_stale(tmp_path, PREFIX) == []
        assert folder.is_dir() and region.is_file() and owner_lock(tmp_path, PREFIX, pid).is_file()
        process.kill()
        process.wait()  # its locks are released when it ends, even by SIGKILL
    assert sorted(remove_stale(tmp_path, PREFIX)) == sorted([folder, region])
    assert not owner_lock(tmp_path, PREFIX, pid).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{PREFIX}{os.getpid()}.lock"]  # this process's claim


def test_entries_without_an_owner_lock_are_removed_and_this_process_keeps_its_own(tmp_path: Path) -> None:
    remove_stale(tmp_path, PREFIX)  # claims this process's entries first, as private_tempdir does
    mine = tmp_path / f"{PREFIX}{os.getpid()}-x"
    mine.mkdir()
    with subprocess.Popen(["true"]) as finished:
        finished.wait()
    orphans = [tmp_path / f"{PREFIX}{finished.pid}-abc", tmp_path / f"{PREFIX}{unseen_pid()}_0123_r"]
    orphans[0].mkdir()
    orphans[1].write_text("")
    ended = owner_lock(tmp_path, PREFIX, 77)  # an owner that ended with no entries left: its lock goes too
    ended.write_text("")
    others = [f"{PREFIX}8zjhap02", f"{PREFIX}12345678", "nertron-tritonserver-1"]  # not <prefix><pid>...
    for name in others:
        (tmp_path / name).mkdir()
    assert sorted(remove_stale(tmp_path, PREFIX)) == sorted(orphans)
    assert mine.is_dir() and not ended.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*others, mine.name, f"{PREFIX}{os.getpid()}.lock"])


def test_an_owner_that_takes_no_lock_is_judged_by_its_pid(tmp_path: Path) -> None:
    """Entries of an older nertron's server (no lock file) stay while its pid runs in this namespace."""
    with subprocess.Popen(["sleep", "600"]) as older:
        try:
            entry = tmp_path / f"{PREFIX}{older.pid}-abc"
            entry.mkdir()
            assert remove_stale(tmp_path, PREFIX) == []
            assert entry.is_dir() and not owner_lock(tmp_path, PREFIX, older.pid).exists()
        finally:
            older.kill()
    assert remove_stale(tmp_path, PREFIX) == [entry]


def test_private_tempdirs_of_a_killed_process_go_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with owner("tempdir", "probe", env={**os.environ, "TMPDIR": str(tmp_path)}) as (process, name):
        theirs = Path(name)
        assert theirs.parent == tmp_path and theirs.name.startswith(f"nertron-probe-{process.pid}-")
        mine = private_tempdir("probe")
        assert theirs.is_dir() and Path(mine.name).is_dir()
        process.kill()
        process.wait()
    again = private_tempdir("probe")
    assert not theirs.exists() and Path(mine.name).is_dir()
    mine.cleanup()
    again.cleanup()

"""How many CPUs this process may use, for thread counts: ``os.cpu_count()`` counts the host's, so a
container limited to 2 CPUs on a 64-core host would start 32 threads where 2 can run."""

from __future__ import annotations

import math
import os
from pathlib import Path

PROC = Path("/proc")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def available_cpus(*, proc: Path = PROC, cgroup_root: Path = CGROUP_ROOT) -> int:
    """How many CPUs this process may use: those of its affinity mask (``os.sched_getaffinity``), lowered
    by the CPU quota of its cgroup or an ancestor's (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` over
    ``cpu.cfs_period_us``), rounded up; at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(proc=proc, cgroup_root=cgroup_root)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def cgroup_cpu_quota(*, proc: Path = PROC, cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """The smallest CPU quota (in CPUs) of this process's cgroup and its ancestors, None if none is set or
    nothing can be read. ``proc/self/cgroup`` names the cgroup; ``cgroup_root`` is where the hierarchies
    are mounted (v2 there or at ``unified/``, v1 at ``cpu,cpuacct/`` or ``cpu/``)."""
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:  # "ID:CONTROLLERS:PATH"; v2's line has no controllers
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":  # v2: one hierarchy, every controller
            mounts = [cgroup_root, cgroup_root / "unified"]
            read = _v2_quota
        elif "cpu" in controllers.split(","):
            mounts = [cgroup_root / controllers, cgroup_root / "cpu"]
            read = _v1_quota
        else:
            continue
        for mount in mounts:
            quotas += [q for folder in _own_and_ancestors(mount, path) if (q := read(folder)) is not None]
    return min(quotas, default=None)


def _own_and_ancestors(mount: Path, path: str) -> list[Path]:
    """The folders of cgroup ``path`` and of its ancestors under ``mount`` that exist. The mount's own
    folder is always among them: in a container with its own cgroup namespace ``path`` may name a folder
    that is not mounted, and the mount's root is the container's cgroup."""
    parts = [part for part in path.strip("/").split("/") if part]
    folders = [mount.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]
    return [folder for folder in folders if folder.is_dir()]


def _v2_quota(folder: Path) -> float | None:
    """``cpu.max`` ("QUOTA PERIOD", QUOTA "max" when unlimited) as CPUs."""
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return int(quota) / int(period) if quota != "max" and int(period) > 0 and int(quota) > 0 else None
    except (OSError, ValueError):
        return None


def _v1_quota(folder: Path) -> float | None:
    """``cpu.cfs_quota_us`` (-1 when unlimited) over ``cpu.cfs_period_us``, as CPUs."""
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None

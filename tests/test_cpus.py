"""available_cpus: the affinity mask lowered by the cgroup's CPU quota, read from fake /proc and cgroup trees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from nertron.cpus import available_cpus


@pytest.fixture
def eight_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))


def fake_tree(tmp_path: Path, cgroup: str, files: dict[str, str]) -> dict[str, Path]:
    """A fake ``/proc/self/cgroup`` holding ``cgroup`` and a cgroup mount holding ``files`` (relative paths)."""
    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(cgroup)
    root.mkdir()
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return {"proc": proc, "cgroup_root": root}


@pytest.mark.usefixtures("eight_cpus")
@pytest.mark.parametrize(
    ("quota", "expected"),
    [("150000 100000\n", 2), ("200000 100000\n", 2), ("50000 100000\n", 1), ("max 100000\n", 8), ("", 8)],
)
def test_a_cgroup_v2_quota_rounded_up(tmp_path: Path, quota: str, expected: int) -> None:
    tree = fake_tree(tmp_path, "0::/app.slice/job\n", {"app.slice/job/cpu.max": quota})
    assert available_cpus(**tree) == expected


@pytest.mark.usefixtures("eight_cpus")
def test_an_ancestor_cgroup_quota_counts_too(tmp_path: Path) -> None:
    tree = fake_tree(
        tmp_path, "0::/app.slice/job\n", {"app.slice/cpu.max": "300000 100000", "app.slice/job/cpu.max": "max 100000"}
    )
    assert available_cpus(**tree) == 3


@pytest.mark.usefixtures("eight_cpus")
def test_a_cgroup_namespace_reads_the_mount_root(tmp_path: Path) -> None:
    """In a container the cgroup's path may not exist under the mount: the mount's root is its cgroup."""
    tree = fake_tree(tmp_path, "0::/docker/0123abcd\n", {"cpu.max": "400000 100000"})
    assert available_cpus(**tree) == 4


@pytest.mark.usefixtures("eight_cpus")
@pytest.mark.parametrize(("quota", "expected"), [("250000", 3), ("-1", 8)])
def test_a_cgroup_v1_quota(tmp_path: Path, quota: str, expected: int) -> None:
    cgroup = "5:memory:/job\n3:cpu,cpuacct:/job\n1:name=systemd:/job\n"
    files = {"cpu,cpuacct/job/cpu.cfs_quota_us": quota, "cpu,cpuacct/job/cpu.cfs_period_us": "100000"}
    assert available_cpus(**fake_tree(tmp_path, cgroup, files)) == expected


@pytest.mark.usefixtures("eight_cpus")
@pytest.mark.parametrize(
    "cgroup",
    [None, "0::/job\n", "3:cpu,cpuacct:/job\n", "garbage\n"],
    ids=["no /proc/self/cgroup", "v2 without cpu.max", "v1 without files", "unreadable"],
)
def test_without_a_quota_the_affinity_counts(tmp_path: Path, cgroup: str | None) -> None:
    tree = fake_tree(tmp_path, cgroup or "", {})
    if cgroup is None:
        (tree["proc"] / "self" / "cgroup").unlink()
    assert available_cpus(**tree) == 8


def test_a_quota_does_not_raise_the_affinity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5})
    assert available_cpus(**fake_tree(tmp_path, "0::/\n", {"cpu.max": "800000 100000"})) == 3


def test_the_affinity_mask_of_a_real_process() -> None:
    script = (
        "import os; from nertron.cpus import available_cpus; "
        "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); print(available_cpus())"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "1"


def test_triton_instances_share_the_available_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    from nertron.serving import options

    monkeypatch.setattr(options, "available_cpus", lambda: 6)
    assert options.threads_per_instance({"instance_group": [{"count": 2, "kind": "KIND_CPU"}]}) == 3
    assert options.threads_per_instance({"instance_group": [{"count": 8}]}) == 1


@pytest.mark.parametrize(("cpus", "concurrency", "threads"), [(2, 2, 1), (1, 1, 1), (8, 2, 4)])
def test_onnxruntime_threads_come_from_the_available_cpus(
    monkeypatch: pytest.MonkeyPatch, cpus: int, concurrency: int, threads: int
) -> None:
    from nertron.backends import onnxruntime as backend
    from onnxruntime.datasets import get_example

    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # a big host: onnxruntime's default would take its cores
    monkeypatch.setattr(backend, "available_cpus", lambda: cpus)
    built = backend.OnnxRuntimeBackend(get_example("mul_1.onnx"), providers=["CPUExecutionProvider"])
    assert built.concurrency == concurrency
    assert built.session.get_session_options().intra_op_num_threads == threads

"""The C++ core on its own: csrc/test_postprocess.cpp built with AddressSanitizer and UBSan, then run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[1] / "csrc"


def test_core_under_sanitizers(tmp_path: Path) -> None:
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:  # the package itself needs one to build, so this is unexpected
        pytest.fail("no C++ compiler on PATH")
    binary = tmp_path / "test_postprocess"
    # Warnings are errors, as in a strict (CI) build of the package: CMakeLists.txt's NERTRON_STRICT.
    build = subprocess.run(
        [
            compiler,
            "-std=c++17",
            "-O1",
            "-g",
            "-Wall",
            "-Wextra",
            "-Wpedantic",
            "-Werror",
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
            f"-I{CSRC}",
            str(CSRC / "test_postprocess.cpp"),
            str(CSRC / "postprocess.cpp"),
            str(CSRC / "best_path.cpp"),
            "-o",
            str(binary),
        ],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    result = subprocess.run([str(binary)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all C++ core checks passed" in result.stdout

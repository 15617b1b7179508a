"""Word segmenters for scripts without spaces, compared as nertron would ship them: install, size, speed.

    python perf/segmenters.py [--rounds 5]

Each candidate (an ICU binding from PyPI) is installed into a fresh venv with an empty pip cache, as on a
fresh machine; then, in that venv: its import time, the resident memory a word breaker adds, its speed
(million characters per second) on hand-written Chinese, Japanese, Thai, Khmer, Lao and Myanmar text, and
whether its words equal the first candidate's. Needs the package index (pip); prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CANDIDATES = {
    "icu4py==1.2.0": "from icu4py.breakers import WordBreaker\ndef words(t):\n"
    "    return [list(s) for s in WordBreaker(t, 'und').segments()]\n",
    "pyicu-wheels==2.15.2": "import icu\ndef words(t):\n"
    "    b = icu.BreakIterator.createWordInstance(icu.Locale.getRoot()); b.setText(t); p = 0; out = []\n"
    "    for e in b:\n        out.append([p, e]); p = e\n    return out\n",
}

TEXT = (
    "习近平在北京会见了法国总统马克龙。马云创立了阿里巴巴集团\uff0c总部位于杭州。"
    "東京は日本の首都です。トヨタ自動車の豊田章男社長が名古屋で講演した。"
    "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย"
    "ភ្នំពេញជារាជធានីនៃប្រទេសកម្ពុជា"
    "ວຽງຈັນແມ່ນນະຄອນຫຼວງຂອງລາວ"
    "ရန်ကုန်မြို့သည်မြန်မာနိုင်ငံ၏အကြီးဆုံးမြို့ဖြစ်သည်"
)

PROBE = """
import json, resource, sys, time
started = time.perf_counter()
{code}
imported = time.perf_counter() - started
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
before = rss()
text = {text!r} * 200
words(text[:100])
times = []
for _ in range(5):
    t = time.perf_counter(); result = words(text); times.append(time.perf_counter() - t)
print(json.dumps({{"import_s": imported, "rss_mib": rss() - before, "mchars_s": len(text) / min(times) / 1e6,
                  "words": words({text!r})}}))
"""


def _megabytes(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def measure(requirement: str, code: str, work: Path) -> dict:
    venv = work / requirement.split("==")[0]
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    env = {**os.environ, "PIP_NO_CACHE_DIR": "1"}
    wheels = work / "wheels" / venv.name
    subprocess.run(
        [python, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(wheels), requirement],
        check=True,
        env=env,
    )
    size = sum(f.stat().st_size for f in wheels.iterdir()) / 2**20
    before = _megabytes(venv / "lib")
    started = time.perf_counter()
    subprocess.run([python, "-m", "pip", "install", "-q", requirement], check=True, env=env)
    install = time.perf_counter() - started
    installed = _megabytes(venv / "lib") - before
    probe = PROBE.format(code=code, text=TEXT)
    runs = [json.loads(subprocess.run([python, "-c", probe], check=True, capture_output=True, text=True).stdout)]
    return {"wheel_mib": size, "install_s": install, "venv_mib": installed, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="speed probes per candidate (interleaved)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results = {r: measure(r, code, work) for r, code in CANDIDATES.items()}
        for _ in range(args.rounds - 1):  # interleaved A/B rounds of the in-venv probe
            for requirement, code in CANDIDATES.items():
                python = str(work / requirement.split("==")[0] / "bin" / "python")
                out = subprocess.run(
                    [python, "-c", PROBE.format(code=code, text=TEXT)], check=True, capture_output=True, text=True
                )
                results[requirement]["runs"].append(json.loads(out.stdout))
    reference = next(iter(results.values()))["runs"][0]["words"]
    print(
        "| package | wheel MiB | install s (no pip cache) | installed MiB | import s | RSS MiB | M chars/s "
        "| same words |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for requirement, r in results.items():
        runs = r["runs"]

        def median(key: str, runs: list[dict] = runs) -> float:
            return statistics.median(run[key] for run in runs)

        print(
            f"| {requirement} | {r['wheel_mib']:.1f} | {r['install_s']:.1f} | {r['venv_mib']:.0f} | "
            f"{median('import_s'):.3f} | {median('rss_mib'):.1f} | {median('mchars_s'):.1f} | "
            f"{'yes' if runs[0]['words'] == reference else 'no'} |"
        )
    cpu = subprocess.run(["bash", "-c", "grep -o 'avx512_vnni\\|avx2' /proc/cpuinfo | sort -u"], capture_output=True)
    flags = " ".join(cpu.stdout.decode().split())
    print(f"\n{args.rounds} rounds, medians; CPU flags: {flags}; Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()

"""Do int8 results depend on the CPU's kernels? The default model (static int8, 7-bit weights) and the same
weights quantised dynamically (8-bit weights, a scale per batch), run natively and on an emulated AVX2-only
CPU (qemu's Haswell: no AVX-512, no VNNI, so onnxruntime takes its AVX2 u8s8 kernels).

    apt-get install qemu-user && python perf/kernels.py [--bundle BUNDLE ...]

``--bundle`` adds bundles of your own, e.g. one exported with ``nertron export --quantize int8`` (static,
7-bit weights too). Prints the largest logit difference between the two CPUs for each model, and whether every
argmax agrees.
The emulated run is slow (minutes), so it uses a few sentences.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "perf")]

TEXTS = [
    "Angela Merkel met Emmanuel Macron in Paris on Tuesday.",
    "EU rejects German call to boycott British lamb.",
    "Gestern traf Olaf Scholz in Berlin den Bürgermeister von Hamburg.",
    "Shares of Siemens AG rose 3 percent in Frankfurt after the European Commission approved the deal.",
    "El presidente Pedro Sánchez viajó a Madrid y después a Barcelona.",
]


def logits(out: Path, models: dict[str, Path]) -> None:
    """Runs the models on TEXTS (one padded batch each) and saves their logits and the CPU's features."""
    from nertron import NER

    # numpy's C module, which has no type information; numpy 1.x tells its CPU features nowhere public
    features = importlib.import_module("numpy.core._multiarray_umath").__cpu_features__

    arrays = {}
    for name, bundle in models.items():
        with NER(bundle) as ner:
            batch = ner.pipeline.encoder.pad(list(ner.pipeline.windows(text.split() for text in TEXTS)))
            arrays[name] = ner.backend(batch.input_ids, batch.attention_mask)
    arrays["avx512_vnni"] = np.array(bool(features.get("AVX512VNNI")))
    np.savez(out, **arrays)


def main() -> None:
    import argparse

    from determinism import dynamic_int8
    from nertron.model.default import default_bundle

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, action="append", default=[], help="another bundle to compare")
    args = parser.parse_args()
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        sys.exit("needs qemu-user (apt-get install qemu-user)")
    with tempfile.TemporaryDirectory() as tmp:
        models = {"static": default_bundle("int8"), "dynamic": dynamic_int8(default_bundle("fp32"), Path(tmp) / "dyn")}
        models |= {str(bundle): bundle for bundle in args.bundle}
        child = [sys.executable, __file__, "--child", json.dumps({k: str(v) for k, v in models.items()})]
        subprocess.run([*child, f"{tmp}/native.npz"], check=True)
        subprocess.run([qemu, "-cpu", "Haswell", *child, f"{tmp}/avx2.npz"], check=True, stderr=subprocess.DEVNULL)
        native, avx2 = np.load(f"{tmp}/native.npz"), np.load(f"{tmp}/avx2.npz")
        print(f"native CPU has AVX-512 VNNI: {bool(native['avx512_vnni'])}; emulated: {bool(avx2['avx512_vnni'])}")
        for name in models:
            difference = float(np.abs(native[name] - avx2[name]).max())
            same = bool((native[name].argmax(-1) == avx2[name].argmax(-1)).all())
            print(f"- int8 {name}: largest logit difference {difference:.3g}; every argmax the same: {same}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        logits(Path(sys.argv[3]), {k: Path(v) for k, v in json.loads(sys.argv[2]).items()})
    else:
        main()

"""Does a text's result depend on the texts it is batched with? The default model's int8 (static), the same
weights quantised dynamically (a scale per batch, as before), and fp32.

    python perf/determinism.py [--sentences 400]

Each CoNLL-2003 dev sentence is tagged alone, then inside shuffled batches of 3, 16 and 64; prints how many
batched results have other entities than the sentence alone, and the largest score difference otherwise.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "perf")]

from bench import as_text, machine  # noqa: E402
from nertron import NER  # noqa: E402
from nertron.io.conll import read_conll  # noqa: E402
from nertron.model.bundle import Bundle  # noqa: E402
from nertron.model.default import default_bundle  # noqa: E402
from nertron.model.quantization import quantize_dynamic_int8  # noqa: E402

DEV = ROOT.parent / "shared" / "data" / "conll2003" / "dev.txt"


def dynamic_int8(fp32: Path, out: Path) -> Path:
    """The fp32 bundle with its MatMuls quantised dynamically (onnxruntime's quantize_dynamic)."""
    shutil.copytree(fp32, out)
    (out / "model.onnx").unlink()
    quantize_dynamic_int8(fp32 / "model.onnx", out / "model.onnx")
    manifest = Bundle.load(fp32).manifest
    manifest.with_model(out / "model.onnx", precision="int8").write(out)
    return out


def compare(ner: NER, texts: list[str], seed: int = 0) -> tuple[int, int, float]:
    alone = [ner(text) for text in texts]
    rng = random.Random(seed)
    changed, total, worst = 0, 0, 0.0
    for size in (3, 16, 64):
        order = list(range(len(texts)))
        rng.shuffle(order)
        for start in range(0, len(order), size):
            group = order[start : start + size]
            for i, entities in zip(group, ner.batch([texts[i] for i in group]), strict=True):
                total += 1
                if [(e.start, e.end, e.label) for e in entities] != [(e.start, e.end, e.label) for e in alone[i]]:
                    changed += 1
                else:
                    worst = max([worst, *(abs(a.score - b.score) for a, b in zip(entities, alone[i], strict=True))])
    return changed, total, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=400)
    args = parser.parse_args()
    texts = [as_text(s.words)[0] for d in read_conll(DEV) for s in d.sentences][: args.sentences]
    print(f"Machine: {machine()}\n")
    with tempfile.TemporaryDirectory() as tmp:
        bundles = {
            "int8, static (the default)": default_bundle("int8"),
            "int8, dynamic (the same weights, a scale per batch)": dynamic_int8(
                default_bundle("fp32"), Path(tmp) / "d"
            ),
            "fp32": default_bundle("fp32"),
        }
        for name, bundle in bundles.items():
            with NER(bundle) as ner:
                changed, total, worst = compare(ner, texts)
            print(
                f"- {name}: {changed} of {total} batched results with other entities; "
                f"largest score difference otherwise {worst:.1e}"
            )


if __name__ == "__main__":
    main()

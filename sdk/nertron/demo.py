"""``make run``: the served path end to end on the embedded default model.

Starts a real Triton server (CPU repository of the default model, free ports on 127.0.0.1), tags
sample texts through the gRPC client, prints the entities and the server's batching statistics,
checks them against in-process inference, and stops the server.
"""

from __future__ import annotations

import sys
import tempfile
import time

from nertron import NER
from nertron.backends import Triton
from nertron.extras import require
from nertron.model.default import default_bundle
from nertron.serving.repository import write_repository
from nertron.serving.server import TritonServer

SAMPLES = [
    "Angela Merkel met Emmanuel Macron in Paris on Tuesday.",
    "EU rejects German call to boycott British lamb, said Peter Blackburn in Brussels.",
    "Gestern traf Olaf Scholz in Berlin den Bürgermeister von Hamburg.",
    "El presidente Pedro Sánchez viajó a Madrid y después a Barcelona.",
    "Microsoft and the United Nations signed an agreement in New York.",
    "",
]


grpcclient = require("tritonclient.grpc", "make run (the served demo)")


def spans(entities: list) -> list[tuple[str, str, int, int]]:
    return [(e.text, e.label, e.start, e.end) for e in entities]


def main() -> int:
    bundle = default_bundle()
    with tempfile.TemporaryDirectory(prefix="nertron-demo-") as repository:
        write_repository(bundle, repository, link=True)
        with TritonServer(repository) as server:
            print(f"Triton {server.grpc_url} ready in {server.startup_seconds:.1f} s (model 'nertron', CPU)")
            served = NER(bundle, backend=Triton(server.grpc_url, fallback=None))
            started = time.perf_counter()
            results = served.batch(SAMPLES * 20, batch_size=8)  # 120 texts: several requests in flight
            seconds = time.perf_counter() - started
            for text, entities in zip(SAMPLES, results, strict=False):
                print(f"\n{text!r}")
                for e in entities:
                    print(f"  {e.label:<5} {e.text!r:<24} [{e.start}:{e.end}]  {e.score:.3f}")
            stats = grpcclient.InferenceServerClient(server.grpc_url).get_inference_statistics("nertron")
            model = stats.model_stats[0]
            print(
                f"\n{len(results)} texts through Triton in {seconds:.2f} s; server: "
                f"{model.inference_count} inferences (rows) in {model.execution_count} executions "
                f"(average batch {model.inference_count / max(model.execution_count, 1):.1f})"
            )
            local = NER(bundle).batch(SAMPLES * 20, batch_size=8)
            same = [spans(r) for r in local] == [spans(r) for r in results]
            worst = max(
                abs(a.score - b.score) for x, y in zip(local, results, strict=True) for a, b in zip(x, y, strict=True)
            )
            # Dynamic int8 quantises activations per batch, so scores move slightly with batch composition.
            print(f"same entities as in-process onnxruntime: {same} (largest score difference {worst:.1e})")
    print("server stopped")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# The installed package, not the checkout: builds nertron's wheel, installs it with its runtime dependencies
# only (pinned by constraints.txt) into a clean venv, and runs NER() and `nertron ner` there, outside the
# checkout, with an empty model cache. Usage: .ci/check_wheel.sh [python that builds the wheel]
set -euo pipefail
cd "$(dirname "$0")/.."
build_python=${1:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
started=$(date +%s)

"$build_python" -m pip wheel -q --no-deps -c constraints.txt --build-constraint constraints.txt -w "$work/dist" .
wheel=$(ls "$work"/dist/nertron-*.whl)
echo "check-wheel: built $(basename "$wheel") ($(du -h "$wheel" | cut -f1))"
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q -c constraints.txt pip
"$work/venv/bin/python" -m pip install -q -c constraints.txt "$wheel"

cd "$work"
export NERTRON_CACHE="$work/cache" HF_HUB_OFFLINE=1
"$work/venv/bin/python" - <<'PY'
import importlib.util

import nertron

for extra_only in ("torch", "transformers", "pyspark", "openvino", "tritonclient", "pytriton", "pytest"):
    assert importlib.util.find_spec(extra_only) is None, f"{extra_only} is installed, but only extras need it"
assert "site-packages" in nertron.__file__, nertron.__file__
from nertron import NER

entities = NER()("Angela Merkel met Emmanuel Macron in Paris.")
found = {(e.text, e.label) for e in entities}
assert {("Angela Merkel", "PER"), ("Emmanuel Macron", "PER"), ("Paris", "LOC")} <= found, found
print(f"check-wheel: NER() from {nertron.__file__}: {sorted(found)}")
PY
out=$("$work/venv/bin/nertron" ner "EU rejects German call to boycott British lamb.")
echo "check-wheel: nertron ner -> $out"
grep -q '"label": "ORG"' <<<"$out"
# A feature whose extra is missing names the install that brings it, in one line, with exit status 2.
set +e
err=$("$work/venv/bin/nertron" serve 2>&1); code=$?
set -e
echo "check-wheel: nertron serve without nertron[server] -> exit $code: $err"
[ "$code" -eq 2 ] && grep -q 'pip install "nertron\[server\]"' <<<"$err" && [ "$(wc -l <<<"$err")" -eq 1 ]
echo "check-wheel: passed in $(( $(date +%s) - started )) s"

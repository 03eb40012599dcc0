# mioreactor: the two commands of the README are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080

.PHONY: venv run test lint bench soak fuzz docs clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/.installed

run: venv
	$(BIN)/reactor serve --bind $(HOST):$(PORT)

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check reactor workers cli.py tests bench
	$(BIN)/mypy --strict reactor workers

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# The two commands of the README:
#   make biography   generate a 100-record biography dataset with the default model + its report
#   make test        run the test suite (unit + integration)
# Both create .venv on first use; nothing else needs installing by hand.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.synthgen-installed

.PHONY: test unit quick lint biography audit clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned; pyproject's torch range then accepts it as is.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,ray]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .

unit: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -m "not integration"

quick: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -m "not integration and not slow"

biography: $(STAMP)
	$(BIN)/synthgen generate recipes/biography.yaml -n 100 -o out/biography --resume

audit: $(STAMP)
	$(BIN)/synthgen audit recipes/diffuse/tasks.jsonl --samples 50 --json out/audit.json

clean-venv:
	rm -rf $(VENV)

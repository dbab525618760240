# Two commands for a fresh machine: `make book` (build the HTML book) and `make test` (everything CI checks).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SHARED_DATA := $(abspath ../shared/data)
# Offline copies of the data sets, when a mirror folder sits beside the checkout (CI, this machine).
ifneq ($(wildcard $(SHARED_DATA)),)
export GPT2_CORE_MIRROR ?= $(SHARED_DATA)
endif
export PYTHONHASHSEED := 0

.PHONY: book test unit nbval nbval-portable export-check book-strict browser-test lab notebooks export landing-page bench lock clean

$(STAMP): pyproject.toml requirements/constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed, found " + sys.version'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e ".[dev,book,bench]"
	touch $@

book: $(STAMP) landing-page
	$(BIN)/jupyter-book build . --quiet
	@echo "The book is at file://$(abspath _build/html/index.html)"

test: $(STAMP) unit export-check nbval nbval-portable book-strict browser-test

unit: $(STAMP)
	$(BIN)/python -m pytest tests

NBVAL := $(BIN)/python -m pytest --nbval chapters --nbval-current-env \
	--nbval-sanitize-with nbval_sanitize.cfg --nbval-cell-timeout 600 -p no:cacheprovider

nbval: $(STAMP)
	$(NBVAL)

# The notebooks again, from an empty model cache under another floating-point path, so every model
# retrains with other rounding (book/how_this_book_is_built.md). float_paths.py first proves that
# its switches change this CPU's results, and fails if they do not.
nbval-portable: $(STAMP)
	switches=$$($(BIN)/python scripts/float_paths.py --env) && cache=$$(mktemp -d) && \
		trap 'rm -rf "$$cache"' EXIT && env $$switches GPT2_CORE_CACHE="$$cache" $(NBVAL)

export-check: $(STAMP)
	$(BIN)/python -m book_tools.nbexport --check

book-strict: $(STAMP)
	rm -rf _build/html
	$(BIN)/jupyter-book build . -W -n --keep-going

# Every built page in headless Chromium, offline (screenshots in _build/screenshots/), and every
# internal link; needs `chromium` (apt-get install chromium).
browser-test: book-strict
	$(BIN)/python -m pytest tests/browser -m browser

lab: $(STAMP)
	$(BIN)/jupyter lab chapters/

notebooks: $(STAMP)
	$(BIN)/python -m book_tools.nbexport
	$(BIN)/python scripts/execute_notebooks.py chapters/*.ipynb
	$(BIN)/python scripts/landing_page.py

export: $(STAMP)
	$(BIN)/python -m book_tools.nbexport

# The landing page's chapter times and chapters -> modules diagram, from the committed notebooks.
landing-page: $(STAMP)
	$(BIN)/python scripts/landing_page.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks

lock: $(STAMP)
	$(BIN)/python scripts/lock.py > requirements/constraints.txt

clean:
	rm -rf _build .pytest_cache

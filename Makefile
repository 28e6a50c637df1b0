# Two commands: `make lab` (start JupyterLab on the first lesson) and `make test` (run every test).
# Both create .venv with Python 3.11 and install the project once; a stamp file makes the
# install idempotent (it reruns only when pyproject.toml changes).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JOBS   ?= 2
# The project's JupyterLab settings (no news pop-up over the plots), as defaults of this venv
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.d/edge-ai.json
# npm ci writes node_modules/.package-lock.json: it reruns only when the lock file changes
NODE_STAMP := node_modules/.package-lock.json

.PHONY: lab test test-hub hub pytorch prepare slides labs check-labs benchmark clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (found " + sys.version.split()[0] + "); run: make PYTHON=/path/to/python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (edge-ai)" >/dev/null
	touch $(STAMP)

# PyTorch and ExecuTorch for lessons/deeper/other_runtimes (extra `pytorch`; see pyproject.toml)
TORCH_STAMP := $(VENV)/.installed-pytorch

$(TORCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,pytorch]'
	touch $(TORCH_STAMP)

pytorch: $(TORCH_STAMP)  ## the PyTorch route of other_runtimes (CPU torch + ExecuTorch)

# The class hub (docs/jupyterhub.md): JupyterHub and nbgitpuller (extra `hub`), and the
# configurable-http-proxy pinned in deploy/jupyterhub/local/package-lock.json (needs Node 20+).
HUB_STAMP := $(VENV)/.installed-hub
PROXY     := deploy/jupyterhub/local/node_modules/.package-lock.json

$(HUB_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,hub]'
	touch $(HUB_STAMP)

$(PROXY): deploy/jupyterhub/local/package-lock.json
	npm ci --prefix deploy/jupyterhub/local --no-audit --no-fund --loglevel=error
	touch $(PROXY)

$(LAB_SETTINGS): jupyter/overrides.json $(STAMP)
	install -D -m 644 $< $@

lab: $(STAMP) $(LAB_SETTINGS)  ## (--allow-root: Jupyter refuses root, e.g. in a container, without it)
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) lessons/00_introduction.ipynb

test: $(STAMP) $(NODE_STAMP)  ## (node_modules: tests/test_slides.py builds a deck)
	$(BIN)/python -m pytest -n $(JOBS)

test-hub: $(HUB_STAMP) $(PROXY)   ## the local-hub test: simulated students on a JupyterHub on 127.0.0.1
	EDGE_AI_HUB_TEST=1 $(BIN)/python -m pytest -n 0 tests/test_hub.py

hub: $(HUB_STAMP) $(PROXY)        ## a local JupyterHub on http://127.0.0.1:8000 (any user name logs in)
	$(BIN)/jupyterhub -f deploy/jupyterhub/local/jupyterhub_config.py

prepare: $(STAMP)         ## run every lesson once, headless, so its models are cached before class
	@for nb in lessons/*.ipynb lessons/deeper/*.ipynb; do \
	  echo "running $$nb"; \
	  $(BIN)/jupyter nbconvert --to notebook --execute --stdout "$$nb" > /dev/null || exit 1; \
	done

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --ignore-scripts

slides: $(STAMP) $(NODE_STAMP)  ## lessons -> build/slides/<lesson>.slides.html, executed, offline
	$(BIN)/python -m helpers.course.slides --jobs $(JOBS)

labs: $(STAMP)            ## regenerate labs/ from solutions/
	$(BIN)/python -m helpers.course generate

check-labs: $(STAMP)
	$(BIN)/python -m helpers.course check

benchmark: $(STAMP)
	$(BIN)/python -m helpers.course.benchmark --quick

clean:
	rm -rf $(VENV) .pytest_cache node_modules build

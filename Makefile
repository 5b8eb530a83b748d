# imagebatch - every machine starts clean: each target installs what it needs, once
# (stamp files), so a second run is fast.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
VENV_STAMP := $(VENV)/.installed
SAM_VENV := .venv-sam
SAM_CLI_VERSION := 1.170.0
SAM_STAMP := $(SAM_VENV)/.installed-$(SAM_CLI_VERSION)
# checkov in a venv of its own: its dependencies would move the project's pins.
CHECKOV_VENV := .venv-checkov
CHECKOV_VERSION := 3.3.30
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)
NODE_STAMP := node_modules/.installed
# One lock file (requirements.lock) for every install: pip-tools resolves pyproject.toml's
# ranges with pip itself (pip's configuration, the torch wheel on disk included), in a venv of
# its own; tools/requirements_from_lock.py writes the dev venv's, the layer's and the
# containers' requirement files from it.
LOCK_VENV := .venv-lock
PIP_TOOLS_VERSION := 7.7.0

# sam build for the python3.12 runtime needs a python3.12 on PATH, else it fails with
# "PythonPipBuilder:Validation - Binary validation failed for python". pyenv has one here.
# Only the sam commands see this PATH; everything else keeps python3 = 3.11.
PY312_BIN ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin))
SAM_ENV := SAM_CLI_TELEMETRY=0 PATH="$(if $(PY312_BIN),$(PY312_BIN):)$$PATH"
SAM := $(SAM_ENV) $(SAM_VENV)/bin/sam

ASL_FILES := $(wildcard statemachine/*.asl.json)

.PHONY: venv lock requirements node_modules .venv-sam .venv-checkov chromium lint lint-imports check check-template test chaos iam-report demo bench neuron-image clean

# --- installs -------------------------------------------------------------------------

venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml requirements-dev.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --upgrade pip
	$(VENV)/bin/python -m pip install -r requirements-dev.txt
	$(VENV)/bin/python -m pip install --no-deps -e .
	touch $@

# Re-resolve after changing a range in pyproject.toml (the only step that reads an index for
# versions it has not seen), then write the requirement files.
lock:
	test -x $(LOCK_VENV)/bin/python || $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet 'pip-tools==$(PIP_TOOLS_VERSION)'
	$(LOCK_VENV)/bin/pip-compile --quiet --all-extras --strip-extras --no-emit-index-url \
	  --no-emit-find-links --output-file requirements.lock pyproject.toml
	$(MAKE) requirements

requirements:
	$(PYTHON) tools/requirements_from_lock.py

node_modules: $(NODE_STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

.venv-sam: $(SAM_STAMP)

$(SAM_STAMP):
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --upgrade pip
	$(SAM_VENV)/bin/python -m pip install 'aws-sam-cli==$(SAM_CLI_VERSION)'
	touch $@

.venv-checkov: $(CHECKOV_STAMP)

$(CHECKOV_STAMP):
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install 'checkov==$(CHECKOV_VERSION)'
	touch $@

# The review page's browser tests (tests/integration/test_contact_sheet.py) drive headless Chromium
# by its binary. Where none is on PATH it is installed from the distribution's package when
# apt-get can (root, or sudo without a password) and the package exists; otherwise this says
# why and those tests skip, naming what is missing. Never fails the build.
CHROMIUM_BINS ?= chromium chromium-browser google-chrome
CHROMIUM_PACKAGE ?= chromium
APT_GET ?= apt-get

chromium:
	@for bin in $(CHROMIUM_BINS); do command -v "$$bin" >/dev/null && exit 0; done; \
	if ! command -v $(firstword $(APT_GET)) >/dev/null; then \
	  echo "chromium: none on PATH and no apt-get here: the browser tests will skip"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	else echo "chromium: none on PATH, and installing needs root: the browser tests will skip"; exit 0; fi; \
	apt-cache show $(CHROMIUM_PACKAGE) >/dev/null 2>&1 || $$sudo $(APT_GET) update -qq || true; \
	if ! apt-cache show $(CHROMIUM_PACKAGE) >/dev/null 2>&1; then \
	  echo "chromium: no '$(CHROMIUM_PACKAGE)' package in apt's sources: the browser tests will skip"; exit 0; fi; \
	$$sudo $(APT_GET) install -y --no-install-recommends $(CHROMIUM_PACKAGE) \
	  || echo "chromium: installing '$(CHROMIUM_PACKAGE)' failed: the browser tests will skip"

# --- checks ---------------------------------------------------------------------------

# ruff skips .venv by default and .gitignore'd paths only inside a git checkout:
# exclude the SAM CLI venv explicitly so a tarball checkout lints the same.
RUFF_EXCLUDE := --extend-exclude $(SAM_VENV),$(CHECKOV_VENV),$(LOCK_VENV)

lint: $(VENV_STAMP)
	$(VENV)/bin/ruff check $(RUFF_EXCLUDE) .
	$(VENV)/bin/ruff format --check $(RUFF_EXCLUDE) .
	$(VENV)/bin/mypy
	$(MAKE) lint-imports

# The layering contracts of pyproject's [tool.importlinter], read from this checkout's code
# (PYTHONPATH: the venv's editable install may be another checkout's).
lint-imports: $(VENV_STAMP)
	PYTHONPATH=src:tools $(VENV)/bin/lint-imports --no-cache --no-logo

# The inner loop, under a minute on 2 cores: ruff, the layering contracts and the pure unit
# tests (no AWS, no local AWS, no model; sockets blocked). mypy stays in `make lint`: on its
# own it takes longer than the whole of this (a cold cache, strict, ~170 files).
# .pre-commit-config.yaml runs the same checks.
check: $(VENV_STAMP)
	$(VENV)/bin/ruff check $(RUFF_EXCLUDE) .
	$(VENV)/bin/ruff format --check $(RUFF_EXCLUDE) .
	$(MAKE) lint-imports
	PYTHONPATH=src:tools:containers/serving $(VENV)/bin/pytest -n 2 -q -p no:cacheprovider tests/unit

# cfn-lint twice: the SAM template, and what CloudFormation receives after the SAM transform
# (roles, permissions, the bucket's notification and its DependsOn: a cycle shows only there).
TRANSFORMED := .aws-sam/transformed.json

# checkov reads the transformed template too (the functions' checks need SAM's expansion);
# every finding is fixed or skipped in template.yaml with the reason (Metadata: checkov).
# --skip-download: no vendor API (it carries on without one, but does not wait for it).
check-template: $(VENV_STAMP) $(NODE_STAMP) $(SAM_STAMP) $(CHECKOV_STAMP)
	$(VENV)/bin/cfn-lint template.yaml
	$(SAM_VENV)/bin/python tools/sam_transform.py template.yaml $(TRANSFORMED)
	$(VENV)/bin/cfn-lint $(TRANSFORMED)
	$(CHECKOV_VENV)/bin/checkov --file $(TRANSFORMED) --framework cloudformation --quiet --compact --skip-download
	for f in $(ASL_FILES); do npx --no-install asl-validator --json-path "$$f" || exit 1; done
	$(SAM) validate --lint --template-file template.yaml
	$(SAM) build --template-file template.yaml --build-dir .aws-sam/build

# Line coverage of the whole suite (pyproject's [tool.coverage]) may not fall below this:
# the figure measured when the floor was set, rounded down (86.5% on 2026-12-07, tests/unit and
# tests/integration; e2e only adds to it). Raise it as tests are added.
COVERAGE_FLOOR := 86

test: $(VENV_STAMP) $(NODE_STAMP) $(SAM_STAMP) $(CHECKOV_STAMP) chromium
	$(MAKE) lint
	$(MAKE) check-template
	$(VENV)/bin/pytest -n 2 --dist loadfile --cov --cov-report=term:skip-covered \
	  --cov-fail-under=$(COVERAGE_FLOOR) tests/

# The chaos property (tests/e2e/test_chaos.py: every invariant holds under injected faults)
# over CHAOS_SEEDS seeds; `make test` runs it over 20. Figures in bench/README.md.
CHAOS_SEEDS ?= 200
# Two workers, each with its own local AWS; the seeds' faults and breaks are summed from
# CHAOS_LOG, since xdist does not show what the tests print.
CHAOS_LOG := .chaos.jsonl
chaos: $(VENV_STAMP)
	rm -f $(CHAOS_LOG)
	CHAOS_SEEDS=$(CHAOS_SEEDS) CHAOS_LOG=$(abspath $(CHAOS_LOG)) \
	  PYTHONPATH=src:tools:containers/serving $(VENV)/bin/pytest -q -p no:cacheprovider \
	  -n 2 --dist load tests/e2e/test_chaos.py && rc=0 || rc=$$?; \
	  PYTHONPATH=tools $(VENV)/bin/python -m imagebatch_local.cloud.chaos_log $(CHAOS_LOG); exit $$rc

# The e2e suite with every local IAM decision recorded, then the permissions template.yaml
# grants that no run used; each must carry an "Unused locally" comment (docs/local-aws.md).
IAM_USAGE := .iam-usage

iam-report: $(VENV_STAMP)
	rm -rf $(IAM_USAGE)
	IMAGEBATCH_IAM_USAGE_DIR=$(abspath $(IAM_USAGE)) $(VENV)/bin/pytest -n 2 --dist loadfile -q tests/e2e
	$(VENV)/bin/python -m imagebatch_local.cloud.iam_report $(IAM_USAGE)

# --- running --------------------------------------------------------------------------

demo: $(VENV_STAMP)
	$(VENV)/bin/imagebatch local run --sample demo

bench: $(VENV_STAMP)
	shopt -s nullglob; for f in bench/bench_*.py; do $(VENV)/bin/python "$$f" || exit 1; done

# The containers/neuron image in your ECR, for `imagebatch endpoint compile` and the endpoint
# (docs/sagemaker.md): IMAGE=<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>.
# Creates the repository if missing, signs in to the Deep Learning Containers registry the
# base image comes from (Dockerfile NEURON_BASE) and to yours, builds and pushes.
NEURON_BASE_REGISTRY := 763104351884.dkr.ecr.us-east-1.amazonaws.com
neuron-image:
	@[[ "$(IMAGE)" =~ ^[0-9]{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com/[a-z0-9._/-]+:[A-Za-z0-9._-]+$$ ]] || \
	  { echo "set IMAGE=<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>" >&2; exit 2; }
	registry="$(IMAGE)"; registry="$${registry%%/*}"; region="$$(cut -d. -f4 <<< "$$registry")"; \
	repository="$(IMAGE)"; repository="$${repository#*/}"; repository="$${repository%%:*}"; \
	aws ecr describe-repositories --region "$$region" --repository-names "$$repository" > /dev/null 2>&1 || \
	  aws ecr create-repository --region "$$region" --repository-name "$$repository" > /dev/null; \
	aws ecr get-login-password --region us-east-1 | docker login --username AWS --password-stdin $(NEURON_BASE_REGISTRY); \
	aws ecr get-login-password --region "$$region" | docker login --username AWS --password-stdin "$$registry"; \
	docker build -f containers/neuron/Dockerfile -t "$(IMAGE)" .; \
	docker push "$(IMAGE)"

clean:
	rm -rf $(VENV) $(SAM_VENV) $(CHECKOV_VENV) $(LOCK_VENV) node_modules .aws-sam .pytest_cache .mypy_cache .ruff_cache $(IAM_USAGE) $(CHAOS_LOG)
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
	find . -name '*.egg-info' -type d -prune -not -path './.git/*' -exec rm -rf {} +

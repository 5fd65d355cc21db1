# fastapi-deploy: the commands a user runs. `make help` lists them.
SHELL := /bin/bash
VENV  := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
SCENARIOS ?= default releases cluster vm

.PHONY: help setup image demo demo-destroy unit lint syntax test molecule molecule-debian13 lock clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

setup: ## Install podman, runc, debootstrap and the controller virtualenv (.venv)
	scripts/setup.sh

image: setup ## Build the local Debian test image (cached)
	scripts/build-image.sh

demo: ## Set up everything, deploy the example app to a local container, print its URL
	scripts/demo.sh

demo-destroy: ## Remove the demo container
	scripts/demo.sh destroy

unit: ## The inner loop, in seconds: yamllint, the role READMEs' variable tables, the unit tests (no host, no ansible-lint)
	@test -x $(VENV)/bin/pytest || scripts/setup.sh
	yamllint .
	python3 scripts/role_docs.py --check
	pytest -q -c pytest.ini tests/unit

lint: setup ## yamllint and ansible-lint (production profile)
	yamllint .
	ansible-lint
	python3 scripts/role_docs.py --check

syntax: setup ## ansible-playbook --syntax-check of every playbook
	for p in playbooks/*.yml; do ansible-playbook -i inventory/sandbox/hosts.yml --syntax-check "$$p" || exit 1; done
	for p in playbooks/*.yml; do ansible-playbook -i inventory/production/hosts.yml --syntax-check "$$p" || exit 1; done

molecule: setup ## Every Molecule scenario (SCENARIOS="default releases cluster vm", side by side)
	SKIP_LINT=1 scripts/test.sh $(SCENARIOS)

molecule-debian13: setup ## The whole default scenario on Debian 13 (not in make test: CI time)
	DEBIAN_RELEASE=trixie scripts/molecule.sh test -s default

test: ## The whole test suite: lint, syntax and every Molecule scenario, each step timed (scripts/test.sh)
	scripts/test.sh $(SCENARIOS)

lock: setup ## Regenerate the example app's lock file (hashes) from requirements.in
	scripts/lock.sh examples/hello_api

clean: demo-destroy ## Remove the demo container and the local caches
	rm -rf .cache

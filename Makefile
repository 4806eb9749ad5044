# minictr: the README's two commands.
#
#   sudo make run     install what is missing, then a shell in a busybox container
#   sudo make test    install what is missing, then lint and the whole test suite
#
# Both start with `make setup` (scripts/setup.sh), which only installs what is missing and
# takes well under a second when everything is there.

VENV := .venv
MINICTR := $(VENV)/bin/minictr

.DEFAULT_GOAL := help
.PHONY: help setup run test lint pytest

help:
	@echo "sudo make run     a shell in a busybox container (installs what is missing first)"
	@echo "sudo make test    lint and the whole test suite (installs what is missing first)"
	@echo "sudo make setup   only install what is missing (packages, .venv, /usr/local/bin/minictr)"

# Phony, no stamp: setup.sh checks each thing itself (dpkg-query, the venv's stamp, the link),
# so a removed package is noticed and a second run changes nothing.
setup:
	scripts/setup.sh

# --rm: each `make run` starts from the clean image; the busybox image is built from
# images/busybox the first time it is asked for.
run: setup
	$(MINICTR) run --rm busybox

# The cheap checks first: they fail in seconds.
test: lint pytest

lint: setup
	$(VENV)/bin/ruff check .
	shellcheck scripts/*.sh .ci/run

pytest: setup
	$(VENV)/bin/pytest

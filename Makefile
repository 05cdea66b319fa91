# The two commands of the README: `make demo` and `make test`. Both set
# everything up first (Debian packages when run as root, .venv/, the package).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint typecheck unit bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml dev/pyproject.toml image/packages-runtime.txt image/packages-build.txt
	./image/install-system-packages
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[hardware,dev]' -e ./dev
	touch $(STAMP)

demo: setup
	$(BIN)/appliance demo --out demo-out

lint: setup
	$(BIN)/ruff check appliance dev tests bench
	$(BIN)/ruff format --check appliance dev tests bench

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest

test: lint typecheck unit

bench: setup
	$(BIN)/python bench/run.py --out docs/benchmarks.md

clean:
	rm -rf $(VENV) demo-out .pytest_cache .mypy_cache .ruff_cache

# The phone on an existing Debian / Raspberry Pi OS, as root (appliance/installer.py):
# `sudo make install`, `sudo make uninstall` (PURGE=1 also removes config,
# state and the user). ROOT=DIR installs below DIR instead of /.
ROOT ?= /
.PHONY: install uninstall
install: setup
	$(BIN)/appliance install --root $(ROOT)

uninstall: setup
	$(BIN)/appliance uninstall --root $(ROOT) $(if $(PURGE),--purge)

# The SD-card image (image/build; slow, not part of `make test`), as root:
# `make image ARCH=arm64` (Raspberry Pi 3/4/5/Zero 2 W) or ARCH=amd64 (PC/VM),
# written to build/image/appliance-$(ARCH).img. `make image-test` boots the
# amd64 one under QEMU/KVM and times it to READY and to registration.
ARCH ?= arm64
.PHONY: image-packages image image-test
image-packages:
	PACKAGE_LISTS=image/packages-image.txt ./image/install-system-packages

image: setup image-packages
	./image/build $(ARCH)

build/image/appliance-amd64.img:
	$(MAKE) image ARCH=amd64

image-test: setup image-packages build/image/appliance-amd64.img
	./image/vm-test build/image/appliance-amd64.img

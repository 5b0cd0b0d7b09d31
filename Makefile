# Atelier: two commands on a fresh Linux machine with Python 3.11.
#   make run    set everything up and open the app
#   make test   set everything up and run the whole test suite
# Both create or refresh .venv themselves.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.atelier-setup

.PHONY: setup run test test-fast bench lint-imports clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile packaging/llama/build_wheel.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip wheel
	$(BIN)/python -m pip install --quiet torch==2.13.0
	packaging/llama/build_wheel.sh $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[llama,demo,images,dev]"
	@QT_QPA_PLATFORM=offscreen $(BIN)/python -c "from PySide6.QtWidgets import QApplication; QApplication([])" \
		|| { echo "Qt cannot start: install its system libraries, e.g. on Debian/Ubuntu:"; \
		     echo "  sudo apt-get install libegl1 libgl1 libglib2.0-0 libdbus-1-3 libfontconfig1 libfreetype6 libxkbcommon0 libxkbcommon-x11-0 libxcb-cursor0"; \
		     exit 1; }
	@touch $(STAMP)

run: setup
	$(BIN)/atelier

test: setup
	$(BIN)/lint-imports
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest

test-fast: setup
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -m "not slow"

bench: setup
	$(BIN)/python -m benchmarks

lint-imports: setup
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build dist *.egg-info

# Packaging (see packaging/README-install.md). Linux builds here; Windows and macOS in CI
# (.github/workflows/package.yml).
#   make package         dist/atelier/ (PyInstaller), dist/atelier_<version>_amd64.deb, the AppImage
#   make package-smoke   self-test and window of the bundle outside the venv, the .deb in a clean Debian 12
PYINSTALLER_VERSION := 6.22.0

.PHONY: package package-smoke

package: setup
	$(BIN)/pip install --quiet pyinstaller==$(PYINSTALLER_VERSION)
	packaging/linux/build.sh $(BIN)/python

package-smoke:
	packaging/linux/smoke.sh

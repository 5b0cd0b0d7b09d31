# Atelier: two commands on a fresh Linux machine with Python 3.11.
#   make run    set everything up and open the app
#   make test   set everything up and run the whole test suite
# Both create or refresh .venv themselves.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.atelier-setup

.PHONY: setup run test test-fast bench lint-imports clean check-qt

# The system libraries Qt needs for a real window on a minimal Debian 12 / Ubuntu (the README's list;
# checked in a debootstrap root). Headless tests need fewer (offscreen), a desktop has them all.
QT_APT_PACKAGES := libegl1 libgl1 libglib2.0-0 libdbus-1-3 libfontconfig1 libfreetype6 libx11-6 libx11-xcb1 \
	libxkbcommon0 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 \
	libxcb-randr0 libxcb-render0 libxcb-render-util0 libxcb-shape0 libxcb-shm0 libxcb-sync1 \
	libxcb-util1 libxcb-xfixes0 libxcb-xkb1 libxcb-glx0

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile packaging/llama/build_wheel.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip wheel
	$(BIN)/python -m pip install --quiet torch==2.13.0
	packaging/llama/build_wheel.sh $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[llama,demo,images,dev]"
	@$(MAKE) --no-print-directory check-qt
	@touch $(STAMP)

# Can Qt start here? With a display (DISPLAY set), the real X11 platform, which needs the most
# libraries: desktop.launcher_check names any that is missing (Qt's own message names the wrong
# one), then a QApplication opens on that display; a display that does not answer is only a warning,
# since the tests run offscreen. Without a display, the offscreen platform the tests use.
check-qt:
	@if [ -n "$$DISPLAY" ]; then \
		$(BIN)/python -m desktop.launcher_check \
		|| { echo "On Debian/Ubuntu, Qt's system libraries are:"; \
		     echo "  sudo apt-get install $(QT_APT_PACKAGES)"; exit 1; }; \
		QT_QPA_PLATFORM=xcb $(BIN)/python -c "from PySide6.QtWidgets import QApplication; QApplication([])" 2>/dev/null \
		|| echo "warning: Qt's libraries are all there, but no window opens on DISPLAY=$$DISPLAY (is that X server running?)"; \
	else \
		QT_QPA_PLATFORM=offscreen $(BIN)/python -c "from PySide6.QtWidgets import QApplication; QApplication([])" \
		|| { echo "Qt cannot start. On Debian/Ubuntu, its system libraries are:"; \
		     echo "  sudo apt-get install $(QT_APT_PACKAGES)"; exit 1; }; \
	fi

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

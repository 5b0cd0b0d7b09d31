"""uv, the installer behind the private image engine: its binary, its command lines, and its output in words.

uv (the ``uv`` package on PyPI, a dependency of Atelier, which ships the
binary) does what a hand-written installer would otherwise have to: it
creates the environment without the base Python's ``venv`` module, picks
the PyTorch build for the hardware (``--torch-backend auto``), downloads in
parallel, unpacks while it downloads, and keeps what it fetched in its
cache, so a cancelled or killed install that runs again fetches only what
is missing. Each engine gets its own cache and its own folder for a
downloaded CPython (:func:`uv_env`).

Progress (:class:`UvProgress`) comes from two sources. uv's plain output
names the phases and the large downloads::

    Resolved 54 packages in 1.21s
    Downloading torch (191.8MiB)
     Downloaded torch
    Prepared 54 packages in 19.8s
    Installed 54 packages in 410ms

and the bytes come from the size of the private cache, because uv unpacks
each wheel into it as the bytes arrive: against the unpacked size the plan
expects, that moves the bar even in the middle of a 2 GB download.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from engines.errors import EngineError, ErrorKind

UV_VERSION = "0.13.9"  # pinned in pyproject.toml; the output lines below were read from this version


def uv_binary() -> str:
    """The uv executable: the bundle's own (a frozen app), the ``uv`` package's beside Atelier, else PATH's."""
    if getattr(sys, "frozen", False):  # packaging/common_spec.py puts it beside the bundle's libraries
        bundled = Path(getattr(sys, "_MEIPASS", Path(sys.executable).parent)) / ("uv.exe" if os.name == "nt" else "uv")
        if bundled.is_file():
            return str(bundled)
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except Exception:  # noqa: BLE001 - not installed, or installed without its binary
        pass
    found = shutil.which("uv")
    if found:
        return found
    raise EngineError(ErrorKind.UNAVAILABLE, "The installer 'uv' is missing from this Atelier (its Python package "
                                             "'uv' is not installed). Reinstall Atelier, or install uv and try again.")


def uv_env(base: dict[str, str], cache_dir: Path, python_dir: Path, offline: bool) -> dict[str, str]:
    """*base* (the clean environment of a foreign Python) with uv's folders and no colour or prompts."""
    env = dict(base)
    # The target environment is always named explicitly; the environment's files must stay real files
    # (or hard links) when the cache is deleted after the install, and the cache must be used.
    for inherited in ("VIRTUAL_ENV", "CONDA_PREFIX", "UV_SYSTEM_PYTHON", "UV_PYTHON", "UV_LINK_MODE", "UV_NO_CACHE"):
        env.pop(inherited, None)
    env.update(UV_CACHE_DIR=str(cache_dir), UV_PYTHON_INSTALL_DIR=str(python_dir), NO_COLOR="1")
    if offline:
        env.update(UV_OFFLINE="1", UV_PYTHON_DOWNLOADS="never")
    return env


def source_args(plan) -> list[str]:
    """Where the packages come from: the folder of wheels alone, or the index with uv's torch backend."""
    if plan.wheel_dir:
        return ["--offline", "--no-index", "--find-links", str(plan.wheel_dir)]
    return ["--torch-backend", plan.torch_backend] if plan.torch_backend else []


def install_command(uv: str, python: Path, plan, dry_run: bool = False) -> list[str]:
    """``uv pip install`` of *plan* into the environment of *python* (resolve only, with *dry_run*)."""
    command = [uv, "pip", "install", "--color", "never", "--python", str(python), *source_args(plan)]
    return command + (["--dry-run"] if dry_run else []) + list(plan.packages)


def venv_command(uv: str, base_python: str, env_dir: Path) -> list[str]:
    return [uv, "venv", "--color", "never", "--no-project", "--python", base_python, str(env_dir)]


# ---- the resolve step ------------------------------------------------------------------


@dataclass(frozen=True)
class Resolution:
    """What ``uv pip install --dry-run`` would change: the PyTorch build it chose, and how many packages."""

    torch_version: str | None  # "2.13.0+cu128"; None when torch is installed already
    changes: int


_ADDED = re.compile(r"^ \+ ([A-Za-z0-9._-]+)==(\S+)")


def parse_resolution(lines: list[str]) -> Resolution:
    """The `` + name==version`` lines of a dry run (uv prints the same ones after a real install)."""
    added = {m.group(1).lower(): m.group(2) for line in lines if (m := _ADDED.match(line))}
    return Resolution(added.get("torch"), len(added))


def torch_build(version: str | None) -> str:
    """"cu128" from "2.13.0+cu128"; "" without a local version (PyPI's default build)."""
    return version.split("+", 1)[1] if version and "+" in version else ""


# ---- uv's output -----------------------------------------------------------------------

_RESOLVED = re.compile(r"^Resolved (\d+) packages?")
_DOWNLOADING = re.compile(r"^\s*Downloading (\S+) \(([\d.]+\s*[KMGT]?i?B)\)")
_DOWNLOADED = re.compile(r"^\s*Downloaded (\S+)")
_PREPARED = re.compile(r"^Prepared (\d+) packages?")
_DONE = re.compile(r"^(?:Installed|Audited) (\d+) packages?")


class UvProgress:
    """Progress of one ``uv pip install``, from its output lines and the size of its cache.

    ``fraction`` runs from 0 to 1 and never goes back: resolving takes the
    first 2 %, downloading and unpacking up to 90 % (cache bytes against
    *expected_bytes*, the unpacked size the plan expects), linking into
    the environment the rest.
    """

    def __init__(self, expected_bytes: int, cache_bytes_at_start: int = 0) -> None:
        self.expected_bytes = max(expected_bytes, 1)
        self.cache_bytes = cache_bytes_at_start  # an interrupted install's downloads count as done
        self.packages_total = 0
        self.downloading: dict[str, str] = {}  # name -> size as uv wrote it, while it downloads
        self.prepared = False
        self.done = False
        self.message = "Resolving the packages…"
        self._fraction = 0.0

    @property
    def bytes_done(self) -> int:
        return self.expected_bytes if self.prepared else min(self.cache_bytes, self.expected_bytes)

    @property
    def fraction(self) -> float:
        if self.done:
            value = 1.0
        elif self.prepared:
            value = 0.9
        elif self.packages_total:
            value = 0.02 + 0.88 * min(self.cache_bytes / self.expected_bytes, 0.99)
        else:
            value = 0.0
        self._fraction = max(self._fraction, value)
        return self._fraction

    def set_cache_bytes(self, n: int) -> None:
        self.cache_bytes = max(self.cache_bytes, n)

    def _download_message(self) -> str:
        if not self.downloading:
            return f"Unpacking {self.packages_total} packages…"
        names = ", ".join(f"{name} ({size})" for name, size in list(self.downloading.items())[:3])
        more = f" and {len(self.downloading) - 3} more" if len(self.downloading) > 3 else ""
        return f"Downloading {names}{more}…"

    def feed(self, line: str) -> bool:
        """Take one output line; True when it changed what the user should see."""
        if m := _RESOLVED.match(line):
            self.packages_total = int(m.group(1))
            self.message = self._download_message()
            return True
        if m := _DOWNLOADING.match(line):
            self.downloading[m.group(1)] = re.sub(r"([\d.])\s*([KMGT]?i?B)$", r"\1 \2", m.group(2))
            self.message = self._download_message()
            return True
        if m := _DOWNLOADED.match(line):
            self.downloading.pop(m.group(1), None)
            self.message = self._download_message()
            return True
        if m := _PREPARED.match(line):
            self.prepared = True
            self.downloading.clear()
            big = " (PyTorch is large: this takes a moment)" if self.packages_total > 20 else ""
            self.message = f"Installing {int(m.group(1))} packages into the environment{big}…"
            return True
        if m := _DONE.match(line):
            self.done = True
            self.prepared = True
            self.message = f"Installed {self.packages_total or int(m.group(1))} packages"
            return True
        return False


def uv_error(lines: list[str], wheel_dir: str | None = None) -> str:
    """The error of a failed uv run, in words: its ``error:`` line and the most telling cause.

    uv writes ``error: <what>`` and then one indented ``cause:`` line per level, the deepest last
    (``Failed to fetch … / dns error / failed to lookup address``); a resolver failure writes the
    whole "Because … we can conclude …" explanation as causes.
    """
    start = max((i for i, line in enumerate(lines) if line.startswith("error:")), default=None)
    causes: list[str] = []
    if start is None:
        meaningful = [line.strip() for line in lines
                      if line.strip() and not line.startswith(("warning:", " + ", " - ", "DEBUG", "Using "))]
        header = meaningful[-1] if meaningful else "uv stopped without saying why"
    else:
        header = lines[start][len("error:"):].strip()
        for line in lines[start + 1:]:
            stripped = line.strip()
            if not stripped or not line.startswith((" ", "\t")):
                break
            prefix = next((p for p in ("cause:", "Caused by:", "╰─▶", "help:") if stripped.startswith(p)), None)
            if prefix is not None:
                causes.append(stripped[len(prefix):].strip())
            elif causes:
                causes[-1] += " " + stripped
    if not causes:
        text = header
    elif header.startswith("No solution"):  # the chain of "Because …" is the explanation
        text = f"{header}: {' '.join(causes)}"
    else:  # the deepest cause says what really happened
        text = f"{header}: {causes[-1]}"
    everything = " ".join([header, *causes])
    if "No space left on device" in everything or "os error 28" in everything:
        return f"The disk is full: uv could not write the packages ({text[:300]})."
    if wheel_dir and "not found in the provided package locations" in everything:
        return f"The folder of wheels {wheel_dir} lacks a package: {text[:400]}"
    if any(word in everything for word in ("dns error", "error sending request", "client error (Connect)",
                                           "tcp connect error", "operation timed out")):
        return (f"Could not reach the package index ({text[:300]}). Check the internet connection, or install "
                "from a folder of wheels.")
    return text[:500]

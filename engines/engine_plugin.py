"""What an engine is, as the registry lists it: a small, import-cheap description.

An engine package (``engines.llama``, ``engines.diffusion``, a third-party
package) describes itself with an :class:`EnginePlugin` in its ``plugin``
module. The description lives here, below the engines and the registry, so
that the engine packages import it and the registry (:mod:`engines.registry`)
imports the engines' plugin modules, never the other way round. The engine
class itself is named by a dotted path and imported only inside the engine
host, so describing or listing engines never pulls in llama.cpp, torch or
onnxruntime.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass, field
from typing import Literal

from engines.errors import EngineError, ErrorKind


@dataclass(frozen=True)
class Availability:
    available: bool
    reason: str = ""  # why not, in words a user can act on
    version: str | None = None


@dataclass(frozen=True)
class EnginePlugin:
    name: str
    kind: Literal["text", "image"]
    display_name: str
    factory: str  # "package.module:ClassName", imported only in the engine host
    requires: tuple[str, ...] = ()  # import names that must be installed
    distribution: str | None = None  # the PyPI name, for the version and the hint
    formats: tuple[str, ...] = ()
    install_hint: str = ""

    def availability(self) -> Availability:
        """Whether the engine can run here, found without importing it."""
        for module in self.requires:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                hint = f" {self.install_hint}" if self.install_hint else ""
                if getattr(sys, "frozen", False) and self.kind == "image":
                    hint = " Install it from the Images page (“Install image engine”)."
                return Availability(False, f"the Python package '{module}' is not installed.{hint}")
        version = None
        if self.distribution:
            try:
                version = importlib.metadata.version(self.distribution)
            except importlib.metadata.PackageNotFoundError:
                version = None
        return Availability(True, "", version)

    def create(self):
        """Instantiate the engine (heavy imports happen here, in the host)."""
        state = self.availability()
        if not state.available:
            raise EngineError(ErrorKind.UNAVAILABLE, f"The {self.display_name} engine is unavailable: {state.reason}")
        module_name, _, attr = self.factory.partition(":")
        return getattr(importlib.import_module(module_name), attr)()


@dataclass(frozen=True)
class BrokenPlugin:
    """An entry point that failed to load: shown as unavailable, with the reason."""

    name: str
    error: str
    kind: str = "unknown"
    display_name: str = field(default="")

    def availability(self) -> Availability:
        return Availability(False, f"the plugin failed to load: {self.error}")

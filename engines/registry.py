"""Engine discovery through the ``atelier.engines`` entry-point group.

A plugin is a small, import-cheap description of an engine. The engine
class itself is named by a dotted path and imported only inside the engine
host, so listing engines never pulls in llama.cpp, torch or onnxruntime.
A third-party package adds an engine by declaring an entry point that
resolves to an :class:`EnginePlugin`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import sys
from dataclasses import dataclass, field
from typing import Literal

from engines.errors import EngineError, ErrorKind

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "atelier.engines"


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


def _builtin_plugins() -> list[EnginePlugin]:
    from engines.diffusion.plugin import ONNX_PLUGIN as onnx
    from engines.diffusion.plugin import PLUGIN as diffusers
    from engines.llama.plugin import PLUGIN as llama

    return [llama, diffusers, onnx]


def discover() -> dict[str, EnginePlugin | BrokenPlugin]:
    """All engines: the built-in ones plus those other packages declare."""
    plugins: dict[str, EnginePlugin | BrokenPlugin] = {p.name: p for p in _builtin_plugins()}
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in plugins and entry.value.startswith("engines."):
            continue  # our own, already listed
        try:
            plugin = entry.load()
            if not isinstance(plugin, EnginePlugin):
                raise TypeError(f"{entry.value} is not an EnginePlugin")
        except Exception as exc:  # a broken third-party plugin must not break the app
            log.warning("engine plugin %s failed to load: %s", entry.name, exc)
            plugins[entry.name] = BrokenPlugin(entry.name, str(exc), display_name=entry.name)
            continue
        if plugin.name in plugins:
            log.warning("engine %r is registered twice; keeping the first", plugin.name)
            continue
        plugins[plugin.name] = plugin
    return plugins


def get_plugin(name: str) -> EnginePlugin:
    plugin = discover().get(name)
    if plugin is None:
        raise EngineError(ErrorKind.UNAVAILABLE, f"No engine named '{name}' is installed.")
    if isinstance(plugin, BrokenPlugin):
        raise EngineError(ErrorKind.UNAVAILABLE, f"The engine '{name}' is unavailable: {plugin.error}")
    return plugin

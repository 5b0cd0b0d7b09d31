"""Engine discovery through the ``atelier.engines`` entry-point group.

The registry lists the built-in engines (their ``plugin`` modules, imported
here: the registry sits above the engine packages, which import only the
descriptor type, :mod:`engines.engine_plugin`) and those other packages
declare. A third-party package adds an engine by declaring an entry point
that resolves to an :class:`~engines.engine_plugin.EnginePlugin`. Listing
engines is cheap: no engine library is imported until the engine host
creates one.
"""

from __future__ import annotations

import importlib.metadata
import logging

from engines.diffusion.plugin import ONNX_PLUGIN, PLUGIN as DIFFUSERS_PLUGIN, UPSCALE_PLUGIN
from engines.engine_plugin import BrokenPlugin, EnginePlugin
from engines.doc_index.plugin import PLUGIN as DOCUMENTS_PLUGIN
from engines.errors import EngineError, ErrorKind
from engines.llama.plugin import PLUGIN as LLAMA_PLUGIN

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "atelier.engines"


def _builtin_plugins() -> list[EnginePlugin]:
    return [LLAMA_PLUGIN, DOCUMENTS_PLUGIN, DIFFUSERS_PLUGIN, ONNX_PLUGIN, UPSCALE_PLUGIN]


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

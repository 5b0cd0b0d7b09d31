"""Engine discovery through entry points, and honest 'unavailable' reasons."""

import importlib.metadata

from engines.engine_plugin import BrokenPlugin, EnginePlugin
from engines.registry import discover


def test_builtin_llama_engine_is_listed():
    plugins = discover()
    assert "llama_cpp" in plugins
    assert plugins["llama_cpp"].kind == "text"


def test_missing_package_is_unavailable_with_a_reason():
    plugin = EnginePlugin("ghost", "text", "Ghost", "ghost.engine:Engine", requires=("ghost_engine_pkg",))
    state = plugin.availability()
    assert not state.available and "ghost_engine_pkg" in state.reason


def test_third_party_entry_points_are_discovered(monkeypatch):
    good = EnginePlugin("extra", "image", "Extra", "json:dumps", requires=("json",))

    class FakeEntry:
        def __init__(self, name, value, obj=None, error=None):
            self.name, self.value, self._obj, self._error = name, value, obj, error

        def load(self):
            if self._error:
                raise ImportError(self._error)
            return self._obj

    entries = [FakeEntry("extra", "thirdparty:PLUGIN", good), FakeEntry("broken", "broken:PLUGIN", error="no module")]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: entries)
    plugins = discover()
    assert plugins["extra"].availability().available
    assert isinstance(plugins["broken"], BrokenPlugin)
    assert "no module" in plugins["broken"].availability().reason

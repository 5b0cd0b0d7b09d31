"""The llama.cpp engine's registry entry. Importing this is cheap."""

from engines.engine_plugin import EnginePlugin

PLUGIN = EnginePlugin(
    name="llama_cpp",
    kind="text",
    display_name="llama.cpp",
    factory="engines.llama.engine:LlamaCppEngine",
    requires=("llama_cpp",),
    distribution="llama-cpp-python",
    formats=("gguf",),
    install_hint="Run 'make run' from a checkout, or install the 'llama' extra.",
)

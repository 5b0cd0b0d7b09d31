"""The documents engine's registry entry (indexing and search with a GGUF embedding model). Importing this is cheap."""

from engines.engine_plugin import EnginePlugin

PLUGIN = EnginePlugin(
    name="documents",
    kind="text",
    display_name="Documents (llama.cpp embeddings)",
    factory="engines.doc_index.engine:DocumentIndexEngine",
    requires=("llama_cpp", "pypdf", "docx", "lxml", "charset_normalizer"),
    distribution="llama-cpp-python",
    formats=("gguf",),
    install_hint="Run 'make run' from a checkout, or install the 'llama' extra.",
)

"""The llama.cpp text engine (through llama-cpp-python)."""

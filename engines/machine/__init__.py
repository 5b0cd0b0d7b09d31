"""What this machine has, and what will run on it: the hardware and accelerator probes, the
memory-fit estimates for text and image models, and the expected speeds.

A low layer on purpose. The engines check a load against free memory with it
(``engines.llama.preflight``, ``engines.diffusion.auto``) and the model library
judges the catalog with the very same arithmetic (``engines.library``), so the
two agree without importing each other. It imports only the foundation
(errors, the cache-type table, storage) and what the private image-engine
Python has installed (psutil, numpy), never pydantic, requests or gguf.
"""

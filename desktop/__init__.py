"""Atelier's desktop shell: Qt windows, views, item models and workers.

This package stays thin: the logic lives in :mod:`engines`. It never
imports torch, diffusers, onnxruntime or llama_cpp at module level, so the
window appears before any engine is touched.
"""

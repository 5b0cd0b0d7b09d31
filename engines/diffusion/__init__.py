"""Image engines: Stable Diffusion 1.x/2.x and SDXL, on PyTorch (diffusers) or ONNX Runtime.

Import-cheap entry points: :mod:`.types` (requests, results, events),
:mod:`.png_meta` (parameters in PNGs) and :mod:`.plugin` (registry
entries); a model folder is recognised by :mod:`engines.model_folder`.
torch, diffusers and onnxruntime are imported only when an engine loads a
model.
"""

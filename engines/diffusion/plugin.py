"""The image engines' registry entries. Importing this is cheap: no torch, no ONNX Runtime.

``PLUGIN`` is the engine the app uses (it picks PyTorch or ONNX Runtime per
model); ``ONNX_PLUGIN`` is ONNX Runtime alone, for installs without the
PyTorch engine's GPU wheels or for forcing it. ONNX Runtime still needs torch
and diffusers: the denoising loop steps diffusers' schedulers on torch tensors.
"""

from engines.engine_plugin import EnginePlugin

PLUGIN = EnginePlugin(
    name="diffusers",
    kind="image",
    display_name="Diffusers (PyTorch / ONNX Runtime)",
    factory="engines.diffusion.engine:DiffusionEngine",
    requires=("torch", "diffusers", "transformers"),
    distribution="diffusers",
    formats=("diffusers", "onnx"),
    install_hint="Install the image extra (PyTorch, diffusers, transformers, safetensors; "
    "onnxruntime for the ONNX backend).",
)

ONNX_PLUGIN = EnginePlugin(
    name="onnxruntime",
    kind="image",
    display_name="ONNX Runtime (Stable Diffusion 1.x/2.x, SDXL)",
    factory="engines.diffusion.onnx_engine:OnnxDiffusionEngine",
    requires=("onnxruntime", "torch", "diffusers", "transformers"),
    distribution="onnxruntime",
    formats=("onnx",),
    install_hint="Install the image extra with onnxruntime (plus torch and diffusers for the schedulers).",
)

UPSCALE_PLUGIN = EnginePlugin(
    name="esrgan",
    kind="image",
    display_name="ESRGAN upscalers (PyTorch)",
    factory="engines.diffusion.upscale:UpscaleEngine",
    requires=("torch", "safetensors"),
    distribution="torch",
    formats=("safetensors",),
    install_hint="Install the image extra (PyTorch and safetensors are what the upscalers need).",
)

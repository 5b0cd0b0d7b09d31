"""Private Python environments for engines too big for the base app (PyTorch, diffusers, ONNX Runtime).

Importing this package is cheap: no torch, no subprocess at import time.
See :mod:`engines.envs.image_engine` for the image engine's environment.
"""

from engines.envs.image_engine import (
    EnvStatus,
    ImageEngineEnv,
    InstallProgress,
    host_has_image_engine,
    image_engine_root,
    image_host_launch,
)
from engines.envs.plan import InstallPlan, make_plan
from engines.host.standalone import engines_source_root

__all__ = [
    "EnvStatus",
    "ImageEngineEnv",
    "InstallPlan",
    "InstallProgress",
    "engines_source_root",
    "host_has_image_engine",
    "image_engine_root",
    "image_host_launch",
    "make_plan",
]

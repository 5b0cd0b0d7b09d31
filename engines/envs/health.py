"""Is a private engine environment whole? A quick look, and a real import check.

The quick look (:func:`quick_problem`) only stats files, so the Images page
can ask at start-up: the interpreter is there and runnable, and the main
packages have their folders. The real check (:func:`import_check`) starts
the environment's Python and imports torch, diffusers, transformers and
ONNX Runtime, plus Atelier's own image modules from the engines source, and
reports the versions; it takes seconds, so it runs after an install and
when the user asks for a check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# Import name -> the folder it lives in inside site-packages (the quick look).
CORE_MODULES = ("torch", "diffusers", "transformers", "onnxruntime")
CHECK_MARKER = "ATELIER-ENV-CHECK "
CHECK_TIMEOUT_S = 600  # the first torch import after an install compiles nothing but reads ~1 GB

_CHECK_SCRIPT = r"""
import importlib, json, sys
info = {"python": sys.version.split()[0]}
import torch
info["torch"] = torch.__version__
info["cuda"] = getattr(torch.version, "cuda", None)
info["hip"] = getattr(torch.version, "hip", None)
import diffusers, transformers, onnxruntime, safetensors, accelerate, PIL, numpy, psutil
info["diffusers"] = diffusers.__version__
info["transformers"] = transformers.__version__
info["onnxruntime"] = onnxruntime.__version__
info["onnxruntime_providers"] = list(onnxruntime.get_available_providers())
try:
    import engines
except ImportError:
    info["engines"] = None
else:
    for name in ("engines.host.standalone", "engines.host.process", "engines.registry", "engines.diffusion.engine",
                 "engines.diffusion.torch_engine", "engines.diffusion.onnx_engine", "engines.diffusion.convert",
                 "engines.machine.hardware"):
        importlib.import_module(name)
    info["engines"] = engines.__file__
print("ATELIER-ENV-CHECK " + json.dumps(info), flush=True)
"""


def env_python(env_dir: Path) -> Path:
    """The interpreter of the virtual environment at *env_dir* (it may not exist)."""
    if sys.platform == "win32":
        return env_dir / "Scripts" / "python.exe"
    return env_dir / "bin" / "python"


def site_packages(env_dir: Path) -> Path | None:
    if sys.platform == "win32":
        candidate = env_dir / "Lib" / "site-packages"
        return candidate if candidate.is_dir() else None
    found = sorted(env_dir.glob("lib/python3*/site-packages"))
    return found[-1] if found else None


def quick_problem(env_dir: Path) -> str:
    """What is visibly wrong with the environment, in words; "" when it looks whole."""
    python = env_python(env_dir)
    if not env_dir.is_dir():
        return f"its folder is missing ({env_dir})"
    if not python.exists():
        if python.is_symlink():
            target = os.readlink(python)
            return f"the Python it was built on is gone ({target})"
        return f"its Python is missing ({python})"
    if not os.access(python, os.X_OK):
        return f"its Python cannot be run ({python} is not executable)"
    packages = site_packages(env_dir)
    if packages is None:
        return "its site-packages folder is missing"
    for module in CORE_MODULES:
        if not (packages / module / "__init__.py").is_file():
            return f"the package '{module}' is missing"
    return ""


def clean_env(pythonpath: list[str] | None = None) -> dict[str, str]:
    """The environment for the private Python (none of this interpreter's PYTHON* settings)."""
    from engines.host.client import foreign_env

    env = foreign_env(pythonpath)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def import_check(env_dir: Path, engines_root: Path | None, timeout: float = CHECK_TIMEOUT_S) -> tuple[dict | None, str]:
    """Import the engine's packages with the environment's Python: (versions, "") or (None, reason)."""
    python = env_python(env_dir)
    problem = quick_problem(env_dir)
    if problem and not python.exists():
        return None, problem
    pythonpath = [str(engines_root)] if engines_root else None
    try:
        run = subprocess.run(
            [str(python), "-s", "-c", _CHECK_SCRIPT], capture_output=True, text=True, encoding="utf-8",
            errors="replace", timeout=timeout, env=clean_env(pythonpath), cwd=str(env_dir),
        )
    except subprocess.TimeoutExpired:
        return None, f"its Python did not finish importing the engine within {timeout:.0f} s"
    except OSError as exc:
        return None, f"its Python cannot be started ({exc.strerror or exc})"
    for line in run.stdout.splitlines():
        if line.startswith(CHECK_MARKER):
            try:
                return json.loads(line[len(CHECK_MARKER):]), ""
            except ValueError:
                break
    return None, describe_failure(run.returncode, run.stderr or run.stdout)


def describe_failure(returncode: int, output: str) -> str:
    """The reason an import check failed: the exception line of the traceback, in words."""
    lines = [line.strip() for line in (output or "").splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "error" in line or line.startswith(("Exception", "OSError")):
            return f"importing the engine failed: {line[:400]}"
    if returncode and returncode < 0:
        return f"its Python crashed while importing the engine (signal {-returncode})"
    return f"importing the engine failed (exit code {returncode})"

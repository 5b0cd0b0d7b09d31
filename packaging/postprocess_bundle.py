"""Tidy a PyInstaller one-folder bundle after the build (Linux and macOS).

    python packaging/postprocess_bundle.py dist/atelier

- (Linux) The llama-cpp-python wheel holds ``libllama.so``, ``libllama.so.0`` and
  ``libllama.so.0.5.0`` as three identical files (wheels cannot hold links).
  Inside the bundle, keep the fully versioned file and make the other names
  symbolic links to it: 12 MB less, and every name opens the *same* library,
  so ggml's backend registry can never be loaded twice.
- Check that runtime CPU dispatch survived: the ``libggml-cpu-<level>`` variants
  are there, the AMX-forcing sapphirerapids variant is not.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path


def llama_lib_dir(bundle: Path) -> Path:
    for candidate in (bundle / "_internal" / "llama_cpp" / "lib", bundle / "Contents" / "Frameworks" / "llama_cpp" / "lib",
                      bundle / "Contents" / "Resources" / "llama_cpp" / "lib"):
        if candidate.is_dir():
            return candidate
    raise SystemExit(f"no llama_cpp/lib folder in {bundle}")


def dedupe(folder: Path) -> int:
    groups: dict[tuple[int, str], list[Path]] = {}
    for path in folder.iterdir():
        if path.is_file() and not path.is_symlink():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            groups.setdefault((path.stat().st_size, digest), []).append(path)
    saved = 0
    for (size, _), paths in groups.items():
        if len(paths) < 2:
            continue
        keep = max(paths, key=lambda p: (len(p.name), p.name))  # libx.so.0.5.0 over libx.so.0 over libx.so
        for path in paths:
            if path != keep:
                path.unlink()
                os.symlink(keep.name, path)
                saved += size
    return saved


def main() -> int:
    bundle = Path(sys.argv[1] if len(sys.argv) > 1 else "dist/atelier")
    lib = llama_lib_dir(bundle)
    # Linux only: on macOS the .app is already signed by now, and links would break its seal.
    saved = dedupe(lib) if sys.platform.startswith("linux") else 0
    variants = sorted(p.name for p in lib.glob("*ggml-cpu-*"))
    if sys.platform.startswith("linux") or os.name == "nt":
        if not variants:
            raise SystemExit(f"no libggml-cpu-<level> variants in {lib}: runtime CPU dispatch is missing")
        if any("sapphirerapids" in name for name in variants):
            raise SystemExit("the AMX (sapphirerapids) CPU variant must not be shipped: it crashes on some CPUs")
    print(f"{lib}: {len(variants)} CPU variants ({', '.join(v.split('ggml-cpu-')[1].split('.')[0] for v in variants)}); "
          f"{saved / 2**20:.1f} MB of duplicate libraries replaced by links")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One upscale, as ``atelier upscale`` and the Images page both run it: load, upscale tile by tile, sign.

The upscaler is the ``esrgan`` engine (:mod:`engines.diffusion.upscale`),
run in an engine host through the one scheduler like every engine; this
module is the part both front ends share around it, so there is one
upscale path: :func:`run_upscale` loads the model on the host it is given,
streams the engine's per-tile progress to a callback and returns the
:class:`~engines.diffusion.upscale_types.UpscaleResult` (whose PNG keeps
the source's parameters and records the step); :func:`sign_upscaled`
gives it Content Credentials that call it an edit of the source, which is
linked as the parent by its hash. A cancel comes as the engine's
``EngineError(CANCELLED)``; nothing is written here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from engines.errors import EngineError, ErrorKind

UPSCALE_ENGINE = "esrgan"  # the registry name (engines.diffusion.upscale.ENGINE), without importing the engine


@dataclass(frozen=True)
class SignedUpscale:
    png: bytes
    signed: bool  # it carries Content Credentials
    notices: tuple[str, ...]  # why it could not be signed, when it could not


def run_upscale(host, model_path: str | Path, request, dtype: str = "auto",
                on_progress: Callable[[str], None] | None = None):
    """Load the upscaler at ``model_path`` on ``host`` and run ``request``; returns ``(info, UpscaleResult)``."""
    from engines.api import FinishedEvent, ProgressEvent
    from engines.diffusion.upscale_types import UpscaleLoadSpec

    info = host.load(UPSCALE_ENGINE, UpscaleLoadSpec(str(model_path), dtype=dtype))
    result = None
    for event in host.generate(request):
        if isinstance(event, FinishedEvent):
            result = event.result
        elif isinstance(event, ProgressEvent) and on_progress is not None:
            on_progress(event.message)
    if result is None:
        raise EngineError(ErrorKind.INTERNAL, "The upscaler finished without a result.")
    return info, result


def sign_upscaled(result, source: bytes, config_dir: Path, off: bool = False) -> SignedUpscale:
    """The PNG signed as an edit of ``source`` (C2PA ``c2pa.edited``, the source as its parent), by the one signer."""
    if off:
        return SignedUpscale(result.png, False, ())
    from engines.images.credentials import CredentialsSigner, Provenance

    provenance = Provenance(model=result.model_name, source=source,
                            edit=f"Upscaled {result.scale}× with {result.model_name}", title="upscaled.png")
    signed = CredentialsSigner(config_dir).sign(result.png, provenance)
    return SignedUpscale(signed.png, signed.signed, tuple(signed.notices))

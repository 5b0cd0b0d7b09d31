"""``--vae tiny|full|PATH`` → what an :class:`~engines.diffusion.types.ImageRequest` carries.

The engine host knows nothing of the library, so the front ends turn the
user's words into a folder before a request is made:

* ``full``: the model's own VAE (the request says "full");
* ``tiny``: the installed tiny VAE of the model's family, TAESD (catalog id
  ``taesd``) for SD 1.x/2.x and SD-Turbo, TAESDXL (``taesdxl``) for SDXL
  and SDXL-Turbo: the two are not interchangeable (the SD and SDXL VAEs
  make different latents), so the family decides;
* anything else: a path to an AutoencoderTiny folder, checked here so a
  wrong one is refused in a sentence before any engine starts.
"""

from __future__ import annotations

from pathlib import Path

from engines.errors import EngineError, ErrorKind

TINY_VAE_IDS = {"sd": "taesd", "sdxl": "taesdxl"}
_FAMILY_NAMES = {"sd": "SD 1.x/2.x", "sdxl": "SDXL"}


def installed_tiny_vae(family: str, models) -> str:
    """The folder of the installed tiny VAE for ``family`` ("sd" or "sdxl"), or "" when there is none."""
    from engines.diffusion.taesd import tiny_vae_problem

    model_id = TINY_VAE_IDS.get(family)
    record = models.get(model_id) if model_id else None
    if record is None or tiny_vae_problem(record.path):
        return ""
    return record.path


def resolve_vae(choice: str, model_path: str | Path, models) -> str:
    """The request's ``vae`` for the user's ``choice``: "full" or a tiny VAE folder; EngineError in words."""
    from engines.diffusion.taesd import tiny_vae_problem

    if choice == "full":
        return "full"
    if choice == "tiny":
        from engines.model_folder import inspect_model_folder

        family = inspect_model_folder(model_path).family
        found = installed_tiny_vae(family, models)
        if not found:
            model_id = TINY_VAE_IDS[family]
            raise EngineError(ErrorKind.BAD_INPUT,
                              f"No tiny VAE for {_FAMILY_NAMES[family]} models is installed. Download it with "
                              f"'atelier models pull {model_id}', or give --vae the path of an "
                              "AutoencoderTiny folder.")
        return found
    path = Path(choice).expanduser()
    problem = tiny_vae_problem(path)
    if problem:
        raise EngineError(ErrorKind.BAD_INPUT, f"{problem} --vae takes 'tiny', 'full' or the path of a tiny VAE "
                                               "folder (TAESD, TAESDXL).")
    return str(path.resolve())

"""``--vae tiny|full|PATH`` → what an :class:`~engines.diffusion.types.ImageRequest` carries.

The engine host knows nothing of the library, so the front ends turn the
user's words into a folder before a request is made:

* ``full``: the model's own VAE (the request says "full");
* ``tiny``: the installed tiny VAE of the model's family, TAESD (id
  ``taesd``) for SD 1.x/2.x and SD-Turbo, TAESDXL (``taesdxl``) for SDXL
  and SDXL-Turbo: the two are not interchangeable (the SD and SDXL VAEs
  make different latents), so the family decides. "Installed" is a model
  record with that id (``atelier models pull taesd``: catalog entries), or
  else the folder of that name in the models folder, which is where a
  download under that id lands, so a copy put there by hand works too;
* anything else: a path to an AutoencoderTiny folder, checked here so a
  wrong one is refused in a sentence before any engine starts.
"""

from __future__ import annotations

from pathlib import Path

from engines.errors import EngineError, ErrorKind

TINY_VAE_IDS = {"sd": "taesd", "sdxl": "taesdxl"}
_FAMILY_NAMES = {"sd": "SD 1.x/2.x", "sdxl": "SDXL"}


def installed_tiny_vae(family: str, models, models_dir: str | Path | None = None) -> str:
    """The folder of the installed tiny VAE for ``family`` ("sd" or "sdxl"), or "" when there is none."""
    from engines.diffusion.taesd import tiny_vae_problem

    model_id = TINY_VAE_IDS.get(family)
    if model_id is None:
        return ""
    record = models.get(model_id)
    for folder in (record.path if record is not None else None,
                   str(Path(models_dir) / model_id) if models_dir is not None else None):
        if folder and not tiny_vae_problem(folder):
            return folder
    return ""


def resolve_vae(choice: str, model_path: str | Path, models, models_dir: str | Path | None = None) -> str:
    """The request's ``vae`` for the user's ``choice``: "full" or a tiny VAE folder; EngineError in words."""
    from engines.diffusion.taesd import tiny_vae_problem

    if choice == "full":
        return "full"
    if choice == "tiny":
        from engines.model_folder import inspect_model_folder

        family = inspect_model_folder(model_path).family
        found = installed_tiny_vae(family, models, models_dir)
        if not found:
            model_id = TINY_VAE_IDS[family]
            raise EngineError(ErrorKind.BAD_INPUT,
                              f"No tiny VAE for {_FAMILY_NAMES[family]} models is installed. Get it with 'atelier "
                              f"models pull {model_id}' (madebyollin/{model_id}, 10 MB), or give --vae the path of "
                              "an AutoencoderTiny folder.")
        return found
    path = Path(choice).expanduser()
    problem = tiny_vae_problem(path)
    if problem:
        raise EngineError(ErrorKind.BAD_INPUT, f"{problem} --vae takes 'tiny', 'full' or the path of a tiny VAE "
                                               "folder (TAESD, TAESDXL).")
    return str(path.resolve())

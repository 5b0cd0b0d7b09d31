"""Content Credentials: a signed C2PA manifest in every PNG Atelier makes, saying a generative model made it.

The manifest (written with ``c2pa-python``, the Content Authenticity
Initiative's own library) carries one ``c2pa.actions`` assertion:

* a new image (text to image, image to image): ``c2pa.created`` with the
  IPTC digital source type ``trainedAlgorithmicMedia``; its software agent
  is the model, as OpenAI's and Adobe's generators name theirs, and the
  claim generator is Atelier;
* an edit of an earlier image (inpainting, an upscale: the engines that
  make them call :func:`add_content_credentials` with ``edit=``):
  ``c2pa.opened`` on the parent image, then ``c2pa.edited`` with
  ``compositeWithTrainedAlgorithmicMedia``.

A source image is linked as an ingredient (``inputTo`` for image to image,
``parentOf`` for an edit) and the action points at it. Only its format and
SHA-256 go in (the same hash as the ``atelier`` chunk's
``init_image_sha256``), never its pixels: C2PA's thumbnails are turned off,
so a shared image never carries a small copy of a private photo. A source
that has credentials of its own brings them along, which is how a chain of
edits stays readable.

Signing happens in the front end's process after the engine returns the
PNG (the private image engine never needs c2pa-python) and adds about
4 KB and a few milliseconds. The A1111 ``parameters`` and ``atelier``
chunks stay; the manifest's hash covers them, so a changed prompt shows as
a changed image. No network is used: no time-stamp authority, no OCSP, no
remote manifests (see :func:`c2pa_context`).
"""

from __future__ import annotations

import hashlib
import io
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from engines.diffusion.request_words import steps_words
from engines.images.signing_identity import SigningIdentity, load_or_create_identity

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
GENERATED = IPTC + "trainedAlgorithmicMedia"
EDITED_WITH_AI = IPTC + "compositeWithTrainedAlgorithmicMedia"
_FORMATS = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"BM", "image/bmp"))


@dataclass(frozen=True)
class Provenance:
    """What a manifest says about one image.

    ``model``: the name of the model that made it (or made the edit).
    ``source``: the encoded image it came from (img2img's init image, the
    image that was inpainted or upscaled), or None. ``edit``: "" for a new
    image; otherwise a short sentence of what was done to ``source``
    ("Upscaled 4× with RealESRGAN"), which makes the manifest an edit.
    ``description``: a few words on how a new image was made.
    """

    model: str
    source: bytes | None = None
    edit: str = ""
    description: str = ""
    title: str = "image.png"
    # Images placed whole in this one (an experiment grid's cells, engines.images.grid_run): each is linked as a
    # ``componentOf`` ingredient by its hash, its own credentials brought along, and the created action points at it.
    components: tuple[bytes, ...] = ()

    @classmethod
    def of_request(cls, request, model: str) -> "Provenance":
        """The provenance of an image made from an :class:`engines.diffusion.types.ImageRequest`."""
        if getattr(request, "inpainting", False) and request.init_image is not None:
            from engines.diffusion.inpaint import describe  # an edit of the init image: parentOf, c2pa.edited

            return cls(model=model, source=request.init_image, edit=describe(request) + _lora_words(request))
        if request.init_image is not None:
            how = f"Image to image (strength {request.strength:g}), {steps_words(request.steps)}"
        else:
            how = f"Text to image, {steps_words(request.steps)}"
        return cls(model=model, source=request.init_image, description=how + _lora_words(request))


def _lora_words(request) -> str:
    """", with LoRA name (weight)...": the LoRAs change what the model makes, so the manifest names them."""
    loras = getattr(request, "loras", ())
    return ", with LoRA " + ", ".join(f"{lora.label} ({lora.weight:g})" for lora in loras) if loras else ""


def c2pa_context():
    """c2pa-python's settings for Atelier: no thumbnails (no copy of a source image), no network at all."""
    import c2pa

    settings = c2pa.Settings.from_dict({
        "builder": {"thumbnail": {"enabled": False}},
        "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
    })
    return c2pa.Context(settings)


def atelier_version() -> str:
    try:
        return metadata.version("atelier-studio")
    except metadata.PackageNotFoundError:
        return "dev"


def add_content_credentials(png: bytes, provenance: Provenance, identity: SigningIdentity) -> bytes:
    """``png`` with a signed C2PA manifest for ``provenance`` embedded; raises ``c2pa.C2paError`` when it cannot.

    Callers keep the unsigned PNG when this raises: an image is never lost
    for want of its credentials.
    """
    import c2pa

    source_id = f"xmp.iid:{uuid.uuid4()}"
    agent = {"name": provenance.model or "an unnamed model"}
    component_ids = [f"xmp.iid:{uuid.uuid4()}" for _ in provenance.components]
    linked = ([source_id] if provenance.source is not None else []) + component_ids
    link = {"ingredientIds": linked} if linked else {}
    if provenance.edit:
        actions = [{"action": "c2pa.opened", "parameters": dict(link)},
                   {"action": "c2pa.edited", "digitalSourceType": EDITED_WITH_AI, "softwareAgent": agent,
                    "description": provenance.edit}]
    else:
        created = {"action": "c2pa.created", "digitalSourceType": GENERATED, "softwareAgent": agent}
        if provenance.description:
            created["description"] = provenance.description
        if link:
            created["parameters"] = link
        actions = [created]
    manifest = {
        "claim_generator_info": [{"name": "Atelier", "version": atelier_version()}],
        "title": provenance.title,
        "format": "image/png",
        "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": actions}}],
    }
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg=b"es256", sign_cert=identity.chain_pem,
                                                       private_key=identity.private_key_pem, ta_url=None))
    out = io.BytesIO()
    try:
        with c2pa.Builder(manifest, c2pa_context()) as builder:
            if provenance.source is not None:
                builder.add_ingredient(_ingredient(provenance, source_id), _format(provenance.source),
                                       io.BytesIO(provenance.source))
            for number, (component, component_id) in enumerate(zip(provenance.components, component_ids), 1):
                builder.add_ingredient({"title": f"cell {number}", "relationship": "componentOf",
                                        "instance_id": component_id,
                                        "description": f"sha256 {hashlib.sha256(component).hexdigest()}"},
                                       _format(component), io.BytesIO(component))
            builder.sign(signer, "image/png", io.BytesIO(png), out)
    finally:
        signer.close()
    return out.getvalue()


@dataclass(frozen=True)
class Signed:
    png: bytes  # the signed PNG, or the PNG as it came when it could not be signed
    signed: bool
    notices: tuple[str, ...] = ()  # sentences for the user: a key replaced, credentials left off and why


class CredentialsSigner:
    """Signs PNGs with the profile's key (made on first use); every caller that writes a PNG goes through it.

    It never raises: an image is worth more than its credentials, so a key
    that cannot be made or a manifest c2pa will not write leaves the PNG as
    it was, with a sentence saying so in :attr:`Signed.notices`.
    """

    def __init__(self, config_dir: Path) -> None:
        self.config_dir = Path(config_dir)
        self._identity: SigningIdentity | None = None

    def sign(self, png: bytes, provenance: Provenance) -> Signed:
        notices = []
        if self._identity is None:
            try:
                self._identity = load_or_create_identity(self.config_dir)
            except Exception as exc:  # an unwritable config folder, a lock held too long, a broken library
                detail = getattr(exc, "strerror", None) or str(exc)
                return Signed(png, False, (f"the Content Credentials key in {self.config_dir} cannot be made "
                                           f"({detail}); the images are saved without credentials",))
            if self._identity.notice:
                notices.append(self._identity.notice)
        try:
            return Signed(add_content_credentials(png, provenance, self._identity), True, tuple(notices))
        except Exception as exc:  # c2pa's own errors, or a library that will not load
            notices.append(f"Content Credentials could not be added ({type(exc).__name__}: {exc}); "
                           "the images are saved without them")
            return Signed(png, False, tuple(notices))


def _ingredient(provenance: Provenance, source_id: str) -> dict:
    digest = hashlib.sha256(provenance.source).hexdigest()
    if provenance.edit:
        title, relationship = "the original image", "parentOf"
    else:
        title, relationship = "the init image", "inputTo"
    return {"title": title, "relationship": relationship, "instance_id": source_id, "description": f"sha256 {digest}"}


def _format(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for magic, mime in _FORMATS:
        if data.startswith(magic):
            return mime
    return "application/octet-stream"

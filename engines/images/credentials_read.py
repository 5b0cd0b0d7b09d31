"""Reading an image's Content Credentials back, in words the gallery can show.

c2pa-python's :class:`c2pa.Reader` does the reading and the validation (the
signature, the hashes of the file and of every assertion); this module only
turns its report into a :class:`Credentials`: who signed, what the
manifest says (made by a generative model, which one, from which source
image), and whether it holds. A signature by Atelier's own key is valid
but *untrusted* (the key is self-signed, no trust list knows it), and is
said so plainly, not as an error. Nothing is fetched from the network (see
:func:`engines.images.credentials.c2pa_context`); a FIFO or a device put in
an image's place is refused without blocking.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engines.gguf.regular import NotARegularFileError, open_regular_file
from engines.images.credentials import EDITED_WITH_AI, GENERATED, IPTC

VALID, UNTRUSTED, INVALID, NONE, UNREADABLE = "valid", "untrusted", "invalid", "none", "unreadable"
_UNTRUSTED_CODE = "signingCredential.untrusted"


@dataclass(frozen=True)
class Credentials:
    """An image's Content Credentials as a person reads them.

    ``state``: :data:`VALID` (signed by a trusted key), :data:`UNTRUSTED`
    (intact, but signed by a key no trust list knows, as Atelier's own is),
    :data:`INVALID` (the file or the manifest changed after signing),
    :data:`NONE` (the image has none) or :data:`UNREADABLE` (``problem``
    says why).
    """

    state: str
    signer: str = ""  # the certificate's name ("Atelier on this computer (3f9a1c)")
    issuer: str = ""  # its organisation ("Atelier")
    signed_at: str = ""  # ISO 8601, when the manifest says
    generator: str = ""  # the app that wrote it ("Atelier 0.1.0")
    claims: tuple[str, ...] = ()  # what it says, one sentence each
    failures: tuple[str, ...] = ()  # why it does not hold ("code: explanation")
    problem: str = ""

    @property
    def verdict(self) -> str:
        """One sentence on whether the credentials hold."""
        if self.state == VALID:
            return "Valid and signed by a trusted key."
        if self.state == UNTRUSTED:
            return ("Valid: the image is unchanged since it was signed. The key is Atelier's own, made on this "
                    "computer, so validators report it as untrusted (signingCredential.untrusted).")
        if self.state == INVALID:
            return "Not valid: the image or its credentials changed after signing (" + "; ".join(self.failures) + ")."
        if self.state == UNREADABLE:
            return f"The credentials could not be read: {self.problem}"
        return "This image carries no Content Credentials."

    def summary(self) -> str:
        """The gallery's one line: what it says, who signed, whether it holds."""
        if self.state in (NONE, UNREADABLE):
            return self.verdict
        says = self.claims[0] if self.claims else "A signed manifest"
        holds = {VALID: "valid", UNTRUSTED: "valid, self-signed (untrusted)", INVALID: "NOT valid"}[self.state]
        return f"{says} · signed by {self.signer or self.issuer or 'an unnamed signer'} · {holds}"


def read_credentials(path: str | Path) -> Credentials:
    """The Content Credentials of the image at ``path``; never raises (an unreadable file says why)."""
    import c2pa

    from engines.images.credentials import c2pa_context

    try:
        with open_regular_file(path) as handle:
            reader = c2pa.Reader.try_create(_mime(Path(path)), handle, context=c2pa_context())
            if reader is None:
                return Credentials(NONE)
            with reader:
                report = json.loads(reader.json())
                state = reader.get_validation_state() or ""
    except NotARegularFileError as exc:
        return Credentials(UNREADABLE, problem=exc.message)
    except OSError as exc:
        return Credentials(UNREADABLE, problem=f"{Path(path).name} cannot be read: {exc.strerror or exc}.")
    except (c2pa.C2paError, ValueError) as exc:  # a damaged manifest: say what the library said
        return Credentials(UNREADABLE, problem=f"{exc}.")
    return credentials_from_report(report, state)


def credentials_from_report(report: dict, state: str) -> Credentials:
    """A :class:`Credentials` from c2pa's JSON report and validation state."""
    manifest = (report.get("manifests") or {}).get(report.get("active_manifest") or "", {})
    statuses = report.get("validation_status") or []
    failures = tuple(f"{s.get('code', '?')}: {s.get('explanation', '')}".rstrip(": ") for s in statuses
                     if s.get("code") != _UNTRUSTED_CODE)
    untrusted = any(s.get("code") == _UNTRUSTED_CODE for s in statuses)
    if failures or state.lower() == "invalid":
        verdict = INVALID
    elif untrusted:
        verdict = UNTRUSTED
    else:
        verdict = VALID
    signature = manifest.get("signature_info") or {}
    generators = manifest.get("claim_generator_info") or []
    generator = " ".join(str(generators[0].get(k, "")) for k in ("name", "version")).strip() if generators else ""
    return Credentials(
        verdict, signer=str(signature.get("common_name", "")), issuer=str(signature.get("issuer", "")),
        signed_at=str(signature.get("time", "") or ""), generator=generator, claims=_claims(manifest),
        failures=failures,
    )


def _claims(manifest: dict) -> tuple[str, ...]:
    sentences = []
    for assertion in manifest.get("assertions") or []:
        if not str(assertion.get("label", "")).startswith("c2pa.actions"):
            continue
        for action in (assertion.get("data") or {}).get("actions") or []:
            sentence = _action_sentence(action)
            if sentence:
                sentences.append(sentence)
    for ingredient in manifest.get("ingredients") or []:
        relationship = ingredient.get("relationship")
        title = ingredient.get("title") or "an image"
        detail = f" ({_short_hash(ingredient['description'])})" if ingredient.get("description") else ""
        if relationship == "inputTo":
            sentences.append(f"Made from a source image: {title}{detail}")
        elif relationship == "parentOf":
            sentences.append(f"Edited from {title}{detail}")
        else:
            sentences.append(f"Uses {title} ({relationship or 'ingredient'})")
    return tuple(sentences)


def _action_sentence(action: dict) -> str:
    name = action.get("action", "")
    source = action.get("digitalSourceType", "")
    agent = (action.get("softwareAgent") or {}).get("name", "") if isinstance(action.get("softwareAgent"), dict) \
        else str(action.get("softwareAgent") or "")
    with_model = f" ({agent})" if agent else ""
    how = f": {action['description']}" if action.get("description") else ""
    if name == "c2pa.created" and source == GENERATED:
        return f"Made by a generative AI model{with_model}{how}"
    if name == "c2pa.edited" and source == EDITED_WITH_AI:
        return f"Edited with a generative AI model{with_model}{how}"
    if name == "c2pa.opened":
        return ""  # the ingredient it opened says it
    kind = source.removeprefix(IPTC) if source else ""
    return f"{name}{with_model}{f' [{kind}]' if kind else ''}{how}"


def _short_hash(description: str) -> str:
    """"sha256 92aedc8815d3…" for a 64-digit hash: enough to compare by eye, short enough to wrap a line."""
    kind, _, digest = description.partition(" ")
    if kind == "sha256" and len(digest) == 64:
        return f"sha256 {digest[:12]}…"
    return description


def _mime(path: Path) -> str:
    return {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}.get(path.suffix.lower(), "image/png")

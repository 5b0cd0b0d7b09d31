"""Search the Hugging Face Hub for GGUF models (only when the user is online).

The curated catalog covers the common cases; this lets a user find anything
else published as GGUF. :func:`search_gguf` lists repositories, most
downloaded first; :func:`list_gguf_files` lists one repository's GGUF files
with their sizes and SHA-256 (what the fit check and the downloader need),
groups the parts of split models (``name-00001-of-00003.gguf``) into one
choice, and reads the quantization from each file name, since that is all a
user has to choose between "Q4_K_M" and "Q8_0" before downloading.

Both go through :func:`engines.network.require_network` first, then
one quick reachability check (:mod:`engines.library.reachability`: offline,
huggingface_hub would retry a failed name lookup for ~24 s), and
turn every ``huggingface_hub`` / HTTP failure into an :class:`EngineError`
whose message says what to do (connect, add a token, check the name).
``huggingface_hub`` is imported only when a search actually runs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from engines.errors import EngineError, ErrorKind
from engines import network
from engines.library.reachability import check_reachable
from engines.library.remote_gguf import GATED, NETWORK, NOT_FOUND

__all__ = ["HubFile", "HubRepo", "list_gguf_files", "quantization_from_name", "search_gguf"]

log = logging.getLogger(__name__)

MAX_LIMIT = 100
_SPLIT_RE = re.compile(r"^(?P<base>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
# Quantization labels as llama.cpp and the usual quantizers name them:
# Q4_K_M, Q8_0, IQ4_XS, Q4_0_4_8, TQ1_0, F16, BF16, FP16, MXFP4 ...
_QUANT_RE = re.compile(
    r"(?<![A-Za-z0-9])(I?Q[1-8](?:_[0-9]+|_K)?(?:_(?:XXS|XS|XL|S|M|L|NL|[0-9]+))*|TQ[12]_0|BF16|FP?16|FP?32|MXFP4)"
    r"(?![A-Za-z0-9])",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class HubRepo:
    """A model repository found by a search."""

    id: str
    author: str | None
    downloads: int
    likes: int
    gated: bool | str  # False, or the gating mode ("auto", "manual")
    last_modified: datetime | None
    tags: tuple[str, ...]

    @property
    def url(self) -> str:
        return f"{network.hub_endpoint()}/{self.id}"


@dataclass(frozen=True)
class HubFile:
    """One downloadable GGUF model: a single file, or all parts of a split one.

    For a split model ``path`` is the first part (what llama.cpp opens), ``size``
    the sum of all parts and ``parts`` lists each part; ``sha256`` is set only
    for single files, each part carrying its own.
    """

    path: str
    size: int
    sha256: str | None
    quantization: str | None = None
    parts: tuple[HubFile, ...] = ()
    expected_parts: int = 1

    @property
    def is_split(self) -> bool:
        return self.expected_parts > 1

    @property
    def complete(self) -> bool:
        """False when some parts of a split model are missing from the repository."""
        return not self.is_split or len(self.parts) == self.expected_parts

    @property
    def is_projector(self) -> bool:
        """A vision projector (``mmproj-*.gguf``), used beside a model, not alone."""
        return self.path.rsplit("/", 1)[-1].lower().startswith("mmproj")


def search_gguf(query: str, *, limit: int = 20) -> list[HubRepo]:
    """GGUF repositories matching *query*, most downloaded first."""
    network.require_network("searching the Hugging Face Hub")
    query = query.strip()
    if not query:
        return []
    check_reachable(network.hub_endpoint())  # offline: one sentence in seconds, not 24 s of retries
    limit = max(1, min(int(limit), MAX_LIMIT))
    api = _api()
    with _hub_errors("search the Hugging Face Hub"):
        models = list(api.list_models(search=query, filter="gguf", sort="downloads", limit=limit))
    return [_repo(m) for m in models]


def list_gguf_files(repo_id: str) -> list[HubFile]:
    """The GGUF models in *repo_id*: split parts grouped, smallest first, projectors last."""
    network.require_network("listing the files of a model on the Hugging Face Hub")
    repo_id = repo_id.strip()
    check_reachable(network.hub_endpoint())
    api = _api()
    with _hub_errors(f"list the files of {repo_id}", repo_id=repo_id):
        info = api.model_info(repo_id, files_metadata=True)
    singles: list[HubFile] = []
    groups: dict[tuple[str, int], list[tuple[int, HubFile]]] = {}
    for sibling in info.siblings or []:
        name = sibling.rfilename
        if not name.lower().endswith(".gguf"):
            continue
        size = int(sibling.size or (sibling.lfs.size if sibling.lfs else 0) or 0)
        sha = sibling.lfs.sha256 if sibling.lfs else None
        part = HubFile(path=name, size=size, sha256=sha, quantization=quantization_from_name(name))
        split = _SPLIT_RE.match(name)
        if split and int(split["count"]) > 1:
            groups.setdefault((split["base"], int(split["count"])), []).append((int(split["index"]), part))
        else:
            singles.append(part)
    for (base, count), members in groups.items():
        members.sort(key=lambda m: m[0])
        parts = tuple(p for _, p in members)
        singles.append(
            HubFile(
                path=parts[0].path,
                size=sum(p.size for p in parts),
                sha256=None,
                quantization=quantization_from_name(base + ".gguf"),
                parts=parts,
                expected_parts=count,
            )
        )
    return sorted(singles, key=lambda f: (f.is_projector, f.size, f.path))


def quantization_from_name(filename: str) -> str | None:
    """The quantization label in a GGUF file name ("Q4_K_M", "IQ4_XS", "F16"...), or None."""
    stem = filename.rsplit("/", 1)[-1]
    split = _SPLIT_RE.match(stem)
    stem = split["base"] if split else re.sub(r"\.gguf$", "", stem, flags=re.IGNORECASE)
    matches = _QUANT_RE.findall(stem)
    if not matches:
        return None
    label = matches[-1].upper()  # the last label wins: "Qwen2-Q4_K_M" names Q4_K_M, not the model
    return {"FP16": "F16", "FP32": "F32"}.get(label, label)


# --------------------------------------------------------------------------- internals


def _api():
    from huggingface_hub import HfApi

    # token=False when we have none: never fall back to a token huggingface_hub
    # finds on its own, so the Settings token is the only one ever sent.
    return HfApi(endpoint=network.hub_endpoint(), token=network.hf_token() or False)


def _repo(model) -> HubRepo:
    repo_id = model.id
    author = getattr(model, "author", None) or (repo_id.split("/", 1)[0] if "/" in repo_id else None)
    return HubRepo(
        id=repo_id,
        author=author,
        downloads=int(getattr(model, "downloads", None) or 0),
        likes=int(getattr(model, "likes", None) or 0),
        gated=getattr(model, "gated", None) or False,
        last_modified=getattr(model, "last_modified", None) or getattr(model, "created_at", None),
        tags=tuple(getattr(model, "tags", None) or ()),
    )


def _is_transport_error(exc: Exception, name: str) -> bool:
    """True when *exc* is the HTTP client's *name* error (or a subclass).

    Matched by class name, not imported: huggingface_hub chooses its HTTP
    client (httpx, now httpx2) and Atelier must not depend on that choice.
    """
    return any(cls.__name__ == name and cls.__module__.split(".")[0].startswith("httpx")
               for cls in type(exc).__mro__)


@contextmanager
def _hub_errors(action: str, repo_id: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub / HTTP failures inside the block into EngineError."""
    try:
        yield
    except EngineError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure gets a message a person can act on
        raise _translate(exc, action, repo_id) from exc


def _translate(exc: Exception, action: str, repo_id: str | None) -> EngineError:
    from huggingface_hub import errors as hf

    endpoint = network.hub_endpoint()
    what = f"the repository {repo_id}" if repo_id else "that"
    if isinstance(exc, hf.OfflineModeIsEnabled):
        return network.OfflineError(f"huggingface_hub is in offline mode (HF_HUB_OFFLINE): cannot {action}.")
    if isinstance(exc, hf.HFValidationError):
        return EngineError(ErrorKind.BAD_INPUT, f"{repo_id!r} is not a valid repository name: use 'owner/name'.")
    if isinstance(exc, hf.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        if isinstance(exc, hf.RevisionNotFoundError):
            return EngineError(NOT_FOUND, f"{what.capitalize()} has no such branch or revision.")
        if status == 401:
            if network.hf_token():
                return EngineError(
                    GATED,
                    f"The Hub refused your token for {what}: it may be invalid or expired, or the repository "
                    "is private. Check the token in Settings.",
                )
            return EngineError(
                GATED,
                f"The Hub needs a token to show {what}: it is private or gated, or does not exist. "
                "Add your Hugging Face token in Settings.",
            )
        if status == 403:
            return EngineError(
                GATED, f"Access to {what} was refused (403): accept its terms on the Hub, or check your token's rights."
            )
        if status == 404 or isinstance(exc, hf.RepositoryNotFoundError):
            return EngineError(NOT_FOUND, f"There is no model repository named {repo_id!r} on the Hub.")
        if status == 429:
            return EngineError(NETWORK, "The Hugging Face Hub is rate limiting requests: try again in a minute.")
        if status is not None and status >= 500:
            return EngineError(NETWORK, f"The Hugging Face Hub had a server error ({status}): try again later.")
        return EngineError(NETWORK, f"Could not {action}: the Hub answered {status}.")
    if _is_transport_error(exc, "TimeoutException"):
        return EngineError(NETWORK, f"Could not {action}: {endpoint} did not answer in time.")
    if _is_transport_error(exc, "TransportError") or isinstance(exc, OSError):
        return EngineError(NETWORK, f"Could not {action}: {endpoint} cannot be reached (check your connection).")
    if isinstance(exc, (ValueError, KeyError, TypeError)):
        log.warning("unexpected answer from %s", endpoint, exc_info=exc)
        return EngineError(NETWORK, f"Could not {action}: {endpoint} sent an answer Atelier does not understand.")
    log.error("unexpected failure while trying to %s", action, exc_info=exc)
    return EngineError(ErrorKind.INTERNAL, f"Could not {action}: {type(exc).__name__}: {exc}")

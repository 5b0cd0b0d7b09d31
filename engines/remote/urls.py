"""Base URLs of remote servers: checked once when added, and the offline rule.

The URL is what an OpenAI client takes as ``base_url`` (``http://box:8000/v1``):
Atelier appends ``/models`` and ``/chat/completions`` to it. It is refused
in words when it could not work or would leak a secret: another scheme
than http(s), no host, a query or fragment (the paths are appended), and
a user name or password in it (it would sit in ``remotes.json`` in clear;
keys go to the keyring or an environment variable).

Offline mode cuts every connection that leaves the computer, so a remote
server is allowed offline only on loopback: 127.0.0.0/8, ::1 or the name
``localhost`` (which the system resolves to loopback without asking DNS).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit, urlunsplit

from engines.errors import EngineError, ErrorKind

EXAMPLE = "http://box:8000/v1"


def normalise_base_url(text: str) -> str:
    """``text`` as a base URL (no trailing slash); EngineError BAD_INPUT saying what is wrong."""
    raw = (text or "").strip()
    if not raw:
        raise EngineError(ErrorKind.BAD_INPUT, f"No URL given: pass the server's API base URL, e.g. {EXAMPLE}.")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in raw):
        raise EngineError(ErrorKind.BAD_INPUT, "The URL contains spaces or control characters.")
    if "://" not in raw:
        raise EngineError(ErrorKind.BAD_INPUT, f"'{raw}' is not a URL: it needs http:// or https://, e.g. {EXAMPLE}.")
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise EngineError(ErrorKind.BAD_INPUT, f"'{raw}' is not a valid URL ({exc}).") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise EngineError(ErrorKind.BAD_INPUT, f"The URL must start with http:// or https://, not {scheme}://.")
    if not parts.hostname:
        raise EngineError(ErrorKind.BAD_INPUT, f"The URL '{raw}' has no host name.")
    if parts.username is not None or parts.password is not None:
        raise EngineError(ErrorKind.BAD_INPUT, "Put no user name or key in the URL: it would be saved in clear. "
                          "Give the key with --api-key-env VAR, or let Atelier keep it in the system keyring.")
    if parts.query or parts.fragment:
        raise EngineError(ErrorKind.BAD_INPUT, f"The URL must not have a '?' query or '#' part: give the API's base URL, "
                          f"e.g. {EXAMPLE}.")
    host = parts.hostname
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


def is_loopback(url: str) -> bool:
    """Whether ``url`` points at this computer: 127.0.0.0/8, ::1 or ``localhost``."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_allowed(name: str, url: str) -> None:
    """Raise OfflineError when offline mode forbids reaching the server ``name`` at ``url``."""
    from engines.network import OfflineError, network_allowed

    if is_loopback(url) or network_allowed():
        return
    host = urlsplit(url).hostname
    raise OfflineError(f"Atelier is in offline mode, and the remote server '{name}' ({host}) is not on this "
                       "computer. Turn offline mode off in Settings to use it; servers on 127.0.0.1 work offline.")

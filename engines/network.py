"""The single gate for network access, and the Hugging Face token.

Atelier is an offline studio: nothing may touch the network unless the user
lets it, so every download asks :func:`require_network` first and builds its
HTTP session with :func:`make_session`. Keeping both here means one switch
(Settings → offline mode, or ``ATELIER_OFFLINE=1``) truly cuts everything,
and one place decides how we talk to servers (TLS always verified, no hidden
retries: the downloader retries itself, resuming from what is on disk).
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import socket
import threading
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from engines.errors import EngineError, ErrorKind

log = logging.getLogger(__name__)

OFFLINE = ErrorKind.OFFLINE  # "offline mode forbids this"
OFFLINE_ENV = "ATELIER_OFFLINE"
ENDPOINT_ENV = "HF_ENDPOINT"
TOKEN_ENV = "HF_TOKEN"
DEFAULT_ENDPOINT = "https://huggingface.co"
USER_AGENT = "Atelier/0.1"
MAX_REDIRECTS = 10  # the Hub redirects once or twice (resolve → CDN); ten means a loop
KEYRING_SERVICE = "atelier"
KEYRING_USER = "huggingface"

# What a dropped, reset or stalled connection raises, while connecting or mid-body.
CONNECTION_ERRORS = (
    requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError, http.client.HTTPException, ConnectionError, TimeoutError,
)  # fmt: skip
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

_lock = threading.Lock()
_offline = False  # set from the Settings switch through set_offline()


class OfflineError(EngineError):
    """Offline mode is on and something asked for the network."""

    def __init__(self, message: str) -> None:
        super().__init__(OFFLINE, message)

    def __reduce__(self):  # one argument, unlike EngineError
        return (type(self), (self.message,))


def set_offline(offline: bool) -> None:
    """Turn offline mode on or off for this process (the Settings switch)."""
    global _offline
    with _lock:
        _offline = bool(offline)


def network_allowed() -> bool:
    """False when offline mode is on, by the Settings switch or the environment."""
    if os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    with _lock:
        return not _offline


def require_network(what: str) -> None:
    """Raise :class:`OfflineError` unless the network may be used; *what* names the action."""
    if not network_allowed():
        raise OfflineError(f"Atelier is in offline mode: {what} needs the network. Turn offline mode off in Settings.")


def hub_endpoint() -> str:
    """The Hugging Face Hub address (``HF_ENDPOINT`` lets mirrors and tests replace it)."""
    return (os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT).strip().rstrip("/")


class _VerifiedSession(requests.Session):
    """A session on which TLS verification cannot be turned off.

    ``verify`` may name a CA bundle (corporate proxies need one), but any
    falsy value — from code, ``session.verify = False`` or the environment —
    becomes True again. A model file from an unverified server could be
    anything, and the SHA-256 often comes from that same server.
    """

    @property
    def verify(self):
        return self.__dict__.get("_verify", True)

    @verify.setter
    def verify(self, value) -> None:
        self.__dict__["_verify"] = value if (isinstance(value, str) and value) else True

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if not (isinstance(settings.get("verify"), str) and settings["verify"]):
            settings["verify"] = True
        return settings

    def send(self, request, **kwargs):
        verify = kwargs.get("verify", self.verify)
        kwargs["verify"] = verify if (isinstance(verify, str) and verify) else True
        return super().send(request, **kwargs)


def make_session() -> requests.Session:
    """A new HTTP session for one download: verified TLS, our User-Agent, no adapter retries."""
    session = _VerifiedSession()
    session.headers["User-Agent"] = USER_AGENT
    session.max_redirects = MAX_REDIRECTS
    adapter = HTTPAdapter(max_retries=0)  # retries are the downloader's: it resumes from disk
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def hf_token() -> str | None:
    """The Hugging Face token: ``HF_TOKEN`` if set, else the one saved in the OS keyring.

    A missing or broken keyring backend (headless Linux without a secret
    service, a locked store) means "no token", never a crash: public models
    download without one.
    """
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return env
    try:
        import keyring

        token = keyring.get_password(KEYRING_SERVICE, KEYRING_USER)
    except Exception as exc:  # noqa: BLE001 - any backend failure means "no token"
        log.info("no Hugging Face token from the keyring: %s", exc)
        return None
    return (token.strip() or None) if token else None


def set_hf_token(token: str | None) -> None:
    """Save *token* in the OS keyring, or forget it when *token* is None or empty."""
    try:
        import keyring
        from keyring.errors import PasswordDeleteError

        if token and token.strip():
            keyring.set_password(KEYRING_SERVICE, KEYRING_USER, token.strip())
        else:
            try:
                keyring.delete_password(KEYRING_SERVICE, KEYRING_USER)
            except PasswordDeleteError:
                pass  # nothing saved: already forgotten
    except Exception as exc:  # noqa: BLE001 - report every backend failure the same way
        raise EngineError(
            ErrorKind.UNAVAILABLE,
            f"Could not save the Hugging Face token: the system keyring is not available ({exc}). "
            f"You can set the {TOKEN_ENV} environment variable instead.",
        ) from exc


def token_for(url: str) -> str | None:
    """The token to send with *url*: only to the Hub itself, never to other hosts."""
    host = urlsplit(url).hostname
    if host and host == urlsplit(hub_endpoint()).hostname:
        return hf_token()
    return None


def cut_connection(response: requests.Response | None) -> None:
    """Shut a streaming response's socket from another thread: a read blocked on it returns now.

    The plain socket is shut, even under TLS, so the TLS object is left
    alone for the reading thread; timeouts alone would keep a pause
    waiting for a stalled server.
    """
    sock = getattr(getattr(getattr(response, "raw", None), "connection", None), "sock", None)
    if sock is not None:
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass


def sha256_from_etag(etag: str | None) -> str | None:
    """The SHA-256 an ETag holds, if it holds one (the Hub's do for LFS files)."""
    value = (etag or "").strip().removeprefix("W/").strip('"').lower()
    return value if _SHA256.match(value) else None

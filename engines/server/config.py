"""What the server binds to and whom it answers: the safe defaults in one place.

The peers' advisories are the checklist (see /work/shared/GUIDE.md §9):
Jan switched its trusted-hosts check off when bound to 0.0.0.0 and was
reached by DNS rebinding; Ollama had no auth and the same rebinding CVE;
GPT4All sent wildcard CORS. So here:

* the default bind is loopback, and binding beyond it needs the token;
* the ``Host`` header is checked against :func:`allowed_host_names`
  always, whatever the bind address: a web page that rebinds its own
  name to 127.0.0.1 still sends that name, and is refused;
* CORS is off until exact origins are named, and ``*`` is refused;
* bodies, headers and slow clients are bounded (:class:`Limits`).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field

from engines.errors import EngineError, ErrorKind

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# How to allow a refused web page's origin, in the words of the front end that started the server; {origin}
# stands for the refused origin. The CLI's names its flag; the GUI's Server page passes its own setting's words.
CLI_ORIGIN_HINT = "start the server with --cors-origin {origin} to allow them"
# How to reach the server under another name than it answers to, likewise in the front end's words.
CLI_HOST_HINT = "start it with --allow-host NAME to add one"


@dataclass(frozen=True)
class Limits:
    """Bounds on what one client may make the server hold, and for how long."""

    max_body_bytes: int = 8 * 1024 * 1024  # a long chat fits many times over; a runaway upload does not
    header_timeout_s: float = 10.0  # a connection must finish its request headers within this (slowloris)
    body_timeout_s: float = 30.0  # ... and each part of its body within this after the previous one
    keep_alive_s: int = 5  # an idle kept-alive connection is closed after this
    max_header_bytes: int = 16 * 1024  # h11's cap on an incomplete request head
    max_connections: int = 1000  # beyond this uvicorn answers 503 at once


@dataclass(frozen=True)
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0: any free port (tests); ApiServer.url says which
    token: str | None = None  # None only on loopback (``--no-token``)
    extra_hosts: tuple[str, ...] = ()  # Host names allowed beyond the defaults (a LAN name for the machine)
    cors_origins: tuple[str, ...] = ()  # exact origins, e.g. "http://localhost:3000"
    origin_hint: str = CLI_ORIGIN_HINT  # how a refused origin is allowed, told in the refusal ({origin}: it)
    host_hint: str = CLI_HOST_HINT  # what a client refused for its Host header can do, told in the refusal
    limits: Limits = field(default_factory=Limits)

    def validate(self) -> None:
        """Raise EngineError(BAD_INPUT) for an unsafe or malformed configuration, in words."""
        if not 0 <= self.port <= 65535:
            raise EngineError(ErrorKind.BAD_INPUT, f"the port must be between 1 and 65535, not {self.port}")
        if self.token is None and not is_loopback(self.host):
            raise EngineError(ErrorKind.BAD_INPUT, f"binding to {self.host} reaches beyond this machine, so the "
                              "API token is required there; drop --no-token")
        if self.token is not None and len(self.token) < 8:
            raise EngineError(ErrorKind.BAD_INPUT, "the API token must be at least 8 characters long")
        for origin in self.cors_origins:
            problem = cors_origin_problem(origin)
            if problem:
                raise EngineError(ErrorKind.BAD_INPUT, problem)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address or name) stays on this machine."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def network_warning(host: str) -> str:
    """What ``atelier serve`` prints and the Server page shows when the bind reaches beyond this machine."""
    return (f"listening on {host}: every machine that can reach this one can use the API with the token; "
            "keep the token secret, and prefer 127.0.0.1 unless you need the network")


def is_wildcard(host: str) -> bool:
    return host.strip("[]") in ("0.0.0.0", "::", "")


def allowed_host_names(bind_host: str, extra: tuple[str, ...] = ()) -> frozenset[str]:
    """The names a request's ``Host`` header may carry (without port), lower-case.

    Always the loopback names. Bound to one address: that address too. Bound
    to every address (0.0.0.0 or ::): every address of this machine's
    interfaces and its host name, which is what a client on the network
    types. A DNS name the user gives the machine is added with ``extra``.
    """
    names = set(LOOPBACK_NAMES)
    bind = bind_host.strip("[]").lower()
    if is_wildcard(bind):
        names |= _interface_addresses()
        hostname = socket.gethostname().lower()
        names |= {hostname, f"{hostname}.local"}
    else:
        names.add(bind)
    names |= {name.strip("[]").lower().rstrip(".") for name in extra if name.strip()}
    return frozenset(names)


def host_header_name(value: str) -> str:
    """The host part of a ``Host`` header: ``[::1]:8080`` -> ``::1``, ``Example.org.:80`` -> ``example.org``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def cors_origin_problem(origin: str) -> str | None:
    """Why ``origin`` cannot be allowed, or None: an exact ``scheme://host[:port]``, never a wildcard."""
    if "*" in origin:
        return ("a wildcard CORS origin would let any web page use the API; name each origin exactly, "
                "e.g. --cors-origin http://localhost:3000")
    scheme, sep, rest = origin.partition("://")
    if not sep or scheme not in ("http", "https") or not rest or "/" in rest:
        return f"'{origin}' is not an origin; write it as scheme://host[:port], e.g. http://localhost:3000"
    return None


def _interface_addresses() -> set[str]:
    try:
        import psutil

        return {address.address.split("%", 1)[0].lower()
                for addresses in psutil.net_if_addrs().values() for address in addresses
                if address.family in (socket.AF_INET, socket.AF_INET6)}
    except Exception:  # no psutil data on this platform: the loopback names and the host name still work
        return set()

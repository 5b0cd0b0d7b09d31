"""One quick check that a server can be reached at all, before a slow library call finds out the hard way.

Offline, huggingface_hub retries a failed name lookup five times with
back-off, so a Hub search spins for about 24 seconds before it fails. One
lookup of the server's name, then one TCP connection, each with a short
timeout, tell "this computer is offline" apart from "the server is slow"
in a second or two, and the caller can say so in one sentence.

The check is skipped (the real request decides) when a proxy is configured
for the URL: then the proxy resolves the name, not this machine, and a
direct connection may be blocked on purpose. An address that needs no
lookup (127.0.0.1 in tests) is only connected to.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import urllib.request
from urllib.parse import urlsplit

from engines.errors import EngineError, ErrorKind

LOOKUP_TIMEOUT_S = 3.0
CONNECT_TIMEOUT_S = 3.0


class Unreachable(EngineError):
    """The server cannot be reached from here; the message says why, in one sentence."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorKind.NETWORK, message)

    def __reduce__(self):  # one argument, unlike EngineError
        return (type(self), (self.message,))


def check_reachable(url: str, what: str = "Hugging Face") -> None:
    """Raise :class:`Unreachable` quickly when *url*'s server cannot be reached; return when it may be."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host or _proxied(url):
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = [(host, port)] if _is_address(host) else _lookup(host, port)
    if addresses is None:
        raise Unreachable(f"Could not reach {what}: the name {host} could not be looked up. "
                          "Check that this computer is connected to the internet.")
    problems = [_connect(address) for address in addresses[:2]]
    if all(problems):
        where = host if parts.port is None else f"{host}:{port}"
        raise Unreachable(f"Could not reach {what}: {where} {problems[0]}. "
                          "Check your internet connection, or a firewall that may block it.")


def _proxied(url: str) -> bool:
    proxies = urllib.request.getproxies()
    scheme = urlsplit(url).scheme
    if not proxies.get(scheme) and not proxies.get("all"):
        return False
    return not urllib.request.proxy_bypass(urlsplit(url).hostname or "")


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _lookup(host: str, port: int) -> list[tuple] | None:
    """The server's socket addresses, or None when the lookup fails or takes longer than LOOKUP_TIMEOUT_S.

    ``getaddrinfo`` has no timeout of its own and can block for many seconds
    when no DNS server answers, so it runs on a daemon thread that is simply
    left behind if it is too slow.
    """
    found: list = []
    done = threading.Event()

    def lookup() -> None:
        try:
            found.extend(info[4] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError):
            pass
        finally:
            done.set()

    threading.Thread(target=lookup, name="reachability-lookup", daemon=True).start()
    if not done.wait(LOOKUP_TIMEOUT_S) or not found:
        return None
    return found


def _connect(address: tuple) -> str | None:
    """None when a TCP connection to *address* opens, else what went wrong, in a few words."""
    family = socket.AF_INET6 if ":" in str(address[0]) else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(CONNECT_TIMEOUT_S)
            sock.connect(address[:2] if family == socket.AF_INET else address)
    except ConnectionRefusedError:
        return "refused the connection"
    except TimeoutError:
        return "did not answer"
    except OSError as exc:
        return f"could not be reached ({exc.strerror or exc})"
    return None

"""Secret environment values of tool servers (API tokens): kept in the system keyring, never in a file.

``mcp-servers.json`` records only the *names* of the variables that are
secrets (``secret_env``); their values are stored in the keyring under
``mcp:SERVER:VAR`` (the service Atelier's other keys use) and handed to
the server's process when it starts. A machine without a keyring is told
so in words, and nothing is saved.
"""

from __future__ import annotations

import logging
import re

from engines.errors import EngineError, ErrorKind
from engines.remote.keys import KEYRING_SERVICE

log = logging.getLogger(__name__)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_env_name(var: str) -> str:
    if not _ENV_NAME.match(var or ""):
        raise EngineError(ErrorKind.BAD_INPUT, f"'{var}' cannot name an environment variable: use letters, digits "
                          "and '_', not starting with a digit (e.g. GITHUB_TOKEN).")
    return var


def _user(server: str, var: str) -> str:
    return f"mcp:{server}:{var}"


def save_secrets(server: str, values: dict[str, str]) -> None:
    """Keep each value in the keyring; EngineError UNAVAILABLE in words when there is no usable keyring."""
    for var, value in values.items():
        try:
            import keyring

            keyring.set_password(KEYRING_SERVICE, _user(server, var), value)
        except Exception as exc:  # noqa: BLE001 - no backend (NoKeyringError), a locked one, no module
            log.info("the keyring refused %s for tool server %s: %s", var, server, exc)
            raise EngineError(ErrorKind.UNAVAILABLE, f"The system keyring cannot keep the value of {var} for the tool "
                              f"server '{server}' ({type(exc).__name__}), so the server was not added. Unlock or "
                              "install a keyring (a Secret Service on Linux), then try again.") from None


def read_secrets(server: str, names: tuple[str, ...]) -> dict[str, str]:
    """The values to start the server with; EngineError in words when one is not there any more."""
    values = {}
    for var in names:
        try:
            import keyring

            value = keyring.get_password(KEYRING_SERVICE, _user(server, var))
        except Exception as exc:  # noqa: BLE001
            log.info("the keyring could not give %s for %s: %s", var, server, exc)
            value = None
        if not value:
            raise EngineError(ErrorKind.UNAVAILABLE, f"The value of {var} for the tool server '{server}' is not in the "
                              "system keyring (it may be locked). Unlock it, or add the server again.")
        values[var] = value
    return values


def forget_secrets(server: str, names: tuple[str, ...]) -> None:
    for var in names:
        try:
            import keyring

            keyring.delete_password(KEYRING_SERVICE, _user(server, var))
        except Exception as exc:  # noqa: BLE001 - nothing there, or no keyring: nothing to forget
            log.info("no value of %s for %s removed from the keyring: %s", var, server, exc)

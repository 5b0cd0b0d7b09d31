"""Where a remote server's API key is kept: the system keyring, or an environment variable.

Never in a JSON file: ``remotes.json`` records only where the key is
(``api_key_env`` names a variable, ``key_in_keyring`` says "ask the
keyring"), and the key itself is read when a request is made. A machine
without a keyring (a headless Linux without a secret service) is told so
in plain words, with the way out: ``--api-key-env``.
"""

from __future__ import annotations

import logging
import os
import re

from engines.errors import EngineError, ErrorKind

log = logging.getLogger(__name__)

KEYRING_SERVICE = "atelier"  # the service the Hugging Face token uses too; the user names differ
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def keyring_user(name: str) -> str:
    return f"remote:{name}"


def check_env_name(var: str) -> str:
    """``var`` if it can name an environment variable; EngineError BAD_INPUT otherwise."""
    if not _ENV_NAME.match(var or ""):
        raise EngineError(ErrorKind.BAD_INPUT, f"'{var}' cannot name an environment variable: use letters, digits "
                          "and '_', not starting with a digit (e.g. BOX_KEY).")
    return var


def no_keyring_message(name: str, reason: str | None = None) -> str:
    why = f" ({reason})" if reason else ""
    return (f"No system keyring is available here{why}, so the key for '{name}' was not saved. Keep it in an "
            f"environment variable instead and add the server with --api-key-env VAR (e.g. --api-key-env "
            f"{name.upper().replace('-', '_').replace('.', '_')}_KEY).")


def save_key(name: str, key: str) -> None:
    """Keep ``key`` for the server ``name`` in the system keyring; EngineError UNAVAILABLE in words if there is none."""
    try:
        import keyring
        from keyring.errors import NoKeyringError

        keyring.set_password(KEYRING_SERVICE, keyring_user(name), key)
    except ImportError:
        raise EngineError(ErrorKind.UNAVAILABLE, no_keyring_message(name)) from None
    except NoKeyringError:
        raise EngineError(ErrorKind.UNAVAILABLE, no_keyring_message(name)) from None
    except Exception as exc:  # noqa: BLE001 - a locked or broken backend: the same way out
        log.info("the keyring refused the key for %s: %s", name, exc)
        raise EngineError(ErrorKind.UNAVAILABLE, f"The system keyring did not accept the key for '{name}' (it may be "
                          "locked), so it was not saved. Unlock it and try again, or use --api-key-env VAR.") from None


def forget_key(name: str) -> None:
    """Remove the key for ``name`` from the keyring; nothing there, or no keyring, is not an error."""
    try:
        import keyring

        keyring.delete_password(KEYRING_SERVICE, keyring_user(name))
    except Exception as exc:  # noqa: BLE001 - PasswordDeleteError, NoKeyringError, a locked store
        log.info("no key for %s removed from the keyring: %s", name, exc)


def read_key(name: str, api_key_env: str | None, key_in_keyring: bool) -> str | None:
    """The key to send to the server ``name`` now; None when it needs none. EngineError in words if it is missing."""
    if api_key_env:
        value = os.environ.get(api_key_env, "").strip()
        if not value:
            raise EngineError(ErrorKind.BAD_INPUT, f"The key for the remote server '{name}' comes from the environment "
                              f"variable {api_key_env}, which is not set here. Set it where Atelier starts from, then try again.")
        return value
    if not key_in_keyring:
        return None
    try:
        import keyring

        value = keyring.get_password(KEYRING_SERVICE, keyring_user(name))
    except Exception as exc:  # noqa: BLE001 - no backend, or a locked one
        log.info("the keyring could not give the key for %s: %s", name, exc)
        raise EngineError(ErrorKind.UNAVAILABLE, f"The key for the remote server '{name}' is in the system keyring, "
                          "which cannot be read now (it may be locked or gone). Unlock it, or add the server again "
                          "with --api-key-env VAR.") from None
    if not value:
        raise EngineError(ErrorKind.BAD_INPUT, f"The key for the remote server '{name}' is no longer in the system "
                          "keyring. Add the server again to give it.")
    return value

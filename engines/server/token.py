"""The API token: from the environment when set, else generated once and kept private.

``ATELIER_API_KEY`` (or another variable named with ``--api-key-env``)
wins, as ``--api-key`` does for llama-server and vLLM, so a deployment can
set its own. Otherwise the first start generates 32 random bytes
(URL-safe text) and stores them in the config folder, readable by the user
only (0600 from the moment the file exists), where the next start, the
GUI's Server page and ``atelier serve --show-token`` find the same one.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from engines.errors import EngineError, ErrorKind
from engines.storage import atomic_write_text, state_lock

TOKEN_ENV = "ATELIER_API_KEY"
TOKEN_FILE = "server-token"
MIN_TOKEN_LENGTH = 8


def token_file(config_dir: Path) -> Path:
    return Path(config_dir) / TOKEN_FILE


def api_token(config_dir: Path, env: str = TOKEN_ENV) -> tuple[str, str]:
    """The token and where it came from (``$ATELIER_API_KEY`` or the file's path); created on first use."""
    given = os.environ.get(env)
    if given is not None:
        given = given.strip()
        if len(given) < MIN_TOKEN_LENGTH or any(c.isspace() or not c.isprintable() for c in given):
            raise EngineError(ErrorKind.BAD_INPUT, f"${env} must be at least {MIN_TOKEN_LENGTH} printable "
                              "characters without spaces")
        return given, f"${env}"
    path = token_file(config_dir)
    with state_lock(path):  # two first starts at once agree on one token
        token = _read(path)
        if token is None:
            token = secrets.token_urlsafe(32)
            atomic_write_text(path, token + "\n", mode=0o600)
    return token, str(path)


def regenerate_token(config_dir: Path) -> str:
    """A new generated token replaces the stored one (the Server page's "Regenerate token").

    Clients holding the old one are refused once the server restarts with
    the new one. ``ATELIER_API_KEY``, when set, still wins over the file.
    """
    path = token_file(config_dir)
    with state_lock(path):
        token = secrets.token_urlsafe(32)
        atomic_write_text(path, token + "\n", mode=0o600)
    return token


def _read(path: Path) -> str | None:
    """The stored token, or None when there is none yet (or it is unusable and will be replaced)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise EngineError(ErrorKind.BAD_INPUT, f"cannot read the API token in {path}: "
                          f"{getattr(exc, 'strerror', None) or exc}; delete the file to make a new one") from None
    if len(text) < MIN_TOKEN_LENGTH or any(c.isspace() for c in text):
        return None
    try:
        if os.name == "posix" and path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)  # copied in from elsewhere with looser rights
    except OSError:
        pass
    return text

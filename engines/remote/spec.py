"""What names a model on a remote server, and how to reach it.

A :class:`RemoteSpec` is to engine "remote" what a ``TextLoadSpec`` is to
llama.cpp: hashable, so the scheduler can key a loaded model on it, and
free of secrets, so it can be logged, pickled or shown. The API key is
never in it: only where the key comes from (an environment variable's
name, or "the system keyring"), read when a request is made.
"""

from __future__ import annotations

from dataclasses import dataclass

ENGINE = "remote"  # the registry name the scheduler and ChatTurn use for these models
DEFAULT_READ_TIMEOUT_S = 120.0  # between two pieces of a reply; a CPU server reading a long prompt is slow
CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class RemoteSpec:
    """A model ``model`` on the remote server ``name`` at ``base_url`` (an OpenAI client's base URL)."""

    name: str
    base_url: str
    model: str
    api_key_env: str | None = None  # the key comes from this environment variable...
    key_in_keyring: bool = False  # ...or from the system keyring; neither: the server needs no key
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S

    @property
    def model_id(self) -> str:
        """How Atelier names the model everywhere: ``NAME/MODEL``."""
        return f"{self.name}/{self.model}"

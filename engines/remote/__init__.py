"""Engine "remote": models on another machine's OpenAI-compatible server (vLLM, llama-server, Ollama, Atelier).

When a model outgrows this computer, the user points Atelier at a bigger
one: ``atelier remote add box http://box:8000/v1`` (or "Add remote
server…" in Models). Its models then appear beside the local ones as
``box/MODEL``, and chat with them streams, stops, keeps its history and
shows its figures as a local model does.

- :mod:`.spec`: :class:`RemoteSpec`, what engine "remote" loads (no secret in it);
- :mod:`.servers`: ``remotes.json``, the servers added and what they listed;
- :mod:`.keys`: API keys, in the system keyring or an environment variable, never in a file;
- :mod:`.urls`: base URLs checked in words, and offline mode (loopback only);
- :mod:`.http`: the HTTP client (TLS always verified, bounded waits) and failures in one sentence;
- :mod:`.stream`: a streamed reply as engine events and a TextResult;
- :mod:`.host`: :class:`RemoteHost`, the engine host look-alike that runs it;
- :mod:`.listing`: the servers' models as ``NAME/MODEL`` for pickers and ``--model``;
- :mod:`.manage`: add, check, refresh and remove a server (both front ends);

Nothing here imports Qt; httpx2 is imported only when a server is asked.
"""

from engines.remote.host import RemoteHost
from engines.remote.listing import RemoteModel, find_remote_model, remote_models
from engines.remote.servers import RemoteServer, RemoteServers
from engines.remote.spec import ENGINE, RemoteSpec

__all__ = ["ENGINE", "RemoteHost", "RemoteModel", "RemoteServer", "RemoteServers", "RemoteSpec",
           "find_remote_model", "remote_models"]

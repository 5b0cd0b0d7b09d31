"""``atelier remote …``: the OpenAI-compatible servers Atelier may chat through.

``add NAME URL`` asks the server what it serves (``GET /models``) and
says what it found, or why it could not, in one line; only then is the
server recorded. Its key comes from ``--api-key-env VAR`` (read at each
request), or is kept in the system keyring: typed at a prompt when the
server asks for one and a terminal is there, or read from stdin with
``--api-key-stdin``. Models then run as ``NAME/MODEL`` everywhere a model
is named (``atelier chat --model box/qwen``).
"""

from __future__ import annotations

import sys
import time

from desktop.cli_contract import CliError
from desktop.cli_output import clean, print_json
from engines.errors import EngineError
from engines.workspace import open_workspace


def add_parser(sub) -> None:
    remote = sub.add_parser("remote", help="OpenAI-compatible servers to chat through (vLLM, llama-server, Ollama…)")
    verbs = remote.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser("add", help="check a server and add it; its models become NAME/MODEL")
    add.add_argument("name", help="a short name for the server, e.g. box")
    add.add_argument("url", help="the API's base URL, as an OpenAI client takes it, e.g. http://box:8000/v1")
    key = add.add_mutually_exclusive_group()
    key.add_argument("--api-key-env", metavar="VAR", help="read the key from this environment variable at each request")
    key.add_argument("--api-key-stdin", action="store_true",
                     help="read the key from stdin and keep it in the system keyring")
    add.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                     help="how long to wait for the server between two pieces of a reply (default: 120)")
    add.add_argument("--json", action="store_true")
    listing = verbs.add_parser("list", help="the servers added, and the models each listed when last asked")
    listing.add_argument("--json", action="store_true")
    rm = verbs.add_parser("remove", help="forget a server (and its key in the keyring)")
    rm.add_argument("name")


def run_remote(args) -> int:
    from engines.remote import RemoteServers

    workspace = open_workspace()  # sets offline mode from the settings
    servers = RemoteServers.beside(workspace.models.file)
    try:
        return {"add": _add, "list": _list, "remove": _remove}[args.verb](servers, args)
    except EngineError as exc:
        raise CliError.from_engine(exc) from None


def _add(servers, args) -> int:
    from engines.remote.http import KeyRefused
    from engines.remote.manage import add_server
    from engines.remote.spec import DEFAULT_READ_TIMEOUT_S

    timeout = args.timeout if args.timeout is not None else DEFAULT_READ_TIMEOUT_S
    if timeout <= 0:
        raise CliError("--timeout must be more than 0 seconds")
    key = _key_from_stdin() if args.api_key_stdin else None
    try:
        added = add_server(servers, args.name, args.url, api_key_env=args.api_key_env, key=key, timeout_s=timeout)
    except KeyRefused:
        if args.api_key_env or key or not _interactive():
            raise
        key = _ask_key(args.name)  # the server wants a key and none was given: a person is there to type it
        added = add_server(servers, args.name, args.url, key=key, timeout_s=timeout)
    if args.json:
        print_json(_server_dict(added.server))
    else:
        print(clean(added.summary()))
    return 0


def _list(servers, args) -> int:
    from engines.network import network_allowed
    from engines.remote.urls import is_loopback

    found = servers.all()
    if servers.problem:
        print(f"warning: {clean(servers.problem)}", file=sys.stderr)
    if args.json:
        print_json({"servers": [_server_dict(s) for s in found]})
        return 0
    if not found:
        print("No remote servers. Add one with 'atelier remote add NAME URL', e.g. "
              "atelier remote add box http://box:8000/v1")
        return 0
    online = network_allowed()
    for server in found:
        notes = [server.key_words]
        if server.checked_at:
            notes.append(f"models as of {time.strftime('%Y-%m-%d %H:%M', time.localtime(server.checked_at))}")
        if not online and not is_loopback(server.base_url):
            notes.append("not used in offline mode")
        print(f"{clean(server.name)}  {clean(server.base_url)}  ({'; '.join(notes)})")
        for model in server.models:
            print(f"  {clean(server.name)}/{clean(model)}")
        if not server.models:
            print("  (it listed no models)")
    return 0


def _remove(servers, args) -> int:
    from engines.remote.manage import remove_server

    removed = remove_server(servers, args.name)
    key = "; its key was removed from the system keyring" if removed.key_in_keyring else ""
    print(f"Removed '{clean(removed.name)}' ({clean(removed.base_url)}){key}.")
    return 0


def _server_dict(server) -> dict:
    return {"name": server.name, "base_url": server.base_url, "api_key_env": server.api_key_env,
            "key_in_keyring": server.key_in_keyring, "read_timeout_s": server.read_timeout_s,
            "models": [f"{server.name}/{m}" for m in server.models], "checked_at": server.checked_at or None}


def _interactive() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _ask_key(name: str) -> str:
    import getpass

    key = getpass.getpass(f"The server '{name}' needs an API key (kept in the system keyring): ").strip()
    if not key:
        raise CliError("no key given; nothing was added")
    return key


def _key_from_stdin() -> str:
    """The first line on stdin: ``pass show box | atelier remote add box URL --api-key-stdin``."""
    if sys.stdin is None:
        raise CliError("--api-key-stdin needs the key on stdin")
    data = sys.stdin.buffer.read(64 * 1024) if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    try:
        key = data.decode("utf-8-sig").strip().splitlines()[0].strip() if data.strip() else ""
    except UnicodeDecodeError:
        raise CliError("the key on stdin is not UTF-8 text") from None
    if not key:
        raise CliError("--api-key-stdin was given but stdin holds no key")
    return key


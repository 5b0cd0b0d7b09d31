""""How to connect": the ``openai`` client and curl, filled with the real URL and a model that is installed.

The token is masked unless the user asked to see it, so the page can be
shown or screenshotted without leaking it; the Copy buttons copy the real
one, which is what makes a pasted snippet work.
"""

from __future__ import annotations

import json
import shlex

MASK = "•" * 12
MAX_TOKENS = 256  # the Python example's cap on the reply (curl's is shorter: its answer is read as JSON)


def masked(token: str | None, show: bool) -> str:
    """The token as the page shows it: itself when shown, else a fixed-width mask (its length stays private)."""
    if not token:
        return ""
    return token if show else MASK


def python_snippet(url: str, token: str, model: str) -> str:
    """A complete, runnable script: a streamed chat with the official ``openai`` client (``pip install openai``),
    with a cap on the reply's length, printed as it comes (a chunk without choices, such as a usage-only one,
    is skipped)."""
    return (
        "from openai import OpenAI\n"
        "\n"
        f"client = OpenAI(base_url={_text(url)}, api_key={_text(token)})\n"
        "stream = client.chat.completions.create(\n"
        f"    model={_text(model)},\n"
        '    messages=[{"role": "user", "content": "Name three colors."}],\n'
        f"    max_tokens={MAX_TOKENS},\n"
        "    stream=True,\n"
        ")\n"
        "for chunk in stream:\n"
        "    if chunk.choices:\n"
        '        print(chunk.choices[0].delta.content or "", end="", flush=True)\n'
        "print()\n"
    )


def curl_snippet(url: str, token: str, model: str) -> str:
    """The same request from a shell, each argument quoted for sh (a model id or a token with a quote in it)."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 32})
    return (
        f"curl {shlex.quote(url + '/chat/completions')} \\\n"
        f"  -H {shlex.quote('Authorization: Bearer ' + token)} \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        f"  -d {shlex.quote(body)}\n"
    )


def _text(value: str) -> str:
    """A Python string literal (JSON's double-quoted form is one), non-ASCII left as it is (the mask's dots)."""
    return json.dumps(value, ensure_ascii=False)

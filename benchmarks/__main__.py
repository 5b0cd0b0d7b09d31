"""Run every benchmark and print (and save) the figures."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks import bench_chat_decode, bench_download, bench_fit, bench_prompt_cache, bench_serve, bench_startup


def main() -> int:
    out = Path(__file__).resolve().parent / "results" / "latest.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    only = set(sys.argv[1:])
    for name, module in (("startup", bench_startup), ("chat_decode", bench_chat_decode),
                         ("prompt_cache", bench_prompt_cache), ("serve", bench_serve), ("fit", bench_fit), ("download", bench_download)):
        if only and name not in only:
            continue
        print(f"== {name}", flush=True)
        results[name] = module.run()
        print(json.dumps(results[name], indent=2), flush=True)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

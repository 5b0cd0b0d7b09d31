"""Time the app from process start until its window is shown (under an X server).

    python3 measure_startup.py --runs 5 --screenshot dist/screenshot.png -- dist/atelier/atelier

The app prints "window shown after X s" when ATELIER_REPORT_STARTUP=1 (its own
clock starts when desktop.app is imported, i.e. after the bootloader and
Python have started); here the clock starts just before the process is
created, so the figure includes unpacking nothing (one-folder), the
bootloader, Python's start-up and the imports. ATELIER_QUIT_AFTER_SHOW makes
the app close itself. The environment is taken as given: the caller passes a
clean one (env -i ...) with DISPLAY set.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def one_run(command: list[str], stay_ms: int, screenshot: str | None, timeout: float) -> dict:
    env = dict(os.environ, ATELIER_REPORT_STARTUP="1", ATELIER_QUIT_AFTER_SHOW=str(stay_ms))
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            encoding="utf-8", errors="replace")
    shown = None
    app_figure = None
    wm_classes: list[str] = []
    output = []
    deadline = started + timeout
    assert proc.stdout is not None
    for line in proc.stdout:
        output.append(line.rstrip("\n"))
        if "window shown after" in line and shown is None:
            shown = time.perf_counter() - started
            try:
                app_figure = float(line.split("window shown after", 1)[1].split()[0])
            except (IndexError, ValueError):
                pass
            if screenshot:
                time.sleep(min(1.5, stay_ms / 2000))  # let it paint
                subprocess.run(["import", "-window", "root", screenshot], check=False, timeout=30)
                wm_classes = _wm_classes()
        if time.perf_counter() > deadline:
            break
    try:
        code = proc.wait(timeout=max(1.0, deadline - time.perf_counter()))
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    return {"shown_s": shown, "app_reported_s": app_figure, "exit_code": code, "output": output, "wm_classes": wm_classes}


def _wm_classes() -> list[str]:
    """The WM_CLASS pairs (instance/class) of the windows on screen: StartupWMClass must match."""
    import re

    try:
        tree = subprocess.run(["xwininfo", "-root", "-tree"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted({f"{instance}/{klass}" for instance, klass in re.findall(r'\("([^"]*)" "([^"]*)"\)', tree)})


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--stay-ms", type=int, default=300, help="how long each run keeps its window open")
    parser.add_argument("--screenshot", help="PNG of the screen during the last run (ImageMagick import)")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    runs = []
    for index in range(args.runs):
        last = index == args.runs - 1
        run = one_run(command, 3000 if (last and args.screenshot) else args.stay_ms,
                      args.screenshot if last else None, args.timeout)
        runs.append(run)
        if run["shown_s"] is None or run["exit_code"] != 0:
            print("\n".join(run["output"][-30:]), file=sys.stderr)
            print(json.dumps({"ok": False, "run": index + 1, "exit_code": run["exit_code"]}))
            return 1
    shown = [run["shown_s"] for run in runs]
    reported = [run["app_reported_s"] for run in runs if run["app_reported_s"] is not None]
    print(json.dumps({
        "ok": True,
        "runs": len(runs),
        "median_s": round(statistics.median(shown), 3),
        "min_s": round(min(shown), 3),
        "max_s": round(max(shown), 3),
        "all_s": [round(s, 3) for s in shown],
        "app_reported_median_s": round(statistics.median(reported), 3) if reported else None,
        "wm_classes": runs[-1]["wm_classes"],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())

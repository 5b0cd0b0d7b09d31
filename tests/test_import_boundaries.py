"""The layer split: engines/ never imports Qt; the GUI starts without heavy engines."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "onnxruntime", "llama_cpp", "transformers")


def imported_modules(path: Path, top_level_only: bool) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_engines_never_import_qt_or_desktop():
    offenders = []
    for path in (ROOT / "engines").rglob("*.py"):
        for line, module in imported_modules(path, top_level_only=False):
            if module.split(".")[0] in ("PySide6", "PyQt5", "PyQt6", "desktop"):
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not offenders, offenders


def test_desktop_has_no_heavy_import_at_module_level():
    offenders = []
    for path in (ROOT / "desktop").rglob("*.py"):
        for line, module in imported_modules(path, top_level_only=True):
            if module.split(".")[0] in HEAVY:
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not offenders, offenders


def test_starting_the_gui_imports_no_engine_library(tmp_path):
    code = (
        "import sys, json\n"
        "from PySide6.QtWidgets import QApplication\n"
        "app = QApplication([])\n"
        "from desktop.main_window import MainWindow\n"
        "from engines.workspace import open_workspace\n"
        "w = MainWindow(open_workspace()); w.show(); app.processEvents()\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
        "w.close()\n"
    )
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", ATELIER_HOME=str(tmp_path))
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1]) == []

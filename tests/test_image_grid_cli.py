"""`atelier image --vary`: an experiment grid end to end on the tiny real pipeline, and its bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.fixtures.tiny_sd import tiny_sd  # noqa: F401  (session fixture)

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("diffusers")
pytestmark = pytest.mark.slow  # the command runs the real tiny pipeline


def atelier(*args):
    return subprocess.run([sys.executable, "-m", "desktop", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_a_2x2_grid_keeps_four_cells_with_their_parameters_and_the_labelled_grid(tiny_sd, tmp_path, atelier_home):
    from engines.diffusion.png_meta import read_png_parameters
    from engines.diffusion.types import ImageRequest
    from engines.images.gallery import Gallery
    from engines.images.grid import plan_grid
    from engines.images.grid_draw import layout

    out = tmp_path / "grid.png"
    run = atelier("image", "--model", str(tiny_sd), "--prompt", "a red lighthouse", "--width", "64", "--height", "64",
                  "--steps", "2", "--seed", "9", "--vary", "steps=1,2", "--vary", "seed=5,6", "--out", str(out),
                  "--json")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert (data["columns"], data["rows"], data["axes"], data["cancelled"]) == (2, 2, ["steps=1,2", "seed=5,6"], False)
    assert [(c["cell"], c["labels"], c["seed"], c["credentials"]) for c in data["cells"]] == [
        (1, ["Steps: 1", "Seed: 5"], 5, True), (2, ["Steps: 2", "Seed: 5"], 5, True),
        (3, ["Steps: 1", "Seed: 6"], 6, True), (4, ["Steps: 2", "Seed: 6"], 6, True)]
    assert data["grid"]["path"] == str(out) and data["grid"]["credentials"] is True

    # each cell is a normal gallery image with its own parameters
    cells = [read_png_parameters(cell["path"]) for cell in data["cells"]]
    assert [(m["steps"], m["seed"], m["prompt"]) for m in cells] == [
        (1, 5, "a red lighthouse"), (2, 5, "a red lighthouse"), (1, 6, "a red lighthouse"), (2, 6, "a red lighthouse")]
    gallery = Gallery(atelier_home / "data" / "atelier.sqlite3", atelier_home / "data" / "images")
    try:
        entries = {entry.path: entry for entry in gallery.list()}
    finally:
        gallery.close()
    assert len(entries) == 5  # four cells and the grid
    assert [(entries[c["path"]].steps, entries[c["path"]].seed) for c in data["cells"]] == [(1, 5), (2, 5), (1, 6),
                                                                                            (2, 6)]

    # the grid: the right size, every cell's pixels in its place, and parameters saying what varied
    plan = plan_grid(ImageRequest(prompt="a red lighthouse", width=64, height=64, steps=2, seed=9),
                     ["steps=1,2", "seed=5,6"])
    grid_layout = layout(plan)
    grid = Image.open(out).convert("RGB")
    assert grid.size == grid_layout.size == (data["grid"]["width"], data["grid"]["height"])
    for cell, item in zip(plan.cells, data["cells"]):
        pixels = Image.open(item["path"]).convert("RGB")
        assert grid.crop(grid_layout.cell_box(cell.column, cell.row)).tobytes() == pixels.tobytes(), cell.caption
    meta = read_png_parameters(out)
    assert meta["parameters"].endswith(
        'Script: X/Y plot, X Type: Steps, X Values: "1,2", Y Type: Seed, Y Values: "5,6"')
    grid_entry = [e for e in entries.values() if e.request.get("grid")][0]
    assert grid_entry.request["grid"]["cell_paths"] == [c["path"] for c in data["cells"]]
    assert (grid_entry.width, grid_entry.height) == grid_layout.size


@pytest.mark.parametrize("vary, message", [
    (["colour=red,blue"], "error: --vary: unknown setting 'colour' to vary; choose one of seed, steps, guidance, "
                          "sampler, lora (or lora:NAME) and prompt (Prompt S/R)"),
    (["steps=1", "seed=1", "guidance=2"],
     "error: --vary: at most 2 settings can vary in one grid (one across, one down); got 3"),
    (["sampler=Euler,LCM"], "error: --vary: sampler=LCM: this model does not offer the sampler LCM (LCM is for LCM and "
                            "Turbo models); choose one of: Euler, Euler a, DPM++ 2M Karras, DDIM"),
    (["guidance=9-3 (+1.5)"], "error: --vary: guidance=9-3 (+1.5): the step +1.5 goes away from 3; to count down from "
                              "9 to 3 give a negative step (e.g. 9-3 (-1.5))"),
])
def test_bad_axes_exit_2_with_one_error_line_before_any_engine_starts(vary, message, tiny_sd, atelier_home):
    args = [a for text in vary for a in ("--vary", text)]
    run = atelier("image", "--model", str(tiny_sd), "--prompt", "x", "--width", "64", "--height", "64", *args)
    assert (run.returncode, run.stderr.strip().splitlines()) == (2, [message])
    assert not (atelier_home / "logs" / "engine-host-cli-image.log").exists()
    assert not (atelier_home / "data" / "images").exists()


def test_ctrl_c_keeps_the_cells_made_and_draws_the_partial_grid(tiny_sd, tmp_path, atelier_home):
    import os
    import signal

    from engines.diffusion.png_meta import read_png_parameters

    out = tmp_path / "seeds.png"
    proc = subprocess.Popen(
        [sys.executable, "-m", "desktop", "image", "--model", str(tiny_sd), "--prompt", "a lighthouse", "--steps", "30",
         "--width", "64", "--height", "64", "--vary", "seed=1-8", "--out", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    first = proc.stdout.readline()  # printed the moment the first cell is kept: the event the cancel waits on
    assert first.endswith("  (cell 1 of 8: Seed: 1; seed 1)\n"), proc.stderr.read()
    os.kill(proc.pid, signal.SIGINT)
    rest, stderr = proc.communicate(timeout=600)
    lines = [first] + rest.splitlines(keepends=True)
    assert proc.returncode == 130, stderr
    made = len(lines) - 1
    assert 1 <= made < 8, lines  # Ctrl-C came long before the last of 8 × 30 steps
    assert lines[-1] == f"{out}  (grid 8×1, {made} of 8 cells)\n"
    them = "it" if made == 1 else "them"
    assert stderr.strip().splitlines()[-1].startswith(
        f"error: interrupted after {made} of 8 cells (the grid shows {them}, the rest marked 'not made'); "
        f"kept {made + 1} images: ")
    assert read_png_parameters(out)["parameters"].endswith(f"Grid cells made: {made} of 8")

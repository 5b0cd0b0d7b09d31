"""`atelier image` and `atelier convert onnx` as a user runs them, on a tiny real pipeline."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.tiny_sd import tiny_sd, tiny_sd_onnx  # noqa: F401  (session fixtures)

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("diffusers")
pytestmark = pytest.mark.slow  # every test runs the command on the real tiny pipeline (built with torch)


def atelier(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "desktop", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


# The PyTorch backend's run of this check is one of the runs tests/test_cli_image_credentials.py makes anyway.
@pytest.mark.parametrize("backend", ["onnx"])
def test_image_writes_a_png_with_its_parameters(backend, tiny_sd, tiny_sd_onnx, tmp_path):
    from engines.diffusion.png_meta import read_png_parameters

    model = tiny_sd if backend == "torch" else tiny_sd_onnx
    out = tmp_path / f"{backend}.png"
    run = atelier("image", "--model", str(model), "--prompt", "a red lighthouse", "--negative", "blurry",
                  "--steps", "3", "--width", "64", "--height", "64", "--seed", "42", "--backend", backend,
                  "--out", str(out), "--json")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["backend"] == backend and data["images"][0]["seed"] == 42
    meta = read_png_parameters(out)
    assert "a red lighthouse" in json.dumps(meta) and "42" in json.dumps(meta)


# 'atelier convert onnx' end to end (the command writes a folder the ONNX backend loads) runs on the SDXL model in
# tests/test_diffusion_sdxl_onnx.py, with these checks; SD 1.x's conversion is the converter's own (the tiny_sd_onnx
# fixture above, loaded here by 'atelier image --backend onnx').


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "/nonexistent/folder"], "The model file or folder does not exist: /nonexistent/folder."),
        (["--model", "{tiny}", "--width", "100"], "width must be a multiple of 8 (got 100; try 96)"),
        (["--model", "{tiny}", "--seed", "99999999999"], "seed must be between 0 and 4294967295 (got 99999999999)"),
        (["--model", "{tiny}", "--init-image", "{missing}"], "The init image {missing} does not exist."),
        (["--model", "{tiny}", "--init-image", "{notimage}"],
         "The init image {notimage} could not be read (UnidentifiedImageError: "),
        (["--model", "{tiny}", "--init-image", "{emptyfile}"],
         "The init image {emptyfile} is empty (0 bytes); choose an image file."),
        (["--model", "{tiny}", "--init-image", "{fifo}"], "The init image {fifo} is a FIFO (named pipe), not an image file."),
        (["--model", "{tiny}", "--init-image", "/dev/zero"],
         "The init image /dev/zero is a character device, not an image file."),
        (["--model", "{tiny}", "--init-image", "{bomb}"],
         "The init image {bomb} is 12000×12000 pixels (144 megapixels); Atelier takes at most 64 megapixels. "
         "Scale it down first."),
        (["--model", "{empty}"], "The model folder {empty} is empty."),
        (["--model", "{tiny}", "--out", "{album}"], "--out {album} is a folder; name a .png file inside it"),
        (["--model", "{tiny}", "--out", "{tmp}/picture.jpg"], "--out must name a .png file (got {tmp}/picture.jpg)"),
        (["--model", "{tiny}", "--out", "/proc/self/x.png"], "cannot write to the folder /proc/self of --out: "),
        (["--model", "{tiny}", "--out", "{notimage}/x.png"],
         "--out {notimage}/x.png is inside {notimage}, which is a file, not a folder"),
    ],
)
def test_bad_input_exits_2_with_one_error_line_before_any_engine_starts(args, message, tiny_sd, tmp_path,
                                                                          atelier_home):
    from tests.fixtures.bad_images import header_only_png

    empty = tmp_path / "empty"
    empty.mkdir()
    album = tmp_path / "album.png"
    album.mkdir()
    notimage = tmp_path / "photo.png"
    notimage.write_bytes(b"definitely not a png")
    emptyfile = tmp_path / "e.png"
    emptyfile.write_bytes(b"")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(header_only_png(12000, 12000))
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    values = dict(tiny=tiny_sd, missing=tmp_path / "nope.png", notimage=notimage, empty=empty, emptyfile=emptyfile,
                  bomb=bomb, fifo=fifo, tmp=tmp_path, album=album)
    before_engine = "{tiny}" in args
    args = [a.format(**values) for a in args]
    run = atelier("image", "--prompt", "x", "--steps", "2", "--width", "64", "--height", "64", *args)
    assert run.returncode == 2, (run.returncode, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: " + message.format(**values)), run.stderr
    if before_engine:  # a bad model is found by the engine; everything else is refused before it starts
        assert not (atelier_home / "logs" / "engine-host-cli-image.log").exists()


# ---- nothing made is lost ------------------------------------------------------------------------


def image_files(home: Path) -> list[Path]:
    return sorted((home / "data" / "images").rglob("*.png"))


def gallery_rows(home: Path) -> list:
    from engines.images.gallery import Gallery

    gallery = Gallery(home / "data" / "atelier.sqlite3", home / "data" / "images")
    try:
        return gallery.list()
    finally:
        gallery.close()


@pytest.mark.parametrize("who", ["the command", "its process group, as a terminal does"])
def test_ctrl_c_keeps_every_image_finished_before_it(who, tiny_sd, tmp_path, atelier_home):
    out = tmp_path / "shots" / "lighthouse.png"
    proc = subprocess.Popen(
        [sys.executable, "-m", "desktop", "image", "--model", str(tiny_sd), "--prompt", "a lighthouse", "--steps",
         "30", "--width", "64", "--height", "64", "--seed", "5", "--batch", "8", "--out", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    first = proc.stdout.readline()  # printed the moment the first image is written: that is the event we wait on
    assert first == f"{tmp_path / 'shots' / 'lighthouse-1.png'}  (seed 5)\n", proc.stderr.read()
    if who == "the command":
        os.kill(proc.pid, signal.SIGINT)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    rest, stderr = proc.communicate(timeout=300)
    kept = [first] + rest.splitlines(keepends=True)
    assert proc.returncode == 130, stderr
    assert 1 <= len(kept) < 8, kept  # Ctrl-C came long before the last of 8 × 30 steps
    paths = [tmp_path / "shots" / f"lighthouse-{i}.png" for i in range(1, len(kept) + 1)]
    assert kept == [f"{path}  (seed {5 + i})\n" for i, path in enumerate(paths)]
    assert stderr.strip().splitlines()[-1] == (
        f"error: interrupted after {len(kept)} of 8 images; kept {len(kept)} finished "
        f"image{'s' if len(kept) > 1 else ''}: {', '.join(map(str, paths))}"
    )
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in paths)
    assert not (tmp_path / "shots" / f"lighthouse-{len(kept) + 1}.png").exists()
    rows = gallery_rows(atelier_home)
    assert sorted(row.seed for row in rows) == list(range(5, 5 + len(kept)))
    assert len(image_files(atelier_home)) == len(kept)


def test_a_corrupt_gallery_database_costs_a_warning_never_the_image(tiny_sd, tmp_path, atelier_home):
    from engines.diffusion.png_meta import read_png_parameters

    database = atelier_home / "data" / "atelier.sqlite3"
    database.parent.mkdir(parents=True, exist_ok=True)
    database.write_bytes(os.urandom(36864))
    out = tmp_path / "wanted.png"
    common = ["--model", str(tiny_sd), "--prompt", "a fox", "--steps", "2", "--width", "64", "--height", "64",
              "--seed", "9"]
    run = atelier("image", *common, "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"{out}  (seed 9)\n"
    images = atelier_home / "data" / "images"
    assert run.stderr.splitlines() == [
        f"warning: the gallery's index ({database}) cannot be used: file is not a database; "
        f"images are written to --out and {images} without a gallery entry"
    ]
    assert read_png_parameters(out)["seed"] == 9 and len(image_files(atelier_home)) == 1
    # without --out the PNG still goes to the gallery folder, only its index row is missing
    before = set(image_files(atelier_home))
    run = atelier("image", *common)
    assert run.returncode == 0, run.stderr
    new = set(image_files(atelier_home)) - before
    assert len(new) == 1 and run.stdout == f"{new.pop()}  (seed 9)\n"
    assert run.stderr.splitlines() == [
        f"warning: the gallery's index ({database}) cannot be used: file is not a database; "
        f"images are written to {images} without a gallery entry"
    ]


def test_a_full_gallery_disk_still_writes_out(tiny_sd, tmp_path, atelier_home):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    images = atelier_home / "data" / "images"
    images.mkdir(parents=True)
    gallery_rows(atelier_home)  # the database exists, on a disk with room
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(images)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        with open(images / "filler", "wb") as handle:
            try:
                handle.write(b"\0" * (1 << 20))
            except OSError:
                pass  # the disk is full now
        out = tmp_path / "wanted.png"
        run = atelier("image", "--model", str(tiny_sd), "--prompt", "a fox", "--steps", "2", "--width", "64",
                      "--height", "64", "--seed", "3", "--out", str(out))
        assert run.returncode == 0, run.stderr
        assert run.stdout == f"{out}  (seed 3)\n"
        assert run.stderr.splitlines() == [
            "warning: the image could not be added to the gallery (No space left on device)"]
        assert out.read_bytes().startswith(b"\x89PNG")
        assert gallery_rows(atelier_home) == [] and not list(images.rglob("*.png"))
        assert not [p for p in images.rglob("*") if p.name.endswith(".tmp")]  # no half-written file left
    finally:
        subprocess.run(["umount", str(images)], check=False)

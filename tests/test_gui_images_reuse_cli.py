"""An image made on the command line is restored on the Images page, model included.

`atelier image` and the page share the image job service, so the CLI's
gallery record keeps the model's folder (and its id when it was given by
id): "use these settings again" finds the installed model by it even when
its name says nothing of the folder.
"""

from __future__ import annotations

import pytest

from engines.diffusion.types import ImageLoadSpec, ImageRequest
from engines.images.gallery import open_gallery
from engines.images.jobs import ImageJob, ImageJobs
from engines.library.installed import InstalledModel
from tests.fixtures.fake_image_host import FakeImageHost
from tests.fixtures.images_page import engine_ready, make_page, workspace  # noqa: F401  (fixtures)
from tests.fixtures.images_page import write_light_model_folder

pytestmark = pytest.mark.gui


def make_on_the_command_line(workspace, folder, model_id=None) -> str:
    """What `atelier image --model FOLDER_OR_ID --no-credentials` does, through the same service; the image's id."""
    images = workspace.paths.data / "images"
    jobs = ImageJobs(lambda: open_gallery(workspace.paths.database, images), images, workspace.paths.config)
    request = ImageRequest("a harbour at night", width=96, height=64, steps=6, guidance=4.0, scheduler="DDIM", seed=77)
    outcome = jobs.run(FakeImageHost(), ImageJob(ImageLoadSpec(str(folder), backend="onnx"), request,
                                                 model_id=model_id, credentials=False), lambda e: None)
    jobs.close()
    [kept] = outcome.kept
    return kept.entry.id


@pytest.mark.parametrize("by_id", [False, True])
@pytest.mark.parametrize("target", [0, 1])
def test_a_cli_image_restores_its_model_by_folder_or_id(qtbot, workspace, engine_ready, tmp_path, by_id, target):
    # Two installed models whose folders have the same name: only the folder (or the id) tells them apart.
    ids = ("import/harbour-v1", "import/harbour-v2")
    folders = [write_light_model_folder(tmp_path / version / "snapshot") for version in ("v1", "v2")]
    for model_id, folder in zip(ids, folders):
        workspace.models.add(InstalledModel(model_id, model_id.title(), str(folder), 1000, "diffusers", "diffusers",
                                            "import"))
    image_id = make_on_the_command_line(workspace, folders[target], ids[target] if by_id else None)
    page = make_page(qtbot, workspace)
    try:
        page.controls.select_model("import/dream-a")
        assert page.reuse_settings(image_id) == []
        c = page.controls
        assert c.current_model_id() == ids[target]
        assert c.prompt.toPlainText() == "a harbour at night" and c.seed() == 77
        assert (c.width_spin.value(), c.height_spin.value(), c.steps_spin.value()) == (96, 64, 6)
        assert c.sampler_combo.currentText() == "DDIM" and c.backend_combo.currentData() == "onnx"
        assert page.status_line.text() == "Settings of the image with seed 77 restored."
    finally:
        page.shutdown()

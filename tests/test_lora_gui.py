""""Use these settings again" on an image made with LoRAs that are not installed here: each is named, none dropped silently.

The request and the PNG keep the LoRAs (tests/test_lora.py); restoring such
an image picks the installed ones (tests/test_gui_images_lora.py) and names
the others, whether the settings come from the gallery's record or the PNG.
"""

from __future__ import annotations

from engines.diffusion.png_meta import encode_png
from engines.diffusion.types import ImageRequest, LoraSpec
from engines.images.gallery import request_record
from tests.fixtures.fake_image_host import small_png
from tests.fixtures.images_page import engine_ready, make_page, page, workspace  # noqa: F401  (fixtures)

NOTES = ["the LoRA ink (weight 0.8) is not installed, so it was left out",
         "the LoRA glow (weight -1) is not installed, so it was left out"]


def test_restoring_an_image_made_with_loras_names_them(qtbot, page, tmp_path):  # noqa: F811
    request = ImageRequest("a castle", width=96, height=64, steps=7, seed=99,
                           loras=(LoraSpec(str(tmp_path / "ink.safetensors"), 0.8), LoraSpec("/l/x.safetensors", -1, "glow")))
    png = encode_png(small_png(96, 64, 99), request, {"seed": 99, "model": "dream-b"})
    from_record = page.gallery.save(png, request_record(request), seed=99, width=96, height=64, model="dream-b",
                                    backend="torch")
    from_png = page.gallery.save(png, {}, seed=99, width=96, height=64, model="dream-b", backend="torch")
    page.refresh_gallery()
    for entry in (from_record, from_png):
        assert page.reuse_settings(entry.id) == NOTES
        assert page.controls.prompt.toPlainText() == "a castle"  # the prompt without its <lora:...> tags
        assert page.banner.text() == f"Settings restored, but {'; '.join(NOTES)}."
        assert page.controls.request().loras == ()

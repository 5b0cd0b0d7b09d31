"""The whole window on the one scheduler: a chat reply sent while an image is being made waits its turn.

Real engines under the real window (offscreen): llama.cpp on a tiny GGUF
for the chat page, the tiny Stable Diffusion pipeline for the Images
page, one scheduler for both. Order is read from the scheduler's
timeline and the status lines the user sees, never from clocks.
"""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from engines.library.installed import InstalledModel
from engines.settings import LoadPrefs
from engines.workspace import open_workspace
from tests.fixtures.images_page import fill
from tests.fixtures.tiny_sd import tiny_sd  # noqa: F401  (session fixture)

pytest.importorskip("llama_cpp")


@pytest.mark.slow
@pytest.mark.gui
def test_a_reply_sent_while_an_image_is_made_waits_its_turn(qtbot, tiny_gguf, tiny_sd):  # noqa: F811
    from desktop.main_window import MainWindow
    from desktop.pages.images_page import image_engine_availability

    assert image_engine_availability().available
    ws = open_workspace()
    chat_model = ws.models.add(InstalledModel("local/tiny", "Tiny", str(tiny_gguf), 1000, "llama_cpp", "gguf",
                                              "import", kind="chat"))
    image_model = ws.models.add(InstalledModel("import/tiny-sd", "tiny-sd", str(tiny_sd), 0, "diffusers",
                                               "diffusers", "import"))
    ws.settings.last_model_id = chat_model.id
    ws.settings.load_prefs[chat_model.id] = LoadPrefs(threads=1)  # tiny model: 1 thread is faster
    ws.save_settings()
    window = MainWindow(ws)
    qtbot.addWidget(window)
    window.show()
    chat, images, controller = window.chat_page, window.images_page, window.chat_controller
    statuses: list[str] = []
    controller.status.connect(statuses.append)
    try:
        images.controls.select_model(image_model.id)
        fill(images, "a lighthouse", width=64, height=64, steps=100, seed=3, batch=4)  # long: cancelled below
        with qtbot.waitSignal(images.worker.step, timeout=240_000):  # the image is being made: it holds the CPU lane
            qtbot.mouseClick(images.controls.generate_button, Qt.LeftButton)
        chat.panel.max_tokens.setValue(8)
        chat.composer.setPlainText("hello")
        chat.send_button.click()
        qtbot.waitUntil(lambda: "Waiting for its turn: 1 request ahead of this one." in statuses, timeout=60_000)
        assert images.running and controller.streaming
        images.cancel()  # the reply goes next
        qtbot.waitUntil(lambda: not images.running and not controller.streaming, timeout=240_000)

        assert not images.banner.isVisible() and chat.banner.isHidden(), chat.banner.text()
        assert images.status_line.text().startswith("Cancelled")
        reply = controller.messages()[-1]
        assert (reply.role, reply.status) == ("assistant", "complete") and reply.content
        timeline = window.scheduler.timeline()
        image_end = next(seq for seq, what, _id, client, _e in timeline if client == "images page" and what == "end")
        chat_start = min(seq for seq, what, _id, client, _e in timeline if client == "chat page" and what == "start")
        assert chat_start > image_end  # took turns: the reply's work began only once the image was done
        assert sorted(m.engine for m in window.scheduler.snapshot().loaded) == ["diffusers", "llama_cpp"]
    finally:
        window.close()

"""A real reply on the real demo model is measured, kept, and shown beside the estimate on the Models page."""

from __future__ import annotations

import pytest

from engines.api import SamplingParams
from engines.library.advisor import Advisor
from engines.library.demo import DEMO_ID
from engines.library.measured_speeds import read_measured
from engines.workspace import open_workspace

pytestmark = [pytest.mark.gui, pytest.mark.slow]


def test_a_reply_on_the_demo_model_records_its_speed_and_the_models_page_compares(qtbot, gemma_path):
    from desktop.pages.chat_controller import ChatController
    from desktop.pages.models_page import ModelsPage
    from desktop.workers.background import wait_for_background

    workspace = open_workspace()
    controller = ChatController(workspace)
    try:
        controller.choose_model(DEMO_ID)
        sampling = SamplingParams(temperature=0.8, max_tokens=48, seed=7)
        with qtbot.waitSignal(controller.streaming_changed, check_params_cb=lambda on: on is False, timeout=300_000):
            assert controller.send("Once upon a time, in a lighthouse by the sea,", sampling=sampling)
        advisor = Advisor(workspace.library())
        qtbot.waitUntil(lambda: DEMO_ID in read_measured(advisor.speeds_path), timeout=10_000)
    finally:
        controller.shutdown()
    measured = read_measured(advisor.speeds_path)[DEMO_ID]
    assert measured.unit == "tokens/s" and measured.runs == 1 and measured.value > 0
    assert measured.cpu == advisor.library.hardware().cpu.name

    page = ModelsPage(advisor.library)
    qtbot.addWidget(page)
    try:
        page.tabs.setCurrentWidget(page.installed_tab)
        tab = page.installed_tab
        qtbot.waitUntil(lambda: DEMO_ID in tab.model.measured, timeout=60_000)
        short, comparison = tab.model.measured[DEMO_ID]
        assert short.startswith("measured ") and short.endswith(" tokens/s")
        assert comparison.startswith(short + " (estimated ") and comparison.endswith(")")
        row = next(i for i, r in enumerate(tab.model.rows) if getattr(r, "id", None) == DEMO_ID)
        assert tab.model.index(row, tab.model.VERDICT).data() == f"CPU only · {short}"
    finally:
        page.shutdown(stop_downloads=True)
        page.wait_idle()
        wait_for_background()

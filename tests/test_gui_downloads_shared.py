"""The Downloads tab on a profile another process shares, or whose download list is damaged (D5, D23)."""

from __future__ import annotations

import signal
import sys

import pytest

from engines.library.download.queue import DownloadQueue
from tests.fixtures.download_owner import another_process_downloading
from tests.test_two_processes import FAST

pytestmark = [pytest.mark.gui, pytest.mark.skipif(sys.platform == "win32", reason="uses SIGKILL")]


@pytest.mark.slow
def test_a_job_another_process_runs_is_shown_with_its_progress_and_no_controls(qtbot, http_server, tmp_path):
    from desktop.pages.models.downloads_tab import DownloadsTab

    with another_process_downloading(http_server, tmp_path, seed=7) as other:
        owner, job_id, data, models, hold = other.process, other.job_id, other.data, other.models, other.hold
        queue = DownloadQueue(other.state, models, check=None, transfer_options=FAST)
        try:
            queue.start()
            tab = DownloadsTab(queue)
            qtbot.addWidget(tab)
            tab.show()
            row = tab.rows[job_id]
            qtbot.waitUntil(lambda: row.job.bytes_done > 0, timeout=60000)
            assert row.state.text() == "Downloading" and row.progress.value() > 0
            assert not [verb for verb, button in row.buttons.items() if button.isVisibleTo(row)]
            assert row.detail.text().endswith("in another Atelier window or command")
            assert tab.active_count == 1

            owner.send_signal(signal.SIGKILL)  # its process dies: this one resumes the job and controls it
            owner.wait(30)
            hold.release.set()
            qtbot.waitUntil(lambda: tab.rows[job_id].job.state == "completed", timeout=60000)
            row = tab.rows[job_id]
            assert [verb for verb, button in row.buttons.items() if button.isVisibleTo(row)] == ["remove"]
            assert row.detail.text() == "100% · 3.0 MB of 3.0 MB · installed"
            assert (models / "big.gguf").read_bytes() == data
            tab.shutdown()
        finally:
            hold.release.set()
            queue.shutdown(wait=True, timeout=10)


def test_the_models_page_opens_on_a_damaged_download_list_and_says_so(qtbot, atelier_home):
    from desktop.pages.models_page import ModelsPage
    from desktop.workers.background import wait_for_background
    from engines.workspace import open_workspace

    workspace = open_workspace()
    state = workspace.paths.data / "downloads.json"
    state.write_text('{"jobs": 5}')
    library = workspace.library()
    page = ModelsPage(library)
    qtbot.addWidget(page)
    try:
        (kept,) = workspace.paths.data.glob("downloads.unreadable-*.json")
        tab = page.downloads_tab
        assert tab.banner.text() == (f'The download list (downloads.json) could not be read (its "jobs" is 5, not a '
                                     f"list). It was kept as {kept} and a new one was started.")
        assert tab.banner.isVisibleTo(tab) and tab.rows == {} and kept.read_text() == '{"jobs": 5}'
    finally:
        page.shutdown(stop_downloads=True)
        page.wait_idle()
        wait_for_background()

"""The Models page under pytest-qt: catalog verdicts, installed models, downloads, Hub search."""

from __future__ import annotations

import hashlib
import html
import json
import random
import socket

import pytest
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QFileDialog, QMessageBox

from desktop.pages.models.table_models import ITEM_ROLE
from desktop.pages.models_page import machine_summary
from engines.errors import EngineError
from engines.library import hub_search
from engines.library.catalog import load_catalog
from engines.machine.hardware import CpuInfo, DiskInfo, HardwareReport, MemoryInfo
from engines.library.hub_search import HubFile, HubRepo
from engines.workspace import open_workspace
from tests.fixtures.http_server import http_server  # noqa: F401  (fixture)
from tests.fixtures.models_page import make_page  # noqa: F401  (fixture)

pytestmark = pytest.mark.gui
VERDICT_LABELS = ("Runs fully on GPU", "Partly on GPU", "CPU only", "Won't fit")
GB = 1_000_000_000


@pytest.fixture
def workspace():
    return open_workspace()


@pytest.fixture
def library(workspace):
    lib = workspace.library()
    yield lib
    lib.queue().shutdown(wait=True, timeout=5)


@pytest.fixture
def page(make_page, library):
    return make_page(library)


def wait_for_verdicts(qtbot, page):
    count = len(page.library.catalog.entries)
    qtbot.waitUntil(lambda: len(page.catalog_tab.verdicts) == count, timeout=10000)


def blob(size: int) -> bytes:
    return random.Random(7).randbytes(size)


def small_machine() -> HardwareReport:
    """A machine with 1 GB of memory, 0.6 GB free: nothing in the catalog fits."""
    return HardwareReport(
        os="Test OS", python="3",
        cpu=CpuInfo("Tiny CPU", "x86_64", 2, 2, ["AVX2"]),
        memory=MemoryInfo(total_bytes=1 * GB, available_bytes=600_000_000),
        gpus=[], disk=DiskInfo("/", 500 * GB, 1000 * GB),
    )


# ---- catalog -------------------------------------------------------------------


def test_catalog_lists_models_with_verdicts(qtbot, page):
    wait_for_verdicts(qtbot, page)
    tab = page.catalog_tab
    assert tab.proxy.rowCount() >= 20
    labels = [tab.proxy.index(row, tab.model.VERDICT).data() for row in range(tab.proxy.rowCount())]
    assert all(label.startswith(VERDICT_LABELS) for label in labels), labels
    # the page's own probe, cached by the library: the words are checked on a fixed machine below
    assert page.summary.text() == machine_summary(page.library.hardware(), page.library.resources(), page.advice.machine)
    assert not tab.banner.isVisible()


def test_the_machine_summary_in_words():
    assert machine_summary(small_machine()) == "Tiny CPU · 2 cores · 600 MB free of 1.0 GB · no supported GPU · 500.0 GB free disk"


def test_selecting_a_row_shows_the_explanation(qtbot, page, library):
    wait_for_verdicts(qtbot, page)
    entry = library.catalog.get("qwen2.5-1.5b-instruct-q4_k_m")
    assert page.catalog_tab.select(entry.id)
    details = page.catalog_tab.details
    verdict = library.verdict_for_entry(entry)
    assert details.title.text() == entry.name
    assert details.parameters.text() == "1.5 B parameters"
    assert details.repo.text() == entry.repo
    assert verdict.label in details.verdict.label.text()
    assert details.verdict.explanation.text() == verdict.explanation
    assert "weights" in details.verdict.explanation.text()
    assert details.download_button.isVisible() and details.download_button.text() == "Download"


def test_installed_entries_say_installed_instead_of_download(qtbot, page, library, workspace):
    from engines.library.installed import InstalledModel

    entry = library.catalog.get("gemma-3-1b-it-q4_k_m")
    tab = page.catalog_tab
    tab.select(entry.id)
    assert tab.details.download_button.isVisibleTo(tab) and not tab.details.installed_label.isVisibleTo(tab)
    workspace.models.add(InstalledModel(entry.id, entry.name, str(workspace.paths.models / "g.gguf"), 1, "llama_cpp", "gguf", "download"))
    tab.refresh_states()
    assert tab.details.installed_label.isVisibleTo(tab) and not tab.details.download_button.isVisibleTo(tab)
    row = next(r for r in range(tab.proxy.rowCount()) if tab.proxy.index(r, 0).data(ITEM_ROLE).id == entry.id)
    assert tab.proxy.index(row, tab.model.NAME).data().endswith("✓")


def test_kind_and_text_filters(qtbot, page, library):
    tab = page.catalog_tab
    tab.kind_filter.setCurrentIndex(tab.kind_filter.findData("image"))
    kinds = {tab.proxy.index(r, tab.model.KIND).data() for r in range(tab.proxy.rowCount())}
    assert kinds == {"Image"} and tab.proxy.rowCount() == len(library.catalog.images())
    tab.kind_filter.setCurrentIndex(tab.kind_filter.findData("chat"))
    assert tab.proxy.rowCount() == len(library.catalog.chat())
    tab.filter_edit.setText("gemma")
    names = [tab.proxy.index(r, tab.model.NAME).data() for r in range(tab.proxy.rowCount())]
    assert names and all("Gemma" in n for n in names)
    tab.kind_filter.setCurrentIndex(tab.kind_filter.findData(""))
    tab.filter_edit.clear()
    assert tab.proxy.rowCount() == len(library.catalog.entries)


def test_a_malformed_catalog_shows_the_error_and_an_empty_table(qtbot, make_page, workspace, tmp_path):
    bad = tmp_path / "catalog.json"
    bad.write_text(json.dumps({"schema_version": 1, "entries": [{"id": "x", "nonsense": True}]}))
    library = workspace.library(catalog=load_catalog(bad))
    page = make_page(library)
    try:
        tab = page.catalog_tab
        assert tab.banner.isVisible() and "could not be read" in tab.banner.text()
        assert tab.proxy.rowCount() == 0
        qtbot.waitUntil(lambda: page.refresh_button.isEnabled(), timeout=10000)  # the machine check still works
        assert page.summary.text() == machine_summary(library.hardware(), library.resources(), page.advice.machine)
    finally:
        library.queue().shutdown(wait=True, timeout=5)


def test_wont_fit_asks_and_download_anyway_proceeds(qtbot, page, library, monkeypatch, http_server):
    monkeypatch.setenv("HF_ENDPOINT", http_server.url(""))  # the download itself may fail: it only has to start
    monkeypatch.setattr(library, "hardware", lambda refresh=False: small_machine())
    page.refresh()
    qtbot.waitUntil(lambda: page.catalog_tab.verdicts.get("qwen2.5-7b-instruct-q4_k_m") is not None
                    and not page.catalog_tab.verdicts["qwen2.5-7b-instruct-q4_k_m"].fits, timeout=10000)
    entry = library.catalog.get("qwen2.5-7b-instruct-q4_k_m")
    tab = page.catalog_tab
    tab.select(entry.id)
    assert "Won't fit" in tab.details.verdict.label.text()
    assert tab.details.verdict.suggestions.isVisibleTo(tab)

    asked = []

    def answer(choice):
        def exec_(box):
            asked.append((box.windowTitle(), box.text()))
            next(b for b in box.buttons() if b.text() == choice).click()
            return 0
        return exec_

    monkeypatch.setattr(QMessageBox, "exec", answer("Cancel"))
    tab.details.download_button.click()
    assert asked and "won't fit" in asked[0][1] and entry.name in asked[0][0]
    assert not [j for j in library.queue().jobs() if j.model_id == entry.id]

    monkeypatch.setattr(QMessageBox, "exec", answer("Download anyway"))
    tab.details.download_button.click()
    assert len(asked) == 2
    jobs = [j for j in library.queue().jobs() if j.model_id == entry.id]
    assert len(jobs) == 1 and not tab.banner.isVisible()
    qtbot.waitUntil(lambda: jobs[0].id in page.downloads_tab.rows, timeout=5000)
    library.queue().cancel(jobs[0].id)


def test_disk_full_and_other_errors_show_in_the_banner(qtbot, page, library, monkeypatch):
    def full(*args, **kwargs):
        raise EngineError("disk_full", "Not enough disk space: this download needs 4.7 GB.")

    monkeypatch.setattr(library, "pull", full)
    tab = page.catalog_tab
    tab.select("qwen2.5-7b-instruct-q4_k_m")
    tab.details.download_button.click()
    assert tab.banner.isVisible() and "Not enough disk space" in tab.banner.text()


# ---- installed -----------------------------------------------------------------


def test_installed_lists_demo_imported_and_unknown_files_and_removes(qtbot, page, library, workspace, tiny_gguf, monkeypatch):
    (workspace.paths.models / "notes.txt").write_text("not a model")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(tiny_gguf), "GGUF models (*.gguf)"))
    page.tabs.setCurrentWidget(page.installed_tab)
    tab = page.installed_tab
    with qtbot.waitSignal(page.model_installed, timeout=10000) as added:
        tab.add_button.click()
    imported = library.models.find_by_path(tiny_gguf)
    assert added.args == [imported.id]

    def listed():
        return {getattr(r, "id", None) or r.path: r for r in tab.model.rows}

    qtbot.waitUntil(lambda: imported.id in listed() and "demo/gemma-3-270m-q4_k_m" in listed(), timeout=10000)
    qtbot.waitUntil(lambda: all(not isinstance(v, str) for v in tab.model.verdicts.values())
                    and len(tab.model.verdicts) == 2, timeout=15000)
    rows = tab.model.rows
    names = [tab.model.index(i, tab.model.NAME).data() for i in range(len(rows))]
    assert "Gemma 3 270M (demo)" in names
    notes = names.index("notes.txt")
    assert "not a GGUF file" in tab.model.index(notes, tab.model.VERDICT).data()
    for i, row in enumerate(rows):
        if getattr(row, "id", None):
            assert tab.model.index(i, tab.model.VERDICT).data().startswith(VERDICT_LABELS)

    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()) or True)
    assert tab.select_model(imported.id)
    tab.reveal_button.click()
    assert opened == [str(tiny_gguf.parent)]

    questions = []
    monkeypatch.setattr(QMessageBox, "question", lambda parent, title, text, *a, **k: questions.append(text) or QMessageBox.Yes)
    # An imported file is only forgotten: it is outside the models folder.
    assert tab.select_model(imported.id)
    with qtbot.waitSignal(page.model_removed, timeout=5000):
        tab.remove_button.click()
    assert "stays where it is" in questions[-1]
    assert library.models.get(imported.id) is None and tiny_gguf.exists()
    assert "the file stays where it is" in tab.status.text()
    # The demo file lives in the models folder: removing it deletes it.
    qtbot.waitUntil(lambda: imported.id not in listed(), timeout=10000)
    demo = library.models.get("demo/gemma-3-270m-q4_k_m")
    assert tab.select_model(demo.id)
    tab.remove_button.click()
    assert "will be deleted" in questions[-1]
    assert library.models.get(demo.id) is None
    assert tab.status.text() == f"Removed Gemma 3 270M (demo) and deleted {demo.path}."
    qtbot.waitUntil(lambda: demo.id not in listed(), timeout=10000)


def test_add_model_file_refuses_a_bad_file_in_the_banner(qtbot, page, tmp_path, monkeypatch):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"definitely not gguf")
    page.tabs.setCurrentWidget(page.installed_tab)
    page.installed_tab.import_file(str(bad))
    qtbot.waitUntil(lambda: page.installed_tab.banner.isVisible(), timeout=5000)
    assert "broken.gguf" in page.installed_tab.banner.text()


# ---- downloads -----------------------------------------------------------------


def test_downloads_show_progress_pause_resume_and_completion(qtbot, page, library, http_server, tmp_path):
    from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

    # A real model (about 3 MB): a finished download is identified before it is installed.
    data = write_tiny_llama_gguf(tmp_path / "little.gguf", n_layers=1, n_embd=256, n_ff=512).read_bytes()
    http_server.add("/files/little-model.gguf", data)
    hold = http_server.fault("/files/little-model.gguf", hold_after=2_000_000)
    job = library.pull(http_server.url("/files/little-model.gguf"))
    tab = page.downloads_tab
    page.tabs.setCurrentWidget(tab)
    qtbot.waitUntil(lambda: job.id in tab.rows and tab.rows[job.id].job.bytes_done > 0, timeout=10000)
    row = tab.rows[job.id]
    assert row.job.state == "running" and row.pause_button.isVisibleTo(row) and not row.resume_button.isVisibleTo(row)
    assert page.tabs.tabText(page.tabs.indexOf(tab)) == "Downloads (1)"
    assert row.progress.value() > 0 and "%" in row.detail.text()

    row.pause_button.click()
    assert row.job.state == "paused" and row.resume_button.isVisibleTo(row) and not row.pause_button.isVisibleTo(row)
    assert page.tabs.tabText(page.tabs.indexOf(tab)) == "Downloads"
    hold.release.set()

    with qtbot.waitSignal(page.model_installed, timeout=15000) as installed:
        row.resume_button.click()
    assert installed.args == [job.model_id]
    assert row.job.state == "completed" and row.progress.value() == 1000 and row.remove_button.isVisibleTo(row)
    assert library.models.get(job.model_id) is not None
    row.remove_button.click()
    assert job.id not in tab.rows and tab.empty.isVisibleTo(tab)


def test_jobs_reloaded_from_the_state_file_are_shown_at_startup(qtbot, make_page, workspace, http_server):
    http_server.add("/files/reloaded.gguf", blob(3_000_000))
    hold = http_server.fault("/files/reloaded.gguf", hold_after=1_000_000)
    first = workspace.library()
    job = first.pull(http_server.url("/files/reloaded.gguf"))
    assert http_server.wait_for(hold.reached.is_set)
    first.queue().pause(job.id)
    first.queue().shutdown(wait=True, timeout=5)
    hold.release.set()

    second = workspace.library()
    try:
        page = make_page(second)
        row = page.downloads_tab.rows[job.id]
        assert row.job.state == "paused" and row.resume_button.isVisibleTo(row) and not row.pause_button.isVisibleTo(row)
        assert row.name.text() == "reloaded.gguf"
    finally:
        second.queue().shutdown(wait=True, timeout=5)


# ---- Hugging Face search -------------------------------------------------------


def test_hub_search_offline_shows_an_inline_message(qtbot, page, monkeypatch):
    monkeypatch.setenv("ATELIER_OFFLINE", "1")
    hub = page.catalog_tab.hub
    hub.query.setText("qwen")
    hub.search_button.click()
    qtbot.waitUntil(lambda: "Offline mode is on" in hub.message.text(), timeout=5000)
    assert hub.message.isVisible() and hub.search_button.isEnabled()


def test_hub_search_with_the_hub_unreachable_fails_at_once_in_one_sentence(qtbot, page, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here: the connection is refused
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    hub = page.catalog_tab.hub
    hub.query.setText("qwen")
    hub.search_button.click()
    qtbot.waitUntil(lambda: hub.message.isVisible(), timeout=10000)
    assert hub.message.text() == (f"Could not reach Hugging Face: 127.0.0.1:{port} refused the connection. "
                                  "Check your internet connection, or a firewall that may block it.")
    assert not hub.results.isVisible() and hub.search_button.isEnabled()


def test_hub_search_lists_files_with_verdicts_and_downloads_one(qtbot, page, library, tiny_gguf, http_server, monkeypatch):
    repo = "someone/Tiny-Llama-GGUF"
    data = tiny_gguf.read_bytes()
    http_server.add(f"/{repo}/resolve/main/tiny-Q8_0.gguf", data)
    monkeypatch.setenv("HF_ENDPOINT", http_server.url(""))
    monkeypatch.setattr(hub_search, "search_gguf", lambda query, limit=20: [HubRepo(repo, "someone", 10, 1, False, None, ())])
    monkeypatch.setattr(hub_search, "list_gguf_files", lambda r: [
        HubFile("tiny-Q8_0.gguf", len(data), None, "Q8_0"),
        HubFile("tiny-F16.gguf", 400 * GB, None, "F16"),
        HubFile("mmproj-tiny.gguf", 1000, None, "F16"),
    ])
    hub = page.catalog_tab.hub
    hub.query.setText("tiny")
    hub.search_button.click()
    qtbot.waitUntil(lambda: hub.repo_list.count() == 1, timeout=5000)
    assert hub.results.isVisible() and not hub.message.isVisible()
    hub.repo_list.setCurrentRow(0)
    qtbot.waitUntil(lambda: len(hub.verdicts) == 2, timeout=10000)
    assert hub.verdicts["tiny-Q8_0.gguf"].fits and not hub.verdicts["tiny-F16.gguf"].fits  # 400 GB
    labels = [hub.file_table.item(r, hub.VERDICT).text() for r in range(hub.file_table.rowCount())]
    assert labels[1] == "Won't fit" and labels[0].startswith(VERDICT_LABELS)
    assert not hub.buttons["mmproj-tiny.gguf"].isEnabled()

    with qtbot.waitSignal(page.model_installed, timeout=15000) as installed:
        hub.buttons["tiny-Q8_0.gguf"].click()
    assert installed.args == [f"{repo}/tiny-Q8_0.gguf"]
    assert library.models.get(installed.args[0]).size_bytes == len(data)


# ---- speeds, recommendations, failures where they started ---------------------------


def test_every_catalog_row_has_an_expected_speed_and_the_recommended_come_first(qtbot, page, library):
    wait_for_verdicts(qtbot, page)
    tab = page.catalog_tab
    advice = page.advice
    picks = {pick.entry_id for pick in advice.recommended.values()}
    assert picks, "a 2-core machine with free memory gets a recommendation"
    rows = [tab.proxy.index(r, 0).data(ITEM_ROLE).id for r in range(tab.proxy.rowCount())]
    assert set(rows[:len(picks)]) == picks  # sorted for this machine: the recommended first
    for row, entry_id in enumerate(rows):
        name = tab.proxy.index(row, tab.model.NAME).data()
        speed = tab.proxy.index(row, tab.model.SPEED).data()
        assert name.startswith("★ ") == (entry_id in picks)
        if advice.verdicts[entry_id].fits:
            assert speed.startswith("≈ ") and speed.endswith(("tokens/s", "s/image", "min/image")), speed
        else:
            assert speed == "—"
    chat = advice.recommended["chat"].entry_id
    assert tab.select(chat)
    details = tab.details
    assert details.recommended.isVisibleTo(details)
    # the advisor's reason: its words depend on the speed measured on this machine (and on its load meanwhile)
    assert details.recommended.text() == (f"<b>★ Recommended for this machine.</b> "
                                          f"{html.escape(advice.recommended['chat'].reason)}")
    verdict = advice.verdicts[chat]
    assert details.verdict.label.text().endswith(f"<b>{verdict.label} · {verdict.speed.words}</b>")
    assert details.verdict.speed.text() == f"Expected speed: {verdict.speed.basis}."
    assert details.download_time.text().endswith("at a typical 50 Mbit/s connection (6.2 MB/s)")


def test_a_measured_speed_shows_beside_the_estimate(qtbot, make_page, library, workspace):
    from engines.library.advisor import Advisor
    from engines.library.measured_speeds import record_text_speed

    record_text_speed(Advisor(library).speeds_path, "qwen2.5-1.5b-instruct-q4_k_m", 21.3, 120,
                      library.hardware().cpu.name)
    page = make_page(library)
    wait_for_verdicts(qtbot, page)
    tab = page.catalog_tab
    tab.select("qwen2.5-1.5b-instruct-q4_k_m")
    row = next(r for r in range(tab.proxy.rowCount())
               if tab.proxy.index(r, 0).data(ITEM_ROLE).id == "qwen2.5-1.5b-instruct-q4_k_m")
    assert tab.proxy.index(row, tab.model.SPEED).data() == "21 tokens/s measured"
    estimate = page.advice.verdicts["qwen2.5-1.5b-instruct-q4_k_m"].speed
    from engines.machine.speed import format_speed

    expected = f"measured 21 tokens/s (estimated {format_speed(estimate.value, 'tokens/s').split()[0]})"
    assert page.advice.comparisons["qwen2.5-1.5b-instruct-q4_k_m"] == expected
    assert tab.details.verdict.speed.text().startswith(f"<b>M{expected[1:]}.</b><br>Expected speed: ")


def tiny_catalog(tmp_path, data: bytes):
    """A catalog of one chat model: the tiny GGUF, served by the test's own HTTP server."""
    entry = {
        "id": "tiny-chat-f32", "name": "Tiny Chat", "family": "Tiny", "kind": "chat", "engine": "llama_cpp",
        "format": "gguf", "repo": "someone/Tiny-GGUF",
        "files": [{"path": "tiny.gguf", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}],
        "license": "mit", "gated": False, "parameters": 1_000_000, "quantization": "F32", "context_length": 512,
        "description": "A tiny random model for tests.",
        "arch": {"architecture": "llama", "block_count": 2, "embedding_length": 64, "head_count": 4,
                 "head_count_kv": 4, "key_length": 16, "value_length": 16, "vocab_size": 32000},
    }
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"schema_version": 1, "entries": [entry]}))
    return load_catalog(path)


def test_a_failed_catalog_download_stays_where_it_was_started_with_retry(qtbot, make_page, workspace, tmp_path,
                                                                         tiny_gguf, http_server, monkeypatch):
    data = tiny_gguf.read_bytes()
    monkeypatch.setenv("HF_ENDPOINT", http_server.url(""))
    http_server.add("/someone/Tiny-GGUF/resolve/main/tiny.gguf", data)
    http_server.fault("/someone/Tiny-GGUF/resolve/main/tiny.gguf", status=404)  # the first try only
    library = workspace.library(catalog=tiny_catalog(tmp_path, data))
    try:
        page = make_page(library)
        wait_for_verdicts(qtbot, page)
        tab = page.catalog_tab
        assert tab.select("tiny-chat-f32")
        tab.details.download_button.click()
        qtbot.waitUntil(lambda: tab.details.failure.isVisible(), timeout=15000)
        job = tab.active_jobs()["tiny-chat-f32"]
        assert job.state == "failed"
        assert tab.details.failure.text() == f"The download failed: {job.error}"
        assert "was not found on the server (404)" in job.error
        assert tab.details.download_button.text() == "Retry download" and tab.details.download_button.isEnabled()
        assert tab.proxy.index(0, tab.model.NAME).data() == "★ Tiny Chat  · download failed"
        with qtbot.waitSignal(page.model_installed, timeout=15000) as installed:
            tab.details.download_button.click()
        assert installed.args == ["tiny-chat-f32"]
        qtbot.waitUntil(lambda: tab.details.installed_label.isVisibleTo(tab), timeout=5000)
        assert not tab.details.failure.isVisibleTo(tab)
        assert len(library.queue().jobs()) == 1  # the same job was retried, not a second one started
    finally:
        library.queue().shutdown(wait=True, timeout=5)


def test_a_failed_hub_download_offers_retry_on_its_row(qtbot, page, library, tiny_gguf, http_server, monkeypatch):
    repo = "someone/Tiny-Llama-GGUF"
    data = tiny_gguf.read_bytes()
    http_server.add(f"/{repo}/resolve/main/tiny-Q8_0.gguf", data)
    monkeypatch.setenv("HF_ENDPOINT", http_server.url(""))
    monkeypatch.setattr(hub_search, "search_gguf", lambda query, limit=20: [HubRepo(repo, "someone", 10, 1, False, None, ())])
    monkeypatch.setattr(hub_search, "list_gguf_files", lambda r: [HubFile("tiny-Q8_0.gguf", len(data), None, "Q8_0")])
    hub = page.catalog_tab.hub
    hub.query.setText("tiny")
    hub.search_button.click()
    qtbot.waitUntil(lambda: hub.repo_list.count() == 1, timeout=5000)
    hub.repo_list.setCurrentRow(0)
    qtbot.waitUntil(lambda: "tiny-Q8_0.gguf" in hub.verdicts, timeout=10000)  # its header was read
    http_server.fault(f"/{repo}/resolve/main/tiny-Q8_0.gguf", status=404)  # the download's first try only
    hub.buttons["tiny-Q8_0.gguf"].click()
    qtbot.waitUntil(lambda: hub.buttons["tiny-Q8_0.gguf"].text() == "Retry", timeout=15000)
    assert hub.message.isVisible()
    assert hub.message.text().startswith("tiny-Q8_0.gguf could not be downloaded: tiny-Q8_0.gguf was not found on the server (404)")
    assert hub.message.text().endswith(" Click Retry to try again.")
    with qtbot.waitSignal(page.model_installed, timeout=15000) as installed:
        hub.buttons["tiny-Q8_0.gguf"].click()
    assert installed.args == [f"{repo}/tiny-Q8_0.gguf"]

"""One file over real HTTP: resume, verification, failures, disk full, offline."""

from __future__ import annotations

import json
import random
import re
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from engines.byte_sizes import format_bytes
from engines.errors import EngineError
from engines import network
from engines.library.download import DownloadCancelled, FileSpec, check_disk_space, download_file, safe_relpath
from engines.network import OfflineError
from tests.fixtures.http_server import sha256
from tests.fixtures.tmpfs import small_tmpfs

FAST = {"stall_timeout": 10, "backoff": (0.01,), "max_attempts": 4}  # stalls have their own test


def blob(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def spec_for(server, path: str, data: bytes | None = None, name: str = "model.gguf") -> FileSpec:
    if data is None:
        return FileSpec(server.url(path), name)
    return FileSpec(server.url(path), name, size=len(data), sha256=sha256(data))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".part" in p.name)


def test_plain_download_is_verified_and_leaves_nothing_behind(http_server, tmp_path):
    data = blob(2_500_000)
    http_server.add("/m.gguf", data)
    seen = []
    dest = download_file(spec_for(http_server, "/m.gguf", data), tmp_path / "m.gguf", progress=lambda d, t: seen.append((d, t)), **FAST)
    assert dest.read_bytes() == data
    assert leftovers(tmp_path) == []
    assert seen[-1] == (len(data), len(data))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_dropped_connection_resumes_with_a_range_request(http_server, tmp_path):
    data = blob(3_000_000)
    served = http_server.add("/m.gguf", data)
    http_server.fault("/m.gguf", drop_after=1_000_000)
    dest = download_file(spec_for(http_server, "/m.gguf", data), tmp_path / "m.gguf", **FAST)
    assert dest.read_bytes() == data
    assert http_server.ranges("/m.gguf") == [None, "bytes=1000000-"]
    assert http_server.seen[-1].if_range == served.etag


def test_repeated_drops_give_up_keeping_the_part_which_later_resumes(http_server, tmp_path):
    data = blob(1_500_000)
    served = http_server.add("/m.gguf", data)
    http_server.fault("/m.gguf", drop_after=300_000)
    http_server.fault("/m.gguf", drop_after=0, times=0)
    with pytest.raises(EngineError) as err:
        download_file(spec_for(http_server, "/m.gguf", data), tmp_path / "m.gguf", **FAST)
    assert err.value.kind == "network"
    assert err.value.message == ("The connection to 127.0.0.1 dropped 4 times; the partial download (300 KB of "
                                 "model.gguf) is kept and will resume.")
    assert (tmp_path / "m.gguf.part").stat().st_size == 300_000
    assert not (tmp_path / "m.gguf").exists()

    served.faults.clear()
    download_file(spec_for(http_server, "/m.gguf", data), tmp_path / "m.gguf", **FAST)
    assert (tmp_path / "m.gguf").read_bytes() == data
    assert http_server.ranges("/m.gguf")[-1] == "bytes=300000-"


def test_a_stall_is_detected_and_retried(http_server, tmp_path):
    data = blob(2_000_000)
    http_server.add("/m.gguf", data)
    http_server.fault("/m.gguf", stall_after=700_000, stall_s=60)
    download_file(spec_for(http_server, "/m.gguf", data), tmp_path / "m.gguf", **{**FAST, "stall_timeout": 0.5})
    assert (tmp_path / "m.gguf").read_bytes() == data
    ranges = http_server.ranges("/m.gguf")  # the stall was cut, and the rest asked for again, not waited out
    assert ranges[0] is None and "bytes=700000-" in ranges


def test_wrong_bytes_fail_verification_and_install_nothing(http_server, tmp_path):
    data = blob(1_200_000)
    http_server.add("/m.gguf", data, wrong_bytes=True)
    with pytest.raises(EngineError) as err:
        download_file(spec_for(http_server, "/m.gguf", data), tmp_path / "m.gguf", **FAST)
    assert err.value.kind == "model_file"
    assert f"expected SHA-256 {sha256(data)[:12]}" in err.value.message and "Nothing was installed" in err.value.message
    assert list(tmp_path.iterdir()) == []


def test_the_hubs_linked_etag_verifies_without_a_catalog_hash(http_server, tmp_path):
    data = blob(900_000)
    http_server.add("/cdn/m.gguf", data, wrong_bytes=True)
    http_server.redirect("/resolve/m.gguf", "/cdn/m.gguf", linked_from="/cdn/m.gguf")
    with pytest.raises(EngineError) as err:
        download_file(FileSpec(http_server.url("/resolve/m.gguf"), "m.gguf"), tmp_path / "m.gguf", **FAST)
    assert err.value.kind == "model_file" and sha256(data)[:12] in err.value.message
    assert list(tmp_path.iterdir()) == []

    http_server.add("/direct.gguf", data, linked=True)
    dest = download_file(FileSpec(http_server.url("/direct.gguf"), "d.gguf"), tmp_path / "d.gguf", **FAST)
    assert dest.read_bytes() == data


def test_a_server_ignoring_range_restarts_cleanly(http_server, tmp_path):
    data = blob(2_000_000)
    http_server.add("/m.gguf", data, ignore_range=True)
    http_server.fault("/m.gguf", drop_after=1_000_000)
    download_file(spec_for(http_server, "/m.gguf", data), tmp_path / "m.gguf", **FAST)
    assert (tmp_path / "m.gguf").read_bytes() == data
    assert http_server.ranges("/m.gguf") == [None, "bytes=1000000-"]
    assert leftovers(tmp_path) == []


def test_a_changed_remote_file_restarts_from_zero(http_server, tmp_path):
    old, new = blob(1_500_000, seed=1), blob(1_600_000, seed=2)
    http_server.add("/m.gguf", old)
    http_server.fault("/m.gguf", drop_after=500_000, change_to=new)
    download_file(spec_for(http_server, "/m.gguf"), tmp_path / "m.gguf", **FAST)
    assert (tmp_path / "m.gguf").read_bytes() == new  # If-Range made the server send it whole


def test_a_changed_etag_restarts_even_when_the_server_ignores_if_range(http_server, tmp_path):
    old, new = blob(1_500_000, seed=1), blob(1_500_000, seed=2)
    http_server.add("/m.gguf", old, ignore_if_range=True)
    http_server.fault("/m.gguf", drop_after=500_000, change_to=new)
    download_file(spec_for(http_server, "/m.gguf"), tmp_path / "m.gguf", **FAST)
    assert (tmp_path / "m.gguf").read_bytes() == new
    assert http_server.ranges("/m.gguf") == [None, "bytes=500000-", None]


def test_range_not_satisfiable_restarts_from_zero(http_server, tmp_path):
    data = blob(400_000)
    http_server.add("/m.gguf", data)
    (tmp_path / "m.gguf.part").write_bytes(b"x" * 500_000)
    (tmp_path / "m.gguf.part.json").write_text(json.dumps({"url": http_server.url("/m.gguf")}))
    download_file(spec_for(http_server, "/m.gguf"), tmp_path / "m.gguf", **FAST)
    assert (tmp_path / "m.gguf").read_bytes() == data
    assert http_server.ranges("/m.gguf") == ["bytes=500000-", None]


def test_a_part_from_another_url_is_not_resumed(http_server, tmp_path):
    data = blob(400_000)
    http_server.add("/m.gguf", data)
    (tmp_path / "m.gguf.part").write_bytes(b"x" * 100_000)
    (tmp_path / "m.gguf.part.json").write_text(json.dumps({"url": "http://elsewhere/m.gguf"}))
    download_file(spec_for(http_server, "/m.gguf", data), tmp_path / "m.gguf", **FAST)
    assert http_server.ranges("/m.gguf") == [None]


def test_a_redirect_loop_is_a_clear_error(http_server, tmp_path):
    http_server.redirect("/loop", "/loop")
    with pytest.raises(EngineError) as err:
        download_file(FileSpec(http_server.url("/loop"), "m.gguf"), tmp_path / "m.gguf", **FAST)
    assert err.value.kind == "network" and "redirects in a loop" in err.value.message


def test_not_found_names_the_url(http_server, tmp_path):
    with pytest.raises(EngineError) as err:
        download_file(FileSpec(http_server.url("/missing.gguf"), "m.gguf"), tmp_path / "m.gguf", **FAST)
    assert err.value.kind == "not_found" and http_server.url("/missing.gguf") in err.value.message
    assert list(tmp_path.iterdir()) == []


def test_server_errors_are_retried_then_reported(http_server, tmp_path):
    data = blob(300_000)
    served = http_server.add("/m.gguf", data)
    http_server.fault("/m.gguf", status=500)
    download_file(spec_for(http_server, "/m.gguf", data), tmp_path / "a.gguf", **FAST)
    assert len(http_server.ranges("/m.gguf")) == 2

    served.faults[:] = []
    http_server.fault("/m.gguf", status=503, times=0)
    with pytest.raises(EngineError) as err:
        download_file(spec_for(http_server, "/m.gguf", data), tmp_path / "b.gguf", **FAST)
    assert err.value.kind == "network" and "HTTP 503 4 times" in err.value.message
    assert len(http_server.ranges("/m.gguf")) == 6


def test_a_gated_file_asks_for_a_token_and_the_token_is_sent(http_server, tmp_path):
    served = http_server.add("/m.gguf", blob(1000))
    http_server.fault("/m.gguf", status=401)
    with pytest.raises(EngineError) as err:
        download_file(spec_for(http_server, "/m.gguf"), tmp_path / "m.gguf", **FAST)
    assert err.value.kind == "gated" and err.value.message == (
        "model.gguf is in a gated repository: add a Hugging Face token in Settings and accept the model's terms on "
        "its page, then retry.")
    served.faults.clear()
    download_file(spec_for(http_server, "/m.gguf"), tmp_path / "m.gguf", token="hf_secret", **FAST)
    assert http_server.seen[-1].authorization == "Bearer hf_secret"


@pytest.mark.parametrize("bad", ["../evil", "/abs", "a/../../b", "C:/x", "C:x", "a\\b", "a//b", "", "a/\x00b", "./a", "a/"])
def test_unsafe_file_names_are_refused(bad):
    with pytest.raises(EngineError) as err:
        safe_relpath(bad)
    assert err.value.kind == "bad_input" and "outside the models folder" in err.value.message


def test_safe_file_names_pass():
    assert str(safe_relpath("unet/diffusion_pytorch_model.safetensors")) == "unet/diffusion_pytorch_model.safetensors"
    assert str(safe_relpath(".gitattributes")) == ".gitattributes"


def test_check_disk_space_refuses_up_front(tmp_path):
    with pytest.raises(EngineError) as err:
        check_disk_space(tmp_path / "not-yet", 10**18)
    free = r"[0-9.]+ (bytes|KB|MB|GB|TB)"  # whatever this disk has
    assert err.value.kind == "disk_full" and re.fullmatch(
        rf"Not enough disk space: this download needs 1000000\.0 TB plus 50000\.0 TB to spare, but only {free} are "
        rf"free in {re.escape(str(tmp_path / 'not-yet'))}\.", err.value.message), err.value.message
    check_disk_space(tmp_path, 1000, margin=0)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MiB tmpfs, remountable bigger; skipped where mounting is not allowed."""
    with small_tmpfs(tmp_path / "tiny", "2m") as folder:
        yield folder


def test_a_full_disk_keeps_the_part_and_resumes_after_space_is_freed(http_server, tiny_disk):
    data = blob(4_000_000)
    http_server.add("/m.gguf", data)
    spec = spec_for(http_server, "/m.gguf", data)
    with pytest.raises(EngineError) as err:
        download_file(spec, tiny_disk / "m.gguf", **FAST)
    kept = (tiny_disk / "m.gguf.part").stat().st_size
    assert err.value.kind == "disk_full" and err.value.message == (
        f"The disk is full: {format_bytes(kept)} of {format_bytes(len(data))} of model.gguf were downloaded and kept; "
        "free some space and resume.")
    assert 1_000_000 < kept < 2_100_000 and (tiny_disk / "m.gguf.part.json").exists()

    subprocess.run(["mount", "-o", "remount,size=8m", str(tiny_disk)], check=True)
    download_file(spec, tiny_disk / "m.gguf", **FAST)
    assert (tiny_disk / "m.gguf").read_bytes() == data
    assert http_server.ranges("/m.gguf")[-1] == f"bytes={kept}-"


def test_cancel_stops_a_stalled_read_at_once_and_keeps_the_part(http_server, tmp_path):
    data = blob(1_000_000)
    http_server.add("/m.gguf", data)
    held = http_server.fault("/m.gguf", hold_after=400_000)
    cancel, outcome = threading.Event(), []

    def fetch():
        try:
            download_file(spec_for(http_server, "/m.gguf", data), tmp_path / "m.gguf", cancel=cancel, stall_timeout=60)
        except BaseException as exc:  # noqa: BLE001
            outcome.append(exc)

    worker = threading.Thread(target=fetch)
    worker.start()
    part = tmp_path / "m.gguf.part"
    assert http_server.wait_for(lambda: part.exists() and part.stat().st_size == 400_000)
    cancel.set()
    worker.join(10)
    assert not worker.is_alive() and isinstance(outcome[0], DownloadCancelled)
    assert part.stat().st_size == 400_000
    held.release.set()

    download_file(spec_for(http_server, "/m.gguf", data), tmp_path / "m.gguf", **FAST)
    assert (tmp_path / "m.gguf").read_bytes() == data
    assert http_server.ranges("/m.gguf")[-1] == "bytes=400000-"


@pytest.fixture
def no_sockets(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a connection was opened in offline mode")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def test_offline_mode_refuses_before_any_connection(http_server, tmp_path, monkeypatch, no_sockets):
    http_server.add("/m.gguf", blob(1000))
    monkeypatch.setenv("ATELIER_OFFLINE", "1")
    with pytest.raises(OfflineError) as err:
        download_file(spec_for(http_server, "/m.gguf"), tmp_path / "m.gguf", **FAST)
    assert err.value.kind == "offline" and "Turn offline mode off in Settings" in err.value.message
    monkeypatch.delenv("ATELIER_OFFLINE")
    network.set_offline(True)
    try:
        assert not network.network_allowed()
        with pytest.raises(OfflineError):
            download_file(spec_for(http_server, "/m.gguf"), tmp_path / "m.gguf", **FAST)
    finally:
        network.set_offline(False)
    assert http_server.seen == [] and list(tmp_path.iterdir()) == []


def test_sessions_always_verify_tls():
    session = network.make_session()
    session.verify = False
    assert session.verify is True
    assert session.merge_environment_settings("https://huggingface.co", {}, True, False, None)["verify"] is True
    assert session.headers["User-Agent"] == "Atelier/0.1" and session.max_redirects == 10
    assert session.get_adapter("https://huggingface.co").max_retries.total == 0


def test_hub_endpoint_and_token_sources(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://mirror.example/")
    assert network.hub_endpoint() == "https://mirror.example"
    monkeypatch.delenv("HF_ENDPOINT")
    assert network.hub_endpoint() == "https://huggingface.co"

    import keyring

    store = {}
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(keyring, "get_password", lambda s, u: store.get((s, u)))
    monkeypatch.setattr(keyring, "set_password", lambda s, u, p: store.__setitem__((s, u), p))
    monkeypatch.setattr(keyring, "delete_password", lambda s, u: store.pop((s, u)))
    network.set_hf_token("hf_saved")
    assert store == {("atelier", "huggingface"): "hf_saved"} and network.hf_token() == "hf_saved"
    assert network.token_for("https://huggingface.co/x/resolve/main/m.gguf") == "hf_saved"
    assert network.token_for("https://example.com/m.gguf") is None  # never leaked to other hosts
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    assert network.hf_token() == "hf_env"
    network.set_hf_token(None)
    assert store == {}


def test_a_broken_keyring_means_no_token_and_a_clear_error_on_save(monkeypatch):
    import keyring

    def broken(*args):
        raise RuntimeError("no secret service")

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(keyring, "get_password", broken)
    monkeypatch.setattr(keyring, "set_password", broken)
    assert network.hf_token() is None
    with pytest.raises(EngineError) as err:
        network.set_hf_token("hf_x")
    assert "keyring is not available" in err.value.message and "HF_TOKEN" in err.value.message


def test_a_malformed_url_is_a_clear_error(tmp_path):
    with pytest.raises(EngineError) as err:
        download_file(FileSpec("htp:/nowhere/m.gguf", "m.gguf"), tmp_path / "m.gguf", **FAST)
    assert err.value.kind == "network" and "htp:/nowhere/m.gguf" in err.value.message


def test_an_unwritable_folder_is_a_clear_error(http_server, tmp_path):
    http_server.add("/m.gguf", blob(1000))
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(EngineError) as err:
        download_file(spec_for(http_server, "/m.gguf"), tmp_path / "file" / "m.gguf", **FAST)
    # then the OS's words (strerror), which differ between systems
    assert err.value.message.startswith(f"Could not write {tmp_path / 'file' / 'm.gguf.part'}: ")


# ---- hostile names (D19, D22) and unreachable redirect targets (D27) ---------------------


@pytest.mark.parametrize(("bad", "shown"), [
    ("evil\nname\x1b[31mRED.gguf", "evil\\nname\\x1b[31mRED.gguf"),
    ("a\rb.gguf", "a\\rb.gguf"),
    ("title\x1b]0;PWNED\x07.gguf", "title\\x1b]0;PWNED\\x07.gguf"),
    ("c1\x9bcontrol.gguf", "c1\\x9bcontrol.gguf"),
    ("bidi\u202efdp.gguf", "bidi\\u202efdp.gguf"),
    ("del\x7f.gguf", "del\\x7f.gguf"),
])
def test_file_names_with_control_characters_are_refused_and_shown_escaped(bad, shown):
    with pytest.raises(EngineError) as err:
        safe_relpath(bad)
    assert err.value.kind == "bad_input"
    assert err.value.message == f"Refusing the file name '{shown}': it contains control characters (such as a line break or a terminal escape)."


def test_a_file_name_too_long_for_the_file_system_is_refused_with_its_length():
    name = "m" * 295 + ".gguf"
    with pytest.raises(EngineError) as err:
        safe_relpath(f"folder/{name}")
    assert err.value.message == f"Refusing the file name '{'m' * 60}…': it is 300 bytes long, and a downloaded file's name may have at most 245."
    assert str(safe_relpath("é" * 120 + ".gguf")).endswith(".gguf")  # 245 bytes: "<name>.part.json" still fits in 255
    with pytest.raises(EngineError):
        safe_relpath("é" * 123)  # 246 bytes, though 123 characters: counted in bytes


def closed_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def test_a_redirect_to_a_host_that_refuses_fails_at_once_naming_that_host(http_server, tmp_path):
    port = closed_port()
    http_server.redirect("/resolve/m.gguf", f"http://127.0.0.1:{port}/m.gguf")
    with pytest.raises(EngineError) as err:
        download_file(FileSpec(http_server.url("/resolve/m.gguf"), "m.gguf"), tmp_path / "m.gguf", **FAST)
    assert err.value.kind == "network"
    assert err.value.message == (
        f"Could not download m.gguf: 127.0.0.1 redirected it to 127.0.0.1:{port}, which cannot be reached (it refused "
        f"the connection). The link may be wrong; nothing was downloaded. (http://127.0.0.1:{port}/m.gguf)")
    assert len([s for s in http_server.seen if s.path == "/resolve/m.gguf"]) == 1  # not retried
    assert list(tmp_path.iterdir()) == []


def test_a_redirect_to_a_name_that_does_not_resolve_fails_at_once(http_server, tmp_path, monkeypatch):
    real = socket.getaddrinfo

    def resolve(host, *args, **kwargs):
        if host == "cdn.example.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    http_server.redirect("/resolve/m.gguf", "http://cdn.example.invalid/m.gguf")
    with pytest.raises(EngineError) as err:
        download_file(FileSpec(http_server.url("/resolve/m.gguf"), "m.gguf"), tmp_path / "m.gguf", **FAST)
    assert err.value.message.startswith("Could not download m.gguf: 127.0.0.1 redirected it to cdn.example.invalid, "
                                        "which cannot be reached (its name does not resolve).")
    assert len(http_server.seen) == 1


def test_the_first_host_refusing_is_still_retried(tmp_path):
    port = closed_port()
    with pytest.raises(EngineError) as err:
        download_file(FileSpec(f"http://127.0.0.1:{port}/m.gguf", "m.gguf"), tmp_path / "m.gguf", **FAST)
    assert err.value.message == "Could not reach 127.0.0.1 after 4 attempts; check the internet connection."


@pytest.mark.slow
def test_a_full_disk_during_a_pull_prints_one_clean_line_and_resumes(http_server, tiny_disk, tmp_path):
    """D12: the message and the kept part are right, and nothing else reaches stderr (no logging traceback)."""
    import os
    import sys

    from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

    data = write_tiny_llama_gguf(tmp_path / "model.gguf", n_layers=1, n_embd=256, n_ff=512).read_bytes()
    http_server.add("/files/model.gguf", data)
    env = {k: v for k, v in os.environ.items() if k != "ATELIER_OFFLINE"}
    env["ATELIER_HOME"] = str(tiny_disk / "home")
    pull = [sys.executable, "-m", "desktop", "models", "pull", http_server.url("/files/model.gguf")]
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(pull, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    part = next((tiny_disk / "home" / "data" / "models" / ".staging").glob("*/model.gguf.part"))
    kept = part.stat().st_size
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr == (f"error: The disk is full: {format_bytes(kept)} of {format_bytes(len(data))} of model.gguf were "
                          "downloaded and kept; free some space and resume.\n")

    subprocess.run(["mount", "-o", "remount,size=8m", str(tiny_disk)], check=True)
    again = subprocess.run(pull, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert (tiny_disk / "home" / "data" / "models" / "model.gguf").read_bytes() == data
    assert http_server.ranges("/files/model.gguf")[-1] == f"bytes={kept}-"

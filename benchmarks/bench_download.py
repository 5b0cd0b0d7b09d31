"""Download throughput on localhost: ``download_file`` (SHA-256 included) against curl.

Serves a 512 MiB file from disk (sendfile, with Range support) on
127.0.0.1 from a separate process, so the server competes with neither
client for the GIL, and fetches it with ``curl -s -o`` and with ``download_file``,
five times each, interleaved. The network is not the limit here, so this
measures our per-chunk overhead: hashing, writing, the Python loop, and
the fsync that makes the file durable before its rename. curl does not
fsync, so the target ratio (≥ 0.9, "with hashing included") compares
``atelier_unflushed`` (the same download with ``os.fsync`` skipped) with
``curl``; the durable download is compared with ``curl`` followed by an
fsync (``durable_ratio_vs_curl_fsync_*``) and with plain curl as well.
curl missing → its figures are None.

The disk of this virtual machine dominates the spread: a run that starts
while the previous one's 512 MiB are still being written back, or its
blocks discarded (ext4 ``discard``), is slowed by whatever ran before it.
So every run starts after a ``sync``, outside the timing, and the order of
the variants rotates from round to round.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SIZE = 512 * 1024 * 1024
RUNS = 8


class _DiskHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path: Path = self.server.file
        size = path.stat().st_size
        start, status = 0, 200
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "").strip())
        if match and int(match[1]) < size:
            start, status = int(match[1]), 206
        self.send_response(status)
        self.send_header("Content-Length", str(size - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", '"bench-1"')
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()
        with open(path, "rb") as f:
            try:
                self.connection.sendfile(f, start, size - start)
            except OSError:
                self.close_connection = True

    def log_message(self, *args) -> None:
        pass


def _write_source(path: Path) -> str:
    digest = hashlib.sha256()
    block = os.urandom(8 * 1024 * 1024)
    with open(path, "wb") as f:
        for i in range(SIZE // len(block)):
            chunk = block[:-8] + i.to_bytes(8, "little")  # no two blocks alike
            digest.update(chunk)
            f.write(chunk)
    return digest.hexdigest()


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


@contextlib.contextmanager
def _no_fsync():
    """Downloads without the durability flush, for a like-for-like comparison with curl (never used by the app)."""
    from engines.library.download import transfer

    real = transfer.os.fsync
    transfer.os.fsync = lambda fd: None
    try:
        yield
    finally:
        transfer.os.fsync = real


def _settle_disk() -> None:
    """Wait until earlier runs' writes (and the discards of their deleted files) have reached the disk."""
    if hasattr(os, "sync"):
        os.sync()


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run() -> dict:
    from engines.library.download import FileSpec, download_file

    tmp = Path(tempfile.mkdtemp(prefix="atelier-bench-download-"))
    server = None
    try:
        source = tmp / "source.bin"
        sha = _write_source(source)
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(source)], stdout=subprocess.PIPE, text=True)
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}/source.bin"
        out = tmp / "out.bin"
        curl = shutil.which("curl")

        def by_curl(durable: bool) -> None:
            subprocess.run([curl, "-s", "-o", str(out), url], check=True)
            if durable:  # what download_file also pays: the bytes on disk before the rename
                fd = os.open(out, os.O_RDWR)
                os.fsync(fd)
                os.close(fd)
            if out.stat().st_size != SIZE:
                raise RuntimeError("curl fetched a short file")

        def by_atelier() -> None:
            download_file(FileSpec(url, "out.bin", size=SIZE, sha256=sha), out)

        def by_atelier_unflushed() -> None:
            """The same download, hashing and verification included, minus the fsync curl does not do either."""
            with _no_fsync():
                by_atelier()

        speeds: dict[str, list[float]] = {"curl": [], "curl_fsync": [], "atelier": [], "atelier_unflushed": []}
        runs = [("atelier", by_atelier), ("atelier_unflushed", by_atelier_unflushed)]
        if curl:
            runs += [("curl", lambda: by_curl(False)), ("curl_fsync", lambda: by_curl(True))]
        for round_ in range(RUNS):  # interleaved and rotated, so all see the same machine state
            shift = round_ % len(runs)
            for name, fn in runs[shift:] + runs[:shift]:
                _settle_disk()
                speeds[name].append(SIZE / 1e6 / _timed(fn))
                out.unlink()
        figures = {"size_mib": SIZE // (1024 * 1024), "runs": RUNS, "cpus": os.cpu_count(), "load_avg_1m": _load()}
        for name, values in speeds.items():
            figures[f"{name}_mb_s_best"] = round(max(values), 1) if values else None
            figures[f"{name}_mb_s_median"] = round(statistics.median(values), 1) if values else None
        if curl:
            def ratio(ours: str, theirs: str, pick) -> float:
                return round(pick(speeds[ours]) / pick(speeds[theirs]), 3)

            # Like for like: SHA-256 included, and neither side flushes to disk.
            figures["ratio_best"] = ratio("atelier_unflushed", "curl", max)
            figures["ratio_median"] = ratio("atelier_unflushed", "curl", statistics.median)
            # What a user waits for: hashed AND on disk, against curl followed by fsync.
            figures["durable_ratio_vs_curl_fsync_best"] = ratio("atelier", "curl_fsync", max)
            figures["durable_ratio_vs_curl_fsync_median"] = ratio("atelier", "curl_fsync", statistics.median)
            figures["durable_ratio_vs_curl_best"] = ratio("atelier", "curl", max)
            figures["durable_ratio_vs_curl_median"] = ratio("atelier", "curl", statistics.median)
        figures["target_ratio"] = 0.9
        return figures
    finally:
        if server is not None:
            server.kill()
            server.wait()
            server.stdout.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _serve(file: str) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DiskHandler)
    server.daemon_threads = True
    server.file = Path(file)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        _serve(sys.argv[2])
    else:
        import json

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        print(json.dumps(run(), indent=2))

"""Model downloads that never corrupt: one resumable file, and a persistent queue.

``transfer`` fetches one file (resume, verify, atomic rename); ``queue``
runs jobs of one or many files with bounded concurrency and installs each
job as one unit. Import from here.
"""

from engines.library.download.queue import DownloadJob, DownloadQueue
from engines.library.download.transfer import (
    DISK_FULL,
    GATED,
    NETWORK,
    NOT_FOUND,
    DownloadCancelled,
    FileSpec,
    check_disk_space,
    download_file,
    human_size,
    safe_relpath,
)

__all__ = [
    "DISK_FULL",
    "GATED",
    "NETWORK",
    "NOT_FOUND",
    "DownloadCancelled",
    "DownloadJob",
    "DownloadQueue",
    "FileSpec",
    "check_disk_space",
    "download_file",
    "human_size",
    "safe_relpath",
]

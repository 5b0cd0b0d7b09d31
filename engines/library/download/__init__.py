"""Model downloads that never corrupt: one resumable file, and a persistent queue.

``transfer`` fetches one file (resume, verify, atomic rename); ``queue``
runs jobs of one or many files with bounded concurrency and installs each
job as one unit, sharing ``downloads.json`` (``state``) and the staging
folder (``staging``) with every other Atelier process on the profile;
``jobs`` validates what the state file says, ``verify`` checks that what
arrived is the model it claims to be. Import from here.
"""

from engines.library.download.queue import DownloadJob, DownloadQueue
from engines.library.download.verify import DownloadRejected, check_download
from engines.library.download.transfer import (
    DISK_FULL,
    GATED,
    NETWORK,
    NOT_FOUND,
    DownloadCancelled,
    FileSpec,
    check_disk_space,
    download_file,
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
    "DownloadRejected",
    "FileSpec",
    "check_disk_space",
    "check_download",
    "download_file",
    "safe_relpath",
]

"""Where Atelier keeps its files.

Every folder comes from platformdirs, except when ``ATELIER_HOME`` is set:
then everything (data, config, cache, logs, models) lives under that one
folder. Tests and portable installs rely on that single switch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP_NAME = "Atelier"
HOME_ENV = "ATELIER_HOME"


@dataclass(frozen=True)
class AppPaths:
    data: Path
    config: Path
    cache: Path
    logs: Path

    @property
    def models(self) -> Path:
        return self.data / "models"

    @property
    def database(self) -> Path:
        return self.data / "atelier.sqlite3"

    @property
    def settings_file(self) -> Path:
        return self.config / "settings.json"

    def ensure(self) -> "AppPaths":
        for folder in (self.data, self.config, self.cache, self.logs, self.models):
            folder.mkdir(parents=True, exist_ok=True)
        return self


def app_paths() -> AppPaths:
    """The folders for this process, created on first use."""
    home = os.environ.get(HOME_ENV)
    if home:
        root = Path(home).expanduser()
        paths = AppPaths(root / "data", root / "config", root / "cache", root / "logs")
    else:
        paths = AppPaths(
            Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)),
            Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)),
            Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)),
            Path(platformdirs.user_log_dir(APP_NAME, appauthor=False)),
        )
    return paths.ensure()

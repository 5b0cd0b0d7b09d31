"""Everything a front end needs, opened once and passed around explicitly.

No global singletons: the GUI, the CLI and the server each open a
:class:`Workspace` and hand its parts to whoever needs them. It is the front
ends' composition of the services, so it sits above them: a service takes
only the parts it needs (``ModelLibrary(paths, settings, models)``, which
:meth:`Workspace.library` builds), never the workspace itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from engines.errors import EngineError
from engines.library.demo import register_demo
from engines.library.installed import InstalledModels
from engines.paths import AppPaths, app_paths
from engines.settings import Settings, read_settings, save_settings

if TYPE_CHECKING:
    from engines.library.catalog import Catalog
    from engines.library.service import ModelLibrary
    from engines.scheduler import Scheduler


@dataclass
class Workspace:
    paths: AppPaths
    settings: Settings
    models: InstalledModels
    settings_problem: str | None = None  # the settings file was unreadable and set aside

    @property
    def problems(self) -> list[str]:
        """What is wrong with the state files (set aside, records refused), for the GUI and the CLI to show."""
        return [problem for problem in (self.settings_problem, self.models.problem) if problem]

    def save_settings(self) -> None:
        save_settings(self.paths.settings_file, self.settings)

    def engine_log(self, role: str = "text"):
        return self.paths.logs / f"engine-host-{role}.log"

    def library(self, catalog: Catalog | None = None) -> ModelLibrary:
        """The model library on this profile's folders, settings and installed models."""
        from engines.library.service import ModelLibrary  # the catalog, downloads and probes: only when asked

        return ModelLibrary(self.paths, self.settings, self.models, catalog)

    def scheduler(self, **options) -> Scheduler:
        """The engine scheduler on this profile (``options``: engines.scheduler.Scheduler's).

        Hosts log into the profile's log folder, image hosts run under the
        private image engine's Python when one is installed, and a remote
        server's model list is saved whenever it is read. The GUI opens one
        for all its pages (and its server), each CLI command its own.
        """
        from engines.envs import image_host_launch
        from engines.remote import RemoteHost, RemoteServers
        from engines.scheduler import Scheduler

        servers = RemoteServers.beside(self.models.file)
        return Scheduler(self.paths.logs, image_host_launch=lambda: image_host_launch(self),
                         remote_host=lambda: RemoteHost(on_models=servers.set_models), **options)


def open_workspace(paths: AppPaths | None = None) -> Workspace:
    paths = paths or app_paths()
    models = InstalledModels(paths.data / "models.json")
    try:
        register_demo(models, paths.models)
    except EngineError:  # the model list cannot be changed; models.problem says why
        pass
    settings, settings_problem = read_settings(paths.settings_file)
    if settings.offline:
        from engines.network import set_offline

        set_offline(True)  # the Settings switch; ATELIER_OFFLINE=1 works without it
    return Workspace(paths=paths, settings=settings, models=models, settings_problem=settings_problem)

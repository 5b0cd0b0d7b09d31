"""Run an experiment grid: every cell through the image job service, on ONE loaded model, then the grid image.

The cells are ordinary image jobs (:class:`engines.images.jobs.ImageJob`),
run one after another by the same :class:`ImageJobs` as a single image, so
each cell is signed and kept in the gallery the moment it is finished, with
its own parameters. The model is loaded once: the host keeps it between
jobs (the scheduler's model key is the same), and only the first cell
reports loading.

Progress is told per cell (:class:`CellStarted`, "cell 3 of 6", then the
engine's own step events) and each kept cell as a :class:`CellKept`.
A cancel (or an engine error) stops the sequence at the cell in hand; the
cells already made are kept, and a *partial* grid is still drawn from
them, their places kept and the rest shown as "not made". That is the
choice made here because the grid is where the cells are compared: a user
who stops after half the cells has usually seen enough, and without the
grid those cells are only scattered gallery entries. The grid's
parameters say how many cells it holds ("Grid cells made: 3 of 6").

The grid PNG is kept by the same service (:meth:`ImageJobs.keep_png`),
with its own gallery entry, the ``--out`` file when one was given, and
Content Credentials that name the model, say it is a grid of generated
images, and list every cell as a ``componentOf`` ingredient (by its hash,
with the cell's own signed manifest), so the grid's provenance leads to
each image in it.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from engines.diffusion.types import ImageLoadSpec
from engines.errors import EngineError
from engines.images.gallery import request_record
from engines.images.grid import GridPlan
from engines.images.jobs import ImageJob, ImageJobs, ImageKept, Notice


@dataclass(frozen=True)
class GridJob:
    """A grid to make: ``plan`` on the model ``spec`` loads; ``target`` is the ``--out`` file of the grid image."""

    spec: ImageLoadSpec
    plan: GridPlan
    model_id: str | None = None
    target: Path | None = None
    credentials: bool = True


@dataclass(frozen=True)
class CellStarted:
    index: int  # 0-based
    count: int
    caption: str  # "Steps: 8, Seed: 2"

    @property
    def text(self) -> str:
        return f"cell {self.index + 1} of {self.count} ({self.caption})"


@dataclass(frozen=True)
class CellKept:
    index: int
    count: int
    caption: str
    kept: ImageKept  # the cell's image, in the gallery


@dataclass(frozen=True)
class GridKept:
    kept: ImageKept  # the grid image, in the gallery (and at --out)
    made: int  # cells in it
    count: int  # cells planned


@dataclass
class GridOutcome:
    info: Any = None  # ImageModelInfo, once loaded
    cells: dict[int, ImageKept] = field(default_factory=dict)  # cell index → its kept image
    grid: ImageKept | None = None
    lost: list[str] = field(default_factory=list)
    error: EngineError | None = None
    cancelled: bool = False
    seconds: float = 0.0
    seconds_per_step: float = 0.0  # the last cell's steady step time

    @property
    def kept(self) -> list[ImageKept]:
        """Everything kept: the cells in order, then the grid."""
        return [self.cells[i] for i in sorted(self.cells)] + ([self.grid] if self.grid else [])


def run_grid(jobs: ImageJobs, host, job: GridJob, on_event: Callable[[Any], None]) -> GridOutcome:
    """Make every cell of ``job.plan`` on ``host``, then the grid image; never raises for the engine's errors."""
    plan = job.plan
    outcome = GridOutcome()
    started = time.monotonic()
    count = len(plan.cells)
    for cell in plan.cells:
        on_event(CellStarted(cell.index, count, cell.caption))

        def relay(event, cell=cell) -> None:
            if isinstance(event, ImageKept):
                outcome.cells[cell.index] = event
                on_event(CellKept(cell.index, count, cell.caption, event))
            else:
                on_event(event)

        cell_job = ImageJob(job.spec, cell.request, model_id=job.model_id, credentials=job.credentials)
        result = jobs.run(host, cell_job, relay, fresh=cell.index == 0)
        outcome.info = result.info or outcome.info
        if result.result is not None:
            outcome.seconds_per_step = result.result.seconds_per_step
        outcome.lost.extend(result.lost)
        if result.error is not None or result.lost or result.cancelled:
            outcome.error = result.error
            outcome.cancelled = result.error is None and not result.lost
            break
    if outcome.cells and outcome.info is not None and not outcome.lost:
        _keep_grid(jobs, job, outcome, on_event)
    outcome.seconds = time.monotonic() - started
    return outcome


def _keep_grid(jobs: ImageJobs, job: GridJob, outcome: GridOutcome, on_event) -> None:
    from PIL import Image  # the drawing needs Pillow; the plan and the page do not

    from engines.images.grid_draw import grid_png, layout

    plan, info = job.plan, outcome.info
    images, files = {}, []
    for index, kept in sorted(outcome.cells.items()):
        try:
            data = Path(kept.path).read_bytes()
            with Image.open(io.BytesIO(data)) as image:
                images[index] = image.convert("RGB")
            files.append(data)
        except OSError as exc:  # deleted or damaged since: its place says "not made"
            on_event(Notice(f"the cell {kept.path} could not be read back for the grid ({exc})"))
    if not images:
        return
    how = {"backend": info.backend, "device": getattr(info, "device", ""), "dtype": getattr(info, "dtype", "")}
    png = grid_png(plan, images, info.name, how)
    record = request_record(plan.cells[0].request, job.spec.model_path, job.spec.backend, job.model_id)
    record["grid"] = dict(plan.record(), made=sorted(images), cell_paths=[str(outcome.cells[i].path)
                                                                          for i in sorted(images)])
    width, height = layout(plan).size
    provenance = None
    if job.credentials:
        from engines.images.credentials import Provenance

        made = f"{len(images)} of {len(plan.cells)}" if len(images) < len(plan.cells) else str(len(plan.cells))
        provenance = Provenance(model=info.name, title="grid.png", components=tuple(files),
                                description=f"Experiment grid (X/Y plot) of {made} generated images: {plan.describe()}")
    kept = jobs.keep_png(png, record, info, on_event, outcome.lost, seed=plan.cells[0].request.seed, width=width,
                         height=height, target=job.target, provenance=provenance)
    if kept is not None:
        outcome.grid = kept
        on_event(GridKept(kept, len(images), len(plan.cells)))

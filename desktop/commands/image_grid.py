"""``atelier image ... --vary steps=4,8,16 --vary seed=1,2``: an experiment grid (A1111's X/Y plot) from a terminal.

``atelier image`` hands its checked job here when ``--vary`` is given. The
axes are checked (:func:`engines.images.grid.plan_grid`, against the
samplers the model offers) before any engine starts, each problem one
``error:`` line and exit 2. The cells then run through the image job
service on one loaded model (:mod:`engines.images.grid_run`), and this
module only says what was kept: one line per cell as it is written (its
gallery path and its labels), then the grid's. ``--out`` names the grid
image; the cells go to the gallery, each with its own parameters.
"""

from __future__ import annotations

import sys

from desktop.cli_contract import EXIT_FAILED, EXIT_INTERRUPTED, CliError, exit_code_for
from desktop.cli_output import clean, print_json
from engines.errors import EngineError


class GridCommand:
    """One ``--vary`` run: the plan, checked at once, and how its events and outcome are told."""

    def __init__(self, args, job, tty: bool) -> None:
        from engines.images.grid import model_samplers, plan_grid
        from engines.images.grid_run import GridJob

        try:
            plan = plan_grid(job.request, args.vary, samplers=model_samplers(job.spec.model_path))
        except EngineError as exc:
            raise CliError(f"--vary: {exc.message}") from None
        target = job.targets[0] if job.targets else None
        self.job = GridJob(job.spec, plan, model_id=job.model_id, target=target, credentials=job.credentials)
        self.args, self.tty = args, tty
        self._cell = None

    @property
    def plan(self):
        return self.job.plan

    def run(self, jobs, host, on_event):
        """Run the grid; ``on_event`` (the image command's) tells notices, this tells cells and the grid."""
        from engines.images.grid_run import run_grid

        return run_grid(jobs, host, self.job, lambda event: self._on_event(event, on_event))

    def _on_event(self, event, fallback) -> None:
        from engines.diffusion.types import StepEvent
        from engines.images.grid_run import CellKept, CellStarted, GridKept

        if isinstance(event, CellStarted):
            self._cell = event
        elif isinstance(event, (CellKept, GridKept)):
            if self.tty:
                sys.stderr.write("\r\x1b[K")
            if not self.args.json:
                if isinstance(event, CellKept):
                    print(f"{clean(str(event.kept.path))}  (cell {event.index + 1} of {event.count}: "
                          f"{clean(event.caption)}; seed {event.kept.seed})", flush=True)
                else:
                    made = f", {event.made} of {event.count} cells" if event.made < event.count else ""
                    print(f"{clean(str(event.kept.path))}  (grid {self.plan.shape}{made})", flush=True)
        elif isinstance(event, StepEvent):
            if self.tty and self._cell is not None:
                sys.stderr.write(f"\r{clean(self._cell.text)}: step {event.step}/{event.total}   ")
                sys.stderr.flush()
        else:
            fallback(event)

    def report(self, outcome) -> int:
        """``--json`` and the exit code: 0, 130 for a cancel (the cells made and the partial grid kept), else 1/2."""
        cells = [dict(_item(outcome.cells[i]), cell=i + 1, labels=list(self.plan.cells[i].labels))
                 for i in sorted(outcome.cells)]
        grid = _item(outcome.grid) if outcome.grid is not None else None
        kept = [item["path"] for item in cells] + ([grid["path"]] if grid else [])
        if outcome.error is not None:
            raise CliError(_with_kept(outcome.error.message, kept), exit_code_for(outcome.error.kind))
        info = outcome.info
        if self.args.json:
            print_json({
                "grid": grid, "cells": cells, "columns": self.plan.columns, "rows": self.plan.rows,
                "axes": [axis.as_text() for axis in self.plan.axes], "model": getattr(info, "name", None),
                "backend": getattr(info, "backend", None), "seconds": round(outcome.seconds, 3),
                "cancelled": outcome.cancelled,
            })
        if outcome.lost:
            raise CliError(_with_kept("; ".join(outcome.lost), kept), EXIT_FAILED)
        if outcome.cancelled:
            made = len(outcome.cells)
            partial = f" (the grid shows {'it' if made == 1 else 'them'}, the rest marked 'not made')" if grid else ""
            raise CliError(_with_kept(f"interrupted after {made} of {len(self.plan.cells)} cells{partial}", kept),
                           EXIT_INTERRUPTED)
        return 0


def _item(kept) -> dict:
    return {"path": str(kept.path), "seed": kept.seed, "width": kept.width, "height": kept.height,
            "credentials": kept.signed}


def _with_kept(message: str, paths: list[str]) -> str:
    if not paths:
        return message
    return f"{message}; kept {len(paths)} image{'s' if len(paths) != 1 else ''}: {', '.join(paths)}"


"""The Images page's Experiment section (A1111's X/Y plot): vary one or two settings and compare the images.

The user picks a setting across (X) and, optionally, one down (Y), types
their values ("4, 8, 16"), and presses "Make grid". Everything else comes
from the page's own controls: the grid varies the request the page would
make. The panel only gathers the axes as text (``steps=4,8,16``, the same
words ``atelier image --vary`` takes); :func:`plan_from` checks them with
:func:`engines.images.grid.plan_grid`, so the page and the command refuse
the same things in the same sentences. The cells then run through the
image job service on one loaded model, each one saved to the gallery as it
is finished, and the labelled grid is saved last and shown.

The section starts folded (a grid is an experiment, not the daily path),
and it is an advanced control: simple mode hides it.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QGridLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.pages.images.status import format_step
from desktop.workers.image_worker import CANCELLED
from engines.errors import EngineError

# (the setting's name in an axis, what the menu says, an example of its values)
SETTINGS = (
    ("steps", "Steps", "4, 8, 16  or  4-16 (+4)"),
    ("seed", "Seed", "1, 2, 3  or  1-4"),
    ("guidance", "Guidance (CFG)", "3, 5, 7  or  3-9 (+1.5)"),
    ("sampler", "Sampler", "Euler, DDIM, DPM++ 2M Karras"),
    ("lora", "LoRA weight", "0.2, 0.6, 1  or  0-1 [5]"),
    ("prompt", "Prompt word (S/R)", "a word of the prompt, then what replaces it"),
)
# A1111's range syntax, which engines.images.grid expands (and explains when a range is wrong)
RANGES_TIP = ("Values separated by commas. Steps, seed, guidance and LoRA weight also take ranges: 1-4 (every whole "
              "number), 4-16 (+4) (a step), 3-9 (+1.5) (a decimal step), 10-5 (-3) (counting down), 1-10 [5] (five "
              "values evenly spaced, ends included). A value that holds a comma goes in double quotes.")
NONE = ""


class GridPanel(QWidget):
    make_requested = Signal()  # "Make grid" was pressed
    changed = Signal()  # an axis, its values, or open/closed changed (the page remembers them)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(12, 4, 12, 8)
        outer.setSpacing(4)
        self.toggle = QToolButton()
        self.toggle.setText("Experiment (X/Y plot)")
        self.toggle.setCheckable(True)
        self.toggle.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.toggle.setArrowType(Qt.RightArrow)
        self.toggle.setAutoRaise(True)
        self.toggle.toggled.connect(self.set_open)
        self.toggle.toggled.connect(lambda *_: self.changed.emit())
        outer.addWidget(self.toggle)

        self.body = QFrame()
        self.body.setObjectName("Panel")
        grid = QGridLayout(self.body)
        grid.setContentsMargins(8, 8, 8, 8)
        intro = QLabel("Vary one or two settings and compare the images in a labelled grid. Every cell is also "
                       "kept in the gallery.")
        intro.setObjectName("Muted")
        intro.setWordWrap(True)
        grid.addWidget(intro, 0, 0, 1, 2)
        self.x_combo, self.x_values = self._axis_row(grid, 1, "Across (X)", with_none=False)
        self.y_combo, self.y_values = self._axis_row(grid, 3, "Down (Y)", with_none=True)
        self.make_button = QPushButton("Make grid")
        self.make_button.setToolTip("Make one image per cell with the settings above, then the labelled grid")
        self.make_button.clicked.connect(self.make_requested)
        grid.addWidget(self.make_button, 5, 0, 1, 2)
        outer.addWidget(self.body)
        self.body.setVisible(False)

    def _axis_row(self, grid: QGridLayout, row: int, title: str, with_none: bool):
        combo = QComboBox()
        if with_none:
            combo.addItem("Nothing (one row)", NONE)
        for name, label, _example in SETTINGS:
            combo.addItem(label, name)
        values = QLineEdit()
        values.setToolTip(RANGES_TIP)
        values.returnPressed.connect(self.make_requested)
        grid.addWidget(QLabel(title), row, 0)
        grid.addWidget(combo, row, 1)
        grid.addWidget(values, row + 1, 0, 1, 2)

        def chosen(_index: int) -> None:
            name = combo.currentData()
            example = next((e for n, _label, e in SETTINGS if n == name), "")
            values.setPlaceholderText(f"values, e.g. {example}" if name else "")
            values.setEnabled(bool(name))

        combo.currentIndexChanged.connect(chosen)
        chosen(0)
        combo.currentIndexChanged.connect(lambda *_: self.changed.emit())
        values.textChanged.connect(lambda *_: self.changed.emit())
        return combo, values

    def set_open(self, open_: bool) -> None:
        if self.toggle.isChecked() != open_:
            self.toggle.setChecked(open_)
            return
        self.toggle.setArrowType(Qt.DownArrow if open_ else Qt.RightArrow)
        self.body.setVisible(open_)

    def set_axis(self, which: int, name: str, values: str) -> bool:
        """Choose setting ``name`` ("" for none, Y only) with ``values`` on axis 0 (X) or 1 (Y).

        False, and the axis left as it was, when this axis has no such setting (a newer version's, or none on X).
        """
        combo, edit = (self.x_combo, self.x_values) if which == 0 else (self.y_combo, self.y_values)
        index = combo.findData(name)
        if index < 0:
            return False
        combo.setCurrentIndex(index)
        edit.setText(values)
        return True

    def set_axis_texts(self, texts) -> list[str]:
        """Show axes written by :meth:`axis_texts` (``steps=4,8,16``) as typed; Y is "Nothing" when there is one.

        Their values are checked when the grid is made, as when typed. Returns the texts it could not show.
        """
        texts = list(texts)[:2]
        left_out = []
        for which in (0, 1):
            text = texts[which] if which < len(texts) else ""
            name, _sep, values = text.partition("=")
            if not self.set_axis(which, name.strip(), values.strip()) and text:
                left_out.append(text)
        return left_out

    def axis_texts(self) -> list[str]:
        """The axes as ``atelier image --vary`` takes them (``steps=4,8,16``); a Y axis only when chosen."""
        texts = []
        for combo, edit in ((self.x_combo, self.x_values), (self.y_combo, self.y_values)):
            name = combo.currentData()
            if name:
                texts.append(f"{name}={edit.text().strip()}")
        return texts

    def follow(self, generate_button) -> None:
        """"Make grid" is enabled exactly when the page's Generate is (no run going, an engine installed)."""
        self._generate_button = generate_button
        generate_button.installEventFilter(self)
        self.make_button.setEnabled(generate_button.isEnabled())

    def eventFilter(self, watched, event) -> bool:  # noqa: N802
        if event.type() == QEvent.EnabledChange and watched is getattr(self, "_generate_button", None):
            self.make_button.setEnabled(watched.isEnabled())
        return False


class GridRunView:
    """What the page shows while a grid runs and after it; connected after the page's own slots.

    Qt calls slots in the order they were connected, so for a grid run these
    words replace the page's generic ones ("Step 3/8" becomes "Cell 2 of 6 ·
    Steps: 8 · Step 3/8"; a cancel says how many cells were kept and shows
    the partial grid), and the page itself needs no grid logic.
    """

    def __init__(self, page) -> None:
        self.page = page
        k, panel = page.controller, page.grid_panel
        panel.follow(page.controls.generate_button)
        panel.make_requested.connect(lambda: page.generate(panel.axis_texts()))
        k.cell.connect(lambda event: page.status_line.setText(cell_text(event)))
        k.step.connect(self._on_step)
        k.grid_saved.connect(self._on_grid_saved)
        k.grid_finished.connect(self._on_finished)
        k.failed.connect(self._on_failed)
        # queued: after the page has shown the selected image (its slot may be connected after this one)
        page.gallery_view.selected.connect(lambda image_id: self._describe(k.entry(image_id)), Qt.QueuedConnection)
        page.gallery_view.reuse_requested.connect(lambda image_id: self._restore_axes(k.entry(image_id)),
                                                  Qt.QueuedConnection)

    def _on_step(self, event) -> None:
        k = self.page.controller
        if k.grid_plan is not None and k.current_cell is not None:
            self.page.status_line.setText(f"{cell_text(k.current_cell)} · {format_step(event)}")

    def _on_grid_saved(self, entry) -> None:
        self.page.gallery_view.add_entry(entry, select=True)
        self.page._display(entry)
        self._describe(entry)

    def _describe(self, entry) -> None:
        """Under a grid, what it varies instead of one image's settings (a cell's own are under the cell)."""
        if entry is not None and self.page._shown_id == entry.id and isinstance(entry.request.get("grid"), dict):
            self.page.seed_line.setText(grid_line(entry))

    def _restore_axes(self, entry) -> None:
        """"Use these settings again" on a grid: the page restores its first cell, this its axes."""
        grid = entry.request.get("grid") if entry is not None else None
        if not isinstance(grid, dict) or not grid.get("axes"):
            return
        panel = self.page.grid_panel
        axes = list(grid["axes"])[:2]
        for which in (0, 1):
            axis = axes[which] if which < len(axes) else {}
            values = [str(v) for v in axis.get("values", ())]
            panel.set_axis(which, axis.get("name", ""), ", ".join(f'"{v}"' if "," in v else v for v in values))
        panel.set_open(True)

    def _on_finished(self, outcome) -> None:
        page = self.page
        page._end_run()
        page.status_line.setText(finished_text(outcome, page.controller.grid_plan))
        if page.controller.grid_entry is not None:
            page._display(page.controller.grid_entry)
            self._describe(page.controller.grid_entry)

    def _on_failed(self, kind: str, _message: str) -> None:
        k = self.page.controller
        if kind != CANCELLED or k.grid_plan is None:
            return
        if k.grid_entry is not None:
            self.page._display(k.grid_entry)
            self._describe(k.grid_entry)
        self.page.status_line.setText(cancelled_text(k.grid_plan, len(k.run_saved), k.grid_entry is not None))


def plan_from(request, axis_texts: list[str], model_path: str):
    """(the grid's plan, "") or (None, the sentence saying what is wrong), for the page's banner."""
    from engines.images.grid import model_samplers, plan_grid

    try:
        return plan_grid(request, axis_texts, samplers=model_samplers(model_path)), ""
    except EngineError as exc:
        return None, f"Can’t make the grid: {exc.message}."


def grid_line(entry) -> str:
    """ "Grid 3×2 · Steps 2, 4, 8 × CFG scale 3, 7 · seed 3 · 485×291" for a grid's gallery entry."""
    grid = entry.request["grid"]
    axes = " × ".join(f"{axis.get('title', '')} {', '.join(map(str, axis.get('values', ())))}"
                      for axis in grid.get("axes", ()))
    return f"Grid {grid.get('columns')}×{grid.get('rows')} · {axes} · seed {entry.seed} · {entry.width}×{entry.height}"


def cell_text(event) -> str:
    """The status line while a cell runs: "Cell 3 of 6 · Steps: 8, Seed: 2"."""
    return f"Cell {event.index + 1} of {event.count} · {event.caption}"


def finished_text(outcome, plan) -> str:
    return (f"Made a {plan.shape} grid of {len(outcome.cells)} images in {outcome.seconds:.1f} s; each cell is "
            "in the gallery too.")


def cancelled_text(plan, made: int, grid_kept: bool) -> str:
    """After Cancel: what was kept (a partial grid is drawn from the cells made; see engines.images.grid_run)."""
    if made == 0:
        return "Cancelled before the first cell was finished"
    kept, them = ("it is", "it") if made == 1 else ("they are", "them")
    grid = f"; the partial grid shows {them}, the rest marked “not made”" if grid_kept else ""
    return f"Cancelled after {made} of {len(plan.cells)} cells: {kept} kept in the gallery{grid}"

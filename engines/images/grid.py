"""Experiment grids (AUTOMATIC1111's X/Y plot): vary one or two settings and compare the images side by side.

A grid is described by one or two *axes*, each written ``NAME=V1,V2,...``
(``atelier image --vary steps=4,8,16 --vary seed=1,2``, or the Images
page's Experiment section). The first axis runs across (columns, X), the
second down (rows, Y). The settings that can vary:

* ``seed``, ``steps``: whole numbers;
* ``guidance`` (``cfg``): numbers;
* ``sampler``: the sampler names, as the model offers them;
* ``lora`` (the first LoRA of the request) or ``lora:NAME``: a LoRA's weight;
  only when the request has that LoRA;
* ``prompt``: A1111's "Prompt S/R": the first value is a word or phrase of
  the prompt (or the negative prompt), and each cell replaces it by one of
  the values, the first included; a value with a comma is written in
  double quotes.

The four number settings also take A1111's ranges, which users type from
habit: ``1-4`` (steps of 1), ``4-16 (+4)`` (a step), ``3-9 (+1.5)`` and
``0.2-1 (+0.2)`` (decimal steps, for guidance and LoRA weights), ``10-5 (-3)``
(going down: a negative step; ``9-2`` alone counts down by 1), and
``1-10 [5]`` (a count: that many values evenly spaced, ends included). A
counted range of a whole-number setting truncates each value as A1111 does
(``1-10 [5]`` is 1, 3, 5, 7, 10). The arithmetic is exact (fractions, not
floats), so ``0.2-1 (+0.2)`` gives 0.6, never 0.6000000000000001, and the
values are written back as short decimals (a counted range's to 4 places:
``0-1 [4]`` is 0, 0.3333, 0.6667, 1); those texts are the grid's labels and
its PNG's ``X Values``. A range that cannot be meant is refused, in the same
one-sentence way as every other mistake: a step of 0, a step that goes away
from the end, a step larger than the range, a count of 0, a count of 1
between two different ends, more whole numbers than lie between the ends,
more values than a grid has cells. Unlike A1111, a range never passes its
end (A1111's ``3-10 (+1.5)`` makes 10.5 too).

Everything here is checked before any engine starts, each problem as one
sentence: an unknown setting, a bad value (checked by the same
:meth:`ImageRequest.validate` as a single image, so the ranges are the
engine's), more than two axes, a setting varied twice, too many cells, a
Prompt S/R word the prompt does not contain. Expanding gives the cells in
reading order (row by row, left to right); each is an ordinary
:class:`ImageRequest`, so each cell is a normal gallery image with its own
parameters. A grid whose seed is random uses ONE random seed for every
cell (as A1111 does), or the cells would differ by more than the setting.

This module is plain Python (no Pillow, no Qt): the page imports it to
check what the user typed. Drawing is :mod:`engines.images.grid_draw`,
running is :mod:`engines.images.grid_run`.
"""

from __future__ import annotations

import csv
import random
import re
from dataclasses import dataclass, replace
from decimal import Decimal
from fractions import Fraction

from engines.diffusion.types import MAX_SEED, SCHEDULER_NAMES, ImageRequest
from engines.errors import EngineError, ErrorKind

MAX_AXES = 2  # X and Y, as A1111's X/Y plot (its Z axis makes several grids; one grid is what a user compares)
MAX_CELLS = 64  # 8 × 8 images: over an hour at 512² on a small CPU already
# The settings a grid can vary: name → (what the PNG calls it, the aliases a user may type)
SETTINGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "seed": ("Seed", ()),
    "steps": ("Steps", ()),
    "guidance": ("CFG scale", ("cfg", "cfg_scale", "cfg-scale")),
    "sampler": ("Sampler", ("scheduler",)),
    "lora": ("LoRA weight", ()),
    "prompt": ("Prompt S/R", ("prompt_sr", "prompt-sr", "sr")),
}
_ALIASES = {alias: name for name, (_title, aliases) in SETTINGS.items() for alias in (name, *aliases)}
_NUMBER = r"[+-]?\s*(?:\d+(?:\.\d*)?|\.\d+)"  # 4, -3, 1.5, .5 (a sign may have a space after it, as A1111 allows)
# 1-4, 4-16 (+4), 0.2-1 (+0.2), 10-5 (-3), 1-10 [5]: the step or the count is checked by _expand_range, not here,
# so that "1-4 (+x)" is told what is wrong with its step instead of "'1-4 (+x)' is not a number"
_RANGE = re.compile(rf"^({_NUMBER})\s*-\s*({_NUMBER})\s*(?:\(([^()]*)\)|\[([^\[\]]*)\])?$")
_WHOLE_SETTINGS = ("seed", "steps")
_NUMBER_SETTINGS = (*_WHOLE_SETTINGS, "guidance", "lora")
COUNT_PLACES = 4  # a counted range's decimals are written to this many places: 0-1 [4] is 0, 0.3333, 0.6667, 1
NAMES_TEXT = "seed, steps, guidance, sampler, lora (or lora:NAME) and prompt (Prompt S/R)"


def grid_error(message: str) -> EngineError:
    return EngineError(ErrorKind.BAD_INPUT, message)


@dataclass(frozen=True)
class Axis:
    """One varied setting: its canonical ``name``, the typed ``values`` and what the user wrote (``texts``).

    ``lora``: the label of the LoRA whose weight varies (lora axes only).
    """

    name: str
    values: tuple
    texts: tuple[str, ...]
    lora: str = ""

    @property
    def title(self) -> str:
        """How the grid's parameters name it ("Steps", "Prompt S/R", "LoRA weight (style)")."""
        title = SETTINGS[self.name][0]
        return f"{title} ({self.lora})" if self.lora else title

    @property
    def key(self) -> str:
        """What makes two axes the same setting (two LoRAs' weights are two settings)."""
        return f"lora:{self.lora}" if self.name == "lora" else self.name

    def label(self, index: int) -> str:
        """The label of value ``index`` on the grid: "Steps: 8", "CFG scale: 7", or the Prompt S/R text itself."""
        value = self.values[index]
        if self.name == "prompt":
            return value
        if self.name == "lora":
            return f"{self.lora}: {value:g}"
        if isinstance(value, float):
            value = f"{value:g}"
        return f"{SETTINGS[self.name][0]}: {value}"

    def apply(self, request: ImageRequest, index: int) -> ImageRequest:
        """``request`` with this axis at value ``index``."""
        value = self.values[index]
        if self.name == "seed":
            return replace(request, seed=value)
        if self.name == "steps":
            return replace(request, steps=value)
        if self.name == "guidance":
            return replace(request, guidance=value)
        if self.name == "sampler":
            return replace(request, scheduler=value)
        if self.name == "lora":
            loras = tuple(replace(lora, weight=value) if lora.label == self.lora else lora for lora in request.loras)
            return replace(request, loras=loras)
        search = self.values[0]  # Prompt S/R: the first value is what is searched for, in both prompts
        return replace(request, prompt=request.prompt.replace(search, value),
                       negative_prompt=request.negative_prompt.replace(search, value))

    def as_text(self) -> str:
        """The axis as the user would type it again (``steps=4,8,16``)."""
        name = f"lora:{self.lora}" if self.name == "lora" else self.name
        return f"{name}={_join(self.texts)}"


@dataclass(frozen=True)
class GridCell:
    index: int  # 0-based, in reading order
    column: int
    row: int
    request: ImageRequest
    labels: tuple[str, ...]  # the X label, then the Y label when there is a Y axis

    @property
    def caption(self) -> str:
        return ", ".join(self.labels)


@dataclass(frozen=True)
class GridPlan:
    """What a grid makes: its axes (X first), and every cell in reading order."""

    base: ImageRequest  # the request the axes vary (its seed fixed when it was random)
    axes: tuple[Axis, ...]
    cells: tuple[GridCell, ...]

    @property
    def columns(self) -> int:
        return len(self.axes[0].values)

    @property
    def rows(self) -> int:
        return len(self.axes[1].values) if len(self.axes) > 1 else 1

    @property
    def shape(self) -> str:
        return f"{self.columns}×{self.rows}"

    def describe(self) -> str:
        """In words, for a status line or a PNG: "2×2 grid: Steps 4, 8 × Seed 1, 2"."""
        parts = [f"{axis.title} {', '.join(axis.texts)}" for axis in self.axes]
        return f"{self.shape} grid: " + " × ".join(parts)

    def record(self) -> dict:
        """The grid as JSON data (the grid PNG's ``atelier`` chunk and its gallery row keep it)."""
        return {"axes": [{"name": axis.name, "lora": axis.lora, "title": axis.title, "values": list(axis.texts)}
                         for axis in self.axes],
                "columns": self.columns, "rows": self.rows}


def parse_axis(text: str, request: ImageRequest, samplers: tuple[str, ...] | None = None) -> Axis:
    """One ``NAME=V1,V2,...`` as an :class:`Axis` for ``request``; raises a BAD_INPUT EngineError saying what is wrong.

    ``samplers``: the sampler names the model offers (None: every name Atelier knows).
    """
    name_text, sep, values_text = text.partition("=")
    name_text = name_text.strip()
    if not sep or not name_text:
        raise grid_error(f"'{text}' is not a setting to vary; write NAME=VALUE1,VALUE2 (e.g. steps=4,8,16), "
                         f"where NAME is one of {NAMES_TEXT}")
    raw_name, _colon, lora_name = name_text.partition(":")
    name = _ALIASES.get(raw_name.strip().lower())
    if name is None or (lora_name and name != "lora"):
        raise grid_error(f"unknown setting '{name_text}' to vary; choose one of {NAMES_TEXT}")
    texts = _split(values_text, keep_spaces=name == "prompt")
    if not texts:
        raise grid_error(f"{name_text}= has no values; give them separated by commas (e.g. {name}="
                         f"{_EXAMPLES[name]})")
    lora = ""
    if name == "lora":
        lora = _lora_label(request, lora_name.strip(), name_text)
    if name in _NUMBER_SETTINGS:
        texts = _expand_ranges(name_text, texts, whole=name in _WHOLE_SETTINGS)
    values = tuple(_value(name, name_text, value, samplers) for value in texts)
    axis = Axis(name, values, tuple(texts), lora)
    if name == "prompt":
        search = values[0]
        if search not in request.prompt and search not in request.negative_prompt:
            raise grid_error(f"prompt=: the first value, '{search}', is not in the prompt; Prompt S/R replaces the "
                             "first value's text in the prompt by each value, so it must be a word or phrase of it")
    base = set(request.validate())
    for index, value_text in enumerate(texts):
        problems = [p for p in axis.apply(request, index).validate() if p not in base]
        if problems:
            raise grid_error(f"{name_text}={value_text}: {'; '.join(problems)}")
    return axis


def plan_grid(request: ImageRequest, axis_texts: list[str] | tuple[str, ...],
              samplers: tuple[str, ...] | None = None, rng: random.Random | None = None) -> GridPlan:
    """Check the axes against ``request`` and expand them into cells; raises a BAD_INPUT EngineError when wrong.

    ``request`` must itself be valid (front ends check it as for one image)
    and make one image: a grid makes one per cell. A random seed (None)
    becomes one fixed seed for every cell, drawn from ``rng``.
    """
    texts = [t for t in axis_texts if t.strip()]
    if not texts:
        raise grid_error("choose a setting to vary (e.g. steps=4,8,16)")
    if len(texts) > MAX_AXES:
        raise grid_error(f"at most {MAX_AXES} settings can vary in one grid (one across, one down); got {len(texts)}")
    if request.batch_count != 1:
        raise grid_error(f"a grid makes one image per cell; set the batch count to 1 (it is {request.batch_count})")
    problems = request.validate()
    if problems:
        raise grid_error("; ".join(problems))
    axes = tuple(parse_axis(text, request, samplers) for text in texts)
    if len(axes) == 2 and axes[0].key == axes[1].key:
        raise grid_error(f"{axes[0].key} is varied twice; give all its values once (e.g. "
                         f"{axes[0].key}={_join(axes[0].texts + axes[1].texts)})")
    count = len(axes[0].values) * (len(axes[1].values) if len(axes) > 1 else 1)
    if count > MAX_CELLS:
        sizes = " × ".join(str(len(axis.values)) for axis in axes)
        raise grid_error(f"the grid would have {count} cells ({sizes}); at most {MAX_CELLS} can be made in one run")
    base = request
    if base.seed is None:
        base = replace(base, seed=(rng or random.SystemRandom()).randint(0, MAX_SEED))
    x_axis, y_axis = axes[0], (axes[1] if len(axes) > 1 else None)
    cells = []
    for row in range(len(y_axis.values) if y_axis else 1):
        for column in range(len(x_axis.values)):
            cell = x_axis.apply(base, column)
            labels = [x_axis.label(column)]
            if y_axis is not None:
                cell = y_axis.apply(cell, row)
                labels.append(y_axis.label(row))
            cells.append(GridCell(len(cells), column, row, cell, tuple(labels)))
    return GridPlan(base, axes, tuple(cells))


def model_samplers(model_path: str) -> tuple[str, ...] | None:
    """The samplers the model in ``model_path`` offers (LCM only for LCM/Turbo models); None when it cannot be read.

    Cheap (JSON only, no torch). A folder that cannot be read is the engine's to explain when it loads it.
    """
    from engines.diffusion.schedulers import usable_schedulers
    from engines.model_folder import inspect_model_folder

    try:
        return usable_schedulers(inspect_model_folder(model_path).distilled)
    except EngineError:
        return None


# ---- values ------------------------------------------------------------------------------------------

_EXAMPLES = {"seed": "1,2,3", "steps": "4,8,16", "guidance": "3,5,7", "sampler": "Euler,DDIM", "lora": "0.2,0.6,1",
             "prompt": "cat,dog"}


def _split(text: str, keep_spaces: bool) -> list[str]:
    """Comma-separated values; a value in double quotes may hold commas (A1111's X/Y plot reads them as CSV)."""
    try:
        row = next(csv.reader([text], skipinitialspace=True), [])
    except csv.Error:
        row = text.split(",")
    values = [value if keep_spaces else value.strip() for value in row]
    if keep_spaces:
        values = [value.strip() for value in values]  # the phrase, without the spaces around its comma
    return [value for value in values if value]


def _join(texts) -> str:
    return ",".join(f'"{text}"' if "," in text else text for text in texts)


def _expand_ranges(name_text: str, texts: list[str], whole: bool) -> list[str]:
    """Each range among ``texts`` as its values (texts, as a user would type them); other texts as they are."""
    out = []
    for text in texts:
        match = _RANGE.match(text)
        out.extend(_expand_range(f"{name_text}={text}", match, whole) if match else [text])
    return out


def _expand_range(where: str, match: re.Match, whole: bool) -> list[str]:
    """One A1111 range (``1-4``, ``4-16 (+4)``, ``3-9 (+1.5)``, ``10-5 (-3)``, ``1-10 [5]``) as its values' texts.

    ``where`` starts each message ("steps=1-4 (+0)"). Fractions keep the arithmetic exact: 0.2 + 0.2 + 0.2 is
    0.6 here, so the cells and labels say what the user meant.
    """
    setting = where.partition("=")[0]
    start, end = _exact(match.group(1)), _exact(match.group(2))
    step_text, count_text = match.group(3), match.group(4)
    if whole and (start.denominator != 1 or end.denominator != 1):
        raise grid_error(f"{where}: {setting} takes whole numbers, so its range must start and end on whole "
                         "numbers (e.g. 1-4)")
    if count_text is not None:
        return _counted(where, start, end, count_text.strip(), whole)
    if step_text is None:
        step = Fraction(1 if end >= start else -1)
    else:
        if not re.fullmatch(_NUMBER, step_text.strip()):
            raise grid_error(f"{where}: the step in brackets, '{step_text.strip()}', is not a number (e.g. 4-16 (+4), "
                             "or 10-4 (-2) to count down)")
        step = _exact(step_text)
        if whole and step.denominator != 1:
            raise grid_error(f"{where}: {setting} takes whole numbers, so the step must be one too (e.g. (+2))")
    if step == 0:
        raise grid_error(f"{where}: a step of 0 never gets from {_text(start)} to {_text(end)}; give a step such as "
                         f"({'+' if end >= start else '-'}1)")
    if (end - start) * step < 0:
        way = "down" if end < start else "up"
        example = f"{_text(start)}-{_text(end)} ({'-' if end < start else '+'}{_text(abs(step))})"
        raise grid_error(f"{where}: the step {_signed(step)} goes away from {_text(end)}; to count {way} from "
                         f"{_text(start)} to {_text(end)} give a {'negative' if way == 'down' else 'positive'} step "
                         f"(e.g. {example})")
    count = int((end - start) / step) + 1  # the values from start that do not pass end
    if count == 1 and start != end:
        raise grid_error(f"{where}: a step of {_signed(step)} passes {_text(end)} at once, so the range would hold "
                         f"{_text(start)} alone; give a smaller step or a count (e.g. {_text(start)}-{_text(end)} [3])")
    _check_count(where, count)
    return [_text(start + step * n) for n in range(count)]


def _counted(where: str, start: Fraction, end: Fraction, count_text: str, whole: bool) -> list[str]:
    """``1-10 [5]``: ``count`` values evenly spaced from ``start`` to ``end``, both included (numpy's linspace)."""
    if not count_text.isdigit():
        raise grid_error(f"{where}: the count in square brackets, '{count_text}', must be a whole number of values "
                         "(e.g. 1-10 [5])")
    count = int(count_text)
    if count == 0:
        raise grid_error(f"{where}: a count of 0 makes no values; ask for 2 or more (e.g. "
                         f"{_text(start)}-{_text(end)} [5])")
    if count == 1 and start != end:
        raise grid_error(f"{where}: one value cannot both start at {_text(start)} and end at {_text(end)}; ask for 2 "
                         f"or more, or give just {_text(start)}")
    _check_count(where, count)
    if whole and count > abs(end - start) + 1:
        raise grid_error(f"{where}: only {abs(end - start) + 1} whole numbers lie from {_text(start)} to "
                         f"{_text(end)}; ask for at most that many values, or the cells would repeat")
    if count == 1:
        return [_text(start)]
    values = [start + (end - start) * n / (count - 1) for n in range(count)]
    if whole:
        return [str(int(value)) for value in values]  # int() truncates towards zero, as A1111's int(x) does
    return [_text(round(value, COUNT_PLACES)) for value in values]


def _check_count(where: str, count: int) -> None:
    if count > MAX_CELLS:
        raise grid_error(f"{where}: the range has {count} values; a grid has at most {MAX_CELLS} cells")


def _exact(text: str) -> Fraction:
    """A number as typed ("1.5", "- 3", ".5"), exactly: Fraction("0.2") is 1/5, where float 0.2 is not."""
    return Fraction(Decimal(text.replace(" ", "")))


def _text(value: Fraction) -> str:
    """An exact value written back as a short decimal: 3, 4.5, 0.6 (never 0.6000000000000001, 3.0 or 1E+1)."""
    if value.denominator == 1:
        return str(value.numerator)
    decimal = Decimal(value.numerator) / Decimal(value.denominator)  # finite: every value here has a finite decimal
    return format(decimal.normalize(), "f")


def _signed(step: Fraction) -> str:
    return ("+" if step > 0 else "") + _text(step)


def _value(name: str, name_text: str, text: str, samplers: tuple[str, ...] | None):
    if name in ("seed", "steps"):
        try:
            return int(text)
        except ValueError:
            raise grid_error(f"{name_text}={text}: '{text}' is not a whole number") from None
    if name in ("guidance", "lora"):
        try:
            value = float(text)
        except ValueError:
            raise grid_error(f"{name_text}={text}: '{text}' is not a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise grid_error(f"{name_text}={text}: '{text}' is not a number")
        return value
    if name == "sampler":
        offered = samplers if samplers is not None else SCHEDULER_NAMES
        found = next((known for known in SCHEDULER_NAMES if known.lower() == text.lower()), None)
        if found is None:
            raise grid_error(f"{name_text}={text}: unknown sampler '{text}'; choose one of: {', '.join(offered)}")
        if found not in offered:
            raise grid_error(f"{name_text}={text}: this model does not offer the sampler {found} (LCM is for LCM "
                             f"and Turbo models); choose one of: {', '.join(offered)}")
        return found
    return text  # prompt: the text itself


def _lora_label(request: ImageRequest, wanted: str, name_text: str) -> str:
    """The label of the LoRA a ``lora`` axis varies: the named one, else the request's first."""
    if not request.loras:
        raise grid_error(f"{name_text}= varies a LoRA's weight, but no LoRA is applied; add one (--lora FILE) first")
    if not wanted:
        return request.loras[0].label
    for lora in request.loras:
        if lora.label == wanted:
            return lora.label
    names = ", ".join(lora.label for lora in request.loras)
    raise grid_error(f"{name_text}=: no LoRA named '{wanted}' is applied (applied: {names})")

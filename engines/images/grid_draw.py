"""Draw an experiment grid: the cells in reading order, the X labels above the columns, the Y labels left of the rows.

The labels use the font bundled with Pillow (``ImageFont.load_default(size=...)``,
Pillow 10.1 and later), so a grid looks the same on every computer and needs
no system font. Their size follows the cells' (as A1111's X/Y plot sizes
them), never below a readable 14 px, and a label too long for its column
wraps onto more lines. A cell that was not made (the run was cancelled or
failed before it) is drawn as a grey box saying so: the cells that were
made stay comparable in place. A grid that would exceed
:data:`MAX_GRID_PIXELS` has its cells scaled down to fit, so an 8 × 8 grid
of large images still fits in memory and in an image viewer.

The PNG carries A1111's ``parameters`` text of the first cell plus the X/Y
plot's own fields (``Script: X/Y plot, X Type: Steps, X Values: "4,8"``),
and Atelier's ``atelier`` record of the first cell's request with the grid
beside it, so "use these settings again" on a grid restores its first cell.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from engines.diffusion.png_meta import ATELIER_KEY, PARAMETERS_KEY, atelier_record, format_parameters
from engines.images.grid import GridPlan

MAX_GRID_PIXELS = 64_000_000  # the most an init image may have (engines.diffusion.types): ~200 MB as RGB
MIN_FONT, MAX_FONT = 14, 48
GAP = 4  # white space between cells
BACKGROUND, INK, MISSING, MISSING_INK = (255, 255, 255), (20, 20, 20), (200, 200, 200), (90, 90, 90)


@dataclass(frozen=True)
class GridLayout:
    """Where everything goes: the cell size (after any scaling), the label column's width, the header's height."""

    cell_width: int
    cell_height: int
    label_width: int  # 0 without a Y axis
    header_height: int
    columns: int
    rows: int
    font_size: int
    x_lines: tuple[tuple[str, ...], ...]  # each X label, wrapped
    y_lines: tuple[tuple[str, ...], ...]

    @property
    def size(self) -> tuple[int, int]:
        width = self.label_width + self.columns * self.cell_width + (self.columns - 1) * GAP
        height = self.header_height + self.rows * self.cell_height + (self.rows - 1) * GAP
        return width, height

    def cell_box(self, column: int, row: int) -> tuple[int, int, int, int]:
        left = self.label_width + column * (self.cell_width + GAP)
        top = self.header_height + row * (self.cell_height + GAP)
        return left, top, left + self.cell_width, top + self.cell_height


def layout(plan: GridPlan) -> GridLayout:
    width, height = plan.base.width, plan.base.height
    area = plan.columns * plan.rows * width * height
    if area > MAX_GRID_PIXELS:
        scale = math.sqrt(MAX_GRID_PIXELS / area)
        width, height = max(1, int(width * scale)), max(1, int(height * scale))
    size = max(MIN_FONT, min(MAX_FONT, (width + height) // 25))
    font = _font(size)
    pad = size // 2
    x_axis = plan.axes[0]
    x_lines = tuple(_wrap(x_axis.label(i), font, width - 2 * pad) for i in range(plan.columns))
    line_height = size + size // 4
    header = max(len(lines) for lines in x_lines) * line_height + 2 * pad
    label_width, y_lines = 0, ()
    if len(plan.axes) > 1:
        y_axis = plan.axes[1]
        labels = [y_axis.label(i) for i in range(plan.rows)]
        widest = max(int(math.ceil(font.getlength(label))) for label in labels)
        label_width = min(widest, max(width, 12 * size)) + 2 * pad  # long labels wrap instead of widening the grid
        y_lines = tuple(_wrap(label, font, label_width - 2 * pad) for label in labels)
    return GridLayout(width, height, label_width, header, plan.columns, plan.rows, size, x_lines, y_lines)


def draw_grid(plan: GridPlan, images: dict[int, Image.Image]) -> Image.Image:
    """The grid of ``plan`` with ``images`` (cell index → image) in place; missing cells are grey boxes saying so."""
    grid = layout(plan)
    canvas = Image.new("RGB", grid.size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font(grid.font_size)
    for column, lines in enumerate(grid.x_lines):
        left, _top, right, _bottom = grid.cell_box(column, 0)
        _text_block(draw, lines, font, (left + right) / 2, grid.header_height / 2)
    for row, lines in enumerate(grid.y_lines):
        _left, top, _right, bottom = grid.cell_box(0, row)
        _text_block(draw, lines, font, grid.label_width / 2, (top + bottom) / 2)
    for cell in plan.cells:
        box = grid.cell_box(cell.column, cell.row)
        image = images.get(cell.index)
        if image is None:
            draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=MISSING)
            lines = _wrap("not made", font, grid.cell_width - 4)
            _text_block(draw, lines, font, (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, MISSING_INK)
            continue
        image = image.convert("RGB")
        if image.size != (grid.cell_width, grid.cell_height):
            image = image.resize((grid.cell_width, grid.cell_height), Image.Resampling.LANCZOS)
        canvas.paste(image, box[:2])
    return canvas


def grid_parameters(plan: GridPlan, model: str, made: int) -> str:
    """A1111's ``parameters`` of a grid: the first cell's, then the X/Y plot's fields (and how much was made)."""
    first = plan.cells[0].request
    text = format_parameters(first, {"seed": first.seed, "model": model})
    names = ("X", "Y")
    fields = [f'{names[i]} Type: {_quote(axis.title)}, {names[i]} Values: {json.dumps(",".join(axis.texts))}'
              for i, axis in enumerate(plan.axes)]
    text += ", Script: X/Y plot, " + ", ".join(fields)
    if made < len(plan.cells):
        text += f", Grid cells made: {made} of {len(plan.cells)}"
    return text


def grid_png(plan: GridPlan, images: dict[int, Image.Image], model: str, extra: dict | None = None) -> bytes:
    """The grid as a PNG with its ``parameters`` and ``atelier`` chunks (``extra``: backend, device, dtype...)."""
    canvas = draw_grid(plan, images)
    first = plan.cells[0].request
    info = PngImagePlugin.PngInfo()
    info.add_text(PARAMETERS_KEY, grid_parameters(plan, model, len(images)))
    record = atelier_record(first, dict(extra or {}, seed=first.seed, model=model))
    record["grid"] = dict(plan.record(), made=sorted(images), cells=len(plan.cells))
    info.add_itxt(ATELIER_KEY, json.dumps(record, ensure_ascii=False))
    out = io.BytesIO()
    canvas.save(out, format="PNG", pnginfo=info, compress_level=4)
    return out.getvalue()


def _quote(text: str) -> str:
    return json.dumps(text) if any(c in text for c in ',:"') else text


def _font(size: int):
    return ImageFont.load_default(size=size)


def _wrap(text: str, font, width: int) -> tuple[str, ...]:
    """``text`` in lines no wider than ``width`` px (a single word wider than that stays whole on its line)."""
    lines: list[str] = []
    for word in text.split() or [""]:
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return tuple(lines)


def _text_block(draw, lines, font, center_x: float, center_y: float, fill=INK) -> None:
    size = font.size
    line_height = size + size // 4
    top = center_y - line_height * len(lines) / 2 + line_height / 2
    for i, line in enumerate(lines):
        draw.text((center_x, top + i * line_height), line, font=font, fill=fill, anchor="mm")

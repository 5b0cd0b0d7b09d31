"""Cutting an image into tiles with context, so a network's memory is bounded by the tile, not the image.

An upscaler's activations grow with the square of what it is given: a
2048×2048 image ×4 through Real-ESRGAN would need tens of gigabytes at once.
So the image is cut into square *cores* that partition it, each run with
``context`` more pixels on every side (clipped at the image's edges), and
only the core of each output is kept. A convolution network's output pixel
depends on the input pixels within its receptive radius and on nothing
else, and at the image's own edges a clipped tile sees exactly the zero
padding the whole image would: so with ``context`` at least the radius, the
tiled result equals the whole-image one, pixel for pixel up to float
rounding, and with less it differs only in how far a seam's pixels can see
(see :data:`engines.diffusion.upscale.MAX_CONTEXT` for the choice).

Pure arithmetic, no torch: the grid is tested on its own, and ``align``
keeps every tile edge on the pixel-unshuffle grid of Real-ESRGAN's ×2
models, which fold 2×2 pixels into channels before anything else.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tile:
    """One tile: the core it contributes (``y0:y1, x0:x1``) and the region it is run on (``in_*``)."""

    y0: int
    y1: int
    x0: int
    x1: int
    in_y0: int
    in_y1: int
    in_x0: int
    in_x1: int

    def core_in_region(self, scale: int) -> tuple[slice, slice]:
        """Where the core lies in the region's output, ``scale`` times larger."""
        top, left = (self.y0 - self.in_y0) * scale, (self.x0 - self.in_x0) * scale
        return (slice(top, top + (self.y1 - self.y0) * scale), slice(left, left + (self.x1 - self.x0) * scale))

    def core_in_output(self, scale: int) -> tuple[slice, slice]:
        """Where the core lies in the whole output."""
        return (slice(self.y0 * scale, self.y1 * scale), slice(self.x0 * scale, self.x1 * scale))


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def tile_grid(height: int, width: int, tile: int, context: int, align: int = 1) -> list[Tile]:
    """Tiles of at most ``tile`` pixels square covering ``height``×``width``, row by row.

    ``align`` (1, 2 or 4): the image's sides, ``tile`` and every tile edge are
    multiples of it (the caller pads the image to a multiple first);
    ``context`` is rounded up to one. A tile at least as large as the image
    gives one tile: the whole image, no context needed.
    """
    if height % align or width % align:
        raise ValueError(f"a {width}×{height} image is not a multiple of {align} on each side")
    tile = max(align, tile - tile % align)
    context = _round_up(max(0, context), align)
    tiles = []
    for y0 in range(0, height, tile):
        y1 = min(height, y0 + tile)
        for x0 in range(0, width, tile):
            x1 = min(width, x0 + tile)
            tiles.append(Tile(y0, y1, x0, x1, max(0, y0 - context), min(height, y1 + context),
                              max(0, x0 - context), min(width, x1 + context)))
    return tiles

"""A1111's X/Y plot range syntax in experiment grids: decimal steps, counts in brackets, ranges that count down.

Fast unit tests through :func:`engines.images.grid.plan_grid`, as the CLI's
``--vary`` and the Images page's Experiment section call it; no engine.
"""

from dataclasses import replace

import pytest

from engines.diffusion.types import ImageRequest, LoraSpec
from engines.errors import EngineError, ErrorKind
from engines.images.grid import MAX_CELLS, plan_grid

BASE = ImageRequest(prompt="a red lighthouse at dusk", width=64, height=64, steps=4, seed=7,
                    loras=(LoraSpec("/m/style.safetensors", 1.0),))


def values(axis_text: str) -> list:
    """The value each cell of a one-axis grid gets, as the request carries it."""
    plan = plan_grid(BASE, [axis_text])
    name = plan.axes[0].name
    if name == "lora":
        return [cell.request.loras[0].weight for cell in plan.cells]
    return [getattr(cell.request, name) for cell in plan.cells]


@pytest.mark.parametrize("axis, expected", [
    ("guidance=3-9 (+1.5)", [3.0, 4.5, 6.0, 7.5, 9.0]),
    ("cfg=3-10 (+1.5)", [3.0, 4.5, 6.0, 7.5, 9.0]),  # never past the end (A1111's arange adds 10.5)
    ("lora=0.2-1 (+0.2)", [0.2, 0.4, 0.6, 0.8, 1.0]),
    ("lora=-1-1 (+0.5)", [-1.0, -0.5, 0.0, 0.5, 1.0]),
    ("lora=1--1", [1.0, 0.0, -1.0]),
    ("guidance=.5-2 (+ .5)", [0.5, 1.0, 1.5, 2.0]),
    ("seed=1-10 [5]", [1, 3, 5, 7, 10]),  # linspace 1, 3.25, 5.5, 7.75, 10, truncated as A1111's int(x)
    ("steps=4-16 [4]", [4, 8, 12, 16]),
    ("guidance=1-10 [5]", [1.0, 3.25, 5.5, 7.75, 10.0]),
    ("guidance=0-1 [4]", [0.0, 0.3333, 0.6667, 1.0]),
    ("steps=10-5 (-3)", [10, 7]),
    ("steps=9-6", [9, 8, 7, 6]),  # going down without a step: by 1
    ("seed=20-10 [3]", [20, 15, 10]),
    ("seed=5-5 [1]", [5]),
    ("steps=4-16 (+4), 20, 1-2", [4, 8, 12, 16, 20, 1, 2]),  # ranges among plain values, in the order typed
    ("steps=1-4", [1, 2, 3, 4]),
])
def test_ranges_expand_as_a1111_reads_them(axis, expected):
    assert values(axis) == expected


def test_decimal_values_are_written_without_float_noise_in_labels_and_parameters():
    plan = plan_grid(BASE, ["lora=0.2-1 (+0.2)", "cfg=0-1 [4]"])
    assert plan.axes[0].texts == ("0.2", "0.4", "0.6", "0.8", "1")
    assert plan.axes[1].texts == ("0", "0.3333", "0.6667", "1")
    assert [c.labels for c in plan.cells[:3]] == [("style: 0.2", "CFG scale: 0"), ("style: 0.4", "CFG scale: 0"),
                                                 ("style: 0.6", "CFG scale: 0")]
    assert plan.cells[-1].labels == ("style: 1", "CFG scale: 1")
    assert plan.axes[0].as_text() == "lora:style=0.2,0.4,0.6,0.8,1"
    assert plan.describe() == "5×4 grid: LoRA weight (style) 0.2, 0.4, 0.6, 0.8, 1 × CFG scale 0, 0.3333, 0.6667, 1"
    assert plan.record()["axes"][1]["values"] == ["0", "0.3333", "0.6667", "1"]


@pytest.mark.parametrize("axis, message", [
    ("steps=1-4 (+0)", "steps=1-4 (+0): a step of 0 never gets from 1 to 4; give a step such as (+1)"),
    ("guidance=9-3 (+1.5)", "guidance=9-3 (+1.5): the step +1.5 goes away from 3; to count down from 9 to 3 give a "
                            "negative step (e.g. 9-3 (-1.5))"),
    ("seed=1-4 (-1)", "seed=1-4 (-1): the step -1 goes away from 4; to count up from 1 to 4 give a positive step "
                      "(e.g. 1-4 (+1))"),
    ("lora=0.5-1", "lora=0.5-1: a step of +1 passes 1 at once, so the range would hold 0.5 alone; give a smaller "
                   "step or a count (e.g. 0.5-1 [3])"),
    ("seed=1-10 [0]", "seed=1-10 [0]: a count of 0 makes no values; ask for 2 or more (e.g. 1-10 [5])"),
    ("cfg=3-7 [1]", "cfg=3-7 [1]: one value cannot both start at 3 and end at 7; ask for 2 or more, or give just 3"),
    ("cfg=1-4 [2.5]", "cfg=1-4 [2.5]: the count in square brackets, '2.5', must be a whole number of values "
                      "(e.g. 1-10 [5])"),
    ("cfg=1-4 (+x)", "cfg=1-4 (+x): the step in brackets, '+x', is not a number (e.g. 4-16 (+4), or 10-4 (-2) to "
                     "count down)"),
    ("steps=1-3 [5]", "steps=1-3 [5]: only 3 whole numbers lie from 1 to 3; ask for at most that many values, or the "
                      "cells would repeat"),
    ("steps=1-9 (+1.5)", "steps=1-9 (+1.5): steps takes whole numbers, so the step must be one too (e.g. (+2))"),
    ("seed=1.5-4", "seed=1.5-4: seed takes whole numbers, so its range must start and end on whole numbers "
                   "(e.g. 1-4)"),
    ("seed=1-100", f"seed=1-100: the range has 100 values; a grid has at most {MAX_CELLS} cells"),
    ("seed=0-4294967295", f"seed=0-4294967295: the range has 4294967296 values; a grid has at most {MAX_CELLS} cells"),
    ("cfg=1-30 [65]", f"cfg=1-30 [65]: the range has 65 values; a grid has at most {MAX_CELLS} cells"),
    ("cfg=20-40 (+10)", "cfg=40: guidance (CFG scale) must be between 0 and 30 (got 40.0)"),  # each value checked
])
def test_a_malformed_range_is_refused_in_one_sentence(axis, message):
    with pytest.raises(EngineError) as caught:
        plan_grid(BASE, [axis])
    assert caught.value.kind == ErrorKind.BAD_INPUT
    assert caught.value.message == message


def test_plain_negative_and_exponent_values_are_not_ranges():
    assert values("lora=-0.5,1e-1") == [-0.5, 0.1]
    with pytest.raises(EngineError) as caught:
        plan_grid(replace(BASE, loras=()), ["seed=-5"])
    assert caught.value.message == "seed=-5: seed must be between 0 and 4294967295 (got -5)"

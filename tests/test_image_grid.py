"""Experiment grids (the X/Y plot): parsing the axes, expanding them into cells, drawing the labelled grid.

Fast unit tests: plain requests and Pillow images, no engine. The grid made
end to end by ``atelier image --vary`` is in test_image_grid_cli.py.
"""

import random
from dataclasses import replace

import pytest
from PIL import Image

from engines.diffusion.types import ImageRequest, LoraSpec
from engines.errors import EngineError, ErrorKind
from engines.images.grid import MAX_CELLS, plan_grid

BASE = ImageRequest(prompt="a red lighthouse at dusk", negative_prompt="blurry", width=64, height=64, steps=4,
                    seed=7)


def test_two_axes_expand_row_by_row_with_x_across_and_y_down():
    plan = plan_grid(BASE, ["steps=4,8,16", "seed=1,2"])
    assert (plan.columns, plan.rows, plan.shape) == (3, 2, "3×2")
    assert [(c.index, c.column, c.row, c.request.steps, c.request.seed) for c in plan.cells] == [
        (0, 0, 0, 4, 1), (1, 1, 0, 8, 1), (2, 2, 0, 16, 1), (3, 0, 1, 4, 2), (4, 1, 1, 8, 2), (5, 2, 1, 16, 2)]
    assert plan.cells[4].labels == ("Steps: 8", "Seed: 2") and plan.cells[4].caption == "Steps: 8, Seed: 2"
    assert plan.describe() == "3×2 grid: Steps 4, 8, 16 × Seed 1, 2"
    # everything else is the base request's
    assert {(c.request.prompt, c.request.guidance, c.request.scheduler) for c in plan.cells} == {
        ("a red lighthouse at dusk", 7.0, "Euler")}


def test_guidance_sampler_and_ranges():
    plan = plan_grid(BASE, ["cfg=3, 7.5", "sampler=euler a,DDIM"])
    assert [c.request.guidance for c in plan.cells] == [3.0, 7.5, 3.0, 7.5]
    assert [c.request.scheduler for c in plan.cells] == ["Euler a", "Euler a", "DDIM", "DDIM"]  # A1111's spelling
    assert plan.cells[1].labels == ("CFG scale: 7.5", "Sampler: Euler a")
    assert [c.request.seed for c in plan_grid(BASE, ["seed=1-3"]).cells] == [1, 2, 3]
    assert [c.request.steps for c in plan_grid(BASE, ["steps=4-16 (+4)"]).cells] == [4, 8, 12, 16]


def test_prompt_search_and_replace_replaces_the_first_values_text_in_both_prompts():
    request = ImageRequest(prompt="a red lighthouse, red sky", negative_prompt="red noise", width=64, height=64, seed=1)
    plan = plan_grid(request, ['prompt=red,"blue, pale",green'])
    assert [c.request.prompt for c in plan.cells] == [
        "a red lighthouse, red sky", "a blue, pale lighthouse, blue, pale sky", "a green lighthouse, green sky"]
    assert plan.cells[2].request.negative_prompt == "green noise"
    assert [c.labels for c in plan.cells] == [("red",), ("blue, pale",), ("green",)]  # A1111 labels S/R by the text
    assert plan.axes[0].as_text() == 'prompt=red,"blue, pale",green'


def test_lora_weight_varies_the_named_or_the_first_lora():
    request = replace(BASE, loras=(LoraSpec("/m/style.safetensors", 1.0), LoraSpec("/m/ink.safetensors", 0.5)))
    plan = plan_grid(request, ["lora=0,0.5", "lora:ink=1,2"])
    assert [(c.request.loras[0].weight, c.request.loras[1].weight) for c in plan.cells] == [
        (0.0, 1.0), (0.5, 1.0), (0.0, 2.0), (0.5, 2.0)]
    assert plan.cells[3].labels == ("style: 0.5", "ink: 2")
    assert [a.title for a in plan.axes] == ["LoRA weight (style)", "LoRA weight (ink)"]


def test_a_random_seed_becomes_one_seed_for_every_cell():
    plan = plan_grid(ImageRequest(prompt="x", width=64, height=64, seed=None), ["steps=2,3"], rng=random.Random(4))
    seeds = {c.request.seed for c in plan.cells}
    assert len(seeds) == 1 and seeds == {plan.base.seed} and plan.base.seed is not None


@pytest.mark.parametrize("axes, request_changes, message", [
    (["colour=1,2"], {}, "unknown setting 'colour' to vary; choose one of seed, steps, guidance, sampler, lora "
                         "(or lora:NAME) and prompt (Prompt S/R)"),
    (["steps"], {}, "'steps' is not a setting to vary; write NAME=VALUE1,VALUE2 (e.g. steps=4,8,16), where NAME is "
                    "one of seed, steps, guidance, sampler, lora (or lora:NAME) and prompt (Prompt S/R)"),
    (["steps=4,0"], {}, "steps=0: steps must be between 1 and 150 (got 0)"),
    (["steps=4.5"], {}, "steps=4.5: '4.5' is not a whole number"),
    (["guidance=abc"], {}, "guidance=abc: 'abc' is not a number"),
    (["cfg=31"], {}, "cfg=31: guidance (CFG scale) must be between 0 and 30 (got 31.0)"),
    (["seed=-5"], {}, "seed=-5: seed must be between 0 and 4294967295 (got -5)"),
    (["steps="], {}, "steps= has no values; give them separated by commas (e.g. steps=4,8,16)"),
    (["seed=9-2 (+1)"], {}, "seed=9-2 (+1): the step +1 goes away from 2; to count down from 9 to 2 give a negative "
                            "step (e.g. 9-2 (-1))"),
    (["sampler=Euler,Heun"], {}, "sampler=Heun: unknown sampler 'Heun'; choose one of: Euler, Euler a, "
                                 "DPM++ 2M Karras, DDIM, LCM"),
    (["steps=4", "seed=1", "guidance=5"], {}, "at most 2 settings can vary in one grid (one across, one down); got 3"),
    (["steps=4,8", "steps=16"], {}, "steps is varied twice; give all its values once (e.g. steps=4,8,16)"),
    (["steps=1-9", "seed=1-8"], {}, f"the grid would have 72 cells (9 × 8); at most {MAX_CELLS} can be made in one "
                                    "run"),
    (["prompt=cat,dog"], {}, "prompt=: the first value, 'cat', is not in the prompt; Prompt S/R replaces the first "
                             "value's text in the prompt by each value, so it must be a word or phrase of it"),
    (["lora=0.5,1"], {}, "lora= varies a LoRA's weight, but no LoRA is applied; add one (--lora FILE) first"),
    (["lora=20"], {"loras": (LoraSpec("/m/style.safetensors"),)},
     "lora=20: the weight of the LoRA 'style' must be between -10 and 10 (got 20.0)"),
    (["lora:ink=1"], {"loras": (LoraSpec("/m/style.safetensors"),)},
     "lora:ink=: no LoRA named 'ink' is applied (applied: style)"),
    (["steps=4,8"], {"batch_count": 3}, "a grid makes one image per cell; set the batch count to 1 (it is 3)"),
    ([], {}, "choose a setting to vary (e.g. steps=4,8,16)"),
])
def test_bad_axes_are_refused_in_one_sentence(axes, request_changes, message):
    request = replace(BASE, **request_changes)
    with pytest.raises(EngineError) as caught:
        plan_grid(request, axes)
    assert caught.value.kind == ErrorKind.BAD_INPUT
    assert caught.value.message == message


def test_a_sampler_the_model_does_not_offer_is_refused():
    with pytest.raises(EngineError) as caught:
        plan_grid(BASE, ["sampler=Euler,LCM"], samplers=("Euler", "Euler a", "DPM++ 2M Karras", "DDIM"))
    assert caught.value.message == ("sampler=LCM: this model does not offer the sampler LCM (LCM is for LCM and Turbo "
                                    "models); choose one of: Euler, Euler a, DPM++ 2M Karras, DDIM")


# ---- drawing -----------------------------------------------------------------------------------------


def _cells(plan):
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 30), (30, 220, 220), (220, 30, 220)]
    return {c.index: Image.new("RGB", (c.request.width, c.request.height), colours[c.index]) for c in plan.cells}


def test_the_grid_holds_every_cell_in_its_place_with_labels_above_and_left():
    from engines.images.grid_draw import draw_grid, layout

    plan = plan_grid(BASE, ["steps=4,8,16", "seed=1,2"])
    grid = layout(plan)
    image = draw_grid(plan, _cells(plan))
    assert image.size == grid.size
    assert grid.label_width > 0 and grid.header_height >= grid.font_size
    assert image.size == (grid.label_width + 3 * 64 + 2 * 4, grid.header_height + 2 * 64 + 4)
    for cell in plan.cells:
        box = grid.cell_box(cell.column, cell.row)
        assert image.crop(box).getcolors() == [(64 * 64, _cells(plan)[cell.index].getpixel((0, 0)))], cell.index
    header = image.crop((grid.label_width, 0, image.width, grid.header_height))
    assert header.convert("L").getextrema()[0] < 100  # the X labels are drawn in dark ink on white
    left = image.crop((0, grid.header_height, grid.label_width, image.height))
    assert left.convert("L").getextrema()[0] < 100
    assert grid.x_lines == (("Steps:", "4"), ("Steps:", "8"), ("Steps:", "16"))  # 64 px cells: the label wraps
    assert grid.y_lines == (("Seed: 1",), ("Seed: 2",))


def test_one_axis_is_one_row_without_a_label_column():
    from engines.images.grid_draw import draw_grid, layout

    plan = plan_grid(ImageRequest(prompt="x", width=512, height=256, seed=1), ["guidance=3,7"])
    grid = layout(plan)
    assert grid.label_width == 0 and grid.font_size == 30  # (512 + 256) / 25: the labels grow with the cells
    assert draw_grid(plan, {}).size == (2 * 512 + 4, grid.header_height + 256)


def test_a_cell_not_made_is_a_grey_box_saying_so():
    from engines.images.grid_draw import MISSING, draw_grid, layout

    plan = plan_grid(BASE, ["steps=4,8"])
    cells = _cells(plan)
    del cells[1]
    image = draw_grid(plan, cells)
    box = layout(plan).cell_box(1, 0)
    colours = dict((colour, n) for n, colour in image.crop(box).getcolors(4096))
    assert max(colours, key=colours.get) == MISSING and len(colours) > 1  # grey, with words on it


def test_a_huge_grid_scales_its_cells_to_fit():
    from engines.images.grid_draw import MAX_GRID_PIXELS, layout

    plan = plan_grid(ImageRequest(prompt="x", width=2048, height=2048, seed=1), ["steps=1-8", "seed=1-8"])
    grid = layout(plan)
    assert grid.cell_width < 2048 and 64 * grid.cell_width * grid.cell_height <= MAX_GRID_PIXELS


def test_the_grid_png_says_what_varied_and_restores_its_first_cell():
    from engines.diffusion.png_meta import read_png_parameters, request_from_metadata
    from engines.images.grid_draw import grid_png

    plan = plan_grid(BASE, ["steps=4,8", "sampler=Euler,DDIM"])
    cells = _cells(plan)
    del cells[3]
    png = grid_png(plan, cells, "tiny-sd", {"backend": "torch"})
    meta = read_png_parameters(png)
    assert meta["parameters"] == (
        "a red lighthouse at dusk\nNegative prompt: blurry\n"
        "Steps: 4, Sampler: Euler, CFG scale: 7, Seed: 7, Size: 64x64, Model: tiny-sd, Script: X/Y plot, "
        'X Type: Steps, X Values: "4,8", Y Type: Sampler, Y Values: "Euler,DDIM", Grid cells made: 3 of 4')
    assert meta["settings"]["X Type"] == "Steps" and meta["settings"]["Y Values"] == "Euler,DDIM"
    assert meta["atelier"]["grid"]["axes"][1] == {"name": "sampler", "lora": "", "title": "Sampler",
                                                  "values": ["Euler", "DDIM"]}
    assert meta["atelier"]["grid"]["made"] == [0, 1, 2]
    assert request_from_metadata(meta) == plan.cells[0].request

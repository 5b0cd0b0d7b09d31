"""Each image of a batch is reported the moment it is finished, and a cancel keeps the finished ones.

Both engines share :func:`engines.diffusion.common.run_batch`; it is run
here on the real tiny pipeline, on PyTorch and on ONNX Runtime. Through the
real engine host, where the event crosses the process boundary as the GUI
and the CLI receive it, it is checked in tests/test_host_protocol.py, on
the image host that test starts anyway.
"""

from __future__ import annotations

import threading

import pytest

from engines.diffusion.types import ImageDoneEvent, ImageLoadSpec, ImageRequest, PreviewEvent, StepEvent
from tests.fixtures.tiny_sd import EventLog, one_torch_thread, png_pixels, tiny_sd, tiny_sd_onnx  # noqa: F401

pytestmark = [
    pytest.mark.slow,  # the real tiny pipeline, on both engines and through the engine host
    pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]


def batch(**overrides) -> ImageRequest:
    values = dict(prompt="a lighthouse", width=64, height=64, steps=3, seed=40, batch_count=3)
    values.update(overrides)
    return ImageRequest(**values)


@pytest.fixture(scope="module")
def torch_engine(tiny_sd):
    from engines.diffusion.torch_engine import TorchDiffusionEngine

    engine = TorchDiffusionEngine()
    engine.load(ImageLoadSpec(str(tiny_sd), backend="torch", dtype="fp32"), EventLog())
    yield engine
    engine.unload()


class CancelAfterFirstImage(EventLog):
    """Records events and sets the cancel flag when the first ImageDoneEvent arrives, as a user would."""

    def __init__(self) -> None:
        super().__init__()
        self.cancel = threading.Event()

    def __call__(self, event) -> None:
        super().__call__(event)
        if isinstance(event, ImageDoneEvent):
            self.cancel.set()


def check_cancel_keeps_the_first(engine) -> None:
    events = CancelAfterFirstImage()
    result = engine.generate(batch(), events, events.cancel)
    done = events.of(ImageDoneEvent)
    assert result.cancelled and [d.image_index for d in done] == [0] and done[0].batch_count == 3
    assert result.images == (done[0].image,) and result.seeds == (40,)
    # the event came after the first image's last step and before the second image started
    order = [(type(e).__name__, e.image_index) for e in events if not isinstance(e, PreviewEvent)]
    assert order[:4] == [("StepEvent", 0)] * 3 + [("ImageDoneEvent", 0)]
    assert all(index == 0 for kind, index in order)  # the second image never took a step
    assert png_pixels(done[0].image.png).shape == (64, 64, 3)


def test_every_image_is_reported_as_it_finishes(torch_engine):
    events = EventLog()
    result = torch_engine.generate(batch(), events)
    done = events.of(ImageDoneEvent)
    assert [d.image_index for d in done] == [0, 1, 2] and [d.image.seed for d in done] == [40, 41, 42]
    assert tuple(d.image for d in done) == result.images and not result.cancelled
    steps_before = [sum(isinstance(e, StepEvent) for e in events[: events.index(d)]) for d in done]
    assert steps_before == [3, 6, 9]  # each one right after its own last step


def test_cancel_keeps_the_images_finished_before_it_torch(torch_engine):
    check_cancel_keeps_the_first(torch_engine)
    after = torch_engine.generate(batch(batch_count=1), EventLog(), threading.Event())
    assert not after.cancelled and len(after.images) == 1


def test_cancel_keeps_the_images_finished_before_it_onnx(tiny_sd_onnx):
    from engines.diffusion.onnx_engine import OnnxDiffusionEngine

    engine = OnnxDiffusionEngine()
    engine.load(ImageLoadSpec(str(tiny_sd_onnx), backend="onnx"), EventLog())
    try:
        check_cancel_keeps_the_first(engine)
    finally:
        engine.unload()

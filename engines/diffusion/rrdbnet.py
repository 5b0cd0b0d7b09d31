"""RRDBNet, the network of ESRGAN and Real-ESRGAN, written from its published design, loaded with strict keys.

Why it is written here rather than taken from spandrel (the well-kept
loader for the long tail of upscaler architectures): spandrel imports
torchvision as it loads (its LaMa architecture does), and PyPI's
torchvision does not import beside the CPU build of torch 2.13 that the
image engine uses. Every ESRGAN-family model (Real-ESRGAN ×4plus and ×2plus,
RealESRNet, the anime 6-block model, 4x-UltraSharp, the many community
ESRGANs) is this one network with different widths and depths, so one
short module runs them all, and nothing else is imported.

The design (Wang et al., "ESRGAN", ECCV 2018 workshops; the Real-ESRGAN
code's ``RRDBNet``): a 3×3 convolution, ``num_block`` residual-in-residual
dense blocks (each three 5-convolution dense blocks, residuals scaled by
0.2), a 3×3 convolution added back to the first features, then per 2×
step a nearest-neighbour upsample and a 3×3 convolution, then two more
3×3 convolutions; LeakyReLU(0.2) throughout. Real-ESRGAN's ×2 (and ×1)
models pixel-unshuffle the input first (by 2, or 4) and keep the two 2×
steps, so they end at ×2 (×1).

Loading is strict: the network is built from the shapes in the file and
the file must hold exactly its tensors, no more, no fewer, in one of two
key layouts:

* **BasicSR / Real-ESRGAN**: ``conv_first``, ``body.N.rdb{1,2,3}.conv{1..5}``,
  ``conv_body``, ``conv_up1``, ``conv_up2`` (…), ``conv_hr``, ``conv_last``;
* **original ESRGAN**: ``model.0`` (the first convolution),
  ``model.1.sub.N.RDB{1,2,3}.conv{1..5}.0``, ``model.1.sub.<num_block>`` (the
  trunk convolution), then one ``model.K`` per up-convolution, the HR
  convolution and the last one. That network flattened its layers into one
  ``nn.Sequential`` (upsample, convolution and activation each take an
  index), so the mapping is exact: the convolutions that follow the trunk,
  in index order, are the up-convolutions, then ``conv_hr``, then ``conv_last``.

A file that holds anything else (another architecture, a LoRA, a
truncated copy) is refused with the tensors that are missing or
unexpected, never half-loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from engines.errors import EngineError, ErrorKind

_NEW_BODY = re.compile(r"^body\.(\d+)\.rdb1\.conv1\.weight$")
_OLD_BODY = re.compile(r"^model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.(weight|bias)$")
_OLD_TOP = re.compile(r"^model\.(\d+)\.(weight|bias)$")
_UP = re.compile(r"^conv_up(\d+)\.weight$")
_UNSHUFFLE = {1: 1, 4: 2, 16: 4}  # input channels ÷ image channels → the pixel-unshuffle factor


class ResidualDenseBlock(nn.Module):
    """Five 3×3 convolutions, each seeing every earlier output; the result is added back scaled by 0.2."""

    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = F.leaky_relu(self.conv1(x), 0.2)
        x2 = F.leaky_relu(self.conv2(torch.cat((x, x1), 1)), 0.2)
        x3 = F.leaky_relu(self.conv3(torch.cat((x, x1, x2), 1)), 0.2)
        x4 = F.leaky_relu(self.conv4(torch.cat((x, x1, x2, x3), 1)), 0.2)
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual in residual: three dense blocks, their sum added back scaled by 0.2."""

    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


@dataclass(frozen=True)
class RRDBShape:
    """The sizes that define one RRDBNet, read from its tensors."""

    in_channels: int  # image channels (3 for RGB)
    out_channels: int
    num_feat: int
    num_grow_ch: int
    num_block: int
    num_up: int  # 2× upsampling steps
    unshuffle: int  # 1, or the pixel-unshuffle factor of Real-ESRGAN's ×2 (2) and ×1 (4) models

    @property
    def scale(self) -> int:
        """How many times larger the output is than the input, on each side."""
        return max(1, 2**self.num_up // self.unshuffle)

    @property
    def receptive_radius(self) -> int:
        """How far, in input pixels, an output pixel can see: the tiles' context must be at least this wide
        for a tiled result to equal the whole-image one exactly. Every 3×3 convolution adds one pixel at
        the resolution it runs at: 2 + 15 per block at the network's input resolution (``unshuffle`` times
        coarser than the image), then less than two for the convolutions after the upsampling."""
        return (4 + 15 * self.num_block) * self.unshuffle


class RRDBNet(nn.Module):
    """ESRGAN's generator; ``forward`` takes RGB in [0, 1] and returns it ``scale`` times larger."""

    def __init__(self, shape: RRDBShape) -> None:
        super().__init__()
        self.shape = shape
        first_in = shape.in_channels * shape.unshuffle**2
        self.conv_first = nn.Conv2d(first_in, shape.num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(shape.num_feat, shape.num_grow_ch) for _ in range(shape.num_block)))
        self.conv_body = nn.Conv2d(shape.num_feat, shape.num_feat, 3, 1, 1)
        for index in range(1, shape.num_up + 1):
            setattr(self, f"conv_up{index}", nn.Conv2d(shape.num_feat, shape.num_feat, 3, 1, 1))
        self.conv_hr = nn.Conv2d(shape.num_feat, shape.num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(shape.num_feat, shape.out_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor, between_blocks: Callable[[], None] | None = None) -> torch.Tensor:
        """``between_blocks()`` is called after every block (it raises to stop: a cancel lands within a block)."""
        if self.shape.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.shape.unshuffle)
        feat = self.conv_first(x)
        body = feat
        for block in self.body:
            body = block(body)
            if between_blocks is not None:
                between_blocks()
        feat = feat + self.conv_body(body)
        for index in range(1, self.shape.num_up + 1):
            up = getattr(self, f"conv_up{index}")
            feat = F.leaky_relu(up(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


# ---- reading a file's tensors ----------------------------------------------


def layout_of(keys) -> str | None:
    """"basicsr", "esrgan", or None when the tensor names are not an RRDBNet's."""
    keys = set(keys)
    if "conv_first.weight" in keys and any(_NEW_BODY.match(k) for k in keys):
        return "basicsr"
    if "model.0.weight" in keys and any(_OLD_BODY.match(k) for k in keys):
        return "esrgan"
    return None


def to_basicsr_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original ESRGAN layout renamed to BasicSR's, tensor for tensor; unknown names are kept as they are.

    Kept names then fail the strict load as "unexpected", which is the point:
    nothing is guessed and nothing is dropped.
    """
    blocks = {int(m.group(1)) for k in state if (m := _OLD_BODY.match(k))}
    num_block = max(blocks) + 1 if blocks else 0
    tops = sorted({int(m.group(1)) for k in state if (m := _OLD_TOP.match(k))} - {0})
    after_trunk = [index for index in tops if index >= 2]
    names: dict[int, str] = {0: "conv_first"}
    if len(after_trunk) >= 2:
        *ups, hr, last = after_trunk
        names.update({index: f"conv_up{n}" for n, index in enumerate(ups, 1)})
        names.update({hr: "conv_hr", last: "conv_last"})
    renamed = {}
    for key, tensor in state.items():
        if m := _OLD_BODY.match(key):
            block, rdb, conv, kind = m.groups()
            renamed[f"body.{block}.rdb{rdb}.conv{conv}.{kind}"] = tensor
        elif key in (f"model.1.sub.{num_block}.weight", f"model.1.sub.{num_block}.bias"):
            renamed[f"conv_body.{key.rsplit('.', 1)[1]}"] = tensor
        elif (m := _OLD_TOP.match(key)) and int(m.group(1)) in names:
            renamed[f"{names[int(m.group(1))]}.{m.group(2)}"] = tensor
        else:
            renamed[key] = tensor
    return renamed


def shape_of(state: dict[str, torch.Tensor], name: str) -> RRDBShape:
    """The network a BasicSR-layout state dict describes; MODEL_FILE when a defining tensor is missing or odd."""
    def tensor(key: str) -> torch.Tensor:
        value = state.get(key)
        if value is None or value.ndim != 4:
            raise EngineError(ErrorKind.MODEL_FILE, f"{name} is not a complete ESRGAN (RRDBNet) upscaler: "
                                                    f"its {key} tensor is {'missing' if value is None else 'malformed'}.")
        return value

    first, last, grow = tensor("conv_first.weight"), tensor("conv_last.weight"), tensor("body.0.rdb1.conv1.weight")
    out_channels = last.shape[0]
    unshuffle = _UNSHUFFLE.get(first.shape[1] // out_channels) if first.shape[1] % out_channels == 0 else None
    if unshuffle is None:
        raise EngineError(ErrorKind.UNSUPPORTED, f"{name} takes {first.shape[1]} input channels for an "
                                                 f"{out_channels}-channel image: not an ESRGAN layout Atelier knows.")
    blocks = {int(m.group(1)) for k in state if (m := _NEW_BODY.match(k))}
    ups = {int(m.group(1)) for k in state if (m := _UP.match(k))}
    return RRDBShape(in_channels=out_channels, out_channels=out_channels, num_feat=first.shape[0],
                     num_grow_ch=grow.shape[0], num_block=max(blocks) + 1, num_up=max(ups, default=0),
                     unshuffle=unshuffle)


def build_strict(state: dict[str, torch.Tensor], name: str) -> tuple[RRDBNet, str]:
    """The network for ``state`` (either layout) with every tensor in place, and the layout's name.

    Refused, in words, when the names are not an RRDBNet's (UNSUPPORTED) or
    when any tensor is missing, unexpected or of the wrong shape (MODEL_FILE).
    """
    layout = layout_of(state)
    if layout is None:
        raise EngineError(ErrorKind.UNSUPPORTED, f"{name} is not an ESRGAN-family upscaler: Atelier runs "
                                                 "Real-ESRGAN, ESRGAN and other RRDBNet models (.safetensors) only.")
    if layout == "esrgan":
        state = to_basicsr_keys(state)
    shape = shape_of(state, name)
    if shape.in_channels != 3:
        raise EngineError(ErrorKind.UNSUPPORTED, f"{name} works on {shape.in_channels}-channel images; "
                                                 "Atelier runs RGB upscalers.")
    net = RRDBNet(shape)
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    for what, keys in (("lacks", missing), ("has unexpected tensors:", unexpected), ("has wrongly shaped", wrong)):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            raise EngineError(ErrorKind.MODEL_FILE, f"{name} is not a complete ESRGAN (RRDBNet) upscaler: it {what} "
                                                    f"{', '.join(keys[:3])}{more}. The file may be damaged or of "
                                                    "another architecture.")
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False), layout

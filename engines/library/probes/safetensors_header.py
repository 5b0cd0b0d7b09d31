"""The tensor names and shapes of a ``.safetensors`` file, without reading its tensors.

A safetensors file is an 8-byte little-endian header length, a JSON header
naming each tensor with its dtype, shape and byte range, then the data.
LoRAs and upscalers are told apart by their tensor *names* (and a base
family by one tensor's *shape*), so the header is all a probe needs: a
1 GB file is recognised by reading a few kilobytes. No torch, no
safetensors package: the image engine's private Python is not needed.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from engines.library.probes.files import Unreadable, read_prefix

MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own limit


class NotSafetensors(Exception):
    """The file is not a safetensors file (``recognised`` False) or is a damaged one (True)."""

    def __init__(self, message: str, recognised: bool) -> None:
        super().__init__(message)
        self.message = message
        self.recognised = recognised


@dataclass(frozen=True)
class SafetensorsHeader:
    shapes: dict[str, tuple[int, ...]]  # tensor name → shape
    metadata: dict[str, str] = field(default_factory=dict)  # the free-form "__metadata__" strings


def read_safetensors_header(path: Path, file_size: int) -> SafetensorsHeader:
    """Parse the header of ``path``; raise :class:`NotSafetensors` or :class:`Unreadable`."""
    head = read_prefix(path, 8)
    if len(head) < 8:
        raise NotSafetensors(f"{path.name} is too short to be a safetensors file ({len(head)} bytes).", False)
    (length,) = struct.unpack("<Q", head)
    if length < 2 or length > MAX_HEADER_BYTES:
        raise NotSafetensors(f"{path.name} is not a safetensors file (its first 8 bytes are not a header length).",
                             False)
    if 8 + length > file_size:
        raise NotSafetensors(f"{path.name} is truncated: its safetensors header needs {8 + length:,} bytes but the "
                             f"file has {file_size:,}. Download it again.", True)
    raw = read_prefix(path, 8 + length)[8:]
    if not raw.lstrip().startswith(b"{"):
        raise NotSafetensors(f"{path.name} is not a safetensors file.", False)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise NotSafetensors(f"{path.name} is damaged: its safetensors header is not valid JSON.", True) from None
    if not isinstance(header, dict):
        raise NotSafetensors(f"{path.name} is damaged: its safetensors header is not a JSON object.", True)
    shapes, end = {}, 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            shape = tuple(int(d) for d in info["shape"])
            start, stop = (int(x) for x in info["data_offsets"])
        except (TypeError, KeyError, ValueError):
            raise NotSafetensors(f"{path.name} is damaged: the entry for tensor {name[:80]!r} is malformed.",
                                 True) from None
        shapes[name] = shape
        end = max(end, stop, start)
    if 8 + length + end > file_size:
        raise NotSafetensors(f"{path.name} is truncated: it should be {8 + length + end:,} bytes but is "
                             f"{file_size:,}. The download probably stopped early; download it again.", True)
    meta = header.get("__metadata__")
    metadata = {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}
    return SafetensorsHeader(shapes, metadata)


__all__ = ["MAX_HEADER_BYTES", "NotSafetensors", "SafetensorsHeader", "Unreadable", "read_safetensors_header"]

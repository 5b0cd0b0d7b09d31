"""The vision path of the llama.cpp engine: images read through llama.cpp's ``mtmd`` library.

A vision model is two GGUF files: the language model and its projector
(``mmproj``: a CLIP/SigLIP image encoder and the layer that maps its output
into the model's embedding space). :class:`VisionProjector` opens the
projector on the loaded model (``mtmd_init_from_file``) and, for a request
whose user messages carry images:

- decodes each image with Pillow (:func:`engines.image_input.decode_rgb`:
  header checked first, pixel cap, EXIF orientation, scaled down) and hands
  mtmd plain RGB pixels (``mtmd_bitmap_init``), so llama.cpp's own image
  decoder (stb_image) never reads user bytes;
- asks mtmd how the image is tokenized (``mtmd_tokenize`` on the media
  marker alone: the projector's own wrapper text, such as Gemma 3's
  ``<start_of_image>``, and the image's token count), so the context fit
  counts every image before anything is read;
- reads the prompt: text runs with ``Llama.eval`` (prefix reuse and all, as
  for a text prompt), each image with ``mtmd_helper_eval_chunk_single``
  (the projector encodes it, its embeddings are decoded into the context).

The rest is the text path: the model's own chat template renders the
messages (an image is a marker in its message's text, split out by
:class:`~engines.llama.prompt_tokens.PromptTokenizer`, so typed text never
becomes an image or a control token), and the decode loop samples the reply.
The positions an image fills hold :data:`IMAGE_SLOT` in ``Llama.input_ids``:
no text prompt matches them, so the prompt cache and llama-cpp-python's
prefix reuse never take one image's context for another's.

``llama_cpp.mtmd_cpp`` is imported lazily: only the engine host calls this.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from engines.api import CancelFlag, ChatMessage
from engines.errors import EngineError, ErrorKind
from engines.image_input import decode_rgb
from engines.llama.context_fit import fit_conversation
from engines.llama.prompt_tokens import IMAGE_SLOT

log = logging.getLogger(__name__)

# Longest side an image is scaled to before mtmd sees it. The projectors resize again (Gemma 3: 896,
# LLaVA: 336, Qwen2-VL tiles up to its token budget); 2048 keeps detail for the tiling ones while a
# 64-megapixel photo costs 12 MB of pixels instead of 190 MB.
MAX_IMAGE_SIDE = 2048
_CHUNK_TEXT, _CHUNK_IMAGE = 0, 1  # mtmd_input_chunk_type


@dataclass(eq=False)
class PreparedImage:
    """One image as mtmd tokenized it: its chunks (wrapper text and the image) and its token count."""

    chunks: object  # mtmd_input_chunks_p, freed by VisionProjector.release
    n_tokens: int  # every token it adds to the prompt, wrapper text included
    image_tokens: int  # the image embeddings alone
    digest: bytes = b""  # of the encoded image: what tells two images apart in the live context
    layout: tuple[int, ...] = ()  # its positions in the context: wrapper tokens, IMAGE_SLOT where embeddings go


@dataclass
class VisionPrompt:
    """A prompt with images: tokens with IMAGE_SLOT where each image goes, in order."""

    tokens: list[int]
    images: list[PreparedImage] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Tokens the prompt fills in the context."""
        return len(self.tokens) - len(self.images) + sum(image.n_tokens for image in self.images)

    @property
    def image_tokens(self) -> int:
        return sum(image.image_tokens for image in self.images)

    def text_before_images(self) -> list[int]:
        """The tokens before the first image: what a saved or live context can share with this prompt."""
        return self.tokens[: self.tokens.index(IMAGE_SLOT)] if self.images else list(self.tokens)

    def units(self):
        """The prompt in reading order: lists of text tokens, and images."""
        images = iter(self.images)
        run: list[int] = []
        for token in self.tokens:
            if token != IMAGE_SLOT:
                run.append(token)
                continue
            yield run
            run = []
            yield next(images)
        yield run

    def positions(self) -> tuple[list[int], list[tuple[int, int, bytes]]]:
        """The context this prompt makes, position by position, and where each image lies (start, end, digest)."""
        flat: list[int] = []
        spans: list[tuple[int, int, bytes]] = []
        for unit in self.units():
            if isinstance(unit, PreparedImage):
                spans.append((len(flat), len(flat) + len(unit.layout), unit.digest))
                flat.extend(unit.layout)
            else:
                flat.extend(unit)
        return flat, spans


class VisionProjector:
    """A projector (mmproj) opened on one loaded model; closed with the model."""

    def __init__(self, llm, path: Path, threads: int, use_gpu: bool, flash_attention: bool) -> None:
        from llama_cpp import mtmd_cpp

        from engines.llama.native_log import NATIVE_LOG

        self._mtmd = mtmd_cpp
        NATIVE_LOG.also_capture(mtmd_cpp.mtmd_log_set)  # mtmd explains a refused projector only in its log
        NATIVE_LOG.also_capture(mtmd_cpp.mtmd_helper_log_set)
        params = mtmd_cpp.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.print_timings = False
        params.n_threads = threads
        params.flash_attn_type = 1 if flash_attention else 0  # LLAMA_FLASH_ATTN_TYPE_ENABLED / _DISABLED
        params.warmup = False  # the first image pays for the graph instead of every load
        self._ctx = mtmd_cpp.mtmd_init_from_file(str(path).encode(), llm.model, params)
        if not self._ctx:
            detail = NATIVE_LOG.last_error()
            raise EngineError(
                ErrorKind.MODEL_FILE,
                f"llama.cpp could not open the vision projector {path.name} for this model"
                f"{': ' + detail if detail else ''}. It may belong to another model, or be damaged.",
            )
        if not mtmd_cpp.mtmd_support_vision(self._ctx):
            self.close()
            raise EngineError(ErrorKind.MODEL_FILE,
                              f"{path.name} is a projector for sound, not images; choose the model's vision projector.")
        self.marker = mtmd_cpp.mtmd_default_marker().decode("utf-8")
        self._live_images: dict[int, tuple[int, bytes]] = {}  # start -> (end, digest) of each image read

    def close(self) -> None:
        if self._ctx:
            self._mtmd.mtmd_free(self._ctx)
            self._ctx = None

    # ---- images -> tokens -------------------------------------------------

    def prepare(self, data: bytes, number: int) -> PreparedImage:
        """Decode image ``number`` (1-based, for the message) and tokenize it; BAD_INPUT when it cannot be read."""
        mtmd = self._mtmd
        rgb = decode_rgb(data, f"Image {number}", MAX_IMAGE_SIDE)
        pixels = (ctypes.c_uint8 * len(rgb.pixels)).from_buffer_copy(rgb.pixels)
        bitmap = mtmd.mtmd_bitmap_init(rgb.width, rgb.height, pixels)
        if not bitmap:
            raise EngineError(ErrorKind.INTERNAL, f"llama.cpp could not take image {number} ({rgb.width}×{rgb.height}).")
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            text = mtmd.mtmd_input_text()
            marker = self.marker.encode("utf-8")
            text.text, text.text_len = marker, len(marker)
            text.add_special, text.parse_special = False, True  # the projector's wrapper is control tokens
            bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
            status = mtmd.mtmd_tokenize(self._ctx, chunks, ctypes.byref(text), bitmaps, 1)
        finally:
            mtmd.mtmd_bitmap_free(bitmap)
        if status != 0:
            mtmd.mtmd_input_chunks_free(chunks)
            raise EngineError(ErrorKind.BAD_INPUT, f"The vision projector could not read image {number} "
                                                   f"({rgb.width}×{rgb.height}; mtmd error {status}).")
        image_tokens, layout = 0, []
        for chunk, kind in self._chunks(chunks):
            if kind == _CHUNK_TEXT:
                layout.extend(_text_tokens(mtmd, chunk))
            else:
                image_tokens += mtmd.mtmd_input_chunk_get_n_tokens(chunk)
                layout.extend([IMAGE_SLOT] * mtmd.mtmd_input_chunk_get_n_pos(chunk))  # M-RoPE: fewer positions
        return PreparedImage(chunks, int(mtmd.mtmd_helper_get_n_tokens(chunks)), int(image_tokens),
                             hashlib.sha256(data).digest(), tuple(layout))

    def release(self, prompt: VisionPrompt | None) -> None:
        for image in prompt.images if prompt else ():
            if image.chunks:
                self._mtmd.mtmd_input_chunks_free(image.chunks)
                image.chunks = None

    def _chunks(self, chunks):
        mtmd = self._mtmd
        for i in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            yield chunk, mtmd.mtmd_input_chunk_get_type(chunk)

    # ---- reading the prompt -----------------------------------------------

    def reusable(self, llm, prompt: VisionPrompt) -> int:
        """How much of the live context ``prompt`` can keep, images included; 0 when only its text could be.

        A follow-up in a chat with an image sends the image again: its
        embeddings are still in the live context, so they are kept, not
        encoded again, when the image there is the same image (by digest:
        the context holds token -1 at every image position, whatever the
        image) and the context can be cut back there exactly.
        """
        from engines.llama.context_state import common_prefix, exact_from, live_floor, sliding_window

        flat, spans = prompt.positions()
        keep = common_prefix(llm.input_ids[: llm.n_tokens], flat)
        first = spans[0][0] if spans else keep
        for start, end, digest in spans:
            if start >= keep:
                break
            if self._live_images.get(start) != (end, digest) or end > keep:
                keep = start  # another image there, or the cut would fall inside this one
                break
        keep = min(keep, len(flat) - 1)  # the last position is read again for the first reply token's logits
        if keep <= first or any(start < keep < end for start, end, _d in spans):
            return 0
        return keep if exact_from(live_floor(llm), keep, sliding_window(llm)) else 0

    def forget_live_images(self) -> None:
        """The live context is about to be changed by other means (a text prompt, a restored state)."""
        self._live_images.clear()

    def read(self, llm, prompt: VisionPrompt, reused: int, cancel: CancelFlag) -> list[int]:
        """Read ``prompt`` into the context after its first ``reused`` positions; returns the context's tokens.

        Text runs go through ``Llama.eval`` and images through mtmd; the
        last text run leaves the logits the first reply token is sampled
        from. ``reused`` never falls inside an image (see :meth:`reusable`).
        Stops (returns early) when ``cancel`` is set between two parts.
        """
        llm.n_tokens = start = min(reused, llm.n_tokens)
        self._live_images = {k: v for k, v in self._live_images.items() if v[0] <= start}
        position = 0
        run: list[int] = []
        for unit in prompt.units():
            if not isinstance(unit, PreparedImage):
                run.extend(unit[max(0, start - position):])
                position += len(unit)
                continue
            position += len(unit.layout)
            if position <= start:
                continue  # kept from the live context
            if run:
                llm.eval(run)
                run = []
            if cancel.is_set():
                return llm.input_ids[: llm.n_tokens].tolist()
            first = llm.n_tokens
            self._read_image(llm, unit)
            self._live_images[first] = (llm.n_tokens, unit.digest)
        if run:
            llm.eval(run)
        return llm.input_ids[: llm.n_tokens].tolist()

    def _read_image(self, llm, image: PreparedImage) -> None:
        import llama_cpp

        mtmd = self._mtmd
        for chunk, kind in self._chunks(image.chunks):
            if kind == _CHUNK_TEXT:
                llm.eval(_text_tokens(mtmd, chunk))
                continue
            n_past = llm.n_tokens
            new_n_past = llama_cpp.llama_pos(0)
            llm._ctx.kv_cache_seq_rm(-1, n_past, -1)
            status = mtmd.mtmd_helper_eval_chunk_single(
                self._ctx, llm._ctx.ctx, chunk, n_past, 0, llm.n_batch, False, ctypes.byref(new_n_past))
            if status != 0:
                raise RuntimeError(f"mtmd could not read an image into the context (error {status})")
            llm.input_ids[n_past:new_n_past.value] = IMAGE_SLOT
            llm.n_tokens = new_n_past.value
            llm._requires_eval = True  # the logits are the image's, not a text token's


def _text_tokens(mtmd, chunk) -> list[int]:
    count = ctypes.c_size_t()
    ids = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
    return [ids[i] for i in range(count.value)]


def read_vision_request(projector: VisionProjector, request, render_tokens, emit, cancel: CancelFlag,
                        n_ctx: int) -> tuple[VisionPrompt, tuple[str, ...], int]:
    """The fitted prompt of a request with images, its stop strings and how many messages were dropped.

    Every image is decoded and tokenized first (a bad one is refused before
    anything is read, in words that say which), so the context fit counts
    each image's real token cost; images of messages left out are freed.
    ``render_tokens(messages, emit, cancel, marker)`` is the engine's own
    template path. Raises TemplateCancelled like it.
    """
    marker = request_marker()
    prepared: dict[int, list[PreparedImage]] = {}  # id(message) -> its images, in order
    every: list[PreparedImage] = []
    kept: list[PreparedImage] = []
    try:
        for message in request.messages:
            for data in message.images:
                image = projector.prepare(data, len(every) + 1)
                every.append(image)
                prepared.setdefault(id(message), []).append(image)

        def images_of(messages) -> list[PreparedImage]:
            return [image for m in messages for image in prepared.get(id(m), ())]

        def count(messages) -> int:
            tokens, _ = render_tokens(with_image_markers(messages, marker), emit, cancel, marker)
            return VisionPrompt(tokens, images_of(messages)).size

        fitted = fit_conversation(request.messages, count, n_ctx, request.sampling.max_tokens, request.overflow)
        tokens, stop = render_tokens(with_image_markers(fitted.messages, marker), emit, cancel, marker)
        if tokens.count(IMAGE_SLOT) != len(images_of(fitted.messages)):
            raise EngineError(ErrorKind.UNSUPPORTED, "This model's chat template left out an attached image, so "
                              "the model cannot be shown it. Send the image in a message of its own.")
        kept = images_of(fitted.messages)  # from here on the caller frees them (VisionProjector.release)
        return VisionPrompt(tokens, kept), stop, fitted.dropped
    finally:
        projector.release(VisionPrompt([], [image for image in every if image not in kept]))


def request_marker() -> str:
    """The text that stands for an image in one request's rendered prompt: typed text cannot guess it."""
    import secrets

    return f"<__atelier_image_{secrets.token_hex(8)}__>"


def with_image_markers(messages, marker: str) -> list[ChatMessage]:
    """The messages with one marker per attached image before the text, as vision templates place images."""
    from dataclasses import replace

    out = []
    for message in messages:
        if message.images:
            text = marker * len(message.images) + ("\n" + message.content if message.content else "")
            message = replace(message, content=text)
        out.append(message)
    return out


def no_projector_message(name: str) -> str:
    return (f"{name} cannot see images: it was loaded without a vision projector (mmproj file). "
            "Choose a vision model with its projector, or send the message without the image.")

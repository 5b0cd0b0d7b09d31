"""The llama.cpp engine: loads a GGUF file and streams chat replies.

It runs inside the engine host. It leans on llama-cpp-python for the hard
parts (``Llama``, ``create_completion(stream=True)``, the named chat
formats) and adds what a desktop app needs around them: checks that turn a
bad file into a sentence, a memory check before load, chat templates
rendered under a time and size budget, prompts in which message text never
becomes control tokens, context fitting, a cancel flag polled at every step
of a load, at every token and inside llama.cpp's compute graph, and the
figures the user sees (time to first token, decode rate, context used).
For serving it also keeps a prompt cache per conversation
(:mod:`~engines.llama.prompt_cache`), ends replies at stop sequences
(:mod:`~engines.llama.decode_loop`), constrains them by a JSON schema
(:mod:`~engines.llama.grammar`) and, loaded in embedding mode, embeds texts
(:mod:`~engines.llama.embeddings`). Loaded with a vision projector, it reads
the images in user messages through llama.cpp's mtmd
(:mod:`~engines.llama.vision`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import random
import time
from dataclasses import replace
from pathlib import Path

from engines.api import (
    CancelFlag,
    ChatMessage,
    EmbeddingRequest,
    EmbeddingResult,
    Emit,
    ModelInfo,
    NoticeEvent,
    ProgressEvent,
    TextLoadSpec,
    TextRequest,
    TextResult,
)
from engines.errors import EngineError, ErrorKind, problems_sentence
from engines.kv_cache import cache_type_info
from engines.llama.cache_options import cache_refusal, llama_cache_kwargs, read_cache_report
from engines.llama.construct import abortable_model_load, skip_library_chat_templates
from engines.llama.context_fit import fit_conversation, reply_reserve
from engines.llama.decode_loop import DecodePlan, Decoded, decode, rate, ttft
from engines.llama.grammar import grammar_for_schema
from engines.llama.native_log import NATIVE_LOG
from engines.gguf.model_file import check_model_file
from engines.llama.preflight import check_memory_for_context, projector_shape
from engines.llama.prompt_cache import PromptCache
from engines.llama.prompt_tokens import PromptTokenizer
from engines.llama.template_sandbox import TemplateBudgetError, TemplateCancelled
from engines.llama.templates import ChatTemplate, RenderedPrompt, choose_template, fallback_template
from engines.llama.turn_warmup import closing_tokens, tokens_to_read

log = logging.getLogger(__name__)
EMBEDDING_BATCH_MAX = 8192  # tokens per llama.cpp batch in embedding mode: the longest text it takes


def default_threads() -> int:
    """Physical cores: llama.cpp's decode is memory-bound, and SMT siblings only contend."""
    import psutil

    return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)


class LlamaCppEngine:
    def __init__(self) -> None:
        self._llm = None
        self._template: ChatTemplate | None = None
        self._tokens: PromptTokenizer | None = None
        self._architecture: tuple[str | None, list[str] | None] = (None, None)
        self._pending_note: str | None = None  # why the file's template was refused, told once
        self._info: ModelInfo | None = None
        self._cancel: CancelFlag | None = None
        self._abort_callback = None  # keep the ctypes callback alive while the context lives
        self._native_log = NATIVE_LOG
        self._prompt_cache: PromptCache | None = None
        self._vision = None  # engines.llama.vision.VisionProjector, when loaded with a projector
        self._request_tools: tuple = ()  # the tools of the request being rendered (TextRequest.tools)

    # ---- load ------------------------------------------------------------

    def load(self, spec: TextLoadSpec, emit: Emit, cancel: CancelFlag | None = None) -> ModelInfo:
        """Load the model; ``cancel`` stops it at the next step (the header, llama.cpp's loader, the template)."""
        path = Path(spec.model_path)
        emit(ProgressEvent("load", f"Checking {path.name}…", 0.0))
        header = check_model_file(path)
        _stop_if_cancelled(cancel, path)
        problems = spec.validate()
        if problems:
            raise EngineError(ErrorKind.BAD_INPUT, problems_sentence(problems))
        cache = cache_type_info(spec.cache_type)
        import llama_cpp

        from engines.llama.backends import ensure_backends_loaded

        ensure_backends_loaded()
        self._native_log.install()
        offload = bool(llama_cpp.llama_supports_gpu_offload())
        gpu_layers = spec.gpu_layers if spec.gpu_layers is not None else (-1 if offload else 0)
        if not offload:
            gpu_layers = 0
        n_ctx, mode_kwargs = spec.context_length, {}
        if spec.embedding:
            # A text is read in one batch (non-causal models need it); no text is longer than the trained context.
            n_ctx = min(n_ctx, header.context_length or n_ctx, EMBEDDING_BATCH_MAX)
            mode_kwargs = {"embedding": True, "n_batch": n_ctx, "n_ubatch": n_ctx}
        projector = projector_shape(Path(spec.projector)) if spec.projector is not None else None
        check_memory_for_context(header, n_ctx, gpu_offload=offload and gpu_layers != 0, cache_type=cache.name,
                                 projector=projector)
        threads = spec.threads or default_threads()
        cache_kwargs = llama_cache_kwargs(cache.name)
        flash = bool(cache_kwargs.get("flash_attn"))
        with_cache = f" with a {cache.name} context cache (flash attention on)" if cache.quantized else ""
        loading = f"Loading {path.name}{' for embeddings' if spec.embedding else ''}{with_cache}…"
        emit(ProgressEvent("load", loading, 0.1))
        _stop_if_cancelled(cancel, path)
        self._native_log.clear()

        def on_progress(fraction: float) -> None:
            emit(ProgressEvent("load", loading, 0.1 + 0.8 * fraction))

        try:
            with skip_library_chat_templates(), abortable_model_load(cancel, on_progress):
                llm = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_threads=threads,
                    n_threads_batch=threads,
                    n_gpu_layers=gpu_layers,
                    verbose=False,
                    **cache_kwargs,
                    **mode_kwargs,
                )
        except (ValueError, RuntimeError, OSError) as exc:
            _stop_if_cancelled(cancel, path)  # llama.cpp's loader aborted because we asked it to
            raise self._load_failure(header, exc, cache.name) from None
        report = read_cache_report(self._native_log.text())
        template = None
        if not spec.embedding:
            try:
                template = choose_template(llm.metadata or {}, header.architecture, header.tokens, cancel)
                _stop_if_cancelled(cancel, path)
            except (TemplateCancelled, EngineError) as exc:
                llm.close()
                raise _load_stopped(path) if isinstance(exc, TemplateCancelled) else exc from None
        if spec.projector is not None:
            self._vision = _open_projector(llm, Path(spec.projector), threads, offload and gpu_layers != 0, flash)
        self._llm = llm
        self._install_abort_callback()
        self._template = template
        self._tokens = PromptTokenizer(llm)
        self._architecture = (header.architecture, header.tokens)
        self._pending_note = template.note if template else None
        if not spec.embedding:
            self._prompt_cache = open_prompt_cache(path, min(n_ctx, llm.n_ctx()), cache.name, flash)
        self._info = ModelInfo(
            path=str(path),
            architecture=header.architecture or "unknown",
            name=header.name or path.stem,
            # llama.cpp may round the context up; llama-cpp-python's buffers use what we asked for.
            context_length=min(n_ctx, llm.n_ctx()),
            trained_context_length=header.context_length or 0,
            threads=threads,
            gpu_layers=gpu_layers if gpu_layers >= 0 else (header.block_count or 0) + 1,
            template=template.name if template else "none",
            template_source=template.source if template else "none",
            gpu_offload_supported=offload,
            cache_type=cache.name,
            flash_attention=flash,
            kv_cache_bytes=report.total_bytes if report else None,
            embedding=spec.embedding,
            vision=self._vision is not None,
            tools_in_template=bool(template and template.tool_format),
            tool_format=template.tool_format if template else None,
        )
        emit(ProgressEvent("load", f"Loaded {self._info.name}", 1.0))
        log.info("loaded %s: %s", path, self._info)
        return self._info

    def _load_failure(self, header, exc: Exception, cache_type: str) -> EngineError:
        lines = self._native_log.text()
        arch = header.architecture or "unknown"
        refusal = cache_refusal(lines) if cache_type_info(cache_type).quantized else None
        if refusal:
            return EngineError(
                ErrorKind.UNSUPPORTED,
                f"llama.cpp cannot use a {cache_type} context cache with this {arch} model ({refusal}). "
                "Choose the f16 context cache.",
            )
        if "unknown model architecture" in lines:
            return EngineError(
                ErrorKind.UNSUPPORTED,
                f"This build of llama.cpp does not know the '{arch}' architecture. "
                "A newer Atelier (or llama.cpp) may support it.",
            )
        if "failed to allocate" in lines or "unable to allocate" in lines or "out of memory" in lines.lower():
            return EngineError(
                ErrorKind.MEMORY,
                "Not enough memory to load the model with this context length. Try a shorter context.",
            )
        detail = self._native_log.last_error() or str(exc)
        return EngineError(
            ErrorKind.MODEL_FILE,
            f"llama.cpp could not load this {arch} model: {detail}. The file may be damaged or use a "
            "format this build does not support.",
        )

    def _install_abort_callback(self) -> None:
        """Build the callback that lets llama.cpp stop mid-graph when the cancel flag is set.

        ggml calls it between graph nodes: hundreds of times per token. That
        is what makes a long prompt stoppable at once, but during decoding it
        would cost several percent of speed, and the per-token check is fast
        enough there. So it is armed only while the prompt is processed.
        """
        import llama_cpp

        def should_abort(_data) -> bool:
            flag = self._cancel
            return bool(flag is not None and flag.is_set())

        self._abort_callback = llama_cpp.ggml_abort_callback(should_abort)

    def _arm_abort(self, armed: bool) -> None:
        import llama_cpp

        callback = self._abort_callback if armed else llama_cpp.ggml_abort_callback()
        llama_cpp.llama_set_abort_callback(self._llm.ctx, callback, ctypes.c_void_p(0))

    def unload(self) -> None:
        if self._llm is not None:
            if self._prompt_cache is not None:
                try:
                    self._prompt_cache.close(self._llm)  # the live conversation goes to disk
                except Exception:  # a cache: never a reason for an unload to fail
                    log.warning("could not keep the prompt cache", exc_info=True)
            if self._vision is not None:
                self._vision.close()
            self._llm.close()
        self._llm = None
        self._vision = None
        self._prompt_cache = None
        self._template = None
        self._tokens = None
        self._info = None

    # ---- generate --------------------------------------------------------

    def generate(self, request: TextRequest | EmbeddingRequest, emit: Emit, cancel: CancelFlag) -> TextResult | EmbeddingResult:
        if self._llm is None or self._info is None:
            raise EngineError(ErrorKind.BAD_INPUT, "No model is loaded.")
        problems = request.validate()
        if problems:
            raise EngineError(ErrorKind.BAD_INPUT, problems_sentence(problems))
        if isinstance(request, EmbeddingRequest) or self._info.embedding:
            return self._embed(request, emit, cancel)
        llm, n_ctx = self._llm, self._info.context_length
        sampling = request.sampling
        seed = sampling.seed if sampling.seed is not None else random.randrange(2**32)

        if self._pending_note:
            emit(NoticeEvent(self._pending_note[0].upper() + self._pending_note[1:] + "."))
            self._pending_note = None
        if request.tools and (self._template is None or self._template.tool_format is None):
            raise EngineError(ErrorKind.BAD_INPUT, f"The chat template of {self._info.name} has no tool-call format: "
                              "its tools go through Atelier's JSON format instead (engines.tools.fallback).")
        self._request_tools = request.tools if request.tool_choice != "none" else ()
        dropped = 0
        sent: tuple[ChatMessage, ...] | None = None  # the conversation as sent (None: a raw prompt)
        if request.raw_prompt is not None:
            template_name = "raw"
            # The user writes the whole prompt in raw mode, control tokens included, on purpose.
            prompt_tokens = self._llm.tokenize(request.raw_prompt.encode("utf-8"), add_bos=True, special=True)
            if len(prompt_tokens) + reply_reserve(sampling.max_tokens, n_ctx) > n_ctx:
                raise EngineError(
                    ErrorKind.CONTEXT_OVERFLOW,
                    f"The prompt is {len(prompt_tokens):,} tokens, more than fit in a context of "
                    f"{n_ctx:,} with room for the reply. Shorten it or use a longer context.",
                )
            stop: tuple[str, ...] = request.stop
        elif any(m.images for m in request.messages):
            return self._see(request, seed, emit, cancel)
        else:
            # The conversation that fit_conversation counts last is the one sent: render and tokenize it once.
            last: list = []  # [messages, (tokens, stop)]

            def render_tokens(msgs) -> tuple[list[int], tuple[str, ...]]:
                msgs = tuple(msgs)
                if not last or last[0] != msgs:
                    last[:] = [msgs, self._render_tokens(msgs, emit, cancel)]
                return last[1]

            try:
                fitted = fit_conversation(
                    request.messages,
                    lambda msgs: len(render_tokens(msgs)[0]),
                    n_ctx,
                    sampling.max_tokens,
                    request.overflow,
                )
                prompt_tokens, stop = render_tokens(fitted.messages)
                stop = stop + request.stop
            except TemplateCancelled:
                return self._cancelled_before_start(request, seed, n_ctx)
            template_name = self._template.name
            dropped = fitted.dropped
            sent = tuple(fitted.messages)
            if dropped:
                emit(NoticeEvent(f"The conversation was longer than the context: the oldest {dropped} message(s) were left out of this reply."))

        grammar = self._grammar(request)
        max_tokens = max(1, min(sampling.max_tokens, n_ctx - len(prompt_tokens)))
        plan = DecodePlan(prompt_tokens, sampling, seed, max_tokens, stop, grammar)
        result = self._stream(plan, request, emit, cancel, template_name, dropped)
        if sent is not None and not self._request_tools and result.finish_reason in ("stop", "length") \
                and not cancel.is_set():
            self._warm_turn_end(sent, result.text, request.cache_key, cancel)
        return result

    def _warm_turn_end(self, messages, reply: str, key: str | None, cancel: CancelFlag) -> None:
        """Read the reply's closing markers and the next user turn's opening now (engines.llama.turn_warmup)."""
        try:
            closing = closing_tokens(messages, reply,
                                     lambda msgs: self._render_tokens(msgs, lambda _event: None, cancel)[0])
            if not closing or len(closing) >= self._info.context_length or cancel.is_set():
                return
            reused = self._prompt_cache.prepare(self._llm, closing, key).reused_tokens
            if tokens_to_read(closing, reused):
                self._llm.n_tokens = reused
                self._llm.eval(closing[reused:])
        except Exception:  # a head start: it may fail to help, never fail the reply that was just made
            log.info("could not read the turn's closing tokens ahead", exc_info=True)

    def _embed(self, request, emit: Emit, cancel: CancelFlag) -> EmbeddingResult:
        name = self._info.name
        if not isinstance(request, EmbeddingRequest):
            raise EngineError(ErrorKind.BAD_INPUT, f"{name} is loaded for embeddings; it does not write replies.")
        if not self._info.embedding:
            raise EngineError(ErrorKind.BAD_INPUT, f"{name} is loaded for chat; load it in embedding mode to embed texts.")
        from engines.llama.embeddings import embed

        return embed(self._llm, request, name, emit, cancel)

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as plain text (no BOS, no control tokens): for splitting documents by the model's own tokenizer."""
        if self._llm is None:
            raise EngineError(ErrorKind.BAD_INPUT, "No model is loaded.")
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _render_tokens(self, messages, emit: Emit, cancel: CancelFlag,
                       image_marker: str | None = None) -> tuple[list[int], tuple[str, ...]]:
        """The prompt's tokens and stop strings; message text never becomes control tokens."""
        rendered = self._render(list(messages), emit, cancel)
        tokens = self._tokens.tokenize(rendered, add_bos=not rendered.added_special, image_marker=image_marker)
        return tokens, rendered.stop

    def _see(self, request: TextRequest, seed: int, emit: Emit, cancel: CancelFlag) -> TextResult:
        """A conversation with images (see engines.llama.vision): fitted, read and answered like text."""
        from engines.llama.vision import no_projector_message, read_vision_request

        if self._vision is None:
            raise EngineError(ErrorKind.BAD_INPUT, no_projector_message(self._info.name))
        try:
            prompt, stop, dropped = read_vision_request(self._vision, request, self._render_tokens, emit, cancel,
                                                        self._info.context_length)
        except TemplateCancelled:
            return self._cancelled_before_start(request, seed, self._info.context_length)
        try:
            if dropped:
                emit(NoticeEvent(f"The conversation was longer than the context: the oldest {dropped} message(s) were left out of this reply."))
            grammar = self._grammar(request)
            max_tokens = max(1, min(request.sampling.max_tokens, self._info.context_length - prompt.size))
            plan = DecodePlan(prompt.tokens, request.sampling, seed, max_tokens, stop + request.stop, grammar)
            return self._stream(plan, request, emit, cancel, self._template.name, dropped, prompt)
        finally:
            self._vision.release(prompt)

    def _grammar(self, request: TextRequest):
        """The reply's grammar: its JSON schema, or one call in the template's own syntax (tool choice "required")."""
        if request.json_schema is not None:
            return grammar_for_schema(request.json_schema, self._llm)
        if request.tools and request.tool_choice == "required":
            from engines.llama.tool_templates import call_grammar

            return call_grammar(self._template.tool_format, request.tools, self._llm)
        return None

    def _render(self, messages, emit: Emit, cancel: CancelFlag) -> RenderedPrompt:
        """Render with the model's template; one that goes over its budget is replaced for good."""
        try:
            return self._template.render(messages, cancel, self._request_tools, self._tokens.has_control_text)
        except TemplateBudgetError as exc:
            self._template = fallback_template(*self._architecture, f"the model's chat template {exc.reason}")
            emit(NoticeEvent(self._template.note[0].upper() + self._template.note[1:] + "."))
            return self._render(messages, emit, cancel)
        except (TemplateCancelled, EngineError):
            raise
        except Exception as exc:
            raise EngineError(
                ErrorKind.BAD_INPUT,
                f"The chat template '{self._template.name}' could not format this conversation: {exc}",
            ) from None

    def _cancelled_before_start(self, request: TextRequest, seed: int, n_ctx: int) -> TextResult:
        return TextResult(
            text="", finish_reason="cancelled", prompt_tokens=0, completion_tokens=0,
            time_to_first_token_s=None, tokens_per_second=None, context_length=n_ctx,
            template=self._template.name, seed=seed, dropped_messages=0, sampling=request.sampling,
        )

    def _stream(self, plan: DecodePlan, request: TextRequest, emit: Emit, cancel: CancelFlag,
                template_name: str, dropped: int, vision=None) -> TextResult:
        n_ctx = self._info.context_length
        t_start = time.perf_counter()
        # A follow-up that sends the same images again keeps them from the live context (engines.llama.vision);
        # otherwise the prompt cache looks for the prompt's text, up to its first image.
        reused = self._vision.reusable(self._llm, vision) if vision is not None else 0
        if not reused:
            if self._vision is not None:
                self._vision.forget_live_images()  # the cache may cut or replace the live context
            cached = vision.text_before_images() if vision is not None else plan.prompt_tokens
            try:
                reused = self._prompt_cache.prepare(self._llm, cached, request.cache_key).reused_tokens
            except Exception:  # a cache: it may fail to help, never fail the reply (the prompt is then read in full)
                log.warning("the prompt cache could not prepare this request", exc_info=True)
                reused = 0
        self._cancel = cancel
        self._arm_abort(True)  # the prompt is read inside llama.cpp: let Stop reach it there
        try:
            if vision is not None:  # text and images are read here; decode samples from where they end
                plan = replace(plan, prompt_tokens=self._vision.read(self._llm, vision, reused, cancel))
            if cancel.is_set():  # stopped between two parts: the context may end on an image, never decode that
                decoded = Decoded("", "cancelled", 0, None, None)
            else:
                decoded = decode(self._llm, plan, emit, cancel, t_start=t_start, n_ctx=n_ctx,
                                 on_first_token=lambda: self._arm_abort(False))
        except RuntimeError as exc:
            if not cancel.is_set():  # llama_decode returns 2 when our abort callback fired
                raise EngineError(ErrorKind.INTERNAL, f"llama.cpp failed while generating: {exc}") from None
            decoded = Decoded("", "cancelled", 0, None, None)  # stopped while the prompt was read
        finally:
            self._arm_abort(False)
            self._cancel = None
        return TextResult(
            text=decoded.text,
            finish_reason=decoded.finish_reason,
            prompt_tokens=vision.size if vision is not None else len(plan.prompt_tokens),
            completion_tokens=decoded.completion_tokens,
            time_to_first_token_s=ttft(t_start, decoded.t_first),
            tokens_per_second=rate(decoded.completion_tokens, decoded.t_first, decoded.t_last),
            context_length=n_ctx,
            template=template_name,
            seed=plan.seed,
            dropped_messages=dropped,
            sampling=request.sampling,
            cached_prompt_tokens=reused,
            image_tokens=vision.image_tokens if vision is not None else 0,
        )


def open_prompt_cache(path: Path, n_ctx: int, cache_type: str, flash: bool) -> PromptCache:
    """The prompt cache of a loaded chat model: in memory, and on disk when the cache folder can be used."""
    from engines.llama.state_store import FOLDER_NAME, StateStore, model_key
    from engines.paths import app_paths

    try:
        store = StateStore(app_paths().cache / FOLDER_NAME, model_key(str(path), cache_type, flash))
    except OSError as exc:
        log.info("prompt states stay in memory only: %s", exc)
        store = None
    return PromptCache(n_ctx, store)


def _open_projector(llm, path: Path, threads: int, use_gpu: bool, flash: bool):
    """The model's vision projector, or an error in words (the model is closed then: nothing half-loaded stays)."""
    from engines.llama.vision import VisionProjector

    try:
        return VisionProjector(llm, path, threads, use_gpu, flash)
    except BaseException:
        llm.close()
        raise


def _stop_if_cancelled(cancel: CancelFlag | None, path: Path) -> None:
    if cancel is not None and cancel.is_set():
        raise _load_stopped(path)


def _load_stopped(path: Path) -> EngineError:
    return EngineError(ErrorKind.CANCELLED, f"Loading {path.name} was stopped.")

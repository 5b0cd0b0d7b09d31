"""The model library as the front ends see it: catalog, installed models,
verdicts for this machine, and downloads.

One object ties the parts together so that the GUI and the CLI apply the
same rules: a download that will not fit needs an explicit "anyway", a
download larger than the free disk is refused up front, and every finished
download is registered in the installed-model store.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from engines.errors import EngineError, ErrorKind
from engines.kv_cache import DEFAULT_CACHE_TYPE
from engines.library.catalog import Catalog, CatalogEntry, load_catalog
from engines.library.download.queue import FAILED, PAUSED, DownloadJob, DownloadQueue
from engines.library.download.transfer import FileSpec, check_disk_space, safe_relpath
from engines.machine.fit import FitVerdict, ModelShape, ProjectorShape, Resources, judge_text_fit
from engines.machine.hardware import HardwareReport, probe
from engines.machine.image_fit import PipelineShape, folder_weights, judge_image_fit
from engines.paths import AppPaths
from engines.library.installed import InstalledModel, InstalledModels
from engines.library.probes.files import real_path
from engines.settings import Settings

log = logging.getLogger(__name__)
DEFAULT_CONTEXT = 4096


@dataclass(frozen=True)
class UnknownFile:
    """Something in the models folder that is not a model Atelier can run, and why."""

    path: str
    reason: str


def lora_verdict(probed) -> FitVerdict:
    """A LoRA needs no memory of its own: it is fused into the weights of the image model it is applied to."""
    from engines.byte_sizes import format_bytes
    from engines.machine.fit import MemoryNeed

    from engines.diffusion.lora_files import BASE_LABELS

    family = f" for {BASE_LABELS[probed.base]}" if probed.base in BASE_LABELS else ""
    return FitVerdict("cpu_only", "Applied to an image model",
                      f"A LoRA{family}: its {format_bytes(probed.size_bytes, in_gb=True)} are fused into the weights "
                      "of the image model it is applied to, which needs no more memory for it.",
                      MemoryNeed(probed.size_bytes, 0, 0, 0))


TINY_VAE_DECODE_BYTES = 2 * 64 * 512 * 512 * 4  # its widest layer at 512²: two 64-channel fp32 maps, in and out


def tiny_vae_verdict(size_bytes: int) -> FitVerdict:
    """A tiny VAE runs beside the image model it decodes for: its few MB, and one layer's maps at a time."""
    from engines.byte_sizes import format_bytes
    from engines.machine.fit import MemoryNeed

    total = size_bytes + TINY_VAE_DECODE_BYTES
    return FitVerdict("cpu_only", "CPU only",  # TinyVae always decodes on the CPU, whatever runs the UNet
                      f"A tiny VAE: {format_bytes(size_bytes)} weights + {format_bytes(TINY_VAE_DECODE_BYTES)} for "
                      f"its widest layer at 512² = {format_bytes(total)} beside the image model it previews and "
                      "decodes for (atelier image --vae tiny).", MemoryNeed(size_bytes, 0, TINY_VAE_DECODE_BYTES, 0))


def shape_from_catalog(entry: CatalogEntry) -> ModelShape:
    """The estimate's inputs from catalog numbers, before anything is downloaded.

    llama-cpp-python keeps a full-size cache for sliding-window layers too, so
    every layer counts at the full context here, as it does after loading.
    """
    arch = entry.arch
    projector = entry.projector_file
    return ModelShape(
        weights_bytes=entry.model_size,
        block_count=arch.block_count,
        embedding_length=arch.embedding_length,
        feed_forward_length=4 * arch.embedding_length,
        head_count=arch.head_count,
        kv_heads_per_layer=(arch.head_count_kv,) * arch.block_count,
        key_length=arch.key_length,
        value_length=arch.value_length,
        vocab_size=arch.vocab_size,
        trained_context=entry.context_length,
        projector=ProjectorShape.from_file_size(projector.size) if projector else None,
    )


class ModelLibrary:
    """The library on one profile: its folders, the user's settings and the installed models.

    It takes those three parts, not the front ends' :class:`~engines.workspace.Workspace`,
    which composes the services and so sits above them; a front end opens one
    with ``workspace.library()``. The settings give each model's saved load
    settings, which its verdict uses.
    """

    def __init__(self, paths: AppPaths, settings: Settings, models: InstalledModels,
                 catalog: Catalog | None = None) -> None:
        self.paths = paths
        self.settings = settings
        self.models = models
        self._catalog = catalog
        self._report: HardwareReport | None = None
        self._queue: DownloadQueue | None = None

    # ---- facts -----------------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = load_catalog()
        return self._catalog

    def hardware(self, refresh: bool = False) -> HardwareReport:
        if self._report is None or refresh:
            self._report = probe(self.paths.models, refresh=refresh)
        return self._report

    def resources(self, refresh: bool = False) -> Resources:
        from engines.machine.accelerators import llama_gpu_backends

        return Resources.from_report(self.hardware(refresh), gpu_offload=bool(llama_gpu_backends()))

    # ---- verdicts --------------------------------------------------------

    def verdict_for_entry(self, entry: CatalogEntry, context_length: int | None = None,
                          cache_type: str | None = None) -> FitVerdict:
        if entry.kind == "upscaler":
            from engines.machine.upscale_fit import judge_upscaler_fit

            return judge_upscaler_fit(entry.total_size, entry.upscaler.scale, self.hardware(), entry.upscaler.features)
        if entry.kind == "vae":
            return tiny_vae_verdict(entry.total_size)
        if entry.kind == "image":
            return judge_image_fit(entry.total_size, entry.image.default_size, self.hardware(),
                                   file_dtype=entry.image.dtype, runtime="onnx" if entry.format == "onnx" else "torch")
        context = context_length or min(DEFAULT_CONTEXT, entry.context_length)
        cache = cache_type or DEFAULT_CACHE_TYPE
        verdict = judge_text_fit(shape_from_catalog(entry), context, self.resources(), cache)
        if verdict.fits:
            return verdict
        smaller = [
            sibling.name
            for sibling in self.catalog.siblings(entry)
            if sibling.total_size < entry.total_size
            and judge_text_fit(shape_from_catalog(sibling), context, self.resources(), cache).fits
        ]
        if smaller:
            extra = (f"{smaller[-1]} would fit.",)
            return FitVerdict(**{**verdict.__dict__, "suggestions": extra + verdict.suggestions})
        return verdict

    def verdict_for_file(self, path: str | Path, context_length: int | None = None,
                         cache_type: str | None = None) -> FitVerdict:
        """The verdict for a file or folder, whatever it is: the probe registry says which estimate applies."""
        from engines.library.importer import check_recordable
        from engines.library.probes import identify

        probed = check_recordable(identify(path))  # an EngineError with the reason when it is not a model
        path = Path(probed.path)
        if probed.kind == "image":
            weights, dtype = folder_weights(path)  # each loaded component once; SDXL's second text encoder too
            shape = PipelineShape.from_folder(path)
            runtime = "onnx" if probed.format == "onnx" else "torch"
            return judge_image_fit(weights, shape.native_size, self.hardware(), file_dtype=dtype, shape=shape,
                                   runtime=runtime)
        if probed.kind == "lora":
            return lora_verdict(probed)
        if probed.kind == "vae":
            return tiny_vae_verdict(probed.size_bytes)
        if probed.kind == "upscaler":
            from engines.machine.upscale_fit import judge_upscaler_fit

            return judge_upscaler_fit(probed.size_bytes, int(probed.details.get("scale", 4)), self.hardware())
        header = probed.gguf_header
        context = context_length or min(DEFAULT_CONTEXT, header.context_length or DEFAULT_CONTEXT)
        shape = ModelShape.from_header(header)
        if probed.kind == "chat":  # a vision model's projector is loaded with it: counted here too
            from engines.library.probes.projector import find_projector
            from engines.llama.preflight import projector_shape

            projector = find_projector(path, header.embedding_length)
            shape = replace(shape, projector=projector_shape(projector)) if projector else shape
        return judge_text_fit(shape, context, self.resources(), cache_type or DEFAULT_CACHE_TYPE)

    def verdict_for_installed(self, model: InstalledModel, context_length: int | None = None,
                              cache_type: str | None = None) -> FitVerdict:
        """The verdict with the model's saved load settings, unless a context or cache type is given."""
        if model.source == "demo":
            from engines.library.demo import materialize

            materialize(model)  # the demo file is unpacked on first use
        if model.format == "gguf":
            prefs = self.settings.prefs_for(model.id)
            context_length = context_length if context_length is not None else prefs.context_length
            cache_type = cache_type or prefs.cache_type
        return self.verdict_for_file(model.path, context_length, cache_type)

    # ---- installed models ------------------------------------------------

    def scan_models_folder(self) -> list[UnknownFile]:
        """Register models dropped into the models folder by hand; return what is not a model, and why.

        Each entry goes through the probe registry, which never blocks and never
        raises: a FIFO, a symbolic-link loop (D24) or a LoRA is listed with its
        reason instead of breaking ``models list``.
        """
        from engines.library.importer import check_recordable, register
        from engines.library.probes import identify

        root = self.paths.models
        known = {real_path(m.path) for m in self.models.all()}
        unknown: list[UnknownFile] = []
        try:
            items = sorted(root.iterdir()) if root.is_dir() else []
        except OSError as exc:
            return [UnknownFile(str(root), f"The models folder cannot be read: {exc.strerror or exc}.")]
        for item in items:
            if item.name.startswith(".") or item.name.endswith((".part", ".json")) or real_path(item) in known:
                continue
            probed = identify(item)
            try:
                register(check_recordable(probed), self.models, "folder")
            except EngineError as exc:
                unknown.append(UnknownFile(str(item), exc.message))
        return unknown

    def register_path(self, path: str | Path, source: str, model_id: str | None = None, name: str | None = None,
                      description: str | None = None, sha256: str | None = None) -> InstalledModel:
        """Identify ``path`` and record it; an EngineError with the probe's reason when it is not a usable model."""
        from engines.library.importer import check_recordable, register
        from engines.library.probes import identify

        probed = check_recordable(identify(path))
        return register(probed, self.models, source, model_id=model_id, name=name, description=description,
                        sha256=sha256)

    def remove(self, model_id: str) -> str:
        """Forget a model; delete its files only when Atelier put them in its own models folder."""
        model = self.models.get(model_id)
        if model is None:
            raise EngineError(ErrorKind.BAD_INPUT, f"No installed model has the id '{model_id}'.")
        path = Path(model.path)
        root = Path(real_path(self.paths.models))
        inside = path.exists() and Path(real_path(path)).is_relative_to(root)
        if inside:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        self.models.remove(model_id)
        if inside:
            return f"Removed {model.name} and deleted {path}."
        return f"Removed {model.name} from the library; the file stays where it is ({path})."

    # ---- downloads -------------------------------------------------------

    def queue(self) -> DownloadQueue:
        if self._queue is None:
            queue = DownloadQueue(
                self.paths.data / "downloads.json",
                self.paths.models,
                on_complete=self._register_download,
            )
            queue.start()
            self._queue = queue
        return self._queue

    def plan_download(self, source: str, file: str | None = None, sha256: str | None = None):
        """Turn an id, a URL or ``owner/repo`` + file into (model id, name, files, target, entry)."""
        entry = self.catalog.get(source)
        if entry is not None:
            # Catalog sizes are estimates for the fit check; the server's size and the
            # Hub's LFS SHA-256 are what the download is verified against.
            files = [FileSpec(entry.url(f), f.path, None, f.sha256) for f in entry.files]
            if entry.format == "gguf" and len(files) == 1:
                return entry.id, entry.name, files, PurePosixPath(files[0].relpath).name, entry
            if entry.format == "safetensors":  # an upscaler's one file, often generically named: kept as <id>.safetensors
                return entry.id, entry.name, files, f"{entry.id}.safetensors", entry
            return entry.id, entry.name, files, entry.id, entry
        if source.startswith(("http://", "https://")):
            name = PurePosixPath(unquote(urlparse(source).path)).name
            safe_relpath(name)
            return f"url/{name}", name, [FileSpec(source, name, None, sha256)], name, None
        if source.count("/") == 1 and file:
            from engines.network import hub_endpoint

            safe_relpath(file)
            url = f"{hub_endpoint()}/{source}/resolve/main/{file}"
            name = PurePosixPath(file).name
            return f"{source}/{name}", name, [FileSpec(url, name, None, sha256)], name, None
        raise EngineError(
            ErrorKind.BAD_INPUT,
            f"'{source}' is not a catalog id, a URL, or a Hugging Face repo with --file. "
            "See 'atelier models list --catalog'.",
        )

    def pull(self, source: str, file: str | None = None, sha256: str | None = None, anyway: bool = False) -> DownloadJob:
        """Start downloading a model, or return the job already downloading it (here or in another process).

        As ``ollama pull`` does, a second pull of a model that is on its way
        follows that download, wherever it runs, and a pull of one that
        failed resumes it from its partial files.
        """
        model_id, name, files, target, entry = self.plan_download(source, file, sha256)
        queue = self.queue()
        queue.sync()  # another process may have started it a moment ago
        for job in queue.jobs():
            if job.model_id == model_id and not job.finished:
                return queue.resume(job.id) if job.state == PAUSED else job
        if self.models.get(model_id) is not None or (self.paths.models / target).exists():
            raise EngineError(ErrorKind.BAD_INPUT, f"{name} is already installed.")
        failed = [j for j in queue.jobs() if j.model_id == model_id and j.state == FAILED and j.files == tuple(files)]
        if failed:
            return queue.retry(failed[-1].id)
        expected = entry.total_size if entry is not None else sum(f.size or 0 for f in files)
        if expected:
            check_disk_space(self.paths.models, expected)
        if entry is not None and not anyway:
            verdict = self.verdict_for_entry(entry)
            if not verdict.fits:
                raise EngineError(
                    ErrorKind.WONT_FIT,
                    f"{entry.name} won't fit on this machine: {verdict.explanation} "
                    + " ".join(verdict.suggestions)
                    + " Download it anyway if you know better.",
                )
        job = queue.add(model_id, name, files, str(target), follow=True)  # follow: another process was quicker
        return queue.resume(job.id) if job.state == PAUSED else job

    def _register_download(self, job: DownloadJob) -> None:
        """Record a finished download for what the probe registry finds it is (a .safetensors file is no GGUF)."""
        entry = self.catalog.get(job.model_id)
        target = self.paths.models / safe_relpath(job.target)
        if entry is not None and entry.format == "gguf" and job.is_folder:  # a model and its projector: the model
            target = target / safe_relpath(entry.main_file.path)
        self.register_path(target, "download", job.model_id, job.name,
                           description=entry.description if entry else None,
                           sha256=None if job.is_folder else job.files[0].sha256)

    def shutdown(self) -> None:
        if self._queue is not None:
            self._queue.shutdown(wait=False)

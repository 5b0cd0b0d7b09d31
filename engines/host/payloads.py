"""The engine objects the host protocol carries: a closed list, looked up by name.

A message names the type of the object it carries (a load spec, a request,
a model info, an event, a result), and the receiver decodes the fields into
that type only if the name is in :data:`BY_NAME`. A name is never imported
or resolved any other way, so a peer (a host on another machine, one day)
cannot make the receiver build an object of its choosing, let alone run
code, which is what unpickling a crafted message would do.

Only top-level types are listed: fields inside them (a ``ChatMessage`` in a
``TextRequest``, a ``GeneratedImage`` in an ``ImageResult``) are decoded by
their declared types, and msgspec checks every field, ``Literal`` values
included. A new engine type joins the protocol by being added here.

Importing this module is cheap, and it needs nothing the private image
engine's Python lacks: :mod:`engines.api` and :mod:`engines.diffusion.types`
are plain dataclasses.
"""

from __future__ import annotations

from engines import api
from engines.diffusion import types as image
from engines.doc_index import types as documents
from engines.diffusion import upscale_types as upscale

CARRIED: tuple[type, ...] = (
    # text engines
    api.TextLoadSpec,
    api.TextRequest,
    api.EmbeddingRequest,
    api.ModelInfo,
    api.TextResult,
    api.EmbeddingResult,
    # events of every engine
    api.TokenEvent,
    api.ProgressEvent,
    api.NoticeEvent,
    api.StatsEvent,
    api.ErrorEvent,
    # image engines
    image.ImageLoadSpec,
    image.ImageRequest,
    image.ImageModelInfo,
    image.ImageResult,
    image.StepEvent,
    image.PreviewEvent,
    image.ImageDoneEvent,
    # the documents engine (indexing and search)
    documents.IndexFileRequest,
    documents.IndexFileResult,
    documents.SearchRequest,
    documents.SearchResult,
    # the upscaler engine
    upscale.UpscaleLoadSpec,
    upscale.UpscaleRequest,
    upscale.UpscalerInfo,
    upscale.UpscaleResult,
)

BY_NAME: dict[str, type] = {cls.__name__: cls for cls in CARRIED}
NAME_OF: dict[type, str] = {cls: name for name, cls in BY_NAME.items()}
assert len(BY_NAME) == len(CARRIED), "two carried types share a name"

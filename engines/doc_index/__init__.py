"""The documents engine: reading files, splitting passages, embedding and searching them, in an engine host.

This is the engine side of "chat with your documents" (the front ends use
:mod:`engines.documents`, the service above the scheduler). It sits
between the registry and the engines it builds on: the engine
(:mod:`~engines.doc_index.engine`) wraps the llama.cpp engine in
embedding mode, and the database (:mod:`~engines.doc_index.store`) is
opened both here, where indexing commits, and by the service, which
lists and removes. Importing the package is cheap; the host imports only
:mod:`~engines.doc_index.types` (the protocol's payloads) and
:mod:`~engines.doc_index.plugin`.
"""

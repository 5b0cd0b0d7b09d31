"""The chat history (SQLite), how it is opened when damaged, and its exports. Qt-free, like all of ``engines``."""

from engines.chat.errors import (
    ChatNotFound,
    ChatReadError,
    ChatReadOnly,
    ChatStoreError,
    ChatStoreTooNew,
    ChatWriteError,
)
from engines.chat.export import (
    EXPORT_FORMAT,
    EXPORT_VERSION,
    export_data,
    export_json,
    export_markdown,
    suggested_filename,
    write_export,
)
from engines.chat.records import SCHEMA_VERSION, Conversation, StoredMessage
from engines.chat.store import ChatStore
from engines.chat.titles import DEFAULT_TITLE, auto_title_from

__all__ = [
    "DEFAULT_TITLE",
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "SCHEMA_VERSION",
    "ChatNotFound",
    "ChatReadError",
    "ChatReadOnly",
    "ChatStore",
    "ChatStoreError",
    "ChatStoreTooNew",
    "ChatWriteError",
    "Conversation",
    "StoredMessage",
    "auto_title_from",
    "export_data",
    "export_json",
    "export_markdown",
    "suggested_filename",
    "write_export",
]

"""The chat history (SQLite) and its exports. Qt-free, like all of ``engines``."""

from engines.chat.export import (
    EXPORT_FORMAT,
    EXPORT_VERSION,
    export_data,
    export_json,
    export_markdown,
    suggested_filename,
    write_export,
)
from engines.chat.store import (
    DEFAULT_TITLE,
    SCHEMA_VERSION,
    ChatNotFound,
    ChatStore,
    ChatStoreError,
    Conversation,
    StoredMessage,
    auto_title_from,
)

__all__ = [
    "DEFAULT_TITLE",
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "SCHEMA_VERSION",
    "ChatNotFound",
    "ChatStore",
    "ChatStoreError",
    "Conversation",
    "StoredMessage",
    "auto_title_from",
    "export_data",
    "export_json",
    "export_markdown",
    "suggested_filename",
    "write_export",
]

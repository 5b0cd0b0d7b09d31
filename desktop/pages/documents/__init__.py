"""The Documents page's parts: the file table, the background indexer (desktop.pages.documents_page is the page)."""

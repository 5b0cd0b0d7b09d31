"""PDF text, page by page, with pypdf; encrypted, damaged and scanned PDFs are named as such.

pypdf is pure Python, so the frozen app needs no native library, and it
reads the text layer that PDF writers put in. A PDF without one (a scan)
has no text to index: that is said plainly (OCR is not done). Pages
without text in a PDF that has some are listed in the note, so a user
knows why a figure-only page never comes up. An encrypted PDF is opened
with the empty password (many are "encrypted" only against printing);
one that needs a real password is skipped with that reason.
"""

from __future__ import annotations

import io
import logging

from engines.doc_index.file_bytes import Unreadable
from engines.doc_index.document import Document, tidy

log = logging.getLogger(__name__)


def read_pdf(data: bytes) -> Document:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError, PdfStreamError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings about sloppy writers are not the user's concern
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise Unreadable("the PDF is encrypted and needs a password")
        texts = [page.extract_text() or "" for page in reader.pages]
    except Unreadable:
        raise
    except FileNotDecryptedError:
        raise Unreadable("the PDF is encrypted and needs a password") from None
    except DependencyError as exc:
        raise Unreadable(f"the PDF is encrypted with a method Atelier cannot open ({exc})") from None
    except (PdfReadError, PdfStreamError, ValueError, KeyError, TypeError, AttributeError, IndexError,
            RecursionError, OSError, EOFError) as exc:
        raise Unreadable(f"the PDF is damaged or truncated ({exc or type(exc).__name__})") from None
    pages = tuple((number, tidy(text)) for number, text in enumerate(texts, start=1))
    empty = [number for number, text in pages if not text]
    if len(empty) == len(pages):
        raise Unreadable(f"the PDF has no text layer ({len(pages)} page(s) of images, e.g. a scan); "
                         "Atelier does not read text in images (OCR)")
    note = ""
    if empty:
        listed = ", ".join(str(n) for n in empty[:10]) + ("…" if len(empty) > 10 else "")
        note = f"{len(empty)} of {len(pages)} pages have no text layer (pages {listed}) and were left out"
    return Document("pdf", tuple(page for page in pages if page[1]), note)

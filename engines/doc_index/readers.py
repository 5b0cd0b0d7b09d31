"""Turning a file into text: one reader per format, each page kept apart so citations can name it.

A reader gets the file's bytes (read safely by
:mod:`engines.doc_index.file_bytes`) and gives a :class:`Document`: its
format, its text per page (PDF; every other format is one "page" with
number None), and a note about what was left out. A file it cannot read
raises :class:`~engines.doc_index.file_bytes.Unreadable` with the reason,
so the indexer skips it and goes on.

The libraries are the well-kept ones: pypdf (pure Python, so the frozen
app needs no native PDF library), python-docx, lxml for HTML and the
XHTML inside EPUB (an EPUB is a zip of XHTML files in the order its OPF
"spine" lists), and charset-normalizer for text in any common encoding.
Markdown and source code are read as the text they are: their markup is
words the model understands, and character spans stay exact.
"""

from __future__ import annotations

import codecs
import io
import re
import zipfile
from pathlib import PurePosixPath

from engines.doc_index.document import Document, tidy
from engines.doc_index.file_bytes import Unreadable

TEXT_SUFFIXES = frozenset({
    ".txt", ".text", ".md", ".markdown", ".rst", ".org", ".adoc", ".tex", ".log", ".csv", ".tsv", ".ini", ".cfg",
    ".conf", ".toml", ".yaml", ".yml", ".json", ".xml", ".srt", ".vtt",
})
CODE_SUFFIXES = frozenset({
    ".py", ".pyi", ".js", ".mjs", ".ts", ".tsx", ".jsx", ".c", ".h", ".cc", ".cpp", ".hpp", ".cxx", ".cs",
    ".java", ".kt", ".go", ".rs", ".rb", ".php", ".swift", ".m", ".scala", ".sh", ".bash", ".zsh", ".ps1",
    ".bat", ".sql", ".r", ".jl", ".lua", ".pl", ".hs", ".ex", ".exs", ".clj", ".dart", ".css", ".scss", ".vue",
    ".svelte", ".cmake", ".mk", ".gradle",
})
HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
_COMMON_SINGLE_BYTE = ("cp1252", "latin_1", "iso8859_15")
_COMPRESSED = frozenset({".gz", ".bz2", ".xz", ".zst", ".zip", ".7z"})
TEXT_NAMES = frozenset({"readme", "license", "copying", "authors", "changelog", "news", "todo", "makefile",
                        "dockerfile", "copyright", "install"})

_BLOCK_TAGS = ("p", "div", "br", "li", "ul", "ol", "tr", "table", "h1", "h2", "h3", "h4", "h5", "h6", "pre",
               "section", "article", "header", "footer", "blockquote", "dd", "dt", "dl", "hr", "title", "figcaption")
_DROPPED_TAGS = ("script", "style", "noscript", "template", "svg", "iframe", "object")


def format_of(path: str) -> str | None:
    """The format a file's name says, or None for a kind of file Atelier does not read."""
    name = PurePosixPath(path).name.lower()
    suffix = PurePosixPath(name).suffix
    if suffix == ".pdf":
        return "pdf"
    if suffix == ".docx":
        return "docx"
    if suffix == ".epub":
        return "epub"
    if suffix in HTML_SUFFIXES:
        return "html"
    if suffix in (".md", ".markdown"):
        return "markdown"
    if suffix in CODE_SUFFIXES:
        return "code"
    if suffix in TEXT_SUFFIXES or (name.split(".")[0] in TEXT_NAMES and suffix not in _COMPRESSED):
        return "text"  # README, COPYING, NEWS.Debian...
    return None


UNSUPPORTED_TAIL = "are not a document format Atelier reads (PDF, DOCX, EPUB, HTML, Markdown, text, source code)"


def unsupported_reason(path: str) -> str:
    suffix = PurePosixPath(path).suffix.lower()
    what = f"'{suffix}' files" if suffix else "files without an extension"
    return f"{what} {UNSUPPORTED_TAIL}"


def read_document(path: str, data: bytes) -> Document:
    """The text of ``data`` (the bytes of ``path``), or :class:`Unreadable` with the reason."""
    kind = format_of(path)
    if kind is None:
        raise Unreadable(unsupported_reason(path))
    if kind == "pdf":
        from engines.doc_index.pdf_reader import read_pdf

        return read_pdf(data)
    if kind == "docx":
        return Document("docx", ((None, tidy(_docx_text(data))),))
    if kind == "epub":
        return Document("epub", ((None, tidy(_epub_text(data))),))
    if kind == "html":
        return Document("html", ((None, tidy(html_text(data))),))
    return Document(kind, ((None, decode_text(data)),))


def decode_text(data: bytes) -> str:
    """Text in any common encoding (BOM, UTF-8, then charset-normalizer's guess); binary is refused."""
    for bom, encoding in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                          (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                          (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            try:
                return _normalise_newlines(data.decode(encoding))
            except UnicodeDecodeError:
                break
    if b"\x00" in data[:65536]:
        raise Unreadable("the file holds binary data, not text")
    try:
        return _normalise_newlines(data.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    matches = from_bytes(data)
    best = matches.best()
    if best is None:
        raise Unreadable("the file holds binary data, not text in an encoding Atelier recognises")
    # On a page of Western text several single-byte code pages read equally well (cp1250 and cp1252 differ in
    # a few letters); then the most common one, Windows' Western cp1252, is the likelier to be right.
    tied = [m for m in matches if m.chaos <= best.chaos and m.coherence >= best.coherence - 0.05]
    chosen = next((m for m in tied if m.encoding in _COMMON_SINGLE_BYTE), best)
    return _normalise_newlines(str(chosen))


def html_text(data: bytes) -> str:
    """The visible text of an HTML page: scripts and styles dropped, one line per block."""
    import lxml.etree
    import lxml.html

    try:
        root = lxml.html.document_fromstring(data)
    except (lxml.etree.ParserError, ValueError) as exc:
        raise Unreadable(f"the HTML cannot be parsed ({exc})") from None
    return _element_text(root)


def _element_text(root) -> str:
    for element in list(root.iter(*_DROPPED_TAGS)):
        element.drop_tree()
    for element in root.iter():  # source line breaks are spaces in HTML, except inside <pre>
        if not isinstance(element.tag, str) or element.tag == "pre" or any(a.tag == "pre" for a in element.iterancestors()):
            continue
        element.text = _HTML_SPACE.sub(" ", element.text) if element.text else element.text
        if element.getparent() is None or element.getparent().tag != "pre":
            element.tail = _HTML_SPACE.sub(" ", element.tail) if element.tail else element.tail
    for element in root.iter(*_BLOCK_TAGS):
        element.tail = "\n" + (element.tail or "")
    return root.text_content()


def _docx_text(data: bytes) -> str:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise Unreadable(f"the DOCX file is damaged or not a Word document ({exc})") from None
    parts = [paragraph.text for paragraph in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            parts.append(" | ".join(cell.text for cell in row.cells))
    return "\n".join(parts)


def _epub_text(data: bytes) -> str:
    import lxml.etree
    import lxml.html

    try:
        book = zipfile.ZipFile(io.BytesIO(data))
        container = lxml.etree.fromstring(book.read("META-INF/container.xml"))
        opf_path = container.find(".//{*}rootfile").get("full-path")
        opf = lxml.etree.fromstring(book.read(opf_path))
    except (zipfile.BadZipFile, KeyError, AttributeError, lxml.etree.XMLSyntaxError) as exc:
        raise Unreadable(f"the EPUB file is damaged ({exc})") from None
    base = PurePosixPath(opf_path).parent
    items = {item.get("id"): item.get("href") for item in opf.iter("{*}item")}
    chapters = []
    for ref in opf.iter("{*}itemref"):
        href = items.get(ref.get("idref"))
        if not href:
            continue
        try:
            chapters.append(_element_text(lxml.html.document_fromstring(book.read(str(base / href)))))
        except (KeyError, lxml.etree.ParserError, ValueError):
            continue  # a missing or empty chapter: the rest of the book still counts
    if not chapters:
        raise Unreadable("the EPUB file has no readable chapters (it may be DRM-protected)")
    return "\n\n".join(chapters)


_HTML_SPACE = re.compile(r"\s+")
def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")

"""``atelier docs …``: collections of your own documents, indexed and searched on this machine.

``add NAME PATH...`` creates the collection (or adds to it) and indexes it
at once, with progress on stderr; Ctrl-C pauses (what was embedded is
kept) and running the same command again resumes. ``list`` shows the
collections, or one collection's files with their state (indexed,
changed, skipped and why); ``query`` prints the ranked passages with
file, page and score; ``remove`` deletes a collection (its passages and
vectors) or some of its folders and files.
"""

from __future__ import annotations

import sys
import threading
import time

from desktop.cli_contract import EXIT_INTERRUPTED, CliError
from desktop.cli_output import clean, print_json, print_note
from engines.doc_index.readers import UNSUPPORTED_TAIL
from engines.durations import format_duration
from engines.errors import EngineError


def add_parser(sub) -> None:
    docs = sub.add_parser("docs", help="collections of your documents, to search and to chat with (--docs)")
    verbs = docs.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser("add", help="add folders and files to a collection (made if new) and index them")
    add.add_argument("name", help="the collection's name")
    add.add_argument("paths", nargs="+", metavar="PATH", help="folders and files (PDF, DOCX, EPUB, HTML, Markdown, text, code)")
    add.add_argument("--embedding-model", metavar="ID_OR_PATH",
                     help="a GGUF embedding model: an installed model's id or a path (needed for a new collection; "
                          "another model re-indexes the collection)")
    add.add_argument("--threads", type=int, help="CPU threads for the embedding model (default: physical cores)")
    add.add_argument("--json", action="store_true", help="print one JSON line with the summary")
    listing = verbs.add_parser("list", help="the collections, or one collection's files and their state")
    listing.add_argument("name", nargs="?")
    listing.add_argument("--json", action="store_true")
    query = verbs.add_parser("query", help="the passages of a collection that answer a question, best first")
    query.add_argument("name")
    query.add_argument("question")
    query.add_argument("--top", type=int, default=5, metavar="K", help="at most K passages (default 5)")
    query.add_argument("--json", action="store_true")
    rm = verbs.add_parser("remove", help="remove a collection, or some of its folders and files, from the index")
    rm.add_argument("name")
    rm.add_argument("paths", nargs="*", metavar="PATH")


def run_docs(args) -> int:
    from engines.documents import DocumentLibrary
    from engines.workspace import open_workspace

    workspace = open_workspace()
    scheduler = workspace.scheduler(idle_unload_s=None, roles={"documents": "cli-documents"})
    try:
        library = DocumentLibrary(workspace.paths.data, scheduler, threads=getattr(args, "threads", None))
        with library.store() as store:  # opened once here: a damaged index is set aside with a sentence
            if store.problem:
                print_note(store.problem)
        verb = {"add": _add, "list": _list, "query": _query, "remove": _remove}[args.verb]
        return verb(workspace, library, args)
    except EngineError as exc:
        raise CliError.from_engine(exc) from None
    finally:
        scheduler.shutdown()


def _add(workspace, library, args) -> int:
    from engines.library.resolve import resolve_model

    model_path = model_name = None
    if args.embedding_model:
        resolved = resolve_model(args.embedding_model, workspace.models, kind="embedding")
        model_path = str(resolved.local_path())
        model_name = resolved.installed.name if resolved.installed is not None else ""
    elif not any(c.name == args.name for c in library.collections()):
        raise CliError(f"the new collection '{args.name}' needs an embedding model: pass --embedding-model "
                       "ID_OR_PATH (a GGUF embedding model such as all-MiniLM-L6-v2; "
                       "'atelier models list --catalog' lists some)")
    collection = library.add(args.name, args.paths, model_path, model_name or "")
    stop = threading.Event()
    printer = _ProgressPrinter()
    try:
        summary = library.index(collection.name, printer.show, stop)
    except KeyboardInterrupt:
        printer.end()
        print_note(f"paused: what was indexed of '{collection.name}' is kept; run the same command again to resume")
        return EXIT_INTERRUPTED
    printer.end()
    if args.json:
        print_json({"collection": summary.collection, "files": summary.files_total, "indexed": summary.indexed,
                    "unchanged": summary.unchanged, "removed": summary.removed, "passages": summary.passages,
                    "skipped": [{"path": p, "reason": r} for p, r in summary.skipped],
                    "seconds": round(summary.seconds, 2)})
    else:
        print(clean(f"{summary.collection}: {summary.files_total} files, {summary.indexed} indexed, "
                    f"{summary.unchanged} unchanged, {len(summary.skipped)} skipped, {summary.removed} removed; "
                    f"{summary.passages} passages embedded in {summary.seconds:.1f} s"))
        unread: dict[str, int] = {}  # kinds of files Atelier does not read: one line per kind, not per file
        for path, reason in summary.skipped:
            if reason.endswith(UNSUPPORTED_TAIL):
                kind = reason.split(" are not ", 1)[0]
                unread[kind] = unread.get(kind, 0) + 1
            else:
                print(clean(f"  skipped {path}: {reason}"))
        for kind, count in sorted(unread.items(), key=lambda item: -item[1]):
            print(clean(f"  skipped {count} file(s): {kind} are not a document format Atelier reads"))
    return 0


def _list(workspace, library, args) -> int:
    if not args.name:
        collections = library.collections()
        rows = []
        with library.store() as store:
            for c in collections:
                files, passages = store.counts(c)
                rows.append({"name": c.name, "model": c.model_name, "model_path": c.model_path,
                             "dimensions": c.dimensions, "files": files, "passages": passages,
                             "sources": store.sources(c)})
        if args.json:
            print_json({"collections": rows})
        elif not rows:
            print("No collections yet: 'atelier docs add NAME PATH... --embedding-model ID_OR_PATH' makes one.")
        for row in rows if not args.json else ():
            print(clean(f"{row['name']}: {row['files']} files, {row['passages']} passages ({row['model']})"))
        return 0
    from engines.documents import file_status

    collection = library.collection(args.name)
    files = [file_status(record) for record in library.files(args.name)]
    if args.json:
        print_json({"name": collection.name, "model": collection.model_name, "model_path": collection.model_path,
                    "dimensions": collection.dimensions, "sources": library.sources(args.name),
                    "excluded": library.excluded(args.name), "files": files})
        return 0
    print(clean(f"{collection.name} ({collection.model_name}): {len(files)} files"))
    for path in library.excluded(args.name):
        print(clean(f"  taken out {path}: 'atelier docs add {collection.name} PATH' adds it again"))
    for row in files:
        detail = row["reason"] or row["note"] or (f"{row['passages']} passages" if row["state"] == "indexed" else "")
        print(clean(f"  {row['state']:<9} {row['path']}" + (f": {detail}" if detail else "")))
    return 0


def _query(workspace, library, args) -> int:
    if not 1 <= args.top <= 100:
        raise CliError("--top must be between 1 and 100")
    if not args.question.strip():
        raise CliError("the question is empty")
    result = library.query(args.name, args.question, args.top)
    if args.json:
        print_json({"collection": args.name, "question": args.question, "searched": result.searched,
                    "best_similarity": result.best_similarity, "threshold": result.threshold,
                    "hits": [_hit_dict(h) for h in result.hits]})
        return 0
    if not result.hits:
        from engines.documents import nothing_relevant

        print(clean(nothing_relevant(args.name, result)))
        return 0
    for number, hit in enumerate(result.hits, start=1):
        where = f"{hit.path}" + (f", page {hit.page}" if hit.page else "")
        print(clean(f"[{number}] {where} (score {hit.score:.4f}, similarity {hit.similarity:.2f})"))
        print("    " + clean(" ".join(hit.text.split())[:400]))
    return 0


def _remove(workspace, library, args) -> int:
    files, passages = library.remove(args.name, args.paths or None)
    what = f"'{args.name}'" if not args.paths else f"{len(args.paths)} path(s) from '{args.name}'"
    print(clean(f"Removed {what}: {files} files and {passages} passages deleted from the index."))
    return 0


def _hit_dict(hit) -> dict:
    return {"path": hit.path, "page": hit.page, "start": hit.start, "end": hit.end, "score": hit.score,
            "similarity": hit.similarity, "keyword_rank": hit.keyword_rank, "text": hit.text}


class _ProgressPrinter:
    """One line on stderr, redrawn on a terminal and printed every few seconds into a file or a pipe."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._last = 0.0
        self._drawn = False

    def show(self, progress) -> None:
        now = time.monotonic()
        if not self._tty and now - self._last < 5 and progress.files_done < progress.files_total:
            return
        self._last = now
        finished = progress.files_done >= progress.files_total
        left = f", about {format_duration(progress.seconds_left)} left" if progress.seconds_left is not None and not finished else ""
        line = (f"indexing: {progress.files_done}/{progress.files_total} files, {progress.passages_done} passages"
                f"{left}")
        try:
            if self._tty:
                sys.stderr.write("\r\x1b[2K" + clean(line))
                self._drawn = True
            else:
                sys.stderr.write(clean(line) + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass

    def end(self) -> None:
        if self._drawn:
            try:
                sys.stderr.write("\n")
                sys.stderr.flush()
            except (OSError, ValueError):
                pass


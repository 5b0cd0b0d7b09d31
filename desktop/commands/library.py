"""``atelier models …``: list, check, pull, import and remove models from a terminal."""

from __future__ import annotations

import sys
import threading

from desktop.cli_contract import EXIT_FAILED, CliError
from desktop.cli_output import clean, print_json
from desktop.commands.models import resolve
from engines.byte_sizes import format_bytes
from engines.durations import format_duration
from engines.errors import EngineError
from engines.kv_cache import CACHE_TYPES
from engines.library.service import ModelLibrary
from engines.workspace import open_workspace


def add_parser(sub) -> None:
    models = sub.add_parser("models", help="the model library: list, check, pull, import, remove")
    verbs = models.add_subparsers(dest="verb", required=True)
    listing = verbs.add_parser("list", help="installed models (or the catalog) with a verdict for this machine")
    listing.add_argument("--catalog", action="store_true", help="list the catalog instead of what is installed")
    listing.add_argument("--json", action="store_true")
    check = verbs.add_parser("check", help="will this model run here? the verdict and its arithmetic")
    check.add_argument("model", help="an installed id (or a unique prefix: demo), a catalog id, or a path")
    check.add_argument("--ctx", type=int, help="context length in tokens (default: 4096)")
    check.add_argument("--cache-type", choices=list(CACHE_TYPES),
                       help="the context cache type (default: f16, or the model's saved setting)")
    check.add_argument("--json", action="store_true")
    pull = verbs.add_parser("pull", help="download a model (resumes, verifies SHA-256)")
    pull.add_argument("source", help="a catalog id, a URL, or a Hugging Face repo (owner/name) with --file")
    pull.add_argument("--file", help="the file inside the repo")
    pull.add_argument("--sha256", help="the expected SHA-256 (otherwise the Hub's is used when it has one)")
    pull.add_argument("--anyway", action="store_true", help="download even if it won't fit on this machine")
    pull.add_argument("--json", action="store_true")
    imp = verbs.add_parser("import", help="add a .gguf file or a diffusers/ONNX model folder (it stays where it is)")
    imp.add_argument("path")
    imp.add_argument("--json", action="store_true")
    rm = verbs.add_parser("remove", help="remove a model from the library")
    rm.add_argument("id", help="an installed id (or a unique prefix), or the model's path")


def run_models(args) -> int:
    workspace = open_workspace()
    library = workspace.library()
    _warn(workspace.problems)  # a state file set aside, records refused: said, never silent
    try:
        return {"list": _list, "check": _check, "pull": _pull, "import": _import, "remove": _remove}[args.verb](library, args)
    except EngineError as exc:
        raise CliError.from_engine(exc) from None
    finally:
        library.shutdown()


def _speed_fields(verdict, measured: str | None = None) -> dict:
    """The expected speed (and the measured one, when the model ran here) as JSON fields."""
    speed = verdict.speed
    return {"speed": None if speed is None else {"value": round(speed.value, 2), "unit": speed.unit,
                                                  "words": speed.words, "basis": speed.basis},
            "measured": measured}


def _list(library: ModelLibrary, args) -> int:
    from engines.library.advisor import Advisor

    advisor = Advisor(library)  # speeds: the machine is measured once, then read from the cache folder
    rows = []
    if args.catalog:
        if library.catalog.error:
            raise CliError(library.catalog.error)
        advice = advisor.catalog_advice()
        entries = sorted(library.catalog.entries, key=lambda e: advice.order.get(e.id, len(advice.order)))
        for entry in entries:
            verdict = advice.verdicts.get(entry.id) or library.verdict_for_entry(entry)
            recommended = advice.is_recommended(entry.id)
            label = ("★ recommended for this machine · " if recommended else "") + verdict.summary
            comparison = advice.comparisons.get(entry.id)
            rows.append({"id": entry.id, "name": entry.name, "kind": entry.kind, "size_bytes": entry.total_size,
                         "quantization": entry.quantization, "license": entry.license, "gated": entry.gated,
                         "verdict": verdict.verdict, "label": label + (f" · {comparison}" if comparison else ""),
                         "total_bytes": verdict.need.total_bytes, "recommended": recommended,
                         **_speed_fields(verdict, comparison)})
    else:
        unknown = library.scan_models_folder()
        measured = advisor._safe(advisor.measured, {})
        for model in library.models.all():
            try:
                verdict = advisor.installed_verdict(model)
                comparison = (advisor.comparison(measured[model.id], verdict, advisor.image_base(model))
                              if model.id in measured else None)
                label = verdict.summary + (f" · {comparison}" if comparison else "")
                code, total, speed = verdict.verdict, verdict.need.total_bytes, _speed_fields(verdict, comparison)
            except EngineError as exc:
                label, code, total, speed = f"unusable: {exc.message}", "unknown", None, {"speed": None, "measured": None}
            rows.append({"id": model.id, "name": model.name, "kind": model.kind, "engine": model.engine,
                         "format": model.format, "size_bytes": model.size_bytes, "path": model.path,
                         "source": model.source, "verdict": code, "label": label, "total_bytes": total, **speed,
                         "remote": False})
        rows += _remote_rows(library)
    if args.json:
        data = {"models": rows}
        if not args.catalog:
            data["not_models"] = [{"path": u.path, "reason": u.reason} for u in unknown]
        print_json(data)
        return 0
    if not rows:
        print("No models installed. Try 'atelier models list --catalog'.")
    for row in rows:
        print(f"{clean(row['id']):<42} {format_bytes(row['size_bytes']):>9}  {clean(row['label'])}")
    if not args.catalog and unknown:
        print(f"\nIn the models folder but not models ({len(unknown)}):")
        for item in unknown:
            print(f"  {clean(item.reason)}")
    return 0


def _remote_rows(library: ModelLibrary) -> list[dict]:
    """The remote servers' models, after the local ones, as NAME/MODEL and marked remote.

    No verdict: they run on the server, which loads them with its own
    settings. The list is what each server listed when last asked
    (``remotes.json``), so listing opens no connection.
    """
    from engines.network import network_allowed
    from engines.remote import RemoteServers, remote_models
    from engines.remote.urls import is_loopback

    servers = RemoteServers.beside(library.models.file)
    found = remote_models(servers)
    _warn([servers.problem] if servers.problem else [])
    online = network_allowed()
    rows = []
    for model in found:
        label = f"remote · on the server '{model.server.name}' ({model.server.base_url})"
        if not online and not is_loopback(model.server.base_url):
            label += " · not used in offline mode"
        rows.append({"id": model.id, "name": model.name, "kind": model.kind, "engine": model.engine,
                     "format": model.format, "size_bytes": None, "path": model.server.base_url, "source": "remote",
                     "verdict": "remote", "label": label, "total_bytes": None, "speed": None, "measured": None,
                     "remote": True})
    return rows


def _check(library: ModelLibrary, args) -> int:
    from engines.library.advisor import Advisor

    if args.ctx is not None and args.ctx < 64:
        raise CliError("--ctx must be at least 64")
    found = resolve(library, args.model)
    advisor = Advisor(library)
    if found.installed is not None:
        verdict = library.verdict_for_installed(found.installed, args.ctx, args.cache_type)
        verdict = advisor.with_speed(verdict, advisor.installed_speed(found.installed, verdict))
    elif found.entry is not None:
        verdict = library.verdict_for_entry(found.entry, args.ctx, args.cache_type)
        verdict = advisor.with_speed(verdict, advisor.entry_speed(found.entry, verdict))
    else:
        verdict = library.verdict_for_file(found.path, args.ctx, args.cache_type)
        if verdict.need.context_length:  # a GGUF file: tokens/s from the same arithmetic
            verdict = advisor.with_speed(verdict, advisor.text_speed(verdict))
    if args.json:
        data = verdict.to_dict()
        data.update(_speed_fields(verdict))
        print_json(data)
        return 0
    print(f"{clean(verdict.summary)}: {clean(verdict.explanation)}")
    if verdict.speed is not None:
        print(f"  Speed: {clean(verdict.speed.basis)}")
    for suggestion in verdict.suggestions:
        print(f"  • {clean(suggestion)}")
    return 0


def _pull(library: ModelLibrary, args) -> int:
    job = library.pull(args.source, args.file, args.sha256, anyway=args.anyway)
    done = threading.Event()
    queue = library.queue()
    _warn(queue.problems)

    def changed(job_id, current) -> None:  # "paused": by another process this one follows
        if job_id == job.id and (current is None or current.finished or current.state == "paused"):
            done.set()

    unsubscribe = queue.subscribe(changed)
    tty = sys.stderr.isatty() and not args.json
    try:
        while not done.wait(0.2):
            current = queue.get(job.id)
            if tty and current is not None:
                _bar(current)
    except KeyboardInterrupt:
        if queue.runs_elsewhere(job.id):  # following another process's download: leave it alone
            print("\nerror: interrupted; the download goes on in the other Atelier process", file=sys.stderr)
            return 130
        queue.pause(job.id)
        print("\nerror: paused; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        unsubscribe()
    final = queue.get(job.id)
    if tty:
        sys.stderr.write("\n")
    if final is not None and final.state == "paused":
        why = f": {final.error.rstrip('.')}" if final.error else " in another Atelier window"
        raise CliError(f"{clean(final.name)} was paused{clean(why)}; run the same command again to resume.", EXIT_FAILED)
    if final is None or final.state != "completed":
        raise CliError((final.error if final else None) or "the download did not finish", EXIT_FAILED)
    if args.json:
        print_json({"id": final.model_id, "name": final.name, "target": final.target, "bytes": final.bytes_done, "state": final.state})
    else:
        print(f"Installed {clean(final.name)} ({format_bytes(final.bytes_done)}).")
    return 0


def _warn(problems: list[str]) -> None:
    for problem in problems:
        print(f"warning: {clean(problem)}", file=sys.stderr)


def _bar(job) -> None:
    total = job.bytes_total or 0
    share = job.bytes_done / total if total else 0.0
    filled = int(30 * share)
    eta = f"{format_duration(job.eta_s, precise=True)} left" if job.eta_s else ""
    line = f"\r{clean(job.name)[:30]:<30} [{'#' * filled}{'.' * (30 - filled)}] {share * 100:5.1f}% " \
           f"{format_bytes(job.bytes_done)}/{format_bytes(total) if total else '?'} {format_bytes(job.speed_bps)}/s {eta}   "
    sys.stderr.write(line)
    sys.stderr.flush()


def _import(library: ModelLibrary, args) -> int:
    from engines.library.importer import import_model

    model = import_model(args.path, library.models)
    if args.json:
        print_json({"id": model.id, "name": model.name, "kind": model.kind, "format": model.format,
                    "engine": model.engine, "path": model.path, "size_bytes": model.size_bytes})
    else:
        what = {"lora": "LoRA", "upscaler": "upscaler"}.get(model.kind, f"{model.kind} model")
        print(f"Added {clean(model.name)} ({what}) as '{clean(model.id)}'.")
    return 0


def _remove(library: ModelLibrary, args) -> int:
    found = resolve(library, args.id)
    if found.installed is None:
        what = f"{found.entry.name} is in the catalog but" if found.entry is not None else f"{found.path} is"
        raise CliError(f"{what} not in the library, so there is nothing to remove.")
    print(clean(library.remove(found.installed.id)))
    return 0

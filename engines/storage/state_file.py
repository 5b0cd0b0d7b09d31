"""Reading a JSON state file that may be damaged, from a newer version, or not ours.

A state file (settings, the model list, the download queue) is the user's
data even when Atelier cannot read it: a torn write after a power cut, a
hand edit, a file from a newer Atelier. So a file that is not a JSON object
of the expected shape is never read as "empty" and then overwritten: it is
*set aside* beside itself as ``<name>.unreadable-<time>.json`` and the
caller gets a problem message to show, then starts from an empty state.
Where even the rename fails, the caller is told the file is not writable,
so its next write cannot replace data that was never read.

Records inside a readable file are validated one by one by the caller
(see :func:`split_valid`): one bad record is skipped with its reason and
kept in the file as it was, never dropped with its neighbours.

Forward compatibility: a newer version may add fields and records, never
change what an existing field means (that needs a new file name). So an
older Atelier keeps the fields it does not know (``extra="allow"`` models,
raw dicts) and writes the file back with the newer version number; it
never downgrades the file.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from engines.storage.lock import state_lock

if TYPE_CHECKING:  # pydantic only where records are validated: the image-engine Python has none
    from pydantic import BaseModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StateRead:
    """What came out of a state file.

    ``data`` is the JSON object (empty when the file is missing or was set
    aside). ``problem`` says, for a person, what was wrong and where the
    file went; ``writable`` is False when the damaged file is still in
    place (it could not be set aside), so writing would destroy it.
    """

    data: dict = field(default_factory=dict)
    problem: str | None = None
    kept_as: Path | None = None
    writable: bool = True


def read_state(path: str | os.PathLike[str], what: str, check: Callable[[dict], None] | None = None) -> StateRead:
    """Read the JSON object in *path*; set the file aside when it is not one.

    The caller shows ``problem`` to the user; the log gets it at INFO only, because a
    command-line run without logging set up would print a warning a second time.

    *what* names the file for people ("The model list"). *check* may raise
    ``ValueError`` or ``TypeError`` for an object of the wrong shape (say
    ``{"jobs": 5}``), which is treated like a torn file. The set-aside runs
    under the file's :func:`state_lock` and re-reads first, so a file that
    another process has just rewritten is never moved away.
    """
    target = Path(path)
    data, reason = _parse(target, check)
    if reason is None:
        return StateRead(data or {})
    with state_lock(target):
        data, reason = _parse(target, check)
        if reason is None:
            return StateRead(data or {})
        try:
            kept = set_aside(target)
        except OSError as exc:
            log.info("%s (%s) is unreadable (%s) and could not be set aside: %s", what, target, reason, exc)
            problem = (
                f"{what} ({target}) cannot be read ({reason}) and could not be moved aside "
                f"({exc.strerror or exc}). Atelier will not change it; fix or move the file, then restart."
            )
            return StateRead({}, problem, None, writable=False)
    log.info("%s (%s) is unreadable (%s); kept it as %s", what, target, reason, kept.name)
    problem = f"{what} ({target.name}) could not be read ({reason}). It was kept as {kept} and a new one was started."
    return StateRead({}, problem, kept)


def set_aside(path: Path) -> Path:
    """Rename *path* to ``<stem>.unreadable-<time><suffix>`` beside it (never over an older one)."""
    stamp = int(time.time())
    for n in range(1000):
        backup = path.with_name(f"{path.stem}.unreadable-{stamp}{'' if n == 0 else f'-{n}'}{path.suffix}")
        try:
            os.link(path, backup)  # fails if the name is taken: an earlier backup is never replaced
        except FileExistsError:
            continue
        except OSError:  # no hard links here (some network or FAT file systems): plain rename
            if backup.exists():
                continue
            os.replace(path, backup)
            return backup
        os.unlink(path)
        return backup
    raise FileExistsError(f"too many unreadable copies of {path.name}")


def split_valid(items: Iterable[Any], model: type[BaseModel], what: str) -> tuple[list[BaseModel], list[Any], list[str]]:
    """Validate each record of a list: (the valid ones, the rest as they were, a reason per invalid one)."""
    from pydantic import ValidationError

    valid, invalid, reasons = [], [], []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            invalid.append(item)
            reasons.append(f"{what} #{index + 1}: it is {_json_kind(item)}, not an object")
            continue
        try:
            valid.append(model.model_validate(item))
        except ValidationError as exc:
            invalid.append(item)
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first.get("loc", ())) or "record"
            label = item.get("id") if isinstance(item.get("id"), str) else f"#{index + 1}"
            message = str(first.get("msg", "invalid")).removeprefix("Value error, ")  # our own validators' sentences
            reasons.append(f"{what} {label!r}: {where}: {message}")
    return valid, invalid, reasons


def file_version(data: dict, key: str = "version") -> int:
    """The schema version a file says it has (1 when missing or not a number)."""
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def _parse(path: Path, check: Callable[[dict], None] | None) -> tuple[dict | None, str | None]:
    """(the object, None), (None, None) when there is no file, or (None, why it is unreadable)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except IsADirectoryError:
        return None, "it is a folder, not a file"
    except OSError as exc:
        return None, f"it cannot be opened: {exc.strerror or exc}"
    if not raw.strip():
        return None, "it is empty"
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "it is not UTF-8 text"
    except ValueError as exc:
        return None, f"it is not valid JSON: {exc}"
    if not isinstance(data, dict):
        return None, f"it holds {_json_kind(data)} instead of an object"
    if check is not None:
        try:
            check(data)
        except (ValueError, TypeError) as exc:
            return None, str(exc)
    return data, None


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    return {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(type(value), "something else")

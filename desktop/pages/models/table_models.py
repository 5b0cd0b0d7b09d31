"""Qt table models for the catalog and the installed models (display only, no logic)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtGui import QFont, QPalette
from PySide6.QtWidgets import QApplication

from desktop.pages.models.verdict_view import dot_icon
from desktop.widgets.list_table import ListTableModel as _ListTableModel
from engines.byte_sizes import format_bytes
from engines.library.advisor import CatalogAdvice
from engines.library.catalog import CatalogEntry
from engines.machine.fit import FitVerdict
from engines.library.installed import InstalledModel
from engines.library.service import UnknownFile
from engines.machine.speed import format_speed_short
from engines.remote.listing import RemoteModel

# Roles as plain ints: data() runs for every visible cell on every repaint.
DISPLAY = int(Qt.ItemDataRole.DisplayRole.value)
DECORATION = int(Qt.ItemDataRole.DecorationRole.value)
TOOLTIP = int(Qt.ItemDataRole.ToolTipRole.value)
FOREGROUND = int(Qt.ItemDataRole.ForegroundRole.value)
ALIGNMENT = int(Qt.ItemDataRole.TextAlignmentRole.value)
FONT = int(Qt.ItemDataRole.FontRole.value)
ITEM_ROLE = int(Qt.ItemDataRole.UserRole.value) + 1  # the CatalogEntry / InstalledModel / UnknownFile of a row
SORT_ROLE = int(Qt.ItemDataRole.UserRole.value) + 2
RIGHT = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
KINDS = {"chat": "Chat", "image": "Image", "embedding": "Embedding", "upscaler": "Upscaler", "vae": "Tiny VAE"}
ENGINES = {"llama_cpp": "llama.cpp", "diffusers": "Diffusers", "onnx": "ONNX Runtime", "remote": "Remote server"}
FORMATS = {"gguf": "GGUF", "diffusers": "Diffusers", "onnx": "ONNX", "remote": "OpenAI API"}
SOURCES = {"demo": "Built-in demo", "import": "Added file", "download": "Downloaded", "folder": "Models folder",
           "remote": "Remote server"}
_VERDICT_ORDER = {"gpu_full": 0, "gpu_partial": 1, "cpu_only": 2, "wont_fit": 3}


def installed_format(model: InstalledModel) -> str:
    """The Format column: a LoRA says the family it was trained for (the Images page offers it only for that)."""
    if model.kind == "lora":
        from engines.diffusion.lora_files import BASE_LABELS

        return f"LoRA for {BASE_LABELS[model.base]}" if model.base in BASE_LABELS else "LoRA (family unknown)"
    return FORMATS.get(model.format, model.format)


def _muted():
    return QApplication.palette().color(QPalette.Disabled, QPalette.Text)


def _bold() -> QFont:
    font = QApplication.font()
    font.setBold(True)
    return font


class CatalogTableModel(_ListTableModel):
    # What decides a choice first (name, fit, speed, size); the rest is in the details pane too.
    COLUMNS = ("Name", "Fits here", "Speed here", "Size", "Kind", "Quantization", "License")
    NAME, VERDICT, SPEED, SIZE, KIND, QUANT, LICENSE = range(7)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.entries: list[CatalogEntry] = []
        self.verdicts: dict[str, FitVerdict] = {}
        self.advice = CatalogAdvice()
        self.installed: set[str] = set()
        self.jobs: dict[str, str] = {}  # entry id -> its download's state in words ("downloading 45%")
        self.shared_names: set[str] = set()  # names several entries share (quantizations): shown with theirs

    def set_entries(self, entries: list[CatalogEntry]) -> None:
        self.beginResetModel()
        self.entries = list(entries)
        names = [e.name for e in self.entries]
        self.shared_names = {name for name in names if names.count(name) > 1}
        self.endResetModel()

    def display_name(self, entry: CatalogEntry) -> str:
        """"Qwen2.5 1.5B Instruct (Q8_0)" when another entry has the same name, else the name."""
        return f"{entry.name} ({entry.quantization})" if entry.name in self.shared_names else entry.name

    def set_advice(self, advice: CatalogAdvice) -> None:
        self.advice = advice
        self.verdicts = dict(advice.verdicts)
        self._changed(self.NAME, self.SPEED)

    def set_installed(self, ids: set[str]) -> None:
        self.installed = set(ids)
        self._changed(self.NAME)

    def set_jobs(self, jobs: dict[str, str]) -> None:
        if jobs != self.jobs:
            self.jobs = dict(jobs)
            self._changed(self.NAME)

    def _changed(self, first: int, last: int | None = None) -> None:
        if self.entries:
            self.dataChanged.emit(self.index(0, first), self.index(len(self.entries) - 1, last if last is not None else first))

    def _items(self) -> list:
        return self.entries

    def speed_text(self, entry: CatalogEntry) -> str:
        """"≈ 13 tokens/s" (estimated), "21 tokens/s measured", "—" (won't fit)."""
        measured = self.advice.measured.get(entry.id)
        if measured is not None:
            return format_speed_short(measured.value, measured.unit) + " measured"
        verdict = self.verdicts.get(entry.id)
        if verdict is None:
            return "Checking…"
        if verdict.speed is not None:
            return "≈ " + format_speed_short(verdict.speed.value, verdict.speed.unit)
        return "—" if not verdict.fits else "after first run"

    def data(self, index: QModelIndex, role=DISPLAY):
        if not index.isValid():
            return None
        entry = self.entries[index.row()]
        column = index.column()
        verdict = self.verdicts.get(entry.id)
        if role == ITEM_ROLE:
            return entry
        if role == DISPLAY:
            if column == self.NAME:
                star = "★ " if self.advice.is_recommended(entry.id) else ""
                job = f"  · {self.jobs[entry.id]}" if entry.id in self.jobs else ""
                return star + self.display_name(entry) + ("  ✓" if entry.id in self.installed else "") + job
            if column == self.KIND:
                return KINDS[entry.kind]
            if column == self.SIZE:
                return format_bytes(entry.total_size)
            if column == self.QUANT:
                return entry.quantization
            if column == self.LICENSE:
                return entry.license + ("  · gated" if entry.gated else "")
            if column == self.VERDICT:
                return verdict.label if verdict else "Checking…"
            if column == self.SPEED:
                return self.speed_text(entry)
        if role == SORT_ROLE:
            if column == self.SIZE:
                return entry.total_size
            if column == self.VERDICT:  # best for this machine first: recommended, comfortable, fits, won't fit
                return self.advice.order.get(entry.id, 10_000 + _VERDICT_ORDER.get(verdict.verdict, 9) if verdict else 20_000)
            if column == self.SPEED:
                speed = self.advice.measured.get(entry.id) or (verdict.speed if verdict else None)
                if speed is None:
                    return (2, entry.kind, 0.0)
                return (0 if entry.kind == "chat" else 1, entry.kind, -speed.value if speed.unit == "tokens/s" else speed.value)
            return str(self.data(index, DISPLAY)).lower()
        if role == DECORATION and column == self.VERDICT:
            return dot_icon(verdict.verdict if verdict else None)
        if role == FONT and column == self.NAME and self.advice.is_recommended(entry.id):
            return _bold()
        if role == TOOLTIP:
            return self._tooltip(entry, column, verdict)
        if role == FOREGROUND and column in (self.VERDICT, self.SPEED) and not verdict:
            return _muted()
        if role == ALIGNMENT and column == self.SIZE:
            return RIGHT
        return None

    def _tooltip(self, entry: CatalogEntry, column: int, verdict: FitVerdict | None) -> str | None:
        if column == self.VERDICT and verdict:
            return verdict.explanation
        if column == self.SPEED:
            lines = [self.advice.comparisons.get(entry.id, "")]
            if verdict is not None and verdict.speed is not None:
                lines.append(f"Expected: {verdict.speed.basis}.")
            return "\n".join(line for line in lines if line) or None
        if column == self.LICENSE and entry.gated:
            return "Gated: accept the licence on the model's Hugging Face page and add your token in Settings."
        if column == self.NAME:
            lines = []
            pick = next((p for p in self.advice.recommended.values() if p.entry_id == entry.id), None)
            if pick is not None:
                lines.append(f"Recommended for this machine: {pick.reason}")
            if entry.id in self.installed:
                lines.append("Installed")
            if entry.id in self.jobs:
                lines.append(f"Download: {self.jobs[entry.id]}")
            return "\n".join(lines) or None
        return None


class CatalogFilter(QSortFilterProxyModel):
    """Text (name, family, repo, description) and kind ("" for all) filters."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.text = ""
        self.kind = ""
        self.setSortRole(SORT_ROLE)

    def set_text(self, text: str) -> None:
        self.text = text.strip().lower()
        self.invalidate()

    def set_kind(self, kind: str) -> None:
        self.kind = kind
        self.invalidate()

    def lessThan(self, left, right) -> bool:  # noqa: N802
        a, b = left.data(SORT_ROLE), right.data(SORT_ROLE)
        try:
            return a < b
        except TypeError:
            return str(a) < str(b)

    def filterAcceptsRow(self, row: int, parent) -> bool:  # noqa: N802
        entry: CatalogEntry = self.sourceModel().entries[row]
        if self.kind and entry.kind != self.kind:
            return False
        if not self.text:
            return True
        haystack = " ".join((entry.name, entry.family, entry.repo, entry.quantization, entry.description, *entry.tags)).lower()
        return all(word in haystack for word in self.text.split())


class InstalledTableModel(_ListTableModel):
    """Installed models, then the files in the models folder that are not models (greyed)."""

    COLUMNS = ("Name", "Size", "Engine", "Format", "Source", "Fits this machine", "Path")
    NAME, SIZE, ENGINE, FORMAT, SOURCE, VERDICT, PATH = range(7)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.rows: list[InstalledModel | UnknownFile] = []
        self.verdicts: dict[str, FitVerdict | str] = {}  # model id -> verdict, or why there is none
        self.missing: set[str] = set()  # ids whose file is gone
        self.sizes: dict[str, int] = {}  # unknown file path -> bytes
        self.measured: dict[str, tuple[str, str]] = {}  # model id -> ("measured 21 tokens/s", the comparison)

    def set_rows(self, models: list[InstalledModel], unknown: list[UnknownFile],
                 missing: set[str] | None = None, sizes: dict[str, int] | None = None) -> None:
        """*missing* and *sizes* are found off the GUI thread (they touch the disk)."""
        self.beginResetModel()
        self.rows = [*sorted(models, key=lambda m: m.name.lower()), *unknown]
        self.missing = set(missing or ())
        self.sizes = dict(sizes or {})
        self.endResetModel()

    def set_verdicts(self, verdicts: dict[str, FitVerdict | str], measured: dict[str, tuple[str, str]] | None = None) -> None:
        self.verdicts = dict(verdicts)
        if measured is not None:
            self.measured = dict(measured)
        if self.rows:
            self.dataChanged.emit(self.index(0, self.VERDICT), self.index(len(self.rows) - 1, self.VERDICT))

    def _items(self) -> list:
        return self.rows

    def data(self, index: QModelIndex, role=DISPLAY):
        if not index.isValid():
            return None
        item = self.rows[index.row()]
        column = index.column()
        if role == ITEM_ROLE:
            return item
        if isinstance(item, UnknownFile):
            return self._unknown(item, column, role)
        if isinstance(item, RemoteModel):
            return self._remote(item, column, role)
        verdict = self.verdicts.get(item.id)
        if role == DISPLAY:
            if column == self.VERDICT:
                if verdict is None:
                    return "Checking…"
                if not isinstance(verdict, FitVerdict):
                    return "Cannot check"
                if item.id in self.measured:
                    return f"{verdict.label} · {self.measured[item.id][0]}"
                return f"{verdict.label} · {verdict.speed.short}" if verdict.speed is not None else verdict.label
            return {
                self.NAME: item.name + ("  (file missing)" if item.id in self.missing else ""),
                self.SIZE: format_bytes(item.size_bytes),
                self.ENGINE: ENGINES.get(item.engine, item.engine),
                self.FORMAT: installed_format(item),
                self.SOURCE: SOURCES.get(item.source, item.source),
                self.PATH: item.path,
            }.get(column)
        if role == DECORATION and column == self.VERDICT:
            return dot_icon(verdict.verdict if isinstance(verdict, FitVerdict) else None)
        if role == TOOLTIP:
            if column == self.VERDICT and verdict is not None:
                if not isinstance(verdict, FitVerdict):
                    return verdict
                lines = [verdict.explanation]
                if item.id in self.measured:
                    lines.append(self.measured[item.id][1][0].upper() + self.measured[item.id][1][1:] + ".")
                if verdict.speed is not None:
                    lines.append(f"Expected speed: {verdict.speed.basis}.")
                return "\n".join(lines)
            if column in (self.NAME, self.PATH):
                return f"{item.description}\n{item.path}" if item.description else item.path
        if role == FOREGROUND and column == self.VERDICT and not isinstance(verdict, FitVerdict):
            return _muted()
        if role == ALIGNMENT and column == self.SIZE:
            return RIGHT
        return None

    def _remote(self, item: RemoteModel, column: int, role):
        """A model on a remote server: no size, no fit here; it runs where the server is."""
        if role == DISPLAY:
            return {
                self.NAME: item.name,
                self.SIZE: "—",
                self.ENGINE: ENGINES["remote"],
                self.FORMAT: FORMATS["remote"],
                self.SOURCE: SOURCES["remote"],
                self.VERDICT: f"Runs on {item.server.name}",
                self.PATH: item.path,
            }.get(column)
        if role == TOOLTIP and column in (self.NAME, self.VERDICT, self.PATH):
            return f"{item.description}. What you send to it leaves this computer."
        if role == ALIGNMENT and column == self.SIZE:
            return RIGHT
        return None

    def _unknown(self, item: UnknownFile, column: int, role):
        if role == DISPLAY:
            if column == self.NAME:
                return Path(item.path).name
            if column == self.VERDICT:
                return item.reason
            if column == self.PATH:
                return item.path
            if column == self.SOURCE:
                return "Not a model"
            if column == self.SIZE:
                return format_bytes(self.sizes[item.path]) if item.path in self.sizes else ""
            return ""
        if role == FOREGROUND:
            return _muted()
        if role == TOOLTIP:
            return f"Not a model Atelier can run: {item.reason}\n{item.path}"
        return None

"""Load mammograms: pick files or a folder, see what is there (headers only), load the chosen."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import napari
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .._layers import add_image
from .._reader import find_dicom_files, read_layer_data
from ._common import report_error, report_info

COLUMNS = ("file", "laterality", "view", "intent", "size", "spacing (mm)")


@dataclass(frozen=True)
class HeaderSummary:
    """What the table shows for one file (read without pixel data)."""

    path: Path
    laterality: str = ""
    view: str = ""
    intent: str = ""
    rows: int = 0
    columns: int = 0
    spacing: tuple[float, float] | None = None
    error: str = ""

    def cells(self) -> tuple[str, ...]:
        size = f"{self.columns}×{self.rows}" if self.rows else ""
        spacing = f"{self.spacing[0]:.4g} × {self.spacing[1]:.4g}" if self.spacing else "unknown"
        intent = self.error or self.intent
        return (self.path.name, self.laterality, self.view, intent, size, spacing)


def read_header_summary(path) -> HeaderSummary:
    """Header fields for the table, read with ``stop_before_pixels`` (fast on any size)."""
    import pydicom

    from mammo_denoise.io.meta import known_spacing

    path = Path(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception as exc:  # noqa: BLE001 - shown in the table
        return HeaderSummary(path, error=f"unreadable: {exc}")
    spacing = known_spacing(ds.get("ImagerPixelSpacing")) or known_spacing(ds.get("PixelSpacing"))
    laterality = str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "")
    if "PixelData" not in ds and "Rows" not in ds:
        return HeaderSummary(path, laterality=laterality, error="no image (not a mammogram?)")
    return HeaderSummary(
        path=path,
        laterality=laterality,
        view=str(ds.get("ViewPosition", "") or ""),
        intent=str(ds.get("PresentationIntentType", "") or ""),
        rows=int(ds.get("Rows", 0) or 0),
        columns=int(ds.get("Columns", 0) or 0),
        spacing=spacing,
    )


class LoadWidget(QWidget):
    """Public attributes: ``path`` (str; files separated by ';' or a folder), ``entries``
    (list of HeaderSummary after ``scan()``), ``table``; handlers: ``browse_files()``,
    ``browse_folder()``, ``scan()``, ``select(rows)``, ``load()`` -> list of layers added.
    """

    def __init__(self, napari_viewer: napari.Viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.entries: list[HeaderSummary] = []

        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("DICOM file(s) or folder")
        self.path_edit.returnPressed.connect(self.scan)
        self.files_button = QPushButton("Files…")
        self.files_button.clicked.connect(self.browse_files)
        self.folder_button = QPushButton("Folder…")
        self.folder_button.clicked.connect(self.browse_folder)
        row = QHBoxLayout()
        row.addWidget(self.path_edit, 1)
        row.addWidget(self.files_button)
        row.addWidget(self.folder_button)

        self.scan_button = QPushButton("Scan")
        self.scan_button.clicked.connect(self.scan)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.verticalHeader().setVisible(False)
        self.status = QLabel("")
        self.load_button = QPushButton("Load selected")
        self.load_button.clicked.connect(self.load)

        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.scan_button)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status)
        layout.addWidget(self.load_button)

    # -- public API ----------------------------------------------------------------------------
    @property
    def path(self) -> str:
        return self.path_edit.text().strip()

    @path.setter
    def path(self, value) -> None:
        if isinstance(value, (list, tuple)):
            value = "; ".join(str(v) for v in value)
        self.path_edit.setText(str(value))

    def paths(self) -> list[Path]:
        return [Path(p.strip()).expanduser() for p in self.path.split(";") if p.strip()]

    def browse_files(self):
        files, _ = QFileDialog.getOpenFileNames(
            self, "Open DICOM mammograms", "", "DICOM (*.dcm *.DCM *.dicom);;All files (*)"
        )
        if files:
            self.path = files
            self.scan()

    def browse_folder(self):
        folder = QFileDialog.getExistingDirectory(self, "Folder of DICOM mammograms")
        if folder:
            self.path = folder
            self.scan()

    def scan(self) -> list[HeaderSummary]:
        """List the DICOM files behind ``path`` (headers only) and select the readable ones."""
        self.entries = []
        self.table.setRowCount(0)
        paths = self.paths()
        if not paths:
            report_error("choose DICOM files or a folder first", "Load mammograms")
            return self.entries
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            report_error(f"{', '.join(missing)}: no such file or folder", "Load mammograms")
            return self.entries
        files = find_dicom_files(paths)
        if not files:
            report_error(f"{self.path}: no DICOM files found", "Load mammograms")
            self.status.setText("no DICOM files found")
            return self.entries
        self.entries = [read_header_summary(f) for f in files]
        self.table.setRowCount(len(self.entries))
        for r, entry in enumerate(self.entries):
            for c, text in enumerate(entry.cells()):
                item = QTableWidgetItem(text)
                item.setToolTip(str(entry.path) if c == 0 else text)
                if entry.error:
                    item.setForeground(Qt.GlobalColor.red)
                self.table.setItem(r, c, item)
        self.select([r for r, e in enumerate(self.entries) if not e.error])
        self.status.setText(f"{len(self.entries)} file(s) found")
        return self.entries

    def select(self, rows) -> None:
        self.table.clearSelection()
        mode = self.table.selectionMode()
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        for r in rows:
            self.table.selectRow(r)
        self.table.setSelectionMode(mode)

    def selected_rows(self) -> list[int]:
        return sorted({index.row() for index in self.table.selectionModel().selectedRows()})

    def load(self) -> list:
        """Read the selected files (all readable ones when nothing is selected) as layers."""
        if not self.entries:
            self.scan()
        rows = self.selected_rows() or [r for r, e in enumerate(self.entries) if not e.error]
        if not rows:
            problems = "; ".join(f"{e.path.name}: {e.error}" for e in self.entries if e.error)
            report_error(f"nothing to load ({problems or 'no files'})", "Load mammograms")
            return []
        added, failed = [], []
        for r in rows:
            entry = self.entries[r]
            try:
                for data, kwargs, _ in read_layer_data(entry.path):
                    added.append(add_image(self.viewer, data, kwargs))
            except Exception as exc:  # noqa: BLE001 - every failure becomes a notification
                failed.append(report_error(exc, f"Could not load {entry.path.name}"))
        if added:
            report_info(f"Loaded {len(added)} mammogram(s)")
        self.status.setText(f"loaded {len(added)}, failed {len(failed)}")
        return added

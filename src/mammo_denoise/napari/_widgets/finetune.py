"""Fine-tune: train on open layers or a folder of curated full-dose images, in a worker."""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .._layers import PARAMS_KEY
from .._persist import remember
from .._state import MODELS, FinetuneSettings, default_model_name
from .._workers import iterate_progress
from ._bind import bind
from ._common import BackgroundTask, report_error, report_info, run_controls

RANDOM_INIT = "(random init)"
SOURCES = ("layers", "folder")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _architectures() -> list[str]:
    try:
        from mammo_denoise.models.architectures import ARCHITECTURES

        return list(ARCHITECTURES)
    except Exception:  # noqa: BLE001
        return ["unet"]


class FinetuneWidget(QWidget):
    """Public attributes: ``settings`` (FinetuneSettings: source 'layers'|'folder', folder,
    dose_low, dose_high, epochs, iters_per_epoch, patch, batch_size, lr, init, architecture,
    name, seed, objective), ``layer_list`` (checkable image layers), ``extra_config`` (dict merged into
    TrainConfig, e.g. ``{"arch_kwargs": ..., "val_patches": ...}``), ``plot``, ``progress_bar``,
    ``task`` (its BackgroundTask), ``worker``, ``saved_path``, ``history`` (progress messages
    received);
    handlers: ``refresh_layers()``, ``set_layers(names)``, ``build_config()``, ``start()`` ->
    worker, ``cancel()``.
    """

    def __init__(self, napari_viewer: napari.Viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.settings = FinetuneSettings()
        # The objective override is not remembered: every session starts from auto.
        remember(self.settings, "finetune", skip=("name", "objective"))
        self.extra_config: dict = {}
        self.saved_path: Path | None = None
        self.history: list = []
        self._last_draw = 0.0
        self._ckpt_dir: str | None = None

        self.source_combo = QComboBox()
        self.source_combo.addItems(SOURCES)
        self.layer_list = QListWidget()
        self.layer_list.setMaximumHeight(90)
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("folder of full-dose FOR PROCESSING DICOM")
        self.folder_button = QPushButton("…")
        self.folder_button.clicked.connect(self.browse_folder)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder_edit, 1)
        folder_row.addWidget(self.folder_button)

        self.dose_low_spin = self._double(1, 100, 1, " %")
        self.dose_high_spin = self._double(1, 100, 1, " %")
        dose_row = QHBoxLayout()
        dose_row.addWidget(self.dose_low_spin)
        dose_row.addWidget(QLabel("to"))
        dose_row.addWidget(self.dose_high_spin)
        self.epochs_spin = self._int(1, 10_000)
        self.iters_spin = self._int(1, 100_000)
        self.patch_spin = self._int(16, 1024, step=16)
        self.batch_spin = self._int(1, 1024)
        self.lr_spin = self._double(1e-7, 1.0, 7)
        self.lr_spin.setSingleStep(1e-5)
        self.seed_spin = self._int(0, 2**31 - 1)
        self.init_combo = QComboBox()
        self.arch_combo = QComboBox()
        self.arch_combo.addItems(_architectures())
        self.name_edit = QLineEdit()
        # What open layers or folders (real noisy images, no clean truth) are trained against:
        # auto = noisier2noise for them, supervised for noise-free data (training.TrainConfig).
        self.objective_combo = QComboBox()
        self.objective_combo.addItems(["auto", "supervised", "noisier2noise", "seed"])
        self.objective_combo.setToolTip(
            "auto: noisier2noise on real images (unbiased without a clean image, doses up to 50 %); "
            "seed: the full-dose image as target (Eckert et al. 2019), which keeps part of the noise")

        self.start_button, self.cancel_button, buttons, self.progress_bar, self.status = run_controls(
            "Start", self.start)
        from .._plots import TrainingPlot

        self.plot = TrainingPlot()
        self.task = BackgroundTask([self.start_button], self.cancel_button, self.status)

        form = QFormLayout()
        form.addRow("train on", self.source_combo)
        form.addRow("layers", self.layer_list)
        form.addRow("folder", folder_row)
        form.addRow("dose", dose_row)
        form.addRow("epochs", self.epochs_spin)
        form.addRow("iterations/epoch", self.iters_spin)
        form.addRow("patch (px)", self.patch_spin)
        form.addRow("batch size", self.batch_spin)
        form.addRow("learning rate", self.lr_spin)
        form.addRow("seed", self.seed_spin)
        form.addRow("start from", self.init_combo)
        form.addRow("architecture", self.arch_combo)
        form.addRow("new model name", self.name_edit)
        form.addRow("advanced: objective", self.objective_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.status)

        bind(self.source_combo, self.settings, "source")
        bind(self.folder_edit, self.settings, "folder")
        pct = (lambda v: v / 100.0, lambda f: f * 100.0)
        bind(self.dose_low_spin, self.settings, "dose_low", *pct)
        bind(self.dose_high_spin, self.settings, "dose_high", *pct)
        bind(self.epochs_spin, self.settings, "epochs")
        bind(self.iters_spin, self.settings, "iters_per_epoch")
        bind(self.patch_spin, self.settings, "patch")
        bind(self.batch_spin, self.settings, "batch_size")
        bind(self.lr_spin, self.settings, "lr")
        bind(self.seed_spin, self.settings, "seed")
        bind(self.name_edit, self.settings, "name")
        bind(self.objective_combo, self.settings, "objective")
        if self.arch_combo.findText(self.settings.architecture) < 0:
            self.settings.architecture = self.arch_combo.currentText()
        bind(self.arch_combo, self.settings, "architecture")
        self._fill_init(MODELS.models)
        self.settings.init = self.init_combo.currentText()
        bind(self.init_combo, self.settings, "init")
        self.init_combo.currentTextChanged.connect(self._on_init_changed)
        self._on_init_changed(self.init_combo.currentText())
        self.source_combo.currentTextChanged.connect(self._on_source_changed)
        self._on_source_changed(self.settings.source)
        MODELS.changed.connect(self._on_models_changed)
        for event in ("inserted", "removed", "reordered"):
            getattr(napari_viewer.layers.events, event).connect(self.refresh_layers)
        self.refresh_layers()

    @property
    def worker(self):
        return self.task.worker

    @staticmethod
    def _int(lo, hi, step=1):
        spin = QSpinBox()
        spin.setRange(lo, hi)
        spin.setSingleStep(step)
        return spin

    @staticmethod
    def _double(lo, hi, decimals, suffix=""):
        spin = QDoubleSpinBox()
        spin.setRange(lo, hi)
        spin.setDecimals(decimals)
        spin.setSuffix(suffix)
        return spin

    # -- inputs --------------------------------------------------------------------------------
    def browse_folder(self):
        folder = QFileDialog.getExistingDirectory(self, "Folder of curated full-dose images")
        if folder:
            self.settings.folder = folder
            self.settings.source = "folder"

    def _on_source_changed(self, source: str):
        self.layer_list.setEnabled(source == "layers")
        self.folder_edit.setEnabled(source == "folder")
        self.folder_button.setEnabled(source == "folder")

    def _on_init_changed(self, text: str):
        self.arch_combo.setEnabled(text == RANDOM_INIT or not text)
        info = MODELS.get(text)
        arch = (getattr(info, "card", None) or {}).get("architecture") if info else None
        if arch and self.arch_combo.findText(arch) >= 0:
            self.settings.architecture = arch
        if info is not None and not self.settings.name:
            self.settings.name = f"{text}-finetuned"

    def _fill_init(self, models):
        current = self.init_combo.currentText() or self.settings.init
        names = [RANDOM_INIT] + [m.name for m in models]
        self.init_combo.blockSignals(True)
        self.init_combo.clear()
        self.init_combo.addItems(names)
        choice = current if current in names else (default_model_name() or RANDOM_INIT)
        self.init_combo.setCurrentIndex(names.index(choice) if choice in names else 0)
        self.init_combo.blockSignals(False)

    def _on_models_changed(self, models):
        try:
            self._fill_init(models)
            self.settings.init = self.init_combo.currentText()
        except RuntimeError:
            MODELS.changed.disconnect(self._on_models_changed)

    def refresh_layers(self, event=None):
        try:
            checked = set(self.checked_layers())
            self.layer_list.clear()
            for layer in self.viewer.layers:
                if not isinstance(layer, napari.layers.Image) or np.ndim(layer.data) != 2:
                    continue
                item = QListWidgetItem(layer.name)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(
                    Qt.CheckState.Checked if layer.name in checked else Qt.CheckState.Unchecked
                )
                self.layer_list.addItem(item)
        except RuntimeError:  # widget closed
            pass

    def set_layers(self, names) -> None:
        """Check exactly these layers (by name) for training."""
        self.refresh_layers()
        names = set(names)
        for i in range(self.layer_list.count()):
            item = self.layer_list.item(i)
            item.setCheckState(
                Qt.CheckState.Checked if item.text() in names else Qt.CheckState.Unchecked
            )
        self.settings.source = "layers"

    def checked_layers(self) -> list[str]:
        return [
            self.layer_list.item(i).text()
            for i in range(self.layer_list.count())
            if self.layer_list.item(i).checkState() == Qt.CheckState.Checked
        ]

    # -- run -----------------------------------------------------------------------------------
    def build_config(self):
        """The TrainConfig for the current settings (raises MammoDenoiseError on bad input)."""
        from mammo_denoise.errors import MammoDenoiseError
        from mammo_denoise.training import TrainConfig

        s = self.settings
        name = (s.name or "").strip()
        if not _NAME_RE.match(name):
            raise MammoDenoiseError(
                f"model name {name!r}: use letters, digits, '.', '_' or '-' (up to 64)"
            )
        if MODELS.get(name) is not None:
            raise MammoDenoiseError(f"a model named '{name}' exists already: choose another name")
        kw: dict = {}
        if s.source == "folder":
            folder = Path(s.folder).expanduser()
            if not s.folder or not folder.is_dir():
                raise MammoDenoiseError("choose a folder of curated full-dose images", path=s.folder or None)
            kw["paths"] = [folder]
        else:
            names = self.checked_layers()
            if not names:
                raise MammoDenoiseError("tick at least one open image layer to train on")
            images = []
            for n in names:
                layer = self.viewer.layers[n]
                params = layer.metadata.get(PARAMS_KEY)
                if params is None:
                    raise MammoDenoiseError(
                        f"layer '{n}' has no noise parameters: estimate them in the Dose "
                        "simulation panel first"
                    )
                images.append((np.asarray(layer.data, dtype=np.float32), params))
            kw["images"] = images
        lo, hi = sorted((float(s.dose_low), float(s.dose_high)))
        if lo == hi:
            kw["dose"] = lo
        else:
            kw["dose_range"] = (lo, hi)
        init = None if s.init in ("", RANDOM_INIT) else s.init
        if init is not None:
            info = MODELS.get(init)
            if info is not None and getattr(info, "path", None):
                init = str(info.path)
        kw.update(
            architecture=None if init is not None else (s.architecture or "unet"),
            init=init,
            epochs=int(s.epochs),
            iters_per_epoch=int(s.iters_per_epoch),
            patch=int(s.patch),
            batch_size=int(s.batch_size),
            lr=float(s.lr),
            seed=int(s.seed),
            objective=s.objective or "auto",
            name=name,
            command="napari-mammo-denoise fine-tune widget",
        )
        kw.update(self.extra_config)
        if "checkpoint" not in kw:
            # Epoch checkpoints go to a scratch folder, removed when the run ends: the model
            # folder only ever gains the finished model.
            self._ckpt_dir = tempfile.mkdtemp(prefix="mammo-denoise-finetune-")
            kw["checkpoint"] = Path(self._ckpt_dir) / f"{name}.ckpt"
        import warnings

        with warnings.catch_warnings(record=True) as caught:  # said as notifications, once
            warnings.simplefilter("always", UserWarning)
            config = TrainConfig(**kw)
        for w in caught:
            report_info(f"Fine-tune: {w.message}")
        return config

    def start(self):
        """Validate, then run ``train()`` in a worker; returns the worker (None on bad input)."""
        if self.task.busy:
            report_error("a fine-tuning run is already in progress", "Fine-tune")
            return None
        try:
            config = self.build_config()
        except Exception as exc:  # noqa: BLE001
            self._remove_checkpoints()
            report_error(exc, "Fine-tune")
            return None
        cancel = self.task.cancelled
        self.history = []
        self.saved_path = None
        self.plot.clear_history()

        def work():
            from mammo_denoise import training

            try:
                path = yield from iterate_progress(
                    lambda progress: training.train(config, progress=progress, cancel=cancel)
                )
            except training.NotImproved as exc:  # an outcome, not a failure: said plainly
                return {"not_improved": str(exc)}  # (a returned exception would be re-raised)
            return path

        self.progress_bar.setRange(0, config.epochs * config.iters_per_epoch)
        self.progress_bar.setValue(0)
        try:
            from mammo_denoise.training.config import describe

            status = describe(config)
        except Exception:  # noqa: BLE001
            status = "training…"
        return self.task.start(
            work,
            status=status,
            failed="Fine-tuning failed (existing models unchanged)",
            cancelled="Fine-tuning cancelled: no model saved, existing models unchanged",
            on_progress=self._on_progress,
            on_result=self._on_returned,
            on_finished=self._remove_checkpoints,
        )

    def cancel(self):
        self.task.cancel()

    def _on_progress(self, msg):
        from mammo_denoise.training.messages import EpochEnd, TrainDone, TrainStep

        self.history.append(msg)
        if isinstance(msg, TrainStep):
            self.progress_bar.setValue((msg.epoch - 1) * msg.iterations + msg.iteration)
            self.plot.add_step(msg.epoch - 1 + msg.iteration / max(msg.iterations, 1), msg.loss)
            if time.monotonic() - self._last_draw > 0.5:
                self._last_draw = time.monotonic()
                self.plot.redraw()
        elif isinstance(msg, EpochEnd):
            self.plot.add_epoch(msg.epoch, msg.val_psnr)
            self.plot.redraw()
            self.status.setText(
                f"epoch {msg.epoch}/{msg.epochs}: loss {msg.train_loss:.4g}, "
                f"val PSNR {msg.val_psnr:.2f} dB ({msg.seconds:.0f} s)"
            )
        elif isinstance(msg, TrainDone):
            self.saved_path = Path(msg.path)

    def _on_returned(self, path):
        if isinstance(path, dict) and "not_improved" in path:  # nothing written: models unchanged
            self.saved_path = None
            self.plot.redraw()
            report_info(f"Fine-tuning: {path['not_improved']}")
            self.status.setText("not saved: no better than the model it started from")
            return
        self.saved_path = Path(path) if path is not None else self.saved_path
        self.plot.redraw()
        MODELS.refresh()  # every model list (Denoise, start-from) shows it at once
        name = self.saved_path.stem if self.saved_path else self.settings.name
        report_info(f"Fine-tuned model '{name}' saved to {self.saved_path}")
        self.status.setText(f"saved '{name}'")

    def _remove_checkpoints(self):
        if self._ckpt_dir:
            shutil.rmtree(self._ckpt_dir, ignore_errors=True)
            self._ckpt_dir = None

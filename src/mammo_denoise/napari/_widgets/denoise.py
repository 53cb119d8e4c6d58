"""Denoise: run the tiled network on an image layer in a worker; add '<name> denoised'."""

from __future__ import annotations

import napari
import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from .._layers import DERIVATION_KEY, META_KEY, PARAMS_KEY, add_image, derived_kwargs
from .._persist import remember
from .._state import MODELS, DenoiseSettings, default_model_name
from .._workers import Note, Progress, iterate_progress
from ._bind import bind
from ._common import BackgroundTask, LayerCombo, report_error, run_controls

DEVICES = ("auto", "cpu", "cuda")
ENGINES = ("auto", "torch", "openvino", "onnxruntime")  # engines.ENGINES (not imported: torch-free)


def model_summary(info) -> str:
    """Where the model comes from, its architecture, and ``card_summary`` of its card."""
    from mammo_denoise.models import card_summary

    card = getattr(info, "card", None) or {}
    parts = [str(getattr(info, "source", "") or ""), card.get("architecture", ""), card_summary(card)]
    return " · ".join(p for p in parts if p)


class DenoiseWidget(QWidget):
    """Public attributes: ``settings`` (DenoiseSettings: model, device, engine, tile, overlap,
    batch_size, strength), ``layer_combo`` (``.layer``), ``model_combo``, ``progress_bar``,
    ``task`` (its BackgroundTask), ``worker`` (the running worker or None), ``last_layer`` (the
    layer the last run added);
    handlers: ``refresh_models()``, ``run()`` -> worker, ``cancel()``.

    Strength (percent) applies to the last result as it changes, from the network's full-strength
    output kept here: no rerun, and going back to 100 % gives that output exactly.
    """

    def __init__(self, napari_viewer: napari.Viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.settings = DenoiseSettings()
        remember(self.settings, "denoise", skip=("strength",))
        self.last_layer = None
        self._last_run = None  # (source layer, result layer, noisy input, full-strength output, derivation)
        self._completed = False  # the last run added its layer: the bar stays full

        self.layer_combo = LayerCombo(napari_viewer)
        self.model_combo = QComboBox()
        self.refresh_button = QToolButton()
        self.refresh_button.setText("⟳")
        self.refresh_button.setToolTip("Re-scan shipped and fine-tuned models")
        self.refresh_button.clicked.connect(lambda: self.refresh_models(rescan=True))
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(self.refresh_button)
        self.model_info = QLabel("")
        self.model_info.setWordWrap(True)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.strength_spin = QSpinBox()
        self.strength_spin.setRange(0, 100)
        self.strength_spin.setSingleStep(5)
        self.strength_spin.setSuffix(" %")
        self.strength_spin.setToolTip(
            "100 %: the network's estimate. Lower keeps that share of the input's noise and of the "
            "contrast the network removed (faint calcifications come back with some grain); "
            "applies to the last result at once")

        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(64, 4096)
        self.tile_spin.setSingleStep(64)
        self.overlap_spin = QSpinBox()
        self.overlap_spin.setRange(-1, 512)
        self.overlap_spin.setSingleStep(8)
        self.overlap_spin.setSpecialValueText("auto")
        self.overlap_spin.setToolTip(
            "pixels shared by neighbouring tiles; every value is seamless (the model's context is "
            "always kept), what exceeds it is cross-faded; auto: the model's default")
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(0, 64)
        self.batch_spin.setSpecialValueText("auto")
        self.engine_combo = QComboBox()
        self.engine_combo.addItems(ENGINES)
        self.engine_combo.setToolTip(
            "what runs the network on the CPU; the same result with each. auto: OpenVINO when "
            'installed (pip install "napari-mammo-denoise[cpu-fast]"), else ONNX Runtime, else '
            "PyTorch; a GPU always runs PyTorch")
        self.advanced = QCollapsible("Advanced")
        adv = QWidget()
        adv_form = QFormLayout(adv)
        adv_form.addRow("tile (px)", self.tile_spin)
        adv_form.addRow("overlap (px)", self.overlap_spin)
        adv_form.addRow("batch size", self.batch_spin)
        adv_form.addRow("CPU engine", self.engine_combo)
        self.advanced.addWidget(adv)

        self.run_button, self.cancel_button, buttons, self.progress_bar, self.status = run_controls(
            "Run", self.run)
        self.task = BackgroundTask([self.run_button], self.cancel_button, self.status)

        form = QFormLayout()
        form.addRow("image", self.layer_combo)
        form.addRow("model", model_row)
        form.addRow("", self.model_info)
        form.addRow("device", self.device_combo)
        form.addRow("strength", self.strength_spin)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.advanced)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.model_combo.currentTextChanged.connect(self._show_model_info)
        bind(self.tile_spin, self.settings, "tile")
        bind(self.overlap_spin, self.settings, "overlap")
        bind(self.batch_spin, self.settings, "batch_size")
        bind(self.device_combo, self.settings, "device")
        bind(self.engine_combo, self.settings, "engine")
        bind(self.strength_spin, self.settings, "strength")
        self.settings.events.strength.connect(self._apply_strength)
        MODELS.changed.connect(self._on_models_changed)
        self.refresh_models(rescan=False)
        bind(self.model_combo, self.settings, "model")

    @property
    def worker(self):
        return self.task.worker

    # -- models --------------------------------------------------------------------------------
    def refresh_models(self, rescan: bool = True) -> list[str]:
        """Fill the model list (``rescan`` re-reads the model folders and tells other widgets)."""
        if rescan:
            MODELS.refresh()  # emits changed -> _on_models_changed
        else:
            self._on_models_changed(MODELS.models)
        if MODELS.error:
            report_error(MODELS.error, "Denoise")
        return [self.model_combo.itemText(i) for i in range(self.model_combo.count())]

    def _on_models_changed(self, models=None):
        try:
            current = self.model_combo.currentText() or self.settings.model
            names = [m.name for m in (models if models is not None else MODELS.models)]
            self.model_combo.blockSignals(True)
            self.model_combo.clear()
            self.model_combo.addItems(names)
            self.model_combo.blockSignals(False)
            choice = current if current in names else default_model_name()
            if choice in names:
                self.model_combo.setCurrentIndex(names.index(choice))
            self.settings.model = self.model_combo.currentText()
            self._show_model_info(self.model_combo.currentText())
        except RuntimeError:  # widget closed; psygnal may still hold the slot
            MODELS.changed.disconnect(self._on_models_changed)

    def _show_model_info(self, name: str):
        info = MODELS.get(name) if name else None
        self.model_info.setText(model_summary(info) if info is not None else "no model")

    # -- run -----------------------------------------------------------------------------------
    def run(self):
        """Start denoising the chosen layer; returns the worker (or None on bad input)."""
        if self.task.busy:
            report_error("a denoising run is already in progress", "Denoise")
            return None
        layer = self.layer_combo.layer
        if layer is None:
            report_error("choose an image layer first", "Denoise")
            return None
        if layer.multiscale or np.ndim(layer.data) not in (2, 3) or getattr(layer, "rgb", False):
            report_error(f"layer '{layer.name}' is not a grey 2D image or a stack of 2D frames", "Denoise")
            return None
        model = self.settings.model or self.model_combo.currentText()
        if not model:
            report_error("no model available: fine-tune one or install weights", "Denoise")
            return None
        meta = layer.metadata.get(META_KEY)
        if meta is not None:
            from mammo_denoise.errors import MammoDenoiseError
            from mammo_denoise.io.meta import check_modality

            try:
                check_modality(meta)
            except MammoDenoiseError as exc:  # a CT or MR layer: say so, run nothing
                report_error(exc, "Denoise")
                return None
        info = MODELS.get(model)
        model_ref = str(info.path) if info is not None and getattr(info, "path", None) else model
        data = np.asarray(layer.data, dtype=np.float32)
        params = layer.metadata.get(PARAMS_KEY)
        s = self.settings
        kwargs = dict(
            device=s.device,
            engine=s.engine,
            tile=int(s.tile),
            overlap=None if s.overlap < 0 else int(s.overlap),
            batch_size=None if s.batch_size < 1 else int(s.batch_size),
        )
        self._completed = False
        cancel = self.task.cancelled
        source = layer.name

        def work():
            from mammo_denoise import inference
            from mammo_denoise.notes import collected_notes
            from mammo_denoise.physics.noise import estimate_noise_params

            with collected_notes() as notes:  # said on the main thread, naming the layer
                p = params
                if p is None and (meta is None or meta.is_linear):
                    # linear raw data: estimate once here so the layer records what was used
                    # (one set per frame of a stack); otherwise the core fits its own
                    # (approximate) model and warns
                    yield Progress(0, 1, "estimating noise parameters")
                    p = estimate_noise_params(data) if data.ndim == 2 else [estimate_noise_params(f) for f in data]

                ran: dict = {}  # filled by denoise: engine, device, threads, seconds, summary

                def call(progress):
                    return inference.denoise(
                        data,
                        model=model_ref,
                        params=p,
                        meta=meta,
                        progress=lambda done, total: progress(Progress(int(done), int(total))),
                        cancel=cancel,
                        info=ran,
                        **kwargs,
                    )

                out = yield from iterate_progress(call)
            for text in notes:
                yield Note(source, text)
            return np.asarray(out, dtype=np.float32), data, p, ran

        self.progress_bar.setRange(0, 0)  # busy until the first tile is done
        return self.task.start(
            work,
            status=f"denoising '{layer.name}' with {model}…",
            failed="Denoising failed",
            cancelled="Denoising cancelled: no layer added",
            on_progress=self._on_progress,
            on_result=lambda result: self._on_returned(layer, model, result),
            on_finished=self._on_finished,
        )

    def cancel(self):
        """Ask the running worker to stop at the next tile; no layer is added."""
        self.task.cancel()

    def _on_progress(self, msg):
        if isinstance(msg, Progress):
            if msg.total > 0 and not msg.text:
                self.progress_bar.setRange(0, msg.total)
                self.progress_bar.setValue(msg.done)
            elif msg.text:
                self.status.setText(msg.text)

    def _on_returned(self, layer, model, result):
        if self.task.cancelled():
            return  # cancelled after the last tile: still no partial/unwanted layer
        full, noisy, params, ran = result
        name = f"{layer.name} denoised"
        derivation = f"denoised with model '{model}' (napari-mammo-denoise)"
        out, text = self._at_strength(noisy, full, derivation)
        if name in self.viewer.layers and self.viewer.layers[name].metadata.get(
            "source_layer"
        ) == layer.name:
            target = self.viewer.layers[name]
            target.data = out
            target.metadata.update(derived_kwargs(layer, name, text, params)["metadata"])
        else:
            target = add_image(self.viewer, out, derived_kwargs(layer, name, text, params))
        target.metadata["model"] = model
        target.metadata["ran"] = ran.get("summary", "")
        if params is not None:
            layer.metadata.setdefault(PARAMS_KEY, params)
        self.last_layer = target
        self._last_run = (layer, target, noisy, full, derivation)
        self._completed = True
        self.status.setText(f"added '{target.name}': {ran['summary']}" if ran.get("summary")
                            else f"added '{target.name}'")

    def _at_strength(self, noisy, full, derivation):
        """The result at the current strength, and the derivation text that says so."""
        from mammo_denoise.inference import apply_strength

        percent = int(self.settings.strength)
        if percent >= 100:
            return full, derivation
        return apply_strength(noisy, full, percent / 100.0), f"{derivation} at strength {percent} %"

    def _apply_strength(self, *_):
        if self._last_run is None:
            return
        source, target, noisy, full, derivation = self._last_run
        if target not in self.viewer.layers:  # deleted by the user: nothing to update
            self._last_run = None
            return
        try:
            out, text = self._at_strength(noisy, full, derivation)
            target.data = out
            chain = derived_kwargs(source, target.name, text)["metadata"][DERIVATION_KEY]
            target.metadata[DERIVATION_KEY] = chain
        except Exception as exc:  # noqa: BLE001
            report_error(exc, "Denoise")

    def _on_finished(self):
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1 if self._completed else 0)

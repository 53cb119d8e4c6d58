"""Matplotlib canvases for the widgets (Qt backend, imported only inside the napari package)."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

_FG = "#d0d0d0"


def _style(ax):
    ax.set_facecolor("#262930")
    for spine in ax.spines.values():
        spine.set_color(_FG)
    ax.tick_params(colors=_FG, labelsize=7)
    ax.xaxis.label.set_color(_FG)
    ax.yaxis.label.set_color(_FG)
    ax.title.set_color(_FG)


class PlotCanvas(FigureCanvasQTAgg):
    """A small dark figure that fits napari's theme."""

    def __init__(self, width: float = 3.6, height: float = 2.6):
        fig = Figure(figsize=(width, height), dpi=90, facecolor="#262930", layout="constrained")
        super().__init__(fig)
        self.ax = fig.add_subplot(111)
        _style(self.ax)
        self.setMinimumHeight(int(height * 70))

    def reset(self):
        self.figure.clear()
        self.ax = self.figure.add_subplot(111)
        _style(self.ax)
        return self.ax


class VarianceMeanPlot(PlotCanvas):
    """Block variance vs block mean with the fitted noise line (PHYSICS.md section 1)."""

    def plot_fit(self, means, variances, inliers=None, params=None, slope=None, intercept=None):
        ax = self.reset()
        means = np.asarray(means, dtype=float)
        variances = np.asarray(variances, dtype=float)
        inliers = np.ones(means.shape, bool) if inliers is None else np.asarray(inliers, bool)
        ax.scatter(means[~inliers], variances[~inliers], s=4, c="#777777", label="rejected blocks")
        ax.scatter(means[inliers], variances[inliers], s=5, c="#4fc3f7", label="blocks")
        if means.size:
            x = np.linspace(np.nanmin(means), np.nanmax(means), 50)
            if slope is not None and intercept is not None:
                y = slope * x + intercept
            elif params is not None:
                y = params.variance(x)
            else:
                y = None
            if y is not None:
                ax.plot(x, y, c="#ff7043", lw=1.5, label="fit")
        if params is not None:
            ax.set_title(
                f"gain {params.gain:.3g}  offset {params.offset:.4g}  "
                f"σe {params.electronic_sigma:.3g}",
                fontsize=8,
            )
        ax.set_xlabel("block mean (DN)", fontsize=8)
        ax.set_ylabel("block variance (DN²)", fontsize=8)
        ax.legend(fontsize=7, facecolor="#262930", labelcolor=_FG, loc="upper left")
        self.draw_idle()


class NPSPlot(PlotCanvas):
    """Radial normalized noise power spectra, log y (``unit``: mm, or pixel where the spacing is unknown)."""

    def plot_curves(self, curves: dict, unit: str = "mm"):
        ax = self.reset()
        colors = ["#ef5350", "#66bb6a", "#42a5f5", "#ffca28"]
        for (label, (f, nps)), c in zip(curves.items(), colors):
            f = np.asarray(f)
            nps = np.asarray(nps)
            keep = (f > 0) & (nps > 0)
            ax.semilogy(f[keep], nps[keep], c=c, lw=1.3, label=label)
        ax.set_xlabel(f"spatial frequency ({unit}⁻¹)", fontsize=8)
        ax.set_ylabel(f"NNPS ({unit}²)", fontsize=8)
        ax.legend(fontsize=7, facecolor="#262930", labelcolor=_FG)
        self.draw_idle()


class TrainingPlot(PlotCanvas):
    """Training loss (per step) and validation PSNR (per epoch) on twin axes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.clear_history()

    def clear_history(self):
        self.steps: list[tuple[float, float]] = []
        self.val: list[tuple[float, float]] = []
        self.redraw()

    def add_step(self, x: float, loss: float):
        self.steps.append((x, loss))

    def add_epoch(self, x: float, psnr: float | None):
        if psnr is not None and np.isfinite(psnr):
            self.val.append((x, psnr))

    def redraw(self):
        ax = self.reset()
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("training loss", fontsize=8, color="#4fc3f7")
        if self.steps:
            x, y = zip(*self.steps)
            ax.plot(x, y, c="#4fc3f7", lw=1)
            if min(y) > 0 and max(y) / min(y) > 30:
                ax.set_yscale("log")
        ax2 = ax.twinx()
        _style(ax2)
        ax2.set_ylabel("validation PSNR (dB)", fontsize=8, color="#ffb74d")
        if self.val:
            x, y = zip(*self.val)
            ax2.plot(x, y, "o-", c="#ffb74d", lw=1.3, ms=4)
        self.draw_idle()

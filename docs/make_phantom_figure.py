"""Regenerate the phantom figures in docs/ (run from the repository root).

    python docs/make_phantom_figure.py

Writes docs/phantom.png (LCC), docs/phantom_mlo.png (LMLO), both full field 3328 x 2560 at
70 um, full dose, shrunk to 2048 px high, and docs/phantom_calcifications.png (a 6 x 6 mm crop
around a calcification cluster: noise-free truth and the noisy image at full and 20 % dose).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mammo_denoise.physics.phantom import make_phantom
from mammo_denoise.render import display_window, save_panel_png, save_png

DOCS = Path(__file__).resolve().parent
SHAPE = (3328, 2560)
VIEW_KW = dict(equalize=0.8)  # peripheral equalisation, as on a FOR PRESENTATION image


def main() -> None:
    cc = make_phantom(seed=1, shape=SHAPE, view="CC", laterality="L", n_clusters=3)
    save_png(DOCS / "phantom.png", cc.noisy, meta=cc.meta, params=cc.params, mask=cc.mask,
             max_side=2048, **VIEW_KW)
    mlo = make_phantom(seed=2, shape=SHAPE, view="MLO", laterality="L", n_clusters=3)
    save_png(DOCS / "phantom_mlo.png", mlo.noisy, meta=mlo.meta, params=mlo.params,
             mask=mlo.mask, max_side=2048, **VIEW_KW)

    # Crop around the cluster with the largest mean contrast.
    by_cluster: dict[int, list] = {}
    for c in cc.calcifications:
        by_cluster.setdefault(c.cluster, []).append(c)
    cluster = max(by_cluster.values(), key=lambda cs: np.mean([c.contrast for c in cs]))
    r0 = int(np.mean([c.row for c in cluster]))
    c0 = int(np.mean([c.col for c in cluster]))
    half = int(round(3.0 / 0.07))
    sl = (slice(r0 - half, r0 + half), slice(max(c0 - half, 0), max(c0 - half, 0) + 2 * half))
    low = cc.generate_noisy(dose=0.2, rng=0)
    crops = [cc.truth[sl], cc.noisy[sl], low[sl]]
    win = display_window(crops[0], cc.meta, cc.params, mask=np.ones_like(crops[0], bool),
                         percentiles=(0.5, 99.9))
    # The 20 % dose image is shown on the same attenuation window: log(z - offset) shifts by
    # log(0.2), which the window follows.
    shift = float(np.log(1 / 0.2))
    dia = ", ".join(f"{c.diameter_mm * 1000:.0f}" for c in sorted(cluster, key=lambda c: c.diameter_mm))
    _panel(crops, cc, win, shift, len(cluster), dia)
    print("wrote", DOCS / "phantom.png", DOCS / "phantom_mlo.png", DOCS / "phantom_calcifications.png")


def _panel(crops, ph, win, shift, n, dia):
    from mammo_denoise.render import display_image

    rendered = [
        display_image(crops[0], ph.meta, ph.params, window=win),
        display_image(crops[1], ph.meta, ph.params, window=win),
        display_image(crops[2], ph.meta, ph.params, window=(win[0] + shift, win[1] + shift)),
    ]
    return save_panel_png(
        DOCS / "phantom_calcifications.png",
        [("truth, full dose", rendered[0], "raw"), ("noisy, full dose", rendered[1], "raw"),
         ("noisy, 20 % dose", rendered[2], "raw")],
        suptitle=f"6 x 6 mm around a cluster of {n} calcifications (diameters {dia} um)",
        panel_in=3.5,
    )


if __name__ == "__main__":
    main()

"""The weights that ship in the package: present, verified, and actually denoising."""

from __future__ import annotations

import numpy as np
import pytest

from mammo_denoise.inference import denoise
from mammo_denoise.metrics import psnr
from mammo_denoise.models import DEFAULT_MODEL, list_models, load_model
from mammo_denoise.physics.phantom import make_phantom

CARD_FIELDS = {"name", "architecture", "arch_kwargs", "parameter_count", "residual", "input_scale",
               "domain", "noise_model", "dose_range", "training", "metrics", "version", "created",
               "sha256"}


def test_default_model_ships_with_a_complete_card():
    shipped = {m.name: m for m in list_models() if m.source == "shipped"}
    assert DEFAULT_MODEL in shipped
    card = shipped[DEFAULT_MODEL].card
    assert CARD_FIELDS <= card.keys()
    assert {"command", "patches_seen", "time_s", "seed"} <= card["training"].keys()
    model = load_model("default")  # verifies the sha256 of the weights against the card
    assert sum(p.numel() for p in model.parameters()) == card["parameter_count"]


@pytest.mark.parametrize("dose, min_gain_db", [(0.2, 4.0), (0.5, 3.0)])  # measured 6.4 and 4.5 dB
def test_default_model_removes_noise_on_an_unseen_phantom(dose, min_gain_db):
    # 512 px: on much smaller phantoms the skin line, where any denoiser errs most, dominates.
    phantom = make_phantom(seed=4242, shape=(512, 512), dose=dose)
    truth, mask = phantom.truth_at(dose), phantom.mask
    out = denoise(phantom.noisy, params=phantom.params, meta=phantom.meta, device="cpu")
    data_range = float(np.ptp(truth[mask]))
    gain = psnr(out, truth, data_range=data_range, mask=mask) - psnr(
        phantom.noisy, truth, data_range=data_range, mask=mask)
    assert gain > min_gain_db
    # No bias introduced: the mean signal in the breast stays within 0.5 % of the truth.
    assert float(out[mask].mean()) == pytest.approx(float(truth[mask].mean()), rel=0.005)

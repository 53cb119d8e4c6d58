"""Training library: data physics, determinism, resume, cancel/failure safety, model card."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mammo_denoise.errors import Cancelled, MammoDenoiseError
from mammo_denoise.models import list_models
from mammo_denoise.physics.anscombe import expected_anscombe
from mammo_denoise.physics.params import NoiseParams
from mammo_denoise.physics.phantom import make_phantom
from mammo_denoise.training import (Baseline, EpochEnd, NotImproved, TrainConfig, TrainDone, TrainStep,
                                    describe, train)
from mammo_denoise.training import loop as loop_mod
from mammo_denoise.training.checkpoint import load_checkpoint, save_checkpoint
from mammo_denoise.training.data import PatchSampler, Source

PARAMS = NoiseParams(offset=50.0, gain=2.0, electronic_sigma=3.0)
TINY_NET = {"base": 4, "depth": 2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(tmp_path, **kw) -> TrainConfig:
    base = dict(phantoms=3, phantom_shape=(64, 64), architecture="unet", arch_kwargs=TINY_NET,
                patch=16, batch_size=2, epochs=2, iters_per_epoch=3, val_patches=4,
                out=tmp_path / "model.safetensors", log_every=1, seed=3, command="pytest")
    base.update(kw)
    return TrainConfig(**base)


def weights(path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("kw, words", [
    ({"dose": 0.0}, "dose"),
    ({"dose_range": (0.5, 0.1)}, "dose_range"),
    ({"noise_model": "speckle"}, "noise_model"),
    ({"loss": "l1"}, "loss"),
    ({"phantoms": 0}, "no training data"),
    ({"patch": 8}, "patch"),
    ({"phantom_shape": (32, 32), "patch": 64}, "phantom_shape"),
    ({"val_fraction": 1.0}, "val_fraction"),
    ({"patience": 0}, "patience"),
    ({"out": "model.pt"}, ".safetensors"),
    ({"images": [(np.zeros((8, 8)), "not params")]}, "NoiseParams"),
    ({"device": "tpu"}, "device"),
    ({"calc_weight": -1.0}, "calc_weight must be >= 0"),
    ({"input_highpass": -2.0}, "input_highpass must be a number of pixels >= 0"),
    ({"clip_grad_norm": 0.0}, "clip_grad_norm must be None or a positive number, got 0.0"),
    ({"clip_grad_norm": True}, "clip_grad_norm must be None or a positive number, got True"),
])
def test_config_rejects_bad_values_with_a_plain_message(kw, words):
    with pytest.raises(MammoDenoiseError, match="training configuration") as info:
        TrainConfig(**kw)
    assert words in str(info.value)


def test_config_defaults_phantoms_only_when_no_other_data():
    assert TrainConfig().phantoms == 16
    img = (np.full((64, 64), 500.0, np.float32), PARAMS)
    assert TrainConfig(images=[img]).phantoms == 0  # a fine-tune on layers adds no phantoms
    assert TrainConfig().doses == (0.2, 0.2)  # the first seed's 80 % reduction
    assert TrainConfig(dose_range=(0.1, 0.5)).doses == (0.1, 0.5)


def test_describe_is_one_line_with_the_essentials():
    text = describe(TrainConfig(phantoms=4, dose_range=(0.1, 0.5), epochs=7, name="mine"))
    assert "\n" not in text
    for part in ("unet", "4 phantoms", "0.1-0.5", "7 epochs", "mine"):
        assert part in text


# ----------------------------------------------------------------------------- data
def _flat_source(level=3000.0, shape=(64, 64), kind="phantom"):
    return Source(np.full(shape, level, np.float32), PARAMS, np.ones(shape, bool), kind, "flat")


def test_pairs_have_unit_noise_around_the_expected_anscombe_target():
    dose = 0.2
    cfg = TrainConfig(phantoms=1, dose=dose, patch=32)
    b = PatchSampler([_flat_source()], cfg).batch(np.random.default_rng(0), 16)
    resid = (b["y"] - b["t"]).ravel()
    # The GAT makes Poisson-Gaussian noise unit-variance, and expected_anscombe is its mean:
    # a dose applied twice, or the target at full dose, would move both numbers far away.
    assert abs(resid.mean()) < 0.05
    assert abs(resid.std() - 1.0) < 0.05
    expected = expected_anscombe(PARAMS.offset + dose * (3000.0 - PARAMS.offset), PARAMS)
    np.testing.assert_allclose(b["t"], expected, rtol=1e-5)
    # One image-level shift, the median of the whole image at this dose (what inference uses).
    np.testing.assert_allclose(b["shift"], expected, rtol=1e-5)


def test_real_images_are_dose_reduced_from_their_full_dose_noise():
    dose, level = 0.2, 3000.0
    rng = np.random.default_rng(7)
    counts = (level - PARAMS.offset) / PARAMS.gain
    full = (PARAMS.offset + PARAMS.gain * rng.poisson(counts, (64, 64))
            + PARAMS.electronic_sigma * rng.standard_normal((64, 64))).astype(np.float32)
    src = Source(full, PARAMS, np.ones((64, 64), bool), "real", "flat")
    b = PatchSampler([src], TrainConfig(phantoms=1, dose=dose, patch=32)).batch(rng, 16)
    expected = expected_anscombe(PARAMS.offset + dose * (level - PARAMS.offset), PARAMS)
    # Full-dose noise scaled down plus the added noise: unit variance at the low dose.
    assert abs(b["y"].mean() - expected) < 0.05
    assert abs(b["y"].std() - 1.0) < 0.05
    # The target is the full-dose image scaled to the dose (the first seed's reference).
    t_dn = PARAMS.offset + dose * (full.astype(np.float64) - PARAMS.offset)
    assert b["t"].std() == pytest.approx(
        np.std(expected_anscombe(t_dn, PARAMS)), rel=0.1)


def test_phantom_target_matches_truth_at_dose():
    ph = make_phantom(seed=5, shape=(64, 64))
    cfg = TrainConfig(phantoms=1, dose=0.3, patch=64, edge_fraction=1.0, boundary_fraction=0.0)
    src = Source(ph.truth, ph.params, ph.mask, "phantom", "p")
    b = PatchSampler([src], cfg).batch(np.random.default_rng(1), 1, augment=False, with_dn=True)
    np.testing.assert_allclose(b["target_dn"][0], ph.truth_at(0.3), rtol=1e-5)
    np.testing.assert_allclose(b["t"][0, 0], expected_anscombe(ph.truth_at(0.3), ph.params), rtol=1e-4)


def test_dose_range_is_drawn_per_patch():
    cfg = TrainConfig(phantoms=1, dose_range=(0.1, 0.5), patch=16)
    b = PatchSampler([_flat_source()], cfg).batch(np.random.default_rng(2), 64, with_dn=True)
    assert 0.1 <= b["dose"].min() < 0.2 and 0.4 < b["dose"].max() <= 0.5
    # The target follows each patch's own dose.
    levels = b["target_dn"].mean(axis=(1, 2))
    np.testing.assert_allclose(levels, PARAMS.offset + b["dose"] * (3000.0 - PARAMS.offset), rtol=1e-5)


def test_patches_come_mostly_from_the_breast():
    shape = (128, 128)
    clean = np.full(shape, 5000.0, np.float32)
    mask = np.zeros(shape, bool)
    mask[:40, :40] = True  # a small breast: uniform sampling would mostly miss it
    clean[mask] = 1000.0
    cfg = TrainConfig(phantoms=1, patch=16, edge_fraction=0.1, boundary_fraction=0.0)
    src = Source(clean, PARAMS, mask, "phantom", "corner")
    b = PatchSampler([src], cfg).batch(np.random.default_rng(3), 200, with_dn=True)
    outside = (b["target_dn"] > PARAMS.offset + 0.2 * 4000).all(axis=(1, 2)).mean()
    assert outside < 0.15  # only the edge fraction (and skin-line patches) may lie outside
    assert outside > 0.0  # ...but some do, so the model learns the background and skin line


def test_exposure_boundary_is_the_collimator_edge_in_clean_and_noisy_images():
    from mammo_denoise.training.data import exposure_boundary

    ph = make_phantom(seed=3, shape=(256, 256), dose=1.0)
    edge = np.zeros(ph.truth.shape, bool)
    edge.flat[exposure_boundary(ph.truth, ph.params)] = True
    shadow = ph.truth <= ph.params.offset
    assert shadow.any() and not (edge & shadow).any()
    # Every edge pixel touches the shadow, and every exposed pixel touching it is an edge pixel.
    from scipy import ndimage

    touching = ~shadow & ndimage.binary_dilation(shadow, np.ones((3, 3), bool))
    np.testing.assert_array_equal(edge, touching)
    # Electronic noise in a full-dose acquisition does not move the edge.
    noisy = np.zeros_like(edge)
    noisy.flat[exposure_boundary(ph.noisy, ph.params)] = True
    assert (noisy == edge).mean() > 0.999
    # No shadow, no edge.
    assert exposure_boundary(np.full((64, 64), 3000.0), PARAMS).size == 0


def test_boundary_patches_straddle_the_field_edge():
    from mammo_denoise.training.data import build_sources

    cfg = TrainConfig(phantoms=1, phantom_shape=(256, 256), patch=64, seed=2, val_fraction=0.0,
                      boundary_fraction=1.0, edge_fraction=0.0)
    (src,) = build_sources(cfg)
    b = PatchSampler([src], cfg).batch(np.random.default_rng(6), 100, augment=False, with_dn=True)
    t = b["target_dn"]
    off = src.params.offset
    shadow = t <= off + 1e-3
    # Each patch holds both the shadow and the exposed field.
    assert shadow.any(axis=(1, 2)).all() and (~shadow).any(axis=(1, 2)).all()
    # Without boundary patches the same phantom almost never puts the shadow in a patch.
    cfg0 = TrainConfig(phantoms=1, phantom_shape=(256, 256), patch=64, seed=2, val_fraction=0.0,
                       boundary_fraction=0.0, edge_fraction=0.0)
    t0 = PatchSampler([src], cfg0).batch(np.random.default_rng(6), 100, with_dn=True)["target_dn"]
    assert (t0 <= off + 1e-3).any(axis=(1, 2)).mean() < 0.3


def test_calcification_weight_follows_the_calcifications_through_augmentation():
    from mammo_denoise.training.data import build_sources, calcification_mask

    cfg = TrainConfig(phantoms=1, phantom_shape=(512, 512), patch=64, calc_weight=9.0, seed=4,
                      val_fraction=0.0)
    (src,) = build_sources(cfg)
    assert src.calc_mask is not None and src.calc_mask.any()
    # ~ every calcification centre is covered, and the mask is a few pixels per calcification.
    ph_px = src.calc_mask.sum()
    # Calcification pixels are dips in the clean raw image (calcium removes photons): with the
    # rotations and flips applied to the weights as to the image, the weighted pixels stay dark.
    b = PatchSampler([src], cfg).batch(np.random.default_rng(5), 400)
    w, t = b["w"][:, 0], b["t"][:, 0]
    assert set(np.unique(w)) == {1.0, 10.0}
    hit = [k for k in range(len(w)) if (w[k] > 1).any()]
    assert len(hit) >= 5
    below = [t[k][w[k] > 1].mean() < np.median(t[k]) for k in hit]
    assert np.mean(below) > 0.8
    # Without the weight the batch has no "w", and the same draws give the same patches.
    plain = PatchSampler([src], TrainConfig(phantoms=1, patch=64)).batch(np.random.default_rng(5), 400)
    assert "w" not in plain
    np.testing.assert_array_equal(plain["t"], b["t"])
    # The mask helper: a disk of the diameter plus the margin.
    class C:  # noqa: D401 - a stand-in calcification
        row, col, diameter_mm = 10.0, 12.0, 0.42
    m = calcification_mask((24, 24), [C], pixel_mm=0.07, margin_px=1.0)
    assert m[10, 12] and m[10, 15] and not m[10, 17] and m.sum() == pytest.approx(np.pi * 16, rel=0.15)
    assert 0 < ph_px < 0.01 * src.calc_mask.size


def test_weighted_loss_is_the_weighted_mean_of_squared_errors():
    out = torch.zeros(1, 1, 4, 4)
    target = torch.zeros(1, 1, 4, 4)
    target[..., 0, 0] = 2.0  # one pixel off by 2: plain MSE 4/16
    rng_ = torch.ones(1)
    assert float(loop_mod.compute_loss(out, target, rng_, "mse")) == pytest.approx(0.25)
    w = torch.ones(1, 1, 4, 4)
    assert float(loop_mod.compute_loss(out, target, rng_, "mse", w)) == pytest.approx(0.25)
    w[..., 0, 0] = 10.0  # that pixel counts ten times: 40 / 25
    assert float(loop_mod.compute_loss(out, target, rng_, "mse", w)) == pytest.approx(1.6)


def test_gaussian_saltpepper_follows_the_second_seed():
    cfg = TrainConfig(phantoms=1, noise_model="gaussian-saltpepper", patch=32,
                      gs_sigmas=(0.0,), gs_densities=(0.05,))
    src = Source(np.full((64, 64), 0.5, np.float32), PARAMS, np.ones((64, 64), bool), "phantom", "gs")
    b = PatchSampler([src], cfg).batch(np.random.default_rng(4), 8)
    y = b["y"]
    assert y.min() >= 0.0 and y.max() <= 1.0  # clipped, [0, 1] intensity domain
    hits = np.isin(y, (0.0, 1.0)).mean()
    assert 0.035 < hits < 0.065
    assert np.isclose(y[(y > 0) & (y < 1)], 0.5).all()  # sigma 0: only impulses
    assert (b["shift"] == 0).all()  # the intensity domain is not shifted (models/denoiser.py)


def test_batches_do_not_depend_on_num_workers(tmp_path):
    from mammo_denoise.training.data import build_sources

    cfg0 = tiny(tmp_path, num_workers=0)
    cfg2 = tiny(tmp_path, num_workers=2)
    sampler = PatchSampler(build_sources(cfg0), cfg0)
    a = list(loop_mod._batches(sampler, cfg0, rank=0, epoch=1))
    b = list(loop_mod._batches(sampler, cfg2, rank=0, epoch=1))
    assert len(a) == len(b) == cfg0.iters_per_epoch
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["y"], y["y"])
    # Different ranks draw different patches.
    c = next(iter(loop_mod._batches(sampler, cfg0, rank=1, epoch=1)))
    assert not np.array_equal(a[0]["y"], c["y"])


def test_phantoms_do_not_depend_on_num_workers(tmp_path):
    from mammo_denoise.training.data import build_sources

    serial = build_sources(tiny(tmp_path, num_workers=0, calc_weight=10.0))
    parallel = build_sources(tiny(tmp_path, num_workers=2, calc_weight=10.0))
    assert [s.label for s in parallel] == [s.label for s in serial] == ["phantom 0", "phantom 1", "phantom 2"]
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a.clean, b.clean)
        np.testing.assert_array_equal(a.calc_mask, b.calc_mask)
    assert not np.array_equal(serial[0].clean, serial[1].clean)


# ----------------------------------------------------------------------------- loop
def test_train_writes_weights_card_and_messages(tmp_path):
    from mammo_denoise.models import load_model

    msgs = []
    cfg = tiny(tmp_path, dose_range=(0.1, 0.5))
    path = train(cfg, progress=msgs.append)
    assert path == cfg.out and path.is_file()
    steps = [m for m in msgs if isinstance(m, TrainStep)]
    ends = [m for m in msgs if isinstance(m, EpochEnd)]
    assert len(steps) == cfg.epochs * cfg.iters_per_epoch
    assert [e.epoch for e in ends] == [1, 2]
    assert all(np.isfinite([e.val_loss, e.val_psnr, e.val_psnr_noisy, e.train_loss]).all() for e in ends)
    assert isinstance(msgs[-1], TrainDone) and msgs[-1].path == path
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["noise_model"] == "poisson-gaussian" and card["dose_range"] == [0.1, 0.5]
    tr = card["training"]
    assert tr["patches_seen"] == cfg.epochs * cfg.iters_per_epoch * cfg.batch_size
    assert tr["command"] == "pytest" and tr["loss"] == "mse+ssim" and tr["seed"] == 3
    assert tr["data"]["phantoms"] == 3 and tr["data"]["validation"] == "held-out images"
    detector = tr["data"]["phantom_detector"]  # the phantoms' detector, from make_phantom
    ph = make_phantom(seed=0, shape=(64, 64))
    assert (detector["gain"], detector["offset"], detector["electronic_sigma"]) == (
        ph.params.gain, ph.params.offset, ph.params.electronic_sigma)
    assert card["metrics"]["val_psnr"] == pytest.approx(msgs[-1].best_val_psnr)
    # What was written loads through the public loader and is the trained network.
    den = load_model(path)
    assert_same(den.net.state_dict(), weights(path))
    assert den.card["metrics"]["val_psnr"] == card["metrics"]["val_psnr"]


def test_calcification_weight_trains_is_recorded_and_binds_a_resume(tmp_path):
    cfg = tiny(tmp_path, phantom_shape=(192, 192), patch=32, calc_weight=5.0)
    assert "calcifications x6" in describe(cfg)
    path = train(cfg)
    assert json.loads(path.with_suffix(".json").read_text())["training"]["calc_weight"] == 5.0
    # A different weight is a different objective: the checkpoint does not continue it.
    with pytest.raises(MammoDenoiseError, match="different training configuration"):
        train(tiny(tmp_path, phantom_shape=(192, 192), patch=32, calc_weight=2.0, epochs=3, resume=True))


def test_input_highpass_goes_into_the_model_and_binds_a_resume(tmp_path):
    from mammo_denoise.models import load_model

    path = train(tiny(tmp_path, input_highpass=3.0))
    assert load_model(path).highpass_sigma == 3.0
    with pytest.raises(MammoDenoiseError, match="different training configuration"):
        train(tiny(tmp_path, epochs=3, resume=True))
    with pytest.raises(MammoDenoiseError, match="a model keeps the input it was trained on"):
        train(tiny(tmp_path / "ft", init=str(path), input_highpass=5.0))


def test_same_seed_same_weights_and_other_seed_differs(tmp_path):
    a = weights(train(tiny(tmp_path / "a", epochs=1)))
    b = weights(train(tiny(tmp_path / "b", epochs=1)))
    c = weights(train(tiny(tmp_path / "c", epochs=1, seed=4)))
    assert_same(a, b)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_cancel_keeps_previous_model_and_resume_matches_uninterrupted(tmp_path):
    full = weights(train(tiny(tmp_path / "full")))

    cfg = tiny(tmp_path / "run")
    cfg.out.parent.mkdir(parents=True)
    cfg.out.write_bytes(b"previous model")
    ckpt = cfg.resolved_checkpoint()

    def cancel():  # polled every iteration: stop inside the second epoch
        return ckpt.exists()

    with pytest.raises(Cancelled):
        train(cfg, cancel=cancel)
    assert cfg.out.read_bytes() == b"previous model"
    assert not cfg.out.with_suffix(".json").exists()
    assert ckpt.is_file() and ckpt.suffix == ".ckpt"
    _, _, meta, _ = load_checkpoint(ckpt)
    assert meta["state"]["epoch"] == 1

    resumed = weights(train(tiny(tmp_path / "run", resume=True)))
    assert_same(full, resumed)


def test_cancel_while_preparing_data(tmp_path):
    cfg = tiny(tmp_path)
    with pytest.raises(Cancelled):
        train(cfg, cancel=lambda: True)
    assert not cfg.out.exists() and not cfg.resolved_checkpoint().exists()


def test_resume_refuses_a_different_configuration(tmp_path):
    train(tiny(tmp_path, epochs=1))
    # The message names what differs, so the user knows which option to put back.
    with pytest.raises(MammoDenoiseError, match=r"different training configuration .*resuming\): "
                                                r"lr: checkpoint 0\.0001, now 0\.001$"):
        train(tiny(tmp_path, epochs=2, lr=1e-3, resume=True))
    with pytest.raises(MammoDenoiseError, match="no training checkpoint"):
        train(tiny(tmp_path, resume=True, checkpoint=tmp_path / "missing.ckpt"))


def test_failure_leaves_previous_files_untouched(tmp_path, monkeypatch):
    cfg = tiny(tmp_path)
    cfg.out.write_bytes(b"old weights")
    cfg.out.with_suffix(".json").write_text("{}")

    def nan_loss(*args, **kwargs):
        return torch.tensor(float("nan"), requires_grad=True)

    monkeypatch.setattr(loop_mod, "compute_loss", nan_loss)
    with pytest.raises(MammoDenoiseError, match="diverged"):
        train(cfg)
    assert cfg.out.read_bytes() == b"old weights"
    assert cfg.out.with_suffix(".json").read_text() == "{}"


def test_early_stopping_keeps_the_best_weights(tmp_path, monkeypatch):
    one_epoch = weights(train(tiny(tmp_path / "one", epochs=1)))
    losses = iter([1.0, 2.0, 3.0, 4.0, 5.0])  # epoch 1 is the best, then it only gets worse
    monkeypatch.setattr(loop_mod, "_validate", lambda *a, **k: (next(losses), 30.0))
    msgs = []
    path = train(tiny(tmp_path / "es", epochs=5, patience=1), progress=msgs.append)
    assert [m.epoch for m in msgs if isinstance(m, EpochEnd)] == [1, 2]
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["metrics"]["stopped_early"] is True and card["metrics"]["best_epoch"] == 1
    assert_same(one_epoch, weights(path))


def test_checkpoint_roundtrip_without_pickle(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Conv2d(2, 1, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        net(torch.randn(2, 1, 8, 8)).pow(2).mean().backward()
        opt.step()
    path = save_checkpoint(tmp_path / "c.ckpt", net.state_dict(), opt.state_dict(),
                           {"state": {"epoch": 2}})
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert raw[8:9] == b"{" and json.loads(raw[8:8 + n])  # a safetensors JSON header, no pickle
    model, opt_sd, meta, best = load_checkpoint(path)
    assert meta["state"]["epoch"] == 2 and best is None
    opt2 = torch.optim.Adam(net.parameters(), lr=1.0)
    opt2.load_state_dict(opt_sd)
    ref = opt.state_dict()
    assert opt2.state_dict()["param_groups"][0]["lr"] == 1e-3
    assert opt2.state_dict()["param_groups"][0]["betas"] == ref["param_groups"][0]["betas"]
    for pid, st in ref["state"].items():
        for key, v in st.items():
            assert torch.equal(opt2.state_dict()["state"][pid][key], v)
    assert_same(model, net.state_dict())


def test_finetune_from_init_and_domain_check(tmp_path, monkeypatch):
    base = train(tiny(tmp_path / "base", epochs=1))
    cfg = tiny(tmp_path / "ft", epochs=1, init=base, out=None, name="ft-test")
    monkeypatch.setattr("mammo_denoise.models.user_model_dir", lambda: tmp_path / "user")
    path = train(cfg)
    assert path == tmp_path / "user" / "ft-test.safetensors"  # default: the user model folder
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["training"]["init"] == str(base) and card["name"] == "ft-test"
    # It really starts from the given weights: with a negligible learning rate the epoch scores
    # exactly what the start scored, so nothing beats the start and nothing is written.
    msgs = []
    with pytest.raises(NotImproved) as exc:
        train(tiny(tmp_path / "still", epochs=1, init=base, lr=1e-12), progress=msgs.append)
    start = next(m for m in msgs if isinstance(m, Baseline))
    epoch = next(m for m in msgs if isinstance(m, EpochEnd))
    assert epoch.val_loss == pytest.approx(start.val_loss, rel=1e-6) and not epoch.best
    assert str(exc.value) == (
        f"fine-tuning did not improve on {base}: validation loss {start.val_loss:.4f} before, best "
        f"{epoch.val_loss:.4f} after 1 epoch (mse+ssim on held-out images, the same noise draws); "
        "nothing saved, existing models unchanged")
    assert not (tmp_path / "still" / "model.safetensors").exists()
    with pytest.raises(MammoDenoiseError, match="domain"):
        train(tiny(tmp_path / "bad", init=base, noise_model="gaussian-saltpepper"))


def test_finetuned_card_keeps_the_lineage_of_its_init(tmp_path):
    base = train(tiny(tmp_path / "base", epochs=1, seed=1))
    once = train(tiny(tmp_path / "once", epochs=1, init=base, seed=2))
    twice = train(tiny(tmp_path / "twice", epochs=2, init=once, seed=3))
    cards = [json.loads(p.with_suffix(".json").read_text())["training"] for p in (base, once, twice)]
    stages = cards[2]["stages"]
    assert [s["stage"] for s in stages] == [1, 2, 3]
    assert [s["seed"] for s in stages] == [1, 2, 3]
    assert [s["init"] for s in stages] == [None, str(base), str(once)]
    assert all("history" not in s for s in stages) and len(cards[2]["history"]) == 2
    # Totals over the stages; each stage keeps its own run's numbers.
    per_epoch = 3 * 2  # iters_per_epoch x batch_size of tiny()
    assert [s["patches_seen"] for s in stages] == [per_epoch, per_epoch, 2 * per_epoch]
    assert cards[2]["patches_seen"] == 4 * per_epoch and cards[1]["patches_seen"] == 2 * per_epoch
    assert cards[2]["time_s"] == pytest.approx(sum(s["time_s"] for s in stages), abs=0.11)


def test_finetuning_keeps_the_models_own_architecture(tmp_path):
    base = train(tiny(tmp_path / "base", epochs=1))
    # Left out, architecture and options come from the model; the log line names the model.
    ft = train(tiny(tmp_path / "ft", epochs=1, init=base, architecture=None, arch_kwargs={}))
    assert json.loads(ft.with_suffix(".json").read_text())["arch_kwargs"] == TINY_NET
    assert describe(TrainConfig(init=base)).startswith(f"{base} fine-tuned on 16 phantoms")
    assert describe(TrainConfig()).startswith("unet (fresh) on")
    # So is the loss it was trained with; given, the loss is the caller's.
    assert (TrainConfig().loss, TrainConfig(init=base).loss) == ("mse+ssim", "mse+ssim")
    mse = train(tiny(tmp_path / "mse", epochs=1, loss="mse"))
    assert TrainConfig(init=mse).loss == "mse" and TrainConfig(init=mse, loss="mse+ssim").loss == "mse+ssim"
    shipped = TrainConfig(init="mammo-unet")  # the shipped default's objective, from its card
    card = next(m.card for m in list_models() if m.name == "mammo-unet")["training"]
    assert card["calc_weight"] > 0 and card["loss"] == "mse"
    assert (shipped.loss, shipped.calc_weight) == (card["loss"], card["calc_weight"])
    assert (TrainConfig().calc_weight, TrainConfig(init="mammo-unet", calc_weight=0).calc_weight) == (0.0, 0.0)
    # Given and different, they are an error instead of being silently ignored.
    with pytest.raises(MammoDenoiseError, match=f"cannot fine-tune {base} as a dncnn: it is a unet"):
        train(tiny(tmp_path / "bad", init=base, architecture="dncnn"))
    with pytest.raises(MammoDenoiseError, match="cannot fine-tune .* with architecture options {'base': 4}"):
        train(tiny(tmp_path / "bad", init=base, arch_kwargs={"base": 4}))


def test_gaussian_saltpepper_training_writes_an_intensity_model(tmp_path):
    path = train(tiny(tmp_path, epochs=1, noise_model="gaussian-saltpepper", loss="mse"))
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["domain"] == "intensity" and card["noise_model"] == "gaussian-saltpepper"
    assert card["dose_range"] is None


def test_in_memory_image_trains_and_validates_on_itself(tmp_path):
    ph = make_phantom(seed=9, shape=(64, 64))
    cfg = tiny(tmp_path, phantoms=0, images=[(ph.noisy, ph.params)], epochs=1)
    path = train(cfg)
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["training"]["data"]["images"] == 1
    assert card["training"]["data"]["validation"] == "training images, fixed noise"


def test_cosine_schedule_decays_from_lr_to_one_percent_and_constant_stays():
    from mammo_denoise.training.config import learning_rate

    config = TrainConfig(phantoms=1, phantom_shape=(64, 64), patch=32, epochs=4, iters_per_epoch=10,
                         lr=1e-3, lr_schedule="cosine")
    rates = [learning_rate(config, e, i) for e in range(1, 5) for i in range(1, 11)]
    assert rates[0] == pytest.approx(1e-3)
    assert rates[-1] == pytest.approx(1e-5, rel=0.2)  # one step before the end of the decay
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    flat = TrainConfig(phantoms=1, phantom_shape=(64, 64), patch=32, epochs=4, iters_per_epoch=10, lr=1e-3)
    assert {learning_rate(flat, e, 5) for e in range(1, 5)} == {1e-3}
    # With a time budget the decay follows whichever limit is nearer: half the budget spent
    # early in a long run is half-way down; a fully spent budget is the floor.
    budgeted = TrainConfig(phantoms=1, phantom_shape=(64, 64), patch=32, epochs=1000, iters_per_epoch=10,
                           lr=1e-3, lr_schedule="cosine", time_budget_s=60.0)
    assert learning_rate(budgeted, 1, 1, 0.5) == pytest.approx(0.5 * (1e-3 + 1e-5))
    assert learning_rate(budgeted, 1, 1, 1.0) == pytest.approx(1e-5)
    # half-way through the epochs with a tenth of the budget spent: the epochs lead
    assert learning_rate(budgeted, 501, 1, 0.1) == pytest.approx(0.5 * (1e-3 + 1e-5))
    with pytest.raises(MammoDenoiseError, match="lr_schedule must be one of constant, cosine, got 'step'"):
        TrainConfig(phantoms=1, lr_schedule="step")


def test_time_budget_stops_after_the_first_iteration_and_still_saves(tmp_path):
    config = tiny(tmp_path, epochs=5, iters_per_epoch=50, time_budget_s=1e-6)
    epochs = []
    path = train(config, progress=lambda m: epochs.append(m.epoch) if isinstance(m, EpochEnd) else None)
    card = json.loads(path.with_suffix(".json").read_text())
    assert epochs == [1]
    assert card["training"]["patches_seen"] == config.batch_size  # one iteration of one epoch
    assert card["training"]["time_budget_s"] == 1e-6
    assert card["metrics"]["stopped_early"] is True


def test_training_in_float32_leaves_the_callers_tf32_setting_alone(tmp_path):
    cudnn = torch.backends.cudnn
    before = cudnn.allow_tf32
    cudnn.allow_tf32 = True
    try:
        train(tiny(tmp_path, epochs=1, iters_per_epoch=1))
        assert cudnn.allow_tf32 is True
    finally:
        cudnn.allow_tf32 = before


def test_amp_must_be_a_bool(tmp_path):
    with pytest.raises(MammoDenoiseError) as info:
        tiny(tmp_path, amp=None)
    assert "amp must be True (fp16 autocast on CUDA) or False (float32), got None" in str(info.value)


# ----------------------------------------------------------------------------- gradient clipping
def test_clip_gradients_caps_the_global_norm_and_leaves_smaller_ones_alone():
    net = torch.nn.Linear(3, 2)
    grads = [torch.tensor([[3.0, 0.0, 0.0], [0.0, 4.0, 0.0]]), torch.tensor([0.0, 12.0])]  # norm 13

    def set_grads(scale):
        for p, g in zip(net.parameters(), grads):
            p.grad = g * scale

    set_grads(1.0)
    assert int(loop_mod._clip_gradients(net, 6.5)) == 1
    norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert float(norm) == pytest.approx(6.5, rel=1e-5)
    assert torch.allclose(net.weight.grad, grads[0] / 2, rtol=1e-5)  # scaled, direction kept
    set_grads(0.1)  # norm 1.3, under the cap: untouched, bit for bit
    assert int(loop_mod._clip_gradients(net, 6.5)) == 0
    assert torch.equal(net.weight.grad, grads[0] * 0.1) and torch.equal(net.bias.grad, grads[1] * 0.1)
    assert loop_mod._clip_gradients(net, None) == 0


def test_training_counts_clipped_steps_and_a_cap_never_reached_changes_nothing(tmp_path):
    unclipped = train(tiny(tmp_path / "none", clip_grad_norm=None))
    high = train(tiny(tmp_path / "high", clip_grad_norm=1e9))
    low = train(tiny(tmp_path / "low", clip_grad_norm=1e-6))
    assert_same(weights(unclipped), weights(high))
    assert any(not torch.equal(weights(unclipped)[k], weights(low)[k]) for k in weights(low))
    cards = {k: json.loads(p.with_suffix(".json").read_text())["training"]
             for k, p in (("none", unclipped), ("high", high), ("low", low))}
    assert [h["clipped_steps"] for h in cards["high"]["history"]] == [0, 0]
    assert [h["clipped_steps"] for h in cards["low"]["history"]] == [3, 3]  # every step of each epoch
    assert (cards["none"]["clip_grad_norm"], cards["low"]["clip_grad_norm"]) == (None, 1e-6)
    assert TrainConfig().clip_grad_norm == 10.0

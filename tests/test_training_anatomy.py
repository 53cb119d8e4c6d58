"""Real anatomy in training: film scans behind simulated detectors, split by woman; known
detector parameters for DICOM files; log-uniform doses."""

from __future__ import annotations

import json

import numpy as np
import pytest
from skimage.io import imsave

from mammo_denoise.physics.anatomy import (film_breast_mask, film_to_quanta, read_film_folder,
                                           woman_split)
from mammo_denoise.physics.params import NoiseParams
from mammo_denoise.training import TrainConfig, train
from mammo_denoise.training.data import ANATOMY_DETECTOR, PatchSampler, build_sources, split_sources

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _film(seed, shape=(160, 128)):
    """A film-like scan: a bright half-disc of textured 'tissue' on clear (dark) film."""
    rng = np.random.default_rng(seed)
    rr, cc = np.indices(shape)
    breast = (rr - shape[0] / 2) ** 2 + cc ** 2 < (0.45 * shape[0]) ** 2
    from scipy import ndimage

    tissue = 150 + 25 * ndimage.gaussian_filter(rng.standard_normal(shape), 3) / 0.094
    return np.where(breast, np.clip(tissue, 60, 250), 4).astype(np.uint8)


@pytest.fixture
def films(tmp_path):
    folder = tmp_path / "mias"
    folder.mkdir()
    for i in range(1, 21):  # ten women, two views each
        imsave(folder / f"mdb{i:03d}.png", _film(i), check_contrast=False)
    (folder / "annotations.txt").write_text("# comment\nmdb001 F NORM\nmdb002 G CALC B 20 80 6\n")
    return folder


def test_women_not_images_are_split():
    assert [woman_split(w) for w in range(1, 11)] == [
        "val", "train", "train", "train", "test", "val", "train", "train", "train", "test"]


def test_film_folder_reads_women_splits_and_annotations(films):
    test = read_film_folder(films, split="test")
    assert sorted(f.ref for f in test) == ["mdb009", "mdb010", "mdb019", "mdb020"]
    every = read_film_folder(films)
    assert len(every) == 20 and {f.woman for f in every} == set(range(1, 11))
    mdb002 = next(f for f in every if f.ref == "mdb002")
    assert mdb002.calc_clusters() == [(160 - 1 - 80, 20, 6.0)]  # origin bottom-left -> rows


def test_quanta_span_the_chosen_range_inside_the_breast(films):
    film = read_film_folder(films)[0].film
    q, mask = film_to_quanta(film, quanta_range=(500.0, 4000.0))
    assert np.array_equal(mask, film_breast_mask(film))
    inside = q[mask]
    assert np.percentile(inside, 1) == pytest.approx(500.0, rel=0.02)
    assert np.percentile(inside, 99) == pytest.approx(4000.0, rel=0.02)
    # dense (bright) film is few quanta; the clear background is the brightest exposure
    assert np.median(q[~mask]) > np.percentile(inside, 99) and q[~mask].max() <= 4000.0 * 8.0 * 1.001
    q2, mask2 = film_to_quanta(film, zoom=2.0)
    assert q2.shape == (320, 256) and mask2.shape == q2.shape


def test_anatomy_sources_are_split_by_woman_with_their_own_detectors(films, tmp_path):
    cfg = TrainConfig(anatomy=films, patch=32, out=tmp_path / "m.safetensors", seed=5)
    assert cfg.phantoms == 0
    sources = build_sources(cfg)
    refs = {s.split: sorted(s.label for s in sources if s.split == split) for s in sources
            for split in [s.split]}
    assert refs["val"] == ["mdb001", "mdb002", "mdb011", "mdb012"]
    assert len(refs["train"]) == 12  # women 2, 3, 4, 7, 8, 9; the test women are never read
    train_src, val_src, held_out = split_sources(sources, 0.2, 5)
    assert held_out and {s.split for s in train_src} == {"train"} and {s.split for s in val_src} == {"val"}
    g = ANATOMY_DETECTOR["gain"]
    assert all(s.kind == "anatomy" and g[0] <= s.params.gain <= g[1] for s in sources)
    assert len({s.params.gain for s in sources}) == len(sources)
    again = build_sources(cfg)
    assert [s.params for s in again] == [s.params for s in sources]  # seeded per film


def test_anatomy_patches_are_noise_free_truth_recorded_at_the_dose(films, tmp_path):
    cfg = TrainConfig(anatomy=films, patch=32, dose=0.25, out=tmp_path / "m.safetensors")
    sampler = PatchSampler([s for s in build_sources(cfg) if s.split == "train"], cfg)
    b = sampler.batch(np.random.default_rng(0), 64, augment=False)
    # unit-variance noise around the expected-Anscombe target, as for phantoms
    assert np.std(b["y"] - b["t"]) == pytest.approx(1.0, abs=0.05)


def test_anatomy_share_of_patches_beside_phantoms(films, tmp_path):
    cfg = TrainConfig(anatomy=films, phantoms=2, phantom_shape=(96, 96), anatomy_fraction=0.7,
                      patch=32, out=tmp_path / "m.safetensors")
    sources = [s for s in build_sources(cfg) if s.split != "val"]
    sampler = PatchSampler(sources, cfg)
    share = sum(p for p, s in zip(sampler.p, sources) if s.kind == "anatomy")
    assert share == pytest.approx(0.7)


def test_log_uniform_doses_are_even_on_a_log_scale(tmp_path):
    cfg = TrainConfig(phantoms=1, phantom_shape=(64, 64), patch=16, dose_range=(0.05, 1.0),
                      dose_distribution="log-uniform", out=tmp_path / "m.safetensors")
    sampler = PatchSampler(build_sources(cfg), cfg)
    rng = np.random.default_rng(1)
    d = np.array([sampler._dose(rng, 0.05, 1.0) for _ in range(4000)])
    below = np.mean(d < np.sqrt(0.05))  # the geometric midpoint
    assert below == pytest.approx(0.5, abs=0.03) and d.min() >= 0.05 and d.max() <= 1.0
    with pytest.raises(Exception, match="dose_distribution must be one of uniform, log-uniform"):
        TrainConfig(phantoms=1, dose_distribution="normal")


def test_training_on_anatomy_records_data_split_and_licence(films, tmp_path):
    cfg = TrainConfig(anatomy=films, architecture="unet", arch_kwargs={"base": 4, "depth": 2},
                      patch=16, batch_size=2, epochs=1, iters_per_epoch=2, val_patches=4,
                      out=tmp_path / "m.safetensors", command="pytest")
    card = json.loads(train(cfg).with_suffix(".json").read_text())
    rec = card["training"]["data"]["anatomy"]
    assert rec["train_films"] == 12 and rec["val_films"] == 4 and rec["train_women"] == 6
    assert "research" in rec["licence"] and "by woman" in rec["split"]
    assert card["training"]["data"]["validation"] == "held-out images"


def test_known_detector_parameters_replace_the_estimate_for_files(tmp_path):
    from mammo_denoise.io import write_mammogram
    from mammo_denoise.physics.phantom import make_phantom

    ph = make_phantom(seed=2, shape=(128, 128))
    # a noise-free image: nothing to estimate noise from, which stopped `train` at once
    path = write_mammogram(np.round(ph.truth), tmp_path / "clean.dcm", ph.meta)
    known = NoiseParams(50.0, 0.25, 3.0)
    cfg = TrainConfig(paths=[path], detector=known, patch=32, out=tmp_path / "m.safetensors")
    (src,) = build_sources(cfg)
    assert src.params == known

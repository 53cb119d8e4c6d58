"""Weights store: safetensors + JSON card, atomic saves, discovery, and refusal of pickles."""

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from mammo_denoise.errors import MammoDenoiseError
from mammo_denoise.models import (
    DEFAULT_MODEL,
    ModelInfo,
    list_models,
    load_model,
    make_denoiser,
    save_model,
    store,
    user_model_dir,
)


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    """User models in a temp dir, and no shipped weights, whatever the checkout contains."""
    user = tmp_path / "user-models"
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    monkeypatch.setenv("MAMMO_DENOISE_MODEL_DIR", str(user))
    monkeypatch.setattr(store, "shipped_model_dir", lambda: shipped)
    return user, shipped


def _small(seed=0):
    return make_denoiser("unet", base=4, depth=2, seed=seed)


def test_round_trip_gives_identical_outputs(tmp_path):
    d = _small()
    path = save_model(d, tmp_path / "m.json", training={"epochs": 3, "seed": 1}, dose_range=[0.1, 0.5])
    assert path == tmp_path / "m.safetensors" and (tmp_path / "m.json").is_file()
    loaded = load_model(path)
    assert not loaded.training
    card = json.loads((tmp_path / "m.json").read_text())
    for key in ("name", "architecture", "arch_kwargs", "parameter_count", "macs_per_pixel", "residual",
                "input_scale", "domain", "noise_model", "dose_range", "training", "metrics", "version", "created", "sha256"):
        assert key in card, key
    assert card["name"] == "m" and card["training"] == {"epochs": 3, "seed": 1}
    assert card["parameter_count"] == sum(p.numel() for p in d.parameters())
    assert loaded.card == card
    y = torch.randn(2, 1, 19, 23) * 2 + 30
    with torch.no_grad():
        torch.testing.assert_close(loaded(y, 30.0), d.eval()(y, 30.0), rtol=0, atol=0)
    # the card path works too, and so does a BatchNorm architecture (buffers round-trip)
    assert load_model(tmp_path / "m.json").card["sha256"] == card["sha256"]
    cae = make_denoiser("cae", seed=1)
    cae.net.encoder[1].running_mean.fill_(0.25)
    loaded_cae = load_model(save_model(cae, tmp_path / "cae"))
    assert torch.equal(loaded_cae.net.encoder[1].running_mean, cae.net.encoder[1].running_mean)


class _Evil:
    """Unpickling this would create the marker file: loading must never get that far."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickles_are_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    payload = {"weights": _Evil(marker)}
    fake = tmp_path / "evil.safetensors"
    torch.save(payload, fake)  # a zip-pickle with a .safetensors name
    (tmp_path / "evil.json").write_text(json.dumps({"architecture": "unet", "sha256": "x"}))
    with pytest.raises(MammoDenoiseError) as info:
        load_model(fake)
    assert str(info.value) == (f"{fake}: not a valid safetensors file; refusing to load it "
                               "(pickled checkpoints are never loaded)")
    raw = tmp_path / "raw.safetensors"
    raw.write_bytes(pickle.dumps(payload))  # a bare pickle stream
    with pytest.raises(MammoDenoiseError, match="not a valid safetensors file"):
        load_model(raw)
    for suffix in (".pt", ".pth", ".ckpt"):
        ckpt = tmp_path / f"model{suffix}"
        torch.save(payload, ckpt)
        with pytest.raises(MammoDenoiseError) as info:
            load_model(ckpt)
        assert str(info.value) == (f"{ckpt}: refusing to load a pickle checkpoint: unpickling can run "
                                   "arbitrary code; only .safetensors weights with a .json model card are loaded")
    assert not marker.exists()
    with pytest.raises(MammoDenoiseError, match="pickle formats are not written"):
        save_model(_small(), tmp_path / "out.pt")


def test_sha_mismatch_missing_card_and_key_mismatch(tmp_path):
    path = save_model(_small(), tmp_path / "m")
    card_path = path.with_suffix(".json")
    card = json.loads(card_path.read_text())

    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # flip bits in the last tensor's bytes: still valid safetensors
    path.write_bytes(bytes(data))
    with pytest.raises(MammoDenoiseError) as info:
        load_model(path)
    assert str(info.value) == (f"{path}: sha256 of the weights does not match the model card "
                               "(file changed or replaced after the card was written)")
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))

    card_path.write_text(json.dumps({**card, "arch_kwargs": {"base": 8, "depth": 2}}))
    with pytest.raises(MammoDenoiseError, match=rf"^{path}: weights do not match architecture 'unet': "
                                                r"inc.0.weight has shape \(4, 1, 3, 3\), expected \(8, 1, 3, 3\)"):
        load_model(path)
    card_path.write_text(json.dumps({**card, "architecture": "dncnn", "arch_kwargs": {}}))
    with pytest.raises(MammoDenoiseError, match=rf"^{path}: weights do not match architecture 'dncnn': missing body"):
        load_model(path)
    card_path.write_text(json.dumps({**card, "architecture": "nope"}))
    with pytest.raises(MammoDenoiseError, match=rf"^{card_path}: unknown architecture 'nope'"):
        load_model(path)
    card_path.unlink()
    with pytest.raises(MammoDenoiseError) as info:
        load_model(path)
    assert str(info.value) == f"{card_path}: model card not found (every .safetensors needs its .json card next to it)"


def test_save_is_atomic(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    path = save_model(_small(seed=0), folder / "m")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    calls = {"n": 0}
    real_fsync = os.fsync

    for fail_at in (1, 2):  # crash while writing the weights, then while writing the card
        calls["n"] = 0

        def flaky_fsync(fd, fail_at=fail_at):
            calls["n"] += 1
            if calls["n"] == fail_at:
                raise OSError(28, "No space left on device")
            real_fsync(fd)

        monkeypatch.setattr(store.os, "fsync", flaky_fsync)
        with pytest.raises(OSError, match="No space left"):
            save_model(_small(seed=1), path)
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no temp files either
    monkeypatch.setattr(store.os, "fsync", real_fsync)
    load_model(path)  # the previous model is intact


def test_user_models_are_discovered(isolated_dirs):
    user, shipped = isolated_dirs
    assert user_model_dir() == user
    save_model(_small(), user / "my-model", metrics={"psnr_gain_db": 4.2})
    (user / "orphan.safetensors").write_bytes(b"no card next to me")
    save_model(_small(seed=2), shipped / "shipped-model")
    infos = list_models()
    assert [(m.name, m.source) for m in infos] == [("shipped-model", "shipped"), ("my-model", "user")]
    assert isinstance(infos[1], ModelInfo) and infos[1].path == user / "my-model.safetensors"
    assert infos[1].card["metrics"] == {"psnr_gain_db": 4.2}
    assert load_model("my-model").name == "my-model"
    assert load_model("shipped-model").name == "shipped-model"
    with pytest.raises(MammoDenoiseError) as info:
        load_model("other")
    assert str(info.value) == (f"unknown model 'other'; installed models: my-model, shipped-model "
                               f"(user models are looked for in {user})")


def test_default_without_weights_is_a_clear_error(isolated_dirs):
    with pytest.raises(MammoDenoiseError) as info:
        load_model("default")
    assert str(info.value) == (f"no trained weights for the default model {DEFAULT_MODEL!r} are installed; "
                               "train one with `mammo-denoise train` or pass a .safetensors model file")
    _, shipped = isolated_dirs
    save_model(_small(), shipped / DEFAULT_MODEL)
    assert load_model("default").name == DEFAULT_MODEL


def test_the_shipped_default_is_summarised_as_trained_on_real_anatomy_and_phantoms():
    # The Denoise panel and `models` showed "trained on synthetic phantoms only" for a default
    # that learned mini-MIAS anatomy: a radiologist must read what a model has seen.
    import json
    from pathlib import Path

    import mammo_denoise.models as models

    card = json.loads((Path(models.__file__).parent / "weights" / "mammo-unet.json").read_text())
    line = models.card_summary(card)
    assert line.startswith("24.2k MAC/pixel; trained on mini-MIAS anatomy (83 women, research use "
                           "only) and synthetic phantoms; dose 0.05-1; "), line
    assert "held-out women at dose 0.2: +0.43 dB over BM3D without film grain, +0.01 dB on the film" in line

"""CPU engines (mammo_denoise.engines): every installed engine gives PyTorch's answer, the cache
is keyed by the weights, and a missing engine is one clear line or a quiet fallback."""

import sys
import warnings

import numpy as np
import pytest
import torch

from mammo_denoise import engines
from mammo_denoise.errors import MammoDenoiseError
from mammo_denoise.inference import denoise
from mammo_denoise.models import load_model, make_denoiser, save_model
from mammo_denoise.physics.params import NoiseParams

PARAMS = NoiseParams(offset=100.0, gain=2.0, electronic_sigma=3.0)
FAST = [e for e in ("openvino", "onnxruntime") if engines.is_installed(e)]
needs_engine = pytest.mark.skipif(not FAST, reason="neither openvino nor onnxruntime is installed")
TOL = 1e-5  # of the data range


def _raw(shape, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[-2], : shape[-1]]
    lam = 50 + 350 * (0.5 + 0.5 * np.sin(yy / 17.0) * np.cos(xx / 23.0))
    lam = np.broadcast_to(lam, shape)
    z = PARAMS.offset + PARAMS.gain * rng.poisson(lam) + rng.normal(0, PARAMS.electronic_sigma, shape)
    return z.astype(np.float32)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """A fresh cache folder. Converted engines stay in memory between tests (conversion takes
    seconds); the tests of the cache clear them (``fresh``)."""
    monkeypatch.setenv(engines.ENV_CACHE_DIR, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def fresh():
    engines._memo.clear()
    yield
    engines._memo.clear()


def _entries(cache, engine):
    folder = cache / engine
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _agree(a, b, image):
    """Largest difference as a fraction of the image's data range."""
    return float(np.abs(a - b).max()) / float(np.ptp(image))


@pytest.fixture(scope="module")
def default():
    return load_model("default")


# ----------------------------------------------------------------------------- choosing
def test_unknown_engine_is_one_line():
    with pytest.raises(MammoDenoiseError) as err:
        engines.resolve_engine("tensorrt", torch.device("cpu"))
    assert str(err.value) == "unknown engine 'tensorrt'; use one of: auto, torch, openvino, onnxruntime"


@pytest.mark.parametrize("engine, hint", [("openvino", 'pip install "napari-mammo-denoise[cpu-fast]"'),
                                          ("onnxruntime", "pip install onnxruntime onnx")])
def test_missing_engine_says_what_to_install_and_auto_falls_back(monkeypatch, engine, hint):
    for name in ("openvino", "onnxruntime"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    with pytest.raises(MammoDenoiseError) as err:
        engines.resolve_engine(engine, torch.device("cpu"))
    assert str(err.value) == f"engine {engine!r} is not installed: {hint}"
    assert engines.resolve_engine("auto", torch.device("cpu")) == "torch"
    info = {}
    z = _raw((40, 36))
    den = make_denoiser("unet", seed=0, base=4, depth=2)
    denoise(z, den, PARAMS, device="cpu", tile=None, info=info)
    assert info["engine"] == "torch" and info["device"] == "cpu"


def test_gpu_always_uses_torch():
    assert engines.resolve_engine("auto", torch.device("cuda")) == "torch"
    with pytest.raises(MammoDenoiseError, match="runs on the CPU only"):
        engines.resolve_engine("openvino", torch.device("cuda"))


@needs_engine
def test_auto_picks_the_first_installed_engine_and_reports_it(default):
    info = {}
    denoise(_raw((64, 72)), default, PARAMS, device="cpu", tile=None, safeguard=False, info=info)
    assert engines.AUTO_ORDER == ("openvino", "onnxruntime")  # the measured order (speed.py)
    assert info["engine"] == FAST[0]  # the first installed in that order
    assert info["ran"] == f"{FAST[0]} on cpu, {info['threads']} threads"
    assert info["summary"] == f"{info['ran']}: {info['seconds']:.1f} s"


@needs_engine
def test_auto_runs_a_net_outside_the_registry_in_torch():
    """A Denoiser around any nn.Module is converted only when an engine is named."""
    from mammo_denoise.models import Denoiser

    class Halve(torch.nn.Module):
        receptive_radius = 0

        def forward(self, x):
            return 0.5 * x

    den = Denoiser(Halve(), {"residual": True, "input_scale": 10.0, "domain": "anscombe"})
    info = {}
    denoise(_raw((24, 20)), den, PARAMS, device="cpu", tile=None, safeguard=False, info=info)
    assert info["engine"] == "torch"


# ----------------------------------------------------------------------------- same answer
_TORCH: dict = {}  # the PyTorch references, computed once for every engine


@needs_engine
@pytest.mark.parametrize("engine", FAST)
def test_engine_equals_torch_on_odd_sizes_tiles_and_stacks(default, engine, cache):
    z = _raw((2, 149, 181))
    for tile in (None, 144):  # one tile; 3 x 3 tiles per frame
        kw = dict(params=PARAMS, device="cpu", tile=tile, safeguard=False)
        if tile not in _TORCH:
            _TORCH[tile] = denoise(z, default, engine="torch", **kw)
        ref = _TORCH[tile]
        out = denoise(z, default, engine=engine, **kw)
        assert out.shape == z.shape and out.dtype == np.float32
        assert _agree(out, ref, z) < TOL  # one graph for every size: dynamic H and W
    np.testing.assert_array_equal(out[1], denoise(z[1], default, engine=engine, **kw))  # stack = frames


@needs_engine
@pytest.mark.parametrize("engine", FAST)
@pytest.mark.parametrize("arch, kw", [("dncnn", dict(depth=4, channels=8)), ("cae", {}),
                                      ("unet", dict(base=4, depth=2, unshuffle=2))])
def test_every_architecture_converts_exactly(engine, arch, kw):
    den = make_denoiser(arch, seed=1, **kw)
    for m in den.net.modules():  # BatchNorm with non-trivial statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    z = _raw((61, 47), seed=2)
    ref = denoise(z, den, PARAMS, device="cpu", tile=None, engine="torch", safeguard=False)
    out = denoise(z, den, PARAMS, device="cpu", tile=None, engine=engine, safeguard=False)
    assert _agree(out, ref, z) < TOL


@needs_engine
@pytest.mark.parametrize("engine", FAST)
def test_fine_tuned_model_gets_its_own_cache_entry_and_agrees(default, engine, cache, tmp_path, fresh):
    z = _raw((80, 96))
    kw = dict(params=PARAMS, device="cpu", tile=None, safeguard=False)
    base_out = denoise(z, default, engine=engine, **kw)
    tuned = load_model("default")
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for p in tuned.net.parameters():
            p.mul_(1 + 0.05 * torch.randn(p.shape, generator=g))
    path = save_model(tuned, tmp_path / "tuned")
    tuned = load_model(path)
    ref = denoise(z, tuned, engine="torch", **kw)
    out = denoise(z, tuned, engine=engine, **kw)
    assert len(_entries(cache, engine)) == 2
    assert _agree(out, ref, z) < TOL
    assert _agree(out, base_out, z) > 1e-4  # the tuned weights ran, not the default's cached graph


@needs_engine
@pytest.mark.parametrize("engine", FAST)
def test_engine_keeps_its_own_weights_and_survives_release(engine, fresh):
    """Fine-tuning in place after a conversion must not leak into the converted graph (its key
    names the old weights), also when the engine rebuilds itself after release()."""
    den = make_denoiser("unet", seed=0, base=4, depth=2).eval()
    run = engines.load_engine(engine, den.net, den.card, threads=1)
    x = torch.randn(1, 1, 32, 40, generator=torch.Generator().manual_seed(0))
    before = run(x).clone()
    with torch.no_grad():
        for p in den.net.parameters():
            p.mul_(2)
    run.release()
    torch.testing.assert_close(run(x), before, rtol=0, atol=0)


# ----------------------------------------------------------------------------- the cache
@needs_engine
@pytest.mark.parametrize("engine", FAST)
def test_converting_leaves_the_processs_stdout_and_stderr_alone(default, engine, monkeypatch, fresh):
    # Another thread's prints (the napari console, a log handler) must not vanish while an
    # engine converts the network.
    seen = []
    real = engines._example

    def example(net):
        seen.append((sys.stdout, sys.stderr))
        return real(net)

    monkeypatch.setattr(engines, "_example", example)
    out, err = sys.stdout, sys.stderr
    denoise(_raw((48, 52)), default, PARAMS, device="cpu", tile=None, engine=engine, safeguard=False)
    assert seen and all(o is out and e is err for o, e in seen)


@needs_engine
@pytest.mark.parametrize("engine", FAST)
def test_cache_is_reused_written_atomically_and_quiet(default, engine, cache, capfd, fresh):
    z = _raw((48, 52))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = denoise(z, default, PARAMS, device="cpu", tile=None, engine=engine, safeguard=False)
    assert not caught  # no TracerWarning or deprecation from the exporter
    assert capfd.readouterr() == ("", "")
    (entry,) = _entries(cache, engine)
    assert not entry.startswith(".")  # no temporary folder left behind
    engines._memo.clear()
    run = engines.load_engine(engine, default.net, default.card, threads=1)
    assert run.from_cache
    again = denoise(z, default, PARAMS, device="cpu", tile=None, engine=engine, safeguard=False)
    np.testing.assert_array_equal(again, first)


@needs_engine
@pytest.mark.parametrize("engine", FAST)
def test_unwritable_or_damaged_cache_converts_in_memory(default, engine, tmp_path, monkeypatch, fresh):
    z = _raw((48, 52))
    kw = dict(params=PARAMS, device="cpu", tile=None, safeguard=False)
    ref = denoise(z, default, engine="torch", **kw)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(engines.ENV_CACHE_DIR, str(blocker / "cache"))  # mkdir fails
    assert _agree(denoise(z, default, engine=engine, **kw), ref, z) < TOL
    # a damaged entry (truncated files) is converted again
    good = tmp_path / "good"
    monkeypatch.setenv(engines.ENV_CACHE_DIR, str(good))
    engines._memo.clear()  # else the engine converted above is reused
    denoise(z, default, engine=engine, **kw)
    for f in (good / engine).rglob("*.*"):
        f.write_bytes(b"garbage")
    engines._memo.clear()
    assert _agree(denoise(z, default, engine=engine, **kw), ref, z) < TOL
    engines._memo.clear()  # and the damaged entry was replaced by a good one
    assert engines.load_engine(engine, default.net, default.card, threads=1).from_cache


def test_cache_keeps_the_newest_entries(tmp_path, monkeypatch):
    import os

    monkeypatch.setattr(engines, "CACHE_KEEP", 3)
    folder = tmp_path / "openvino"
    folder.mkdir()
    for i in range(5):
        (folder / f"unet-old{i}").mkdir()
        os.utime(folder / f"unet-old{i}", (1000 + i, 1000 + i))
    assert engines._store(folder / "unet-new", lambda d: (d / "model.xml").write_text("x"))
    assert sorted(p.name for p in folder.iterdir()) == ["unet-new", "unet-old3", "unet-old4"]


def test_conversion_failure_falls_back_under_auto_and_is_one_line_when_asked(monkeypatch):
    class Broken:
        def __init__(self, *a, **k):
            raise RuntimeError("unsupported operator aten::frobnicate\nmore detail")

    monkeypatch.setattr(engines, "is_installed", lambda name: True)
    monkeypatch.setitem(engines._CLASSES, "openvino", Broken)
    den = make_denoiser("unet", seed=0, base=4, depth=2)
    z = _raw((40, 36))
    info = {}
    out = denoise(z, den, PARAMS, device="cpu", tile=None, info=info, safeguard=False)
    assert info["engine"] == "torch"
    np.testing.assert_array_equal(out, denoise(z, den, PARAMS, device="cpu", tile=None, engine="torch",
                                               safeguard=False))
    with pytest.raises(MammoDenoiseError) as err:
        denoise(z, den, PARAMS, device="cpu", tile=None, engine="openvino")
    assert str(err.value) == ("engine 'openvino' could not convert model 'unet': "
                              "unsupported operator aten::frobnicate")


# ----------------------------------------------------------------------------- command line
def test_cli_engine_option(tmp_path, monkeypatch, capsys):
    from mammo_denoise.cli import main

    src = tmp_path / "in.dcm"
    assert main(["phantom", str(src), "--size", "96x80", "--seed", "3"]) == 0
    capsys.readouterr()
    assert main(["denoise", str(src), "-o", str(tmp_path / "out.dcm"), "--engine", "torch", "--device", "cpu",
                 "--gain", "1", "--offset", "50", "--electronic-sigma", "3"]) == 0
    assert "s, torch on cpu, " in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert main(["denoise", str(src), "-o", str(tmp_path / "out2.dcm"), "--engine", "openvino"]) == 2
    assert capsys.readouterr().err == ('mammo-denoise denoise: error: engine \'openvino\' is not installed: '
                                       'pip install "napari-mammo-denoise[cpu-fast]"\n')
    assert not (tmp_path / "out2.dcm").exists()

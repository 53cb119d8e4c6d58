"""End to end through the console script: what a new user types after the README."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mammo_denoise.cli import main
from mammo_denoise.io import read_mammogram


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mammo_denoise.cli", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def phantom_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "phantom.dcm"
    truth = out.with_name("truth.npy")
    assert main(["phantom", str(out), "--seed", "3", "--size", "256x192", "--truth", str(truth)]) == 0
    return out


def test_phantom_writes_a_readable_for_processing_mammogram(phantom_file):
    image, meta = read_mammogram(phantom_file)
    assert image.shape == (256, 192)
    assert meta.modality == "MG"
    assert meta.presentation_intent == "FOR PROCESSING"
    assert meta.pixel_spacing_mm == pytest.approx((0.07, 0.07))
    truth = np.load(phantom_file.with_name("truth.npy"))
    # The written image is one noisy realisation of the saved truth.
    assert abs(float(np.mean(image - truth))) < 0.01 * float(np.mean(truth))


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (apt dicom3tools) not installed")
def test_phantom_passes_dciodvfy(phantom_file):
    report = subprocess.run(["dciodvfy", str(phantom_file)], capture_output=True, text=True)
    errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
    assert errors == []


def test_simulate_dose_file_scales_the_signal_above_offset(phantom_file, tmp_path):
    out = tmp_path / "low.dcm"
    result = run_cli("simulate-dose", str(phantom_file), "-o", str(out), "--dose", "0.25",
                     "--gain", "0.25", "--offset", "50", "--electronic-sigma", "3")
    assert result.returncode == 0, result.stderr
    full, _ = read_mammogram(phantom_file)
    low, meta = read_mammogram(out)
    assert low.shape == full.shape
    ratio = (low.mean() - 50.0) / (full.mean() - 50.0)
    assert ratio == pytest.approx(0.25, rel=0.02)
    assert "DERIVED" in meta.dataset.ImageType


def test_simulate_dose_folder_mirrors_the_tree(phantom_file, tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    shutil.copy(phantom_file, src / "a.dcm")
    shutil.copy(phantom_file, src / "sub" / "b.dcm")
    result = run_cli("simulate-dose", str(src), "-o", str(tmp_path / "out"), "--dose", "0.5")
    assert result.returncode == 0, result.stderr
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.dcm")) == [
        "a_dose50.dcm", "sub/b_dose50.dcm"]


def test_noise_params_json_recovers_the_phantom_detector(phantom_file):
    result = run_cli("noise-params", str(phantom_file), "--json")
    assert result.returncode == 0, result.stderr
    params = json.loads(result.stdout)
    assert params["gain"] == pytest.approx(0.25, rel=0.1)
    assert params["linear"] is True


@pytest.mark.parametrize("args, message", [
    (["noise-params", "missing.dcm"], "missing.dcm: no such file or folder"),
    (["simulate-dose", "missing.dcm", "-o", "x.dcm", "--dose", "0.2"], "missing.dcm: no such file or folder"),
])
def test_bad_input_is_one_line_and_nonzero(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli(*args)
    assert result.returncode == 2
    assert result.stderr.strip().endswith(message)
    assert len(result.stderr.strip().splitlines()) == 1


def test_not_dicom_is_reported_with_the_file_name(tmp_path):
    bad = tmp_path / "notes.dcm"
    bad.write_text("not an image")
    result = run_cli("noise-params", str(bad))
    assert result.returncode == 2
    assert str(bad) in result.stderr
    assert "Traceback" not in result.stderr


def _write(path, image, **meta_changes):
    import dataclasses

    from mammo_denoise.io import write_mammogram
    from mammo_denoise.physics.phantom import make_phantom

    meta = dataclasses.replace(make_phantom(seed=1, shape=image.shape).meta, **meta_changes)
    write_mammogram(image.astype(np.float32), path, meta)
    return path


@pytest.mark.parametrize("command", [["noise-params"], ["simulate-dose", "-o", "low.dcm", "--dose", "0.5"]])
def test_a_single_file_error_names_the_file(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flat = _write(tmp_path / "flat.dcm", np.full((128, 128), 100.0))
    assert main([command[0], str(flat), *command[1:]]) == 2
    assert capsys.readouterr().err.startswith(
        f"mammo-denoise {command[0]}: error: {flat}: too few usable blocks for noise estimation")


@pytest.mark.parametrize("command, task", [(["noise-params"], "noise estimation"),
                                           (["simulate-dose", "-o", "low.dcm", "--dose", "0.5"], "dose simulation")])
def test_a_processed_image_is_refused_as_not_raw(command, task, tmp_path, capsys, monkeypatch):
    # A log-processed FOR PRESENTATION image used to be blamed for "too narrow a signal range".
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    image = 400 * np.log(rng.poisson(np.linspace(50, 400, 192), (256, 192)) + 1.0)
    pres = _write(tmp_path / "pres.dcm", image, presentation_intent="FOR PRESENTATION",
                  pixel_intensity_relationship="LOG")
    assert main([command[0], str(pres), *command[1:]]) == 2
    assert capsys.readouterr().err.strip() == (
        f"mammo-denoise {command[0]}: error: {pres}: not raw detector data (FOR PRESENTATION, LOG): "
        f"{task} needs a linear FOR PROCESSING image, where the Poisson-Gaussian noise model holds")


def _three(root, image, **meta_changes):
    root.mkdir()
    return [_write(root / f"{name}.dcm", image, **meta_changes) for name in "abc"]


def test_each_file_fitted_without_a_dark_region_gets_one_plain_note(tmp_path):
    # Python printed such notes as warnings with a source line, and once per process.
    from mammo_denoise.physics.phantom import make_phantom

    files = _three(tmp_path / "in", make_phantom(seed=1, shape=(256, 192)).noisy[64:192, :64])
    result = run_cli("noise-params", str(tmp_path / "in"))
    assert result.returncode == 0, result.stderr
    notes = result.stderr.strip().splitlines()
    assert [n.split(": note: ")[0] for n in notes] == [str(f) for f in files]
    assert all(": note: no unexposed (dark) region found and no offset given" in n for n in notes)


def test_each_processed_file_denoised_gets_one_plain_note(tmp_path):
    from mammo_denoise.physics.phantom import make_phantom

    files = _three(tmp_path / "in", make_phantom(seed=1, shape=(128, 96)).noisy,
                   presentation_intent="FOR PRESENTATION")
    result = run_cli("denoise", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "denoise(" not in result.stderr  # no raw warning
    for f in files:
        assert f"{f}: note: image is not linear raw data (FOR PRESENTATION or LOG)" in result.stderr.splitlines()[
            [line.split(": note: ")[0] for line in result.stderr.splitlines()].index(str(f))]


def test_invalid_dose_is_rejected_by_the_parser(phantom_file, tmp_path):
    result = run_cli("simulate-dose", str(phantom_file), "-o", str(tmp_path / "x.dcm"), "--dose", "1.5")
    assert result.returncode == 2
    assert "dose fraction must be in (0, 1], got 1.5" in result.stderr


@pytest.mark.parametrize("command", ["phantom", "simulate-dose", "noise-params", "denoise", "train",
                                     "models", "demo"])
def test_every_command_has_help(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0
    assert "usage: mammo-denoise " + command in result.stdout


def test_models_lists_the_shipped_default_with_its_held_out_numbers(tmp_path, monkeypatch):
    from mammo_denoise.models import list_models

    monkeypatch.setenv("MAMMO_DENOISE_MODEL_DIR", str(tmp_path / "my models"))
    result = run_cli("models")
    assert result.returncode == 0
    assert f"your models (trained with --out here, or saved from napari): {tmp_path / 'my models'}" in result.stdout
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("mammo-unet "))
    held = next(i.card for i in list_models() if i.name == "mammo-unet")["metrics"]["held_out"]
    assert "shipped" in line and f"PSNR {held['psnr_db']:.2f} dB (BM3D {held['bm3d_psnr_db']:.2f})" in line
    assert result.stdout.splitlines()[-1] == "default (used when --model is not given): mammo-unet"


def test_model_summary_says_what_the_model_was_trained_on():
    from mammo_denoise.models import card_summary

    card = {"dose_range": [0.1, 0.5], "metrics": {"val_psnr": 48.04, "val_psnr_noisy": 41.5}}
    assert card_summary(card) == "dose 0.1-0.5; validation PSNR 48.0 dB (noisy 41.5)"
    card["training"] = {"data": {"phantoms": 0, "files": ["a.dcm", "b.dcm"], "images": 1},
                        "init": "/models/mammo-unet.safetensors"}
    assert card_summary(card).startswith("trained on 3 images, from mammo-unet; dose 0.1-0.5; ")
    card["training"] = {"data": {"phantoms": 60, "files": [], "images": 0}}
    assert card_summary(card).startswith("trained on synthetic phantoms only; ")
    # Fine-tuned on two images after phantom training: the stages say both, and no "from".
    card["training"]["stages"] = [{"data": {"phantoms": 60}, "init": None},
                                  {"data": {"files": ["a.dcm", "b.dcm"]}, "init": "/tmp/x.safetensors"}]
    assert card_summary(card).startswith("trained on synthetic phantoms and 2 images; dose")
    card["macs_per_pixel"] = 1_721_472
    assert card_summary(card).startswith("1.72 M MAC/pixel; trained on synthetic phantoms and 2 images;")
    assert card_summary({}) == ""


# --------------------------------------------------------------------------- denoise, demo, train
@pytest.fixture(scope="module")
def low_dose(tmp_path_factory):
    """A 20 %-dose phantom and its noise-free image at that dose."""
    out = tmp_path_factory.mktemp("low") / "low.dcm"
    truth = out.with_name("truth.npy")
    assert main(["phantom", str(out), "--seed", "5", "--size", "256x192", "--dose", "0.2",
                 "--truth", str(truth)]) == 0
    return out, np.load(truth)


def _psnr(image, truth):
    from mammo_denoise.metrics import psnr

    return psnr(image, truth, data_range=float(truth.max() - truth.min()))


def test_denoise_file_writes_a_derived_image_closer_to_the_truth(low_dose, tmp_path, capsys):
    import pydicom

    src, truth = low_dose
    dest = tmp_path / "denoised.dcm"
    assert main(["denoise", str(src), "-o", str(dest)]) == 0
    assert f"wrote {dest}" in capsys.readouterr().out
    noisy, _ = read_mammogram(src)
    denoised, meta = read_mammogram(dest)
    assert denoised.shape == noisy.shape
    assert _psnr(denoised, truth) > _psnr(noisy, truth) + 5.0
    ds = pydicom.dcmread(dest)
    assert "DERIVED" in ds.ImageType
    assert ds.DerivationDescription.startswith("Denoised with mammo-unet")
    assert ds.SOPInstanceUID != pydicom.dcmread(src).SOPInstanceUID


def test_denoise_into_a_folder_names_the_result_after_the_input(low_dose, tmp_path):
    src, _ = low_dose
    assert main(["denoise", str(src), "-o", str(tmp_path)]) == 0
    assert (tmp_path / "low_denoised.dcm").is_file()


def test_denoise_overlap_0_is_accepted_and_changes_nothing(low_dose, tmp_path):
    # 0 means no cross-fade band; the model's context is kept, so the result is the default's.
    src, _ = low_dose
    assert main(["denoise", str(src), "-o", str(tmp_path / "a.dcm"), "--tile", "128", "--overlap", "0"]) == 0
    assert main(["denoise", str(src), "-o", str(tmp_path / "b.dcm")]) == 0
    a, b = read_mammogram(tmp_path / "a.dcm")[0], read_mammogram(tmp_path / "b.dcm")[0]
    assert np.abs(a - b).max() <= 1e-4 * float(np.ptp(b)) + 1.0  # + stored-integer rounding
    result = run_cli("denoise", str(src), "-o", str(tmp_path / "c.dcm"), "--overlap", "-8")
    assert result.returncode == 2 and "argument --overlap: must be >= 0, got -8" in result.stderr


def test_denoise_refuses_to_overwrite_its_input(low_dose, tmp_path, capsys):
    src = tmp_path / "scan.dcm"
    shutil.copy(low_dose[0], src)
    before = src.read_bytes()
    assert main(["denoise", str(src), "-o", str(src)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"mammo-denoise denoise: error: {src}: the output would overwrite this input; choose another -o"
    assert src.read_bytes() == before


def test_denoise_folder_mirrors_the_tree_and_skips_bad_files(low_dose, tmp_path, capsys):
    root = tmp_path / "in"
    (root / "left").mkdir(parents=True)
    shutil.copy(low_dose[0], root / "a.dcm")
    shutil.copy(low_dose[0], root / "left" / "b.dcm")
    (root / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert main(["denoise", str(root), "-o", str(out)]) == 2
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.dcm")) == \
        ["a_denoised.dcm", "left/b_denoised.dcm"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert err[0].startswith(f"mammo-denoise denoise: skipped {root / 'notes.txt'}: ")
    assert err[1] == "mammo-denoise denoise: 1 of 3 files failed (see above)"


def test_denoise_again_into_a_folder_inside_the_input_skips_its_own_results(low_dose, tmp_path):
    root = tmp_path / "study"
    root.mkdir()
    shutil.copy(low_dose[0], root / "cc.dcm")
    for _ in range(2):
        assert main(["denoise", str(root), "-o", str(root / "denoised")]) == 0
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.dcm")) == \
        ["cc.dcm", "denoised/cc_denoised.dcm"]


@pytest.mark.parametrize("command", [["denoise"], ["simulate-dose", "--dose", "0.5"]])
def test_a_folder_into_an_existing_file_fails_before_any_work(command, low_dose, tmp_path, capsys, monkeypatch):
    import mammo_denoise.io as io

    root = tmp_path / "in"
    root.mkdir()
    shutil.copy(low_dose[0], root / "a.dcm")
    existing = tmp_path / "ph.dcm"
    shutil.copy(low_dose[0], existing)
    monkeypatch.setattr(io, "read_mammogram", lambda *a, **k: pytest.fail("read an input"))
    for out, why in [(existing, "the output for a folder must be a folder (a new or an existing one)"),
                     (existing / "out", f"cannot hold {existing / 'out'}; choose another -o")]:
        assert main([*command[:1], str(root), "-o", str(out), *command[1:]]) == 2
        assert capsys.readouterr().err.strip() == f"mammo-denoise {command[0]}: error: {existing}: is a file: {why}"


def test_denoise_folder_leaves_out_its_own_earlier_outputs(low_dose, tmp_path, capsys):
    root = tmp_path / "study"
    root.mkdir()
    shutil.copy(low_dose[0], root / "cc.dcm")
    assert main(["denoise", str(low_dose[0]), "-o", str(root / "renamed.dcm")]) == 0  # header says so
    shutil.copy(root / "renamed.dcm", root / "mlo_denoised.dcm")  # the name says so
    capsys.readouterr()
    assert main(["denoise", str(root), "-o", str(tmp_path / "out")]) == 0
    assert [p.name for p in (tmp_path / "out").rglob("*.dcm")] == ["cc_denoised.dcm"]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"mammo-denoise denoise: note: left out 2 files this command wrote earlier "
                   f"({root / 'mlo_denoised.dcm'}, {root / 'renamed.dcm'})"]


def test_torchrun_ranks_share_a_folder(low_dose, tmp_path, monkeypatch):
    root = tmp_path / "in"
    root.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(low_dose[0], root / f"{name}.dcm")
    written = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        out = tmp_path / f"rank{rank}"
        assert main(["denoise", str(root), "-o", str(out), "--quiet"]) == 0
        written.append(sorted(p.name for p in out.glob("*.dcm")))
    assert written == [["a_denoised.dcm", "c_denoised.dcm"], ["b_denoised.dcm"]]


def test_simulate_dose_refuses_to_overwrite_its_input(phantom_file, tmp_path):
    src = tmp_path / "scan.dcm"
    shutil.copy(phantom_file, src)
    result = run_cli("simulate-dose", str(src), "-o", str(src), "--dose", "0.5")
    assert result.returncode == 2
    assert result.stderr.strip().endswith("the output would overwrite this input; choose another -o")


def test_demo_writes_dicom_and_pngs_and_reports_an_improvement(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", str(out), "--size", "384x288"]) == 0
    for name in ("noisy.dcm", "denoised.dcm", "noisy.png", "denoised.png", "difference.png", "comparison.png"):
        assert (out / name).stat().st_size > 0, name
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("PSNR"))
    match = re.match(r"PSNR \(data range = breast max - min of the truth\): noisy (\S+) dB -> denoised "
                     r"(\S+) dB; SSIM (\S+) -> (\S+)$", line)
    noisy_db, denoised_db, noisy_ssim, denoised_ssim = map(float, match.groups())
    assert denoised_db > noisy_db + 5.0
    assert noisy_ssim < denoised_ssim < 1.0
    # On README's (and the benchmarks') scale, 28.2 -> 37.3 dB at 20 % dose: the demo used to
    # take the range from the whole breast's thin edge and print ~52 -> 61 dB.
    assert 25.0 < noisy_db < 32.0 and 33.0 < denoised_db < 41.0


def test_demo_help_gives_the_defaults_and_seed_options_name_the_paper():
    demo = run_cli("demo", "--help").stdout
    for default in ("default: mammo-demo", "default: 1000", "default: 1536x1152", "default: 0.2"):
        assert default in demo, default
    for command in ("simulate-dose", "noise-params", "train"):
        text = run_cli(command, "--help").stdout
        assert "first seed" not in text and "Eckert et al. 2019" in " ".join(text.split()), command


def test_train_cli_writes_a_model_whose_card_records_the_command(tmp_path, capsys):
    from mammo_denoise.models import load_model

    out = tmp_path / "tiny model.safetensors"
    argv = ["train", "--out", str(out), "--phantoms", "2", "--phantom-size", "128x128", "--epochs", "1",
            "--iters-per-epoch", "2", "--patch", "32", "--batch-size", "2", "--seed", "3"]
    assert main(argv) == 0
    card = load_model(out).card
    assert card["training"]["command"] == "mammo-denoise train --out " + shlex.quote(str(out)) + " " + \
        " ".join(argv[3:])
    assert card["training"]["seed"] == 3 and card["training"]["patch"] == 32
    assert "val PSNR: data range = breast max - min of the truth" in capsys.readouterr().out


def test_denoise_strength_keeps_that_share_of_what_the_network_removed(low_dose, tmp_path):
    import pydicom

    src, _ = low_dose
    full, half = tmp_path / "full.dcm", tmp_path / "half.dcm"
    assert main(["denoise", str(src), "-o", str(full), "--quiet"]) == 0
    assert main(["denoise", str(src), "-o", str(half), "--strength", "0.5", "--quiet"]) == 0
    noisy = read_mammogram(src)[0].astype(np.float64)
    removed_full = noisy - read_mammogram(full)[0]
    removed_half = noisy - read_mammogram(half)[0]
    # stored as integers: one DN of rounding per image
    np.testing.assert_allclose(removed_half, 0.5 * removed_full, atol=1.01)
    assert removed_full.std() > 10.0
    assert "at strength 0.5" in pydicom.dcmread(half).DerivationDescription


def test_denoise_amp_reaches_the_network_and_changes_nothing_on_cpu(low_dose, tmp_path, monkeypatch):
    from mammo_denoise import inference

    seen, real = [], inference.denoise

    def spy(*args, **kwargs):
        seen.append(kwargs["amp"])
        return real(*args, **kwargs)

    monkeypatch.setattr(inference, "denoise", spy)
    src, _ = low_dose
    plain, amp = tmp_path / "plain.dcm", tmp_path / "amp.dcm"
    assert main(["denoise", str(src), "-o", str(plain), "--device", "cpu", "--quiet"]) == 0
    assert main(["denoise", str(src), "-o", str(amp), "--device", "cpu", "--amp", "--quiet"]) == 0
    assert seen == [False, True]
    np.testing.assert_array_equal(read_mammogram(plain)[0], read_mammogram(amp)[0])


def test_denoise_strength_out_of_range_is_rejected_by_the_parser(low_dose, tmp_path):
    result = run_cli("denoise", str(low_dose[0]), "-o", str(tmp_path / "x.dcm"), "--strength", "2")
    assert result.returncode == 2
    assert "strength must be between 0 and 1, got 2" in result.stderr


def test_an_output_that_cannot_be_written_is_one_line_naming_it(low_dose, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    dest = blocker / "denoised.dcm"
    result = run_cli("denoise", str(low_dose[0]), "-o", str(dest), "--quiet")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and str(blocker) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_train_on_cuda_without_workers_suggests_them(tmp_path, capsys, monkeypatch):
    import torch

    import mammo_denoise.cli as cli

    monkeypatch.setattr(cli, "_cuda_available", lambda: True)
    base = ["train", "--phantoms", "2", "--phantom-size", "128x128", "--epochs", "1", "--iters-per-epoch", "1",
            "--patch", "32", "--batch-size", "2", "--device", "cpu"]
    # --device cpu: no note, even where CUDA is available
    assert main(base + ["--out", str(tmp_path / "a.safetensors")]) == 0
    assert "--workers" not in capsys.readouterr().err
    auto = [a if a != "cpu" else "auto" for a in base]
    monkeypatch.setattr(cli, "_cuda_available", lambda: False)
    assert main(auto + ["--out", str(tmp_path / "b.safetensors")]) == 0
    assert "--workers" not in capsys.readouterr().err
    monkeypatch.setattr(cli, "_cuda_available", lambda: True)
    # the note is printed before training starts; the run itself stays on this machine's CPU
    monkeypatch.setattr("mammo_denoise.training.loop._pick_device", lambda *a, **k: torch.device("cpu"))
    assert main(auto + ["--out", str(tmp_path / "c.safetensors")]) == 0
    assert "training on CUDA with --workers 0" in capsys.readouterr().err


def test_denoise_with_known_parameters_uses_them(low_dose, tmp_path):
    from mammo_denoise.inference import denoise
    from mammo_denoise.physics.phantom import make_phantom

    src, _ = low_dose
    params = make_phantom(seed=5, shape=(64, 64)).params  # the phantom command's detector
    dest = tmp_path / "known.dcm"
    assert main(["denoise", str(src), "-o", str(dest), "--gain", str(params.gain), "--offset",
                 str(params.offset), "--electronic-sigma", str(params.electronic_sigma)]) == 0
    noisy, _ = read_mammogram(src)
    expected = denoise(noisy, params=params, device="cpu")
    got, _ = read_mammogram(dest)
    assert np.abs(got - expected).max() <= 1.0  # the derived file's integer rounding


def test_denoise_with_a_gain_wrong_by_3x_says_so_and_flags_the_file(low_dose, tmp_path, capsys):
    import pydicom

    from mammo_denoise.physics.phantom import make_phantom

    src, truth = low_dose
    params = make_phantom(seed=5, shape=(64, 64)).params
    dest = tmp_path / "wrong.dcm"
    assert main(["denoise", str(src), "-o", str(dest), "--gain", str(3 * params.gain), "--offset",
                 str(params.offset), "--electronic-sigma", str(params.electronic_sigma)]) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "noise model mismatch" in line]
    assert len(notes) == 1 and notes[0].startswith(f"{src}: note: ")
    assert "the input's noise is 0." in notes[0] and "Traceback" not in err and ".py:" not in err
    ds = pydicom.dcmread(dest)
    assert "WARNING noise model mismatch" in ds.DerivationDescription
    noisy, _ = read_mammogram(src)
    denoised, _ = read_mammogram(dest)
    assert _psnr(denoised, truth) > _psnr(noisy, truth)  # never worse than the input


def test_train_takes_known_detector_parameters_and_anatomy_options(tmp_path):
    from mammo_denoise.models import load_model

    clean = tmp_path / "data" / "clean.dcm"
    clean.parent.mkdir()
    assert main(["phantom", str(clean), "--seed", "4", "--size", "128x128"]) == 0
    out = tmp_path / "known.safetensors"
    assert main(["train", str(clean.parent), "--out", str(out), "--gain", "0.25", "--offset", "50",
                 "--electronic-sigma", "3", "--epochs", "1", "--iters-per-epoch", "1", "--patch", "32",
                 "--batch-size", "2", "--dose-range", "0.05", "1", "--dose-distribution",
                 "log-uniform"]) == 0
    data = load_model(out).card["training"]["data"]
    assert data["files_noise_params"].startswith("given: NoiseParams(offset=50.0, gain=0.25")
    assert data["dose_distribution"] == "log-uniform"


def test_train_on_files_says_each_files_noise_note_plainly(tmp_path):
    import shutil as _shutil

    from mammo_denoise.io import write_mammogram
    from mammo_denoise.physics.phantom import make_phantom

    data = tmp_path / "data"
    data.mkdir()
    ph = make_phantom(seed=1, shape=(256, 256))  # cropped inside the breast: no unexposed region
    write_mammogram(ph.noisy[64:192, 16:144], data / "crop1.dcm", ph.meta)
    _shutil.copy(data / "crop1.dcm", data / "crop2.dcm")  # the same note again: said again
    done = run_cli("train", str(data), "--out", str(tmp_path / "m.safetensors"), "--epochs", "1",
                   "--iters-per-epoch", "1", "--patch", "32", "--batch-size", "2")
    assert done.returncode == 0, done.stderr
    notes = [ln for ln in done.stderr.splitlines() if "no unexposed (dark) region" in ln]
    assert [n.split(": no unexposed")[0] for n in notes] == [
        "mammo-denoise train: note: crop1.dcm", "mammo-denoise train: note: crop2.dcm"]
    assert ".py:" not in done.stderr and "warnings.warn" not in done.stderr

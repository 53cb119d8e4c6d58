"""What the README promises about installing and using the package matches the repository."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CI = (ROOT / ".ci" / "run").read_text()


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, flags=re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def _ci_apt_packages() -> set[str]:
    command = re.search(r"apt-get install ([^>]*)>", CI, flags=re.S).group(1)
    return {w for w in command.replace("\\\n", " ").split() if not w.startswith("-")}


def test_readme_installs_the_system_packages_ci_installs():
    # Without libxcb-icccm4 and libxcb-keysyms1 the napari tests abort (issue #23).
    lines = [ln for ln in _section("Install").splitlines() if "sudo apt-get install" in ln]
    assert len(lines) == 1
    assert _ci_apt_packages() <= set(lines[0].split())


def test_readme_gives_cpu_users_the_cpu_build_of_the_torch_ci_pins():
    pinned = re.search(r'"torch==([\d.]+)"', CI).group(1)
    install = _section("Install")
    assert f"pip install torch=={pinned} --index-url https://download.pytorch.org/whl/cpu" in install
    assert "python3 -m venv" in install and 'pip install -e ".[test]"' in install


def test_license_is_the_bsd_3_clause_licence_pyproject_declares():
    assert 'license = { text = "BSD-3-Clause" }' in (ROOT / "pyproject.toml").read_text()
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License\n\nCopyright (c) 2026, napari-mammo-denoise developers\n")
    assert "Neither the name of the copyright holder nor the names of its" in text


def test_intended_use_names_every_shipped_model_and_its_training_data():
    section = _section("Intended use")
    assert "not for diagnosis" in section and "research and education" in section
    for card in sorted((ROOT / "src" / "mammo_denoise" / "models" / "weights").glob("*.json")):
        name = json.loads(card.read_text())["name"]
        assert f"`{name}`" in section, f"{name} is shipped but the intended-use statement does not say what it was trained on"


def test_quick_start_shows_what_the_demo_prints_and_writes():
    quick = _section("Quick start")
    assert "PSNR (data range = breast max - min of the truth): noisy" in quick
    for name in ("noisy.dcm", "denoised.dcm", "noisy.png", "denoised.png", "difference.png",
                 "residual_sigma.png", "comparison.png"):
        assert name in quick, name

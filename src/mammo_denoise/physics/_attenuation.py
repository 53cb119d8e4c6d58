"""Linear attenuation coefficients of breast tissues (cm^-1) at mammographic energies."""

from __future__ import annotations

from functools import lru_cache

from ..errors import MammoDenoiseError

# Built in so that no optional package is needed at the usual energies.
# adipose / glandular: Johns & Yaffe, Phys Med Biol 32:675 (1987), as quoted in PHYSICS.md s.4.
# skin at 20 keV and hydroxyapatite at 20 keV: PHYSICS.md s.4. Skin at 18/25 keV and
# hydroxyapatite at 18/25 keV were computed once with xraydb 4.5 from the compositions below
# (skin ICRU 46, 1.09 g/cm3; hydroxyapatite Ca10(PO4)6(OH)2, 3.16 g/cm3, which reproduces 20.7
# at 20 keV).
_TABLE: dict[float, dict[str, float]] = {
    18.0: {"adipose": 0.635, "glandular": 1.003, "skin": 1.073, "hydroxyapatite": 28.0},
    20.0: {"adipose": 0.513, "glandular": 0.786, "skin": 0.841, "hydroxyapatite": 20.7},
    25.0: {"adipose": 0.353, "glandular": 0.503, "skin": 0.531, "hydroxyapatite": 11.0},
}

# Elemental weight fractions (%) and densities (g/cm3) for other energies (xraydb).
# Adipose and glandular: Hammerstein et al., Radiology 130:485 (1979); skin: ICRU 46.
_COMPOSITIONS = {
    "adipose": (0.93, {"H": 11.2, "C": 61.9, "N": 1.7, "O": 25.1, "P": 0.025, "S": 0.025,
                       "K": 0.025, "Ca": 0.025}),
    "glandular": (1.04, {"H": 10.2, "C": 18.4, "N": 3.2, "O": 67.7, "P": 0.125, "S": 0.125,
                         "K": 0.125, "Ca": 0.125}),
    "skin": (1.09, {"H": 10.0, "C": 20.4, "N": 4.2, "O": 64.5, "Na": 0.2, "P": 0.1, "S": 0.2,
                    "Cl": 0.3, "K": 0.1}),
}
_HYDROXYAPATITE = ("Ca10(PO4)6(OH)2", 3.16)


def attenuation_coefficients(energy_kev: float = 20.0) -> dict[str, float]:
    """Linear attenuation (cm^-1) of adipose, glandular, skin and hydroxyapatite.

    18, 20 and 25 keV come from the built-in table; any other energy (10-150 keV) is computed
    with ``xraydb`` (Elam tables, total attenuation incl. coherent scatter), which must then be
    installed. The pectoral muscle is given glandular attenuation (muscle is within ~8 %).
    """
    energy = float(energy_kev)
    for known, values in _TABLE.items():
        if abs(energy - known) < 1e-6:
            return dict(values)
    if not 10.0 <= energy <= 150.0:
        raise MammoDenoiseError(f"energy_kev must be within 10-150 keV, got {energy_kev}")
    return dict(_xraydb_coefficients(round(energy, 6)))


@lru_cache(maxsize=32)
def _xraydb_coefficients(energy_kev: float) -> tuple[tuple[str, float], ...]:
    try:
        import xraydb
    except ImportError:  # pragma: no cover - depends on the environment
        raise MammoDenoiseError(
            f"attenuation at {energy_kev} keV needs xraydb (built in: 18, 20, 25 keV): "
            "pip install xraydb"
        ) from None
    ev = energy_kev * 1000.0
    out = {}
    for name, (density, weights) in _COMPOSITIONS.items():
        total = sum(weights.values())
        out[name] = density * sum(
            w / total * float(xraydb.mu_elam(el, ev)) for el, w in weights.items()
        )
    formula, density = _HYDROXYAPATITE
    out["hydroxyapatite"] = float(xraydb.material_mu(formula, ev, density=density))
    return tuple(out.items())

"""Write the held-out numbers of sections 0 and 1 into the cards of the shipped models.

    python benchmarks/card_metrics.py

Reads ``results/quality.json`` (phantoms) and ``results/real_anatomy.json`` (held-out mini-MIAS
women) and, for each shipped model that was run in them with the very weights now shipped (same
sha256, not a carried row), sets the card's ``metrics.held_out`` and
``metrics.held_out_real_anatomy``: what ``mammo-denoise models`` and the napari widgets show.
Cards of models a run did not cover are left alone and named.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

from mammo_denoise.models import list_models  # noqa: E402


def held_out(doc: dict, label: str) -> dict:
    summary = doc["summary"]
    mine, bm3d = summary[label], summary[C.BM3D]
    return {
        "benchmark": "benchmarks/quality.py (BENCHMARKS.md section 1)",
        "date": doc["date"],
        "phantoms": doc["settings"]["phantoms"],
        "dose": doc["settings"]["dose"],
        "psnr_db": round(mine["psnr"]["mean"], 3),
        "ssim": round(mine["ssim"]["mean"], 4),
        "calc_contrast_ratio": round(mine["calc_contrast_ratio"]["mean"], 3),
        "calc_contrast_ratio_by_size": {k: round(v["ratio"], 3) for k, v in mine["calc_by_size"].items()},
        "bm3d_psnr_db": round(bm3d["psnr"]["mean"], 3),
        "bm3d_ssim": round(bm3d["ssim"]["mean"], 4),
        "psnr_minus_bm3d_db": round(mine["psnr"]["mean"] - bm3d["psnr"]["mean"], 3),
    }


def held_out_real(doc: dict, label: str) -> dict:
    """At 20 % dose, both truths: PSNR and SSIM against BM3D and the regions worse than the input."""
    out = {"benchmark": "benchmarks/real_anatomy.py (BENCHMARKS.md section 0)", "date": doc["date"],
           "regions": doc["settings"]["regions"], "dose": 0.2}
    for key, entry in doc["table"].items():
        truth, dose = key.split(" @ ")
        if float(dose) != 0.2 or label not in entry:
            continue
        e = entry[label]
        out[truth] = {"psnr_db": round(e["psnr"]["mean"], 3),
                      "psnr_minus_bm3d_db": round(e["minus_bm3d_db"]["mean"], 3),
                      "ssim_minus_bm3d": round(e["ssim_minus_bm3d"]["mean"], 4),
                      "worse_than_input": e["worse_than_input"]}
    return out


def _labels_by_sha(doc: dict) -> dict:
    """sha256 -> label of the models run in ``doc`` (results/real_anatomy.json)."""
    labels = {}
    for m in doc["models"]:
        card = Path(m["path"]).with_suffix(".json")
        if card.exists():
            labels[json.loads(card.read_text()).get("sha256")] = m["label"]
    return labels


def main() -> None:
    real_doc = C.load_result("real_anatomy", required=False)
    real_labels = _labels_by_sha(real_doc) if real_doc is not None else {}
    doc = C.load_result("quality")
    run_here = {m["sha256"]: m["label"] for m in doc["models"] if not m.get("carried_from")}
    for info in list_models():
        if info.source != "shipped":
            continue
        label = run_here.get(info.card.get("sha256"))
        if label is None:
            print(f"{info.name}: not in results/quality.json of {doc['date']} with these weights; card left alone")
            continue
        card = dict(info.card)
        card["metrics"] = {**card.get("metrics", {}), "held_out": held_out(doc, label)}
        real_label = real_labels.get(info.card.get("sha256"))
        if real_doc is not None and real_label is not None:
            card["metrics"]["held_out_real_anatomy"] = held_out_real(real_doc, real_label)
        card_path = info.path.with_suffix(".json")
        card_path.write_text(json.dumps(card, indent=2) + "\n")
        h = card["metrics"]["held_out"]
        print(f"{info.name} (row {label}): PSNR {h['psnr_db']} dB ({h['psnr_minus_bm3d_db']:+} over BM3D), "
              f"SSIM {h['ssim']}, calcification contrast {h['calc_contrast_ratio']} -> {card_path}")


if __name__ == "__main__":
    main()

"""Write section 1's held-out numbers into the cards of the shipped models.

    python benchmarks/card_metrics.py

Reads ``results/quality.json`` and, for each shipped model that was run in it with the very
weights now shipped (same sha256, not a carried row), sets the card's ``metrics.held_out``: what
``mammo-denoise models`` and the napari widgets show. Cards of models the run did not cover are
left alone and named.
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


def main() -> None:
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
        card_path = info.path.with_suffix(".json")
        card_path.write_text(json.dumps(card, indent=2) + "\n")
        h = card["metrics"]["held_out"]
        print(f"{info.name} (row {label}): PSNR {h['psnr_db']} dB ({h['psnr_minus_bm3d_db']:+} over BM3D), "
              f"SSIM {h['ssim']}, calcification contrast {h['calc_contrast_ratio']} -> {card_path}")


if __name__ == "__main__":
    main()

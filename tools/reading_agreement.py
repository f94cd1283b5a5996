"""The web page's reading on its working grid against the full-resolution reading.

For each photo: the model once, then the reading two ways — at the photo's own pixels (what the
downloads and the CLI compute: ``read_photo`` with full-resolution masks) and on the working
grid (what the page shows: ``read_working`` with working masks) — at the checkpoint's
thresholds. Prints, per photo and in total: how far apart the two discs and foveae are (in disc
diameters of the full reading), the DME grades, the quality verdicts and the lesion counts.

    .venv/bin/python tools/reading_agreement.py                 # IDRiD's 103 grading test photos
    .venv/bin/python tools/reading_agreement.py --limit 10 --csv artifacts/reading_agreement.csv

Needs IDRiD under ``data/idrid`` (official layout) unless photos are given.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IDRID_TEST = ROOT / "data/idrid/B. Disease Grading/1. Original Images/b. Testing Set"


def compare(loaded, path: Path) -> dict:
    from hydralanet import CLASSES, lesion_statistics, predict_square, read_image
    from hydralanet.inference.working import working_photo
    from hydralanet.reading.photo import LESION_EXCLUSION_P, findings, read_photo, read_working

    image = read_image(path)
    prediction = predict_square(loaded, image)
    thresholds = loaded.config.thresholds
    started = time.perf_counter()
    full = prediction.full()
    masks = full.masks(thresholds)
    photo = read_photo(image, full.fov, probabilities=full.probabilities)
    found = findings(photo, masks)
    rows = lesion_statistics(masks, full.fov, thresholds)
    full_s = time.perf_counter() - started
    started = time.perf_counter()
    work = working_photo(prediction)
    work_masks = work.masks(thresholds)
    lesions = prediction.masks(dict.fromkeys(CLASSES, LESION_EXCLUSION_P)).any(axis=0)  # as the page
    quick = findings(read_working(work, image, full.fov, lesions=lesions), work_masks)
    work_rows = work.statistics(work_masks, thresholds)
    work_s = time.perf_counter() - started
    row = {"photo": path.name, "full_s": round(full_s, 2), "working_s": round(work_s, 2)}
    dd = (found["optic_disc"] or {}).get("diameter_px")
    for name in ("optic_disc", "fovea"):
        a, b = found[name], quick[name]
        key = "disc" if name == "optic_disc" else "fovea"
        row[f"{key}_found"] = f"{a is not None}/{b is not None}"
        row[f"{key}_dd"] = round(math.dist((a["x"], a["y"]), (b["x"], b["y"])) / dd, 4) if a and b and dd else None
    if found["optic_disc"] and quick["optic_disc"]:
        row["disc_size_ratio"] = round(quick["optic_disc"]["diameter_px"] / dd, 4)
    row["dme_full"], row["dme_working"] = found["dme_risk"], quick["dme_risk"]
    row["quality_full"], row["quality_working"] = found["quality"]["verdict"], quick["quality"]["verdict"]
    for c, a, b in zip(CLASSES, rows, work_rows):
        row[f"{c}_count"] = f"{a['count']}/{b['count']}"
        row[f"{c}_px_ratio"] = round(b["pixels"] / a["pixels"], 4) if a["pixels"] else None
    return row


def summary(rows: list[dict]) -> list[str]:
    def worst(key: str) -> str:
        values = [r[key] for r in rows if r.get(key) is not None]
        if not values:
            return "-"
        values.sort()
        return (
            f"max {values[-1]:.4f}, median {values[len(values) // 2]:.4f}, over 0.02: {sum(v > 0.02 for v in values)}"
        )

    same_dme = sum(r["dme_full"] == r["dme_working"] for r in rows)
    same_quality = sum(r["quality_full"] == r["quality_working"] for r in rows)
    same_found = sum(
        r["disc_found"] in ("True/True", "False/False") and r["fovea_found"][:4] == r["fovea_found"][-4:] for r in rows
    )
    lines = [
        f"photos: {len(rows)}",
        f"disc centre, working vs full (DD): {worst('disc_dd')}",
        f"fovea, working vs full (DD): {worst('fovea_dd')}",
        f"landmarks found in both or neither: {same_found}/{len(rows)}",
        f"DME grade identical: {same_dme}/{len(rows)}"
        + "".join(
            f"; {r['photo']}: {r['dme_full']} vs {r['dme_working']}" for r in rows if r["dme_full"] != r["dme_working"]
        ),
        f"quality verdict identical: {same_quality}/{len(rows)}",
        f"reading + findings + statistics per photo, median: full {sorted(r['full_s'] for r in rows)[len(rows) // 2]:.2f} s,"
        f" working {sorted(r['working_s'] for r in rows)[len(rows) // 2]:.2f} s",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photos", nargs="*", type=Path, help="photos (default: IDRiD's 103 grading test photos)")
    parser.add_argument("--model", help="checkpoint (default: the bundled model)")
    parser.add_argument("--limit", type=int, help="only the first N photos")
    parser.add_argument("--csv", type=Path, help="write one row per photo here")
    args = parser.parse_args(argv)
    from hydralanet import load_model

    photos = args.photos or sorted(IDRID_TEST.glob("IDRiD_*.jpg"))
    if not photos:
        parser.error(f"no photos given and none in {IDRID_TEST}")
    photos = photos[: args.limit] if args.limit else photos
    loaded = load_model(args.model)
    rows = []
    for k, path in enumerate(photos, 1):
        rows.append(compare(loaded, path))
        r = rows[-1]
        print(
            f"{k:>3}/{len(photos)} {r['photo']}: disc {r['disc_dd']} DD, fovea {r['fovea_dd']} DD, "
            f"DME {r['dme_full']}/{r['dme_working']}, quality {r['quality_full']}/{r['quality_working']}",
            flush=True,
        )
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    print("\n".join(summary(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
